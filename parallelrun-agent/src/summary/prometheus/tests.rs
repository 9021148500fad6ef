use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::{
    metrics::{LATENCY_BUCKETS, endpoints::rules_labels},
    summary::{
        Results,
        record::{
            Judged,
            tests::{compared, diff, request, results, rules as test_rules},
        },
        verdict::{VerdictRules, decide},
    },
};

type Series = Vec<(BTreeMap<String, String>, u64)>;

/// An answer of the API's shape holding `series`, read back as
/// [`Client::query`](api::Client::query) reads one.
fn answer(series: &Series) -> Vec<Sample> {
    let result: Vec<_> = series
        .iter()
        .map(|(labels, v)| json!({"metric": labels, "value": [1_764_680_000.5, v.to_string()]}))
        .collect();
    let body = json!({"status": "success", "data": {"resultType": "vector", "result": result}});
    api::decode("http://p", 200, "q", body.to_string().as_bytes()).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What Prometheus answers to [`queries`] when it scrapes agents that
/// wrote `summaries` (the series of [`crate::metrics::endpoints`], summed
/// as the queries sum them).
fn answers(summaries: &[&Summary]) -> Answers {
    let mut sums: [BTreeMap<Vec<(&str, String)>, u64>; 4] = Default::default();
    let mut add = |i: usize, key: Vec<(&'static str, String)>, n: u64| {
        *sums[i].entry(key).or_default() += n;
    };
    for s in summaries {
        for e in &s.endpoints {
            let ep = || ("endpoint", e.endpoint.clone());
            for (outcome, n) in e.counts.outcomes() {
                add(0, vec![ep(), ("outcome", outcome.to_owned())], n);
            }
            for (reason, n) in &e.counts.skipped_by {
                add(1, vec![ep(), ("reason", reason.clone())], *n);
            }
            for (cause, n) in &e.counts.lost_by {
                add(2, vec![ep(), ("cause", cause.clone())], *n);
            }
            for (side, l) in [
                ("old", &e.latency.old),
                ("new", &e.latency.new),
                ("secondary", &e.latency.secondary),
            ] {
                for le in LATENCY_BUCKETS {
                    let key = vec![ep(), ("side", side.to_owned()), ("le", le.to_string())];
                    add(3, key, l.count_le(le));
                }
                let key = vec![ep(), ("side", side.to_owned()), ("le", "+Inf".to_owned())];
                add(3, key, l.count());
            }
        }
    }
    let series = |i: usize| -> Series {
        sums[i]
            .iter()
            .map(|(k, v)| {
                (
                    k.iter().map(|(a, b)| (a.to_string(), b.clone())).collect(),
                    *v,
                )
            })
            .collect()
    };
    let rules: Series = summaries
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut l: BTreeMap<String, String> = rules_labels(&s.rules)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            l.insert("instance".into(), format!("node-{i}:9464"));
            l.insert("job".into(), "parallelrun".into());
            (l, 1)
        })
        .collect();
    Answers {
        rules: answer(&rules),
        requests: answer(&series(0)),
        skipped: answer(&series(1)),
        lost: answer(&series(2)),
        buckets: answer(&series(3)),
    }
}

/// Two agents: A sees 31 users at 2 ms (one mismatched), 3 skipped and 2
/// lost; B 20 users at 80 ms and 5 mismatched `/status`.
fn two_agents() -> (Results, Results) {
    let (mut a, mut b) = (results(10, 5), results(10, 5));
    let plan = [diff("body:/plan", json!("basic"), json!("premium"))];
    for id in 1..=31 {
        let req = request(&format!("/users/{id}"));
        let (judged, d): (_, &[_]) = if id == 7 {
            (Judged::Mismatched, &plan)
        } else {
            (Judged::Matched, &[])
        };
        a.compared("GET /users/{id}", compared(id, judged, d, d, &req, 2));
    }
    for _ in 0..3 {
        a.skipped("GET /users/{id}", "sample");
    }
    a.lost("GET /users/{id}", "timeout");
    a.lost("GET /status", "reset");
    for id in 100..120 {
        let req = request(&format!("/users/{id}"));
        b.compared(
            "GET /users/{id}",
            compared(id, Judged::Matched, &[], &[], &req, 80),
        );
    }
    let status = [diff("status", json!(200), json!(500))];
    for id in 200..205 {
        let req = request("/status");
        b.compared(
            "GET /status",
            compared(id, Judged::Mismatched, &status, &status, &req, 1),
        );
    }
    (a, b)
}

