use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::summary::{
    Results,
    record::{
        Compared, Judged,
        tests::{checked, compared, diff, request, results, rules},
    },
};

const ENDPOINTS: [&str; 3] = ["GET /a", "POST /b", OTHER];
const LOCATIONS: [&str; 4] = ["status", "header:etag", "body:/items/3/id", "body:/n"];

/// One request's outcome, as the pipeline would record it.
#[derive(Clone, Debug)]
enum Op {
    Lost(usize, usize),
    Skipped(usize, usize),
    ReplayError(usize),
    Compared {
        endpoint: usize,
        judged: usize,
        /// Bit masks over [`LOCATIONS`].
        raw: u8,
        reported: u8,
        old_ms: u64,
        new_ms: u64,
        secondary_ms: Option<u64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..2usize).prop_map(|(e, c)| Op::Lost(e, c)),
        (0..3usize, 0..2usize).prop_map(|(e, r)| Op::Skipped(e, r)),
        (0..3usize).prop_map(Op::ReplayError),
        (
            0..3usize,
            0..3usize,
            0..16u8,
            0..16u8,
            1..200u64,
            1..200u64,
            proptest::option::of(1..200u64)
        )
            .prop_map(
                |(endpoint, judged, raw, reported, old_ms, new_ms, secondary_ms)| {
                    Op::Compared {
                        endpoint,
                        judged,
                        raw,
                        reported,
                        old_ms,
                        new_ms,
                        secondary_ms,
                    }
                }
            ),
    ]
}

fn diffs(mask: u8, id: u64) -> Vec<crate::model::Difference> {
    LOCATIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, l)| diff(l, json!(id), json!(id + 1)))
        .collect()
}

fn apply(r: &mut Results, id: u64, op: &Op) {
    let req = request(&format!("/a?id={id}"));
    match *op {
        Op::Lost(e, c) => r.lost(ENDPOINTS[e], ["gap", "timeout"][c]),
        Op::Skipped(e, s) => r.skipped(ENDPOINTS[e], ["rate_limited", "method"][s]),
        Op::ReplayError(e) => r.replay_error(ENDPOINTS[e]),
        Op::Compared {
            endpoint,
            judged,
            raw,
            reported,
            old_ms,
            new_ms,
            secondary_ms,
        } => {
            let judged = [Judged::Matched, Judged::Noise, Judged::Mismatched][judged];
            let raw = diffs(raw, id);
            let reported = if judged == Judged::Mismatched {
                diffs(reported, id)
            } else {
                Vec::new()
            };
            r.compared(
                ENDPOINTS[endpoint],
                Compared {
                    old_ns: old_ms * 1_000_000,
                    new_ns: new_ms * 1_000_000,
                    secondary_ns: secondary_ms.map(|ms| ms * 1_000_000),
                    ..compared(id, judged, &raw, &reported, &req, 1)
                },
            );
        }
    }
}

fn without_sources(mut s: Summary) -> Summary {
    s.sources.clear();
    s
}

fn merged(summaries: &[&Summary]) -> Summary {
    let list = summaries
        .iter()
        .enumerate()
        .map(|(i, s)| (PathBuf::from(format!("s{i}.json")), (*s).clone()))
        .collect();
    merge(list).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    // Depends on `crate::endpoint::generalise_location`.
    #[test]
    fn merging_split_results_equals_one_agent(
        ops in proptest::collection::vec((op(), any::<bool>()), 0..60),
        reversed_ids in any::<bool>(),
    ) {
        let mut one = results(5, 10);
        let (mut a, mut b) = (results(5, 10), results(5, 10));
        let n = ops.len() as u64;
        for (i, (op, to_a)) in ops.iter().enumerate() {
            let id = if reversed_ids { n - i as u64 } else { i as u64 };
            apply(&mut one, id, op);
            apply(if *to_a { &mut a } else { &mut b }, id, op);
        }
        let (one, a, b) = (one.snapshot(true), a.snapshot(true), b.snapshot(true));
        checked(&one);
        let ab = merged(&[&a, &b]);
        checked(&ab);
        prop_assert_eq!(ab.sources.len(), 2);
        prop_assert_eq!(without_sources(ab.clone()), without_sources(one));
        let ba = merged(&[&b, &a]);
        prop_assert_eq!(without_sources(ba), without_sources(ab));
    }
}

// Depends on `crate::endpoint::generalise_location`.
#[test]
fn merging_one_summary_changes_nothing() {
    let mut r = results(5, 10);
    for (i, op) in [
        Op::Lost(0, 1),
        Op::Compared {
            endpoint: 1,
            judged: 2,
            raw: 0b1011,
            reported: 0b0011,
            old_ms: 3,
            new_ms: 9,
            secondary_ms: Some(4),
        },
        Op::Skipped(2, 0),
    ]
    .iter()
    .enumerate()
    {
        apply(&mut r, i as u64, op);
    }
    let s = r.snapshot(true);
    assert_eq!(merged(&[&s]), s);
}

