//! Three node agents scraped by Prometheus give the verdict and the counts
//! of one agent watching all three replicas.

use std::time::{Duration, Instant};

use parallelrun_tests::prometheus::Prometheus;
use serde_json::Value;

use super::{Fleet, PROMETHEUS, REPLICAS, node_metrics, numbered, parallelrun, parallelrun_in};

/// Production requests sent: 3 replicas × 2 connections × (40 `/users/…`
/// + 5 `/status`).
const SENT: f64 = 3.0 * 2.0 * (40.0 + 5.0);

/// The verdict's rules, on both sides: `/users/7` mismatching (1 of 240)
/// is above 0.1 %; `/status` (30 compared, all mismatched) lacks data.
const RULES: [&str; 6] = [
    "--max-mismatch-rate",
    "0.001",
    "--max-latency-ratio",
    "1.5",
    "--min-compared",
    "50",
];

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The reasons as both sides must give them: exactly, but for the
/// quantiles of a latency rule (once per endpoint). Those differ in any
/// case: the nodes and the reference time replays of their own, and
/// Prometheus has latencies at its buckets' resolution.
fn reasons(v: &Value) -> Vec<(Value, Value, Value, Value)> {
    let mut reasons: Vec<_> = v["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no reasons in {v:#}"))
        .iter()
        .map(|r| {
            let detail = if r["rule"] == "max_latency_ratio" && r["blocking"] == true {
                Value::Null
            } else {
                r["detail"].clone()
            };
            (
                r["endpoint"].clone(),
                r["rule"].clone(),
                r["blocking"].clone(),
                detail,
            )
        })
        .collect();
    reasons.dedup();
    reasons
}

/// The new version answers `/users/…` 200 ms late (a regression against
/// the secondary), `/users/7` differently and `/status` always differently.
/// Three agents, each watching one replica, are scraped by Prometheus; a
/// fourth watches all three and writes a summary. Once Prometheus has
/// scraped every request, `verdict --prometheus` decides as `verdict
/// REFERENCE` does, for the same reasons, and `report --prometheus --json`
/// counts every endpoint as the reference does.
#[test]
fn the_fleet_verdict_from_prometheus_is_that_of_one_agent_watching_all_replicas() {
    let fleet = Fleet::start();
    fleet.new.set_delay("/users/", Duration::from_millis(200));
    let ns = &fleet.pair.server;
    let metrics: Vec<String> = (0..REPLICAS.len()).map(node_metrics).collect();
    let targets: Vec<(&str, String)> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), format!("node-{i}")))
        .collect();
    let targets: Vec<(&str, &str)> = targets.iter().map(|(m, n)| (*m, n.as_str())).collect();
    let prometheus = Prometheus::start(ns, PROMETHEUS.parse().unwrap(), fleet.dir.path(), &targets);
    // Grouped alike (an explicit template rather than a learned one), and
    // judged as the latency test of the results judges (see endpoints.rs
    // there): agents as equals of the services, a regression much slower
    // as well. (No equally fast endpoint here: near a bucket bound, a
    // loaded host's jitter may make one look slower from buckets, the
    // approximation the module of `--prometheus` states; the unit tests
    // bound it.)
    let common = [
        "--endpoint",
        "GET /users/{id}",
        "--priority",
        "normal",
        "--regression-min-delta",
        "40",
    ];
    let mut nodes: Vec<_> = REPLICAS
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let mut extra = common.to_vec();
            extra.extend(["--metrics", metrics[i].as_str()]);
            fleet.agent(&format!("node-{i}"), &[port], &extra)
        })
        .collect();
    let mut reference_flags = common.to_vec();
    reference_flags.push("--no-metrics");
    let mut reference = fleet.agent("reference", &REPLICAS, &reference_flags);

    fleet.clients(2, |r, c| {
        let mut p = numbered("/users/", 1 + (r * 2 + c) * 40, 40);
        p.extend(vec!["/status".to_owned(); 5]);
        p
    });

    // Every request judged by a node and scraped since; the reference's
    // final summary. The nodes keep running: Prometheus marks the series
    // of a target it can no longer scrape stale.
    prometheus.wait_for(ns, "sum(parallelrun_endpoint_requests_total)", SENT);
    // The reference's replays answered too (each `/users/…` is replayed by
    // a node and by the reference).
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.new.answered("/users/") < 480 {
        assert!(
            Instant::now() < deadline,
            "the new service answered {} of 480 /users/ replays in 60 s",
            fleet.new.answered("/users/")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    reference.stop();
    let reference_file = fleet.path("reference.summary.json");
    let reference_file = reference_file.to_str().unwrap();
    let url = prometheus.url();

    let mut verdict_args = vec!["verdict", reference_file, "--json"];
    verdict_args.extend(RULES);
    let expected = parallelrun(&verdict_args);
    let mut verdict_args = vec![
        "verdict",
        "--prometheus",
        &url,
        "--prometheus-selector",
        r#"{job="parallelrun"}"#,
        "--json",
    ];
    verdict_args.extend(RULES);
    let got = parallelrun_in(ns, &verdict_args);
    let (expected_v, got_v) = (json(&expected), json(&got));
    assert_eq!(expected_v["decision"], "not_ready", "{expected_v:#}");
    assert_eq!(got.status.code(), expected.status.code(), "{got:?}");
    assert_eq!(
        got_v["decision"], expected_v["decision"],
        "{got_v:#}\n{expected_v:#}"
    );
    assert_eq!(
        reasons(&got_v),
        reasons(&expected_v),
        "{got_v:#}\n{expected_v:#}"
    );
    // The reasons are those the traffic was made for.
    let blocking: Vec<_> = reasons(&expected_v)
        .into_iter()
        .filter(|r| r.2 == true)
        .map(|r| (r.0, r.1))
        .collect();
    assert!(
        blocking.contains(&("GET /users/{id}".into(), "max_mismatch_rate".into()))
            && blocking.contains(&("GET /users/{id}".into(), "max_latency_ratio".into()))
            && blocking.iter().all(|b| b.0 == "GET /users/{id}"),
        "{expected_v:#}"
    );

    // The counts of every endpoint, exactly.
    let expected = json(&parallelrun(&["report", "--json", reference_file]));
    let got = json(&parallelrun_in(
        ns,
        &["report", "--json", "--prometheus", &url],
    ));
    assert_eq!(expected["totals"]["seen"], SENT as u64, "{expected:#}");
    assert_eq!(got["totals"], expected["totals"], "{got:#}");
    let counts = |s: &Value| -> Vec<(Value, Value)> {
        s["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["endpoint"].clone(), e["counts"].clone()))
            .collect()
    };
    assert_eq!(counts(&got), counts(&expected), "{got:#}");
    assert_eq!(got["sources"].as_array().map(Vec::len), Some(3), "{got:#}");

    // A selector matching no agent says what to check.
    let none = parallelrun_in(
        ns,
        &[
            "verdict",
            "--prometheus",
            &url,
            "--prometheus-selector",
            r#"{job="nope"}"#,
        ],
    );
    assert_eq!(none.status.code(), Some(3), "{none:?}");
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("--prometheus-selector"), "{stderr}");

    for n in &mut nodes {
        n.stop();
    }
    for a in nodes.iter().chain([&reference]) {
        let stderr = a.stderr();
        assert!(!stderr.contains("panicked"), "an agent panicked:\n{stderr}");
    }
}
