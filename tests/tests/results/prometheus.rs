//! A real Prometheus server (Debian's) scrapes the agent, with the shipped
//! recording and alerting rules loaded: a PromQL query of an endpoint's
//! mismatch ratio equals the summary's.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use parallelrun_sandbox::Proc;
use parallelrun_tests::faults;
use serde_json::Value;

use super::{Rig, endpoint, numbered, stop};

/// Prometheus's own address, inside the server namespace.
const PROMETHEUS: &str = "127.0.0.1:9099";
/// The agent's metrics, inside the server namespace.
const METRICS: &str = "127.0.0.1:9464";

/// The shipped rules.
fn rules() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus/parallelrun.rules.yml")
}

/// `%XX` for every byte but unreserved ones (a PromQL query in a URL).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result vector of an instant query, `None` while Prometheus cannot
/// answer.
fn query(rig: &Rig, promql: &str) -> Option<Vec<Value>> {
    let path = format!("/api/v1/query?query={}", url_encode(promql));
    let text = rig
        .pair
        .server
        .run(move || faults::http_get_text(PROMETHEUS.parse().unwrap(), &path))
        .ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let v: Value = serde_json::from_str(body).ok()?;
    (v["status"] == "success").then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The single value of an instant query, `None` while it has none.
fn scalar(rig: &Rig, promql: &str) -> Option<f64> {
    let result = query(rig, promql)?;
    let [one] = result.as_slice() else {
        return None;
    };
    one["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_per_endpoint_series_that_equal_the_summary() {
    let rig = Rig::start();
    let check = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules())
        .output()
        .expect("promtool (Debian's prometheus package): run `cargo xtask setup`");
    assert!(check.status.success(), "{check:?}");

    let config = rig.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: parallelrun\n    static_configs:\n      - targets: ['{METRICS}']\n",
            rules().display()
        ),
    )
    .unwrap();
    let mut cmd = rig.pair.server.command("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            rig.path("tsdb").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(rig.path("prometheus.log")).unwrap());
    let _prometheus = Proc::spawn("prometheus", &mut cmd)
        .unwrap_or_else(|e| panic!("{e}: run `cargo xtask setup`"))
        .with_grace(Duration::from_secs(2));

    let agent = rig.run("scraped", &["--metrics", METRICS]);
    rig.clients(2, |c| {
        let mut p = numbered("/users/", 1 + c * 100, 100);
        p.extend(vec!["/status".to_owned(); 15]);
        p
    });
    // Every request compared and scraped (the agent's tick and a scrape).
    let started = Instant::now();
    while scalar(&rig, "sum(parallelrun_endpoint_compared_total)") != Some(230.0) {
        let log = std::fs::read_to_string(rig.path("prometheus.log")).unwrap_or_default();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Prometheus never saw 230 compared requests:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ratio = |name: &str| {
        scalar(
            &rig,
            &format!(
                "sum(parallelrun_endpoint_requests_total{{endpoint=\"{name}\",outcome=\"mismatched\"}}) \
                 / sum(parallelrun_endpoint_compared_total{{endpoint=\"{name}\"}})"
            ),
        )
        .unwrap_or_else(|| panic!("no ratio for {name}"))
    };
    let users_ratio = ratio("GET /users/{id}");
    let status_ratio = ratio("GET /status");
    // The rules were loaded and are evaluated on these series.
    let started = Instant::now();
    while query(&rig, "parallelrun:endpoint_compared:rate5m").is_none_or(|r| r.len() < 2) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the recording rules never produced a series"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let s = stop(agent, &rig, "scraped");
    let summary_ratio = |name: &str| {
        let c = &endpoint(&s, name)["counts"];
        c["mismatched"].as_f64().unwrap() / c["compared"].as_f64().unwrap()
    };
    assert_eq!(users_ratio, summary_ratio("GET /users/{id}"));
    assert_eq!(users_ratio, 1.0 / 200.0);
    assert_eq!(status_ratio, summary_ratio("GET /status"));
    assert_eq!(status_ratio, 1.0);
}