#[test]
fn nothing_to_merge() {
    assert!(matches!(merge(Vec::new()), Err(MergeError::Empty)));
}

#[test]
fn summaries_of_other_rules_are_refused_naming_the_field() {
    let a = results(5, 10).snapshot(true);
    let mut b = a.clone();
    b.rules.regression.min_samples = 99;
    let e = merge(vec![("a.json".into(), a.clone()), ("b.json".into(), b)]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("b.json was grouped by other rules than a.json"),
        "{msg}"
    );
    assert!(
        msg.contains("regression.min_samples is 99 there but 10 here"),
        "{msg}"
    );
    let mut c = a.clone();
    c.rules.endpoint_patterns.push("GET /x".into());
    let msg = merge(vec![("a".into(), a), ("c".into(), c)])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("endpoint_patterns"), "{msg}");
}

#[test]
fn endpoints_beyond_the_bound_fold_the_least_seen_into_other() {
    let mut a = results(2, 10);
    let mut b = results(2, 10);
    for _ in 0..3 {
        a.replay_error("GET /a");
        b.replay_error("GET /c");
    }
    a.replay_error("GET /b");
    b.lost("GET /d", "gap");
    b.lost("GET /d", "gap");
    b.replay_error(OTHER);
    let m = merged(&[&a.snapshot(false), &b.snapshot(false)]);
    checked(&m);
    let names: Vec<_> = m.endpoints.iter().map(|e| e.endpoint.as_str()).collect();
    assert_eq!(names, ["GET /a", "GET /c", OTHER]);
    let other = &m.endpoints[2].counts;
    assert_eq!((other.seen, other.lost, other.replay_errors), (4, 2, 2));
    assert_eq!(m.totals.seen, 10);
}

// Depends on `crate::endpoint::generalise_location`.
#[test]
fn locations_beyond_the_bound_fold_the_least_reported() {
    let req = request("/a");
    let (mut a, mut b) = (results(5, 2), results(5, 2));
    let status = [diff("status", json!(200), json!(500))];
    let etag = [diff("header:etag", json!("a"), json!("b"))];
    let body = [diff("body:/n", json!(1), json!(2))];
    for id in 0..3 {
        a.compared(
            "GET /a",
            compared(id, Judged::Mismatched, &status, &status, &req, 1),
        );
    }
    a.compared(
        "GET /a",
        compared(3, Judged::Mismatched, &body, &body, &req, 1),
    );
    for id in 10..12 {
        b.compared(
            "GET /a",
            compared(id, Judged::Mismatched, &etag, &etag, &req, 1),
        );
    }
    let m = merged(&[&a.snapshot(false), &b.snapshot(false)]);
    checked(&m);
    let e = &m.endpoints[0];
    let locs: Vec<_> = e
        .differences
        .iter()
        .map(|l| (l.location.as_str(), l.reported))
        .collect();
    assert_eq!(locs, [("status", 3), ("header:etag", 2)]);
    assert_eq!(e.other_locations, 1);
}

#[test]
fn regressions_are_recomputed_from_the_merged_latencies() {
    let req = request("/a");
    let (mut a, mut b) = (results(5, 10), results(5, 10));
    for id in 0..10 {
        let c = Compared {
            new_ns: 50_000_000,
            secondary_ns: Some(20_000_000),
            ..compared(id, Judged::Matched, &[], &[], &req, 1)
        };
        if id % 2 == 0 { &mut a } else { &mut b }.compared("GET /a", c);
    }
    let (a, b) = (a.snapshot(false), b.snapshot(false));
    assert_eq!(a.endpoints[0].regression, None, "5 samples < min_samples");
    let m = merged(&[&a, &b]);
    let reg = m.endpoints[0].regression.as_ref().expect("a regression");
    assert_eq!(reg.quantile, "p50");
    assert_eq!(m.endpoints[0].latency.new.count(), 10);
}

#[test]
fn the_regression_rule() {
    let rule = rules(1, 1).regression;
    let mut l = Latencies {
        old: Latency::new(),
        new: Latency::new(),
        secondary: Latency::new(),
    };
    assert_eq!(regression(&rule, &l), None, "empty");
    for _ in 0..10 {
        l.new.record_ns(30_000_000);
        l.secondary.record_ns(20_000_000);
    }
    let r = regression(&rule, &l).expect("1.5 × and 10 ms slower");
    assert_eq!(r.quantile, "p50");
    let strict = RegressionRule {
        ratio: 1.6,
        ..rule.clone()
    };
    assert_eq!(regression(&strict, &l), None, "ratio not reached");
    let wide = RegressionRule {
        min_delta_ms: 11.0,
        ..rule
    };
    assert_eq!(regression(&wide, &l), None, "delta not reached");
}
