use super::*;
use crate::summary::{
    Results,
    record::{
        Compared, Judged,
        tests::{compared, request, results},
    },
};

fn verdict_rules() -> VerdictRules {
    VerdictRules {
        max_mismatch_rate: 0.01,
        max_latency_ratio: Some(1.5),
        min_compared: 100,
        scope: Vec::new(),
    }
}

/// `n` compared requests at `endpoint`, `mismatched` of them mismatched,
/// new answering in `new_ms` and the secondary (when given) in
/// `secondary_ms`.
fn record(
    r: &mut Results,
    endpoint: &str,
    n: u64,
    mismatched: u64,
    new_ms: u64,
    secondary_ms: Option<u64>,
) {
    let req = request("/");
    for id in 0..n {
        let judged = if id < mismatched {
            Judged::Mismatched
        } else {
            Judged::Matched
        };
        r.compared(
            endpoint,
            Compared {
                new_ns: new_ms * 1_000_000,
                secondary_ns: secondary_ms.map(|ms| ms * 1_000_000),
                ..compared(id, judged, &[], &[], &req, 10)
            },
        );
    }
}

#[test]
fn ready_when_every_endpoint_passes() {
    let mut r = results(10, 10);
    record(&mut r, "GET /a", 900, 9, 10, Some(10));
    record(&mut r, "GET /b", 100, 0, 12, Some(10));
    // Nothing compared: not in scope.
    r.replay_error("GET /c");
    let v = decide(&r.snapshot(true), &verdict_rules());
    assert_eq!(v.decision, Decision::Ready, "{:?}", v.reasons);
    assert_eq!(v.decision.exit_code(), 0);
    assert!(v.reasons.is_empty(), "{:?}", v.reasons);
}

#[test]
fn too_many_mismatches_block() {
    let mut r = results(10, 10);
    record(&mut r, "GET /a", 900, 12, 10, Some(10));
    let v = decide(&r.snapshot(true), &verdict_rules());
    assert_eq!(v.decision, Decision::NotReady);
    assert_eq!(v.decision.exit_code(), 1);
    assert_eq!(
        v.reasons,
        [Reason {
            endpoint: Some("GET /a".into()),
            rule: "max_mismatch_rate",
            blocking: true,
            detail: "12 of 900 compared mismatched (1.33 % > 1.00 %)".into(),
        }]
    );
}

#[test]
fn a_slower_new_service_blocks_naming_the_quantile() {
    let mut r = results(10, 10);
    record(&mut r, "GET /a", 100, 0, 40, Some(20));
    let v = decide(&r.snapshot(true), &verdict_rules());
    assert_eq!(v.decision, Decision::NotReady);
    let details: Vec<_> = v.reasons.iter().map(|r| r.detail.as_str()).collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(details[0].starts_with("p50 latency 40."), "{details:?}");
    assert!(details[0].contains("(2.00 × > 1.50 ×)"), "{details:?}");
    assert!(details[1].starts_with("p99 latency"), "{details:?}");
    assert!(
        v.reasons
            .iter()
            .all(|r| r.rule == "max_latency_ratio" && r.blocking)
    );
    // Not judged without a ratio.
    let rules = VerdictRules {
        max_latency_ratio: None,
        ..verdict_rules()
    };
    assert_eq!(decide(&r.snapshot(true), &rules).decision, Decision::Ready);
}

#[test]
fn latency_without_a_secondary_is_not_judged() {
    let mut r = results(10, 10);
    record(&mut r, "GET /a", 100, 0, 40, None);
    record(&mut r, "GET /b", 100, 0, 40, Some(20));
    let rules = VerdictRules {
        max_latency_ratio: Some(3.0),
        ..verdict_rules()
    };
    let v = decide(&r.snapshot(true), &rules);
    assert_eq!(v.decision, Decision::Ready);
    assert_eq!(
        v.reasons,
        [Reason {
            endpoint: Some("GET /a".into()),
            rule: "max_latency_ratio",
            blocking: false,
            detail: "latency not judged: no secondary".into(),
        }]
    );
}

#[test]
fn too_few_compared_is_not_enough_data() {
    let mut r = results(10, 10);
    record(&mut r, "GET /a", 100, 0, 10, Some(10));
    // 50 % mismatched, but too few to judge.
    record(&mut r, "GET /b", 4, 2, 10, Some(10));
    let v = decide(&r.snapshot(true), &verdict_rules());
    assert_eq!(v.decision, Decision::NotEnoughData);
    assert_eq!(v.decision.exit_code(), 2);
    assert_eq!(
        v.reasons,
        [Reason {
            endpoint: Some("GET /b".into()),
            rule: "min_compared",
            blocking: false,
            detail: "4 compared, 100 needed to judge it".into(),
        }]
    );
}

#[test]
fn nothing_compared_is_not_enough_data() {
    let mut r = results(10, 10);
    r.lost("GET /a", "gap");
    for s in [results(10, 10).snapshot(true), r.snapshot(true)] {
        let v = decide(&s, &verdict_rules());
        assert_eq!(v.decision, Decision::NotEnoughData);
        assert_eq!(v.reasons.len(), 1);
        assert_eq!(v.reasons[0].endpoint, None);
        assert_eq!(
            v.reasons[0].detail,
            "no endpoint in scope has a compared request"
        );
    }
}

#[test]
fn blocking_reasons_come_first_and_win() {
    let mut r = results(10, 10);
    record(&mut r, "GET /a", 5, 0, 10, Some(10));
    record(&mut r, "GET /b", 100, 0, 10, None);
    record(&mut r, "GET /c", 100, 50, 10, Some(10));
    let v = decide(&r.snapshot(true), &verdict_rules());
    assert_eq!(v.decision, Decision::NotReady);
    let reasons: Vec<_> = v
        .reasons
        .iter()
        .map(|r| (r.endpoint.as_deref().unwrap_or(""), r.rule, r.blocking))
        .collect();
    assert_eq!(
        reasons,
        [
            ("GET /c", "max_mismatch_rate", true),
            ("GET /a", "min_compared", false),
            ("GET /b", "max_latency_ratio", false),
        ]
    );
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["decision"], "not_ready");
}
