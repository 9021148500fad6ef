//! A real Prometheus server (Debian's) scrapes the agent, with the shipped
//! recording and alerting rules loaded: a PromQL query of an endpoint's
//! mismatch ratio equals the summary's.

use std::time::{Duration, Instant};

use parallelrun_tests::prometheus::{Prometheus, promtool, rules};

use super::{Rig, endpoint, numbered, stop};

/// Prometheus's own address, inside the server namespace.
const PROMETHEUS: &str = "127.0.0.1:9099";
/// The agent's metrics, inside the server namespace.
const METRICS: &str = "127.0.0.1:9464";

/// The shipped rules pass `promtool check rules` and their unit tests
/// (`parallelrun.rules.test.yml`: series across three nodes, aggregated).
#[test]
fn promtool_checks_and_tests_the_shipped_rules() {
    let rules = rules();
    let check = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    let tests = rules.with_file_name("parallelrun.rules.test.yml");
    let test = promtool(&["test", "rules", tests.to_str().unwrap()]);
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn prometheus_scrapes_per_endpoint_series_that_equal_the_summary() {
    let rig = Rig::start();
    let prometheus = Prometheus::start(
        &rig.pair.server,
        PROMETHEUS.parse().unwrap(),
        rig.dir.path(),
        &[(METRICS, "node-a")],
    );
    let agent = rig.run("scraped", &["--metrics", METRICS]);
    rig.clients(2, |c| {
        let mut p = numbered("/users/", 1 + c * 100, 100);
        p.extend(vec!["/status".to_owned(); 15]);
        p
    });
    // Every request compared and scraped (the agent's tick and a scrape).
    let ns = &rig.pair.server;
    prometheus.wait_for(ns, "sum(parallelrun_endpoint_compared_total)", 230.0);
    let ratio = |name: &str| {
        prometheus
            .scalar(
                ns,
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
    while prometheus
        .query(ns, "parallelrun:endpoint_compared:rate5m")
        .is_none_or(|r| r.len() < 2)
    {
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
