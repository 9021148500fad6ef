//! The HTML report opened in headless Chromium: it loads with no network
//! request at all, and the deliberate differences, the charts and a
//! copy-as-curl are in its DOM.

use std::path::Path;

use parallelrun_tests::browser;

use super::{Rig, numbered, parallelrun, stop};

#[test]
fn the_html_report_loads_offline_with_the_differences_and_charts() {
    let rig = Rig::start();
    let agent = rig.run("page", &[]);
    rig.clients(2, |c| {
        let mut p = numbered("/users/", 1 + c * 60, 60);
        p.extend(vec![
            "/status".to_owned(),
            "/version".to_owned(),
            "/gzip".to_owned(),
        ]);
        p
    });
    stop(agent, &rig, "page");
    let page = rig.path("report.html");
    let file = rig.summary_path("page");
    let out = parallelrun(&[
        "report",
        "--html",
        page.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/report-screenshot.png");
    let rendered = browser::render_in_chromium(&page, &shot).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        rendered.network_requests.is_empty(),
        "the page fetched: {:?}",
        rendered.network_requests
    );
    let dom = &rendered.dom;
    for needle in [
        "id=\"mismatch-chart\"",
        "id=\"latency-chart\"",
        "data-endpoint=\"GET /users/{id}\"",
        "data-endpoint=\"GET /status\"",
        // The deliberate differences of the new version.
        "data-where=\"body:/plan\"",
        "data-where=\"status\"",
        "data-where=\"header:x-version\"",
        "data-where=\"body:/items/*\"",
        "class=\"curl\"",
    ] {
        assert!(dom.contains(needle), "{needle} not in the DOM:\n{dom}");
    }
    assert!(dom.contains("curl "), "no copy-as-curl command:\n{dom}");
    let png = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(png > 10_000, "screenshot {} is {png} bytes", shot.display());
}