#[test]
fn counts_summed_over_agents_equal_the_merged_summaries() {
    let (a, b) = two_agents();
    let (a, b) = (a.snapshot(false), b.snapshot(false));
    let merged = merge::merge(vec![("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
    let fleet = summary(answers(&[&a, &b])).unwrap();

    assert_eq!(fleet.rules, merged.rules);
    assert_eq!(fleet.totals, merged.totals);
    assert_eq!(fleet.totals.seen, 31 + 3 + 2 + 20 + 5);
    let hosts: Vec<_> = fleet.sources.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(hosts, ["node-0:9464", "node-1:9464"]);
    assert_eq!(fleet.endpoints.len(), merged.endpoints.len());
    for (f, m) in fleet.endpoints.iter().zip(&merged.endpoints) {
        assert_eq!(f.endpoint, m.endpoint);
        assert_eq!(f.counts, m.counts, "{}", f.endpoint);
        assert_eq!(
            f.latency.new.count(),
            m.latency.new.count(),
            "{}",
            f.endpoint
        );
        // Not in Prometheus.
        assert!(f.differences.is_empty() && f.examples.is_empty());
    }
    let users = &fleet.endpoints[1];
    assert_eq!(users.endpoint, "GET /users/{id}");
    assert_eq!(
        users.counts.skipped_by,
        BTreeMap::from([("sample".into(), 3)])
    );
    // Quantiles within the bucket the exact value is in: p50 2 ms in
    // (1, 2.5] ms, p99 80 ms in (50, 100] ms.
    let p50 = users.latency.new.quantile_ms(0.5).unwrap();
    let p99 = users.latency.new.quantile_ms(0.99).unwrap();
    assert!((1.0..=2.5).contains(&p50), "{p50}");
    assert!((50.0..=100.0).contains(&p99), "{p99}");

    // The verdict is the merged summaries' verdict.
    let rules = VerdictRules {
        max_mismatch_rate: 0.01,
        max_latency_ratio: Some(1.5),
        min_compared: 10,
        scope: Vec::new(),
    };
    let (vf, vm) = (decide(&fleet, &rules), decide(&merged, &rules));
    assert_eq!(vf.decision, vm.decision);
    assert_eq!(vf.reasons, vm.reasons);
    assert!(!vf.reasons.is_empty());
}

#[test]
fn rules_survive_their_labels() {
    let mut rules = test_rules(7, 3);
    rules.endpoint_patterns = vec!["GET /a/{id}".into(), r#"/q,"x"/{p*}"#.into()];
    rules.regression.ratio = 1.1;
    rules.regression.min_delta_ms = 0.3;
    let labels: BTreeMap<String, String> = rules_labels(&rules)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(parse_rules(&labels).unwrap(), rules);
}

#[test]
fn agents_grouping_by_other_rules_are_refused_naming_the_field() {
    let (a, b) = two_agents();
    let (a, mut b) = (a.snapshot(false), b.snapshot(false));
    b.rules.max_endpoints = 3;
    let e = summary(answers(&[&a, &b])).unwrap_err().to_string();
    assert!(
        e.contains("node-1:9464") && e.contains("max_endpoints"),
        "{e}"
    );
    assert!(e.contains("same --endpoint"), "{e}");
}

#[test]
fn no_agent_and_unknown_series_are_errors_that_say_what_to_do() {
    let (a, _) = two_agents();
    let a = a.snapshot(false);
    let mut none = answers(&[&a]);
    none.rules.clear();
    let e = summary(none).unwrap_err().to_string();
    assert!(e.contains("--prometheus-selector"), "{e}");

    let mut odd = answers(&[&a]);
    odd.requests = answer(&vec![(
        labels(&[("endpoint", "GET /x"), ("outcome", "teleported")]),
        1,
    )]);
    let e = summary(odd).unwrap_err().to_string();
    assert!(e.contains("teleported") && e.contains("as new as"), "{e}");

    let mut aggregated = answers(&[&a]);
    aggregated.requests = answer(&vec![(labels(&[("outcome", "matched")]), 1)]);
    let e = summary(aggregated).unwrap_err().to_string();
    assert!(e.contains("no label endpoint"), "{e}");
}

#[test]
fn buckets_spread_their_values_and_the_overflow_sits_at_the_top() {
    // 10 values ≤ 1 ms, 30 in (1, 10] ms, 5 above 30 s.
    let l = from_buckets(&[(0.001, 10), (0.01, 40), (30.0, 40), (f64::INFINITY, 45)]);
    assert_eq!(l.count(), 45);
    assert_eq!(l.count_le(0.001), 10);
    assert_eq!(l.count_le(0.01), 40);
    let p50 = l.quantile_ms(0.5).unwrap();
    assert!((1.0..=10.0).contains(&p50), "{p50}");
    // About where histogram_quantile interpolates it: rank 22.5, the 12.5th
    // of the bucket's 30, 1 + 9 × 12.5 / 30 = 4.75 ms.
    assert!((4.5..=5.0).contains(&p50), "{p50}");
    let max = l.max_ms().unwrap();
    assert!((29_000.0..=30_500.0).contains(&max), "{max}");
    assert_eq!(from_buckets(&[]).count(), 0);
}

#[test]
fn refused_queries_and_other_answers_are_told_apart() {
    let refused = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
    let e = api::decode("http://p", 400, "sum(", refused.to_string().as_bytes()).unwrap_err();
    assert!(e.to_string().contains("bad_data: parse error"), "{e}");
    let e = api::decode("http://p", 502, "q", b"<html>Bad Gateway</html>").unwrap_err();
    assert!(
        e.to_string().contains("502") && e.to_string().contains("Bad Gateway"),
        "{e}"
    );
    let e = api::decode("http://p", 200, "q", b"{").unwrap_err();
    assert!(e.to_string().contains("not Prometheus's API JSON"), "{e}");
    let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
    let e = api::decode("http://p", 200, "q", matrix.to_string().as_bytes()).unwrap_err();
    assert!(e.to_string().contains("matrix"), "{e}");
}

#[test]
fn urls_and_selectors_are_checked() {
    assert!(api::Client::new("http://127.0.0.1:9090").is_ok());
    assert!(api::Client::new("http://[::1]:9090/prometheus/").is_ok());
    for bad in ["https://p:9090", "127.0.0.1:9090", "http://p/?x=1", ""] {
        let e = api::Client::new(bad).unwrap_err();
        assert!(e.to_string().contains("http://HOST:PORT"), "{bad}: {e}");
    }
    assert_eq!(
        queries(&Selector::parse(r#"{job="fleet"}"#).unwrap())[0],
        r#"parallelrun_rules_info{job="fleet"}"#
    );
    assert!(Selector::parse("job=fleet").is_err());
    assert!(Selector::parse("").is_ok());
}
