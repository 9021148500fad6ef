use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;
use crate::{
    diff::NoiseThresholds,
    model::{ConnKey, Header, Protocol, Request},
};

/// The endpoint every test request belongs to.
const ENDPOINT: &str = "GET /users/{id}";

fn response(body: &Value) -> Response {
    Response {
        version: 1,
        status: 200,
        reason: "OK".into(),
        headers: vec![Header::new("Content-Type", "application/json")],
        body: Bytes::from(body.to_string()),
        digest: None,
        trailers: Vec::new(),
    }
}

fn exchange(target: &str, old: &Value) -> Exchange {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: old.test\r\n\r\n");
    Exchange {
        id: 1,
        conn: ConnKey {
            client: SocketAddr::from(([10, 0, 0, 1], 40000)),
            server: SocketAddr::from(([10, 0, 0, 2], 80)),
        },
        protocol: Protocol::Http1,
        stream_id: 0,
        request: Request {
            method: "GET".into(),
            target: target.into(),
            version: 1,
            headers: vec![Header::new("Host", "old.test")],
            body: Bytes::new(),
            trailers: Vec::new(),
            raw: Bytes::from(raw),
        },
        response: response(old),
        request_ts_ns: 1,
        response_ts_ns: 2,
    }
}

/// `{"items": [{"ts": T, "v": V}, …]}` with `n` items.
fn items(n: usize, ts: impl Fn(usize) -> u64, v: impl Fn(usize) -> u64) -> Value {
    let items: Vec<Value> = (0..n).map(|i| json!({"ts": ts(i), "v": v(i)})).collect();
    json!({ "items": items })
}

fn stats() -> Mutex<EndpointNoise> {
    Mutex::new(EndpointNoise::new(NoiseThresholds::default()))
}

fn locations(m: &Mismatch) -> Vec<&str> {
    m.listed.iter().map(|d| d.location.as_str()).collect()
}

/// [`judge`] with the default configuration and fresh statistics, the
/// secondary having answered `secondary`.
fn judge_answered(ex: &Exchange, new: &Value, secondary: &Value) -> Verdict {
    let (v, _) = judge(
        &DiffConfig::default(),
        &stats(),
        ENDPOINT,
        ex,
        &response(new),
        Secondary::Answered(&response(secondary)),
    );
    v
}

/// The mismatch `v` must be.
fn mismatch(v: Verdict) -> Mismatch {
    let Verdict::Mismatched(m) = v else {
        panic!("not a mismatch: {v:?}");
    };
    m
}

#[test]
fn identical_responses_match() {
    let old = items(3, |_| 1, |_| 1);
    let ex = exchange("/items", &old);
    let (v, _) = judge(
        &DiffConfig::default(),
        &stats(),
        ENDPOINT,
        &ex,
        &response(&old),
        Secondary::Answered(&response(&old)),
    );
    assert_eq!(v, Verdict::Matched);
}

/// More than an event lists, the first 100 of them noise, a real one after
/// them: a mismatch listing the real one (it used to be called noise, the
/// noise decision seeing only the first 100).
#[test]
fn a_real_difference_after_a_hundred_noisy_ones_is_a_mismatch() {
    let n = 150;
    let old = items(n, |_| 0, |_| 7);
    let new = items(n, |i| i as u64 + 1, |i| if i == 120 { 8 } else { 7 });
    let secondary = items(n, |i| i as u64 + 1000, |_| 7);
    let ex = exchange("/items", &old);
    let v = judge_answered(&ex, &new, &secondary);
    let m = mismatch(v);
    assert_eq!(locations(&m), ["body:/items/120/v"]);
    assert_eq!(m.omitted, 0);
    assert_eq!(m.suppressed, n);
    assert_eq!(m.noise_unchecked, None);
}

#[test]
fn all_differences_noise_is_noise_however_many() {
    let n = 150;
    let old = items(n, |_| 0, |_| 7);
    let new = items(n, |i| i as u64 + 1, |_| 7);
    let secondary = items(n, |i| i as u64 + 1000, |_| 7);
    let ex = exchange("/items", &old);
    let v = judge_answered(&ex, &new, &secondary);
    assert_eq!(v, Verdict::Noise { suppressed: n });
}

/// Differences beyond the diff's bound were never looked at: such a
/// comparison is a mismatch even when every difference kept is noise.
#[test]
fn a_comparison_over_the_bound_is_never_noise() {
    let cfg = DiffConfig {
        max_differences: 10,
        ..DiffConfig::default()
    };
    let old = items(30, |_| 0, |_| 7);
    let new = items(30, |i| i as u64 + 1, |_| 7);
    let secondary = items(30, |i| i as u64 + 1000, |_| 7);
    let ex = exchange("/items", &old);
    let (v, _) = judge(
        &cfg,
        &stats(),
        ENDPOINT,
        &ex,
        &response(&new),
        Secondary::Answered(&response(&secondary)),
    );
    let m = mismatch(v);
    assert!(m.listed.is_empty(), "{m:?}");
    assert_eq!(m.omitted, 20);
    assert_eq!(m.suppressed, 10);
}

#[test]
fn an_event_lists_at_most_max_listed_and_counts_the_rest() {
    let n = MAX_LISTED + 50;
    let old = items(n, |_| 0, |_| 7);
    let new = items(n, |_| 0, |_| 8);
    let ex = exchange("/items", &old);
    let (v, _) = judge(
        &DiffConfig::default(),
        &stats(),
        ENDPOINT,
        &ex,
        &response(&new),
        Secondary::None,
    );
    let m = mismatch(v);
    assert_eq!(m.listed.len(), MAX_LISTED);
    assert_eq!(m.listed[0].location, "body:/items/0/v");
    assert_eq!(m.omitted, 50);
    assert_eq!(m.suppressed, 0);
}

/// A request whose secondary failed is a mismatch saying so, and teaches
/// the per-endpoint statistics nothing (as if old and secondary had
/// agreed, it would make a noisy field look like a regression).
#[test]
fn without_the_secondary_answer_noise_is_unchecked_and_not_learnt() {
    let stats = stats();
    let old = json!({"ts": 0, "v": 1});
    let new = json!({"ts": 5, "v": 1});
    let ex = exchange("/users/7", &old);
    for _ in 0..50 {
        let (v, _) = judge(
            &DiffConfig::default(),
            &stats,
            ENDPOINT,
            &ex,
            &response(&new),
            Secondary::Failed("timeout"),
        );
        let Verdict::Mismatched(m) = v else {
            panic!("not a mismatch: {v:?}");
        };
        assert_eq!(locations(&m), ["body:/ts"]);
        assert_eq!(m.noise_unchecked, Some("timeout"));
    }
    let endpoint = ENDPOINT;
    assert_eq!(stats.lock().unwrap().requests(endpoint), 0);
    // Compared against the secondary, the requests teach the statistics;
    // once `ts` is known noise on the endpoint, a request whose secondary
    // failed is judged by them.
    let secondary = json!({"ts": 9, "v": 1});
    let thresholds = NoiseThresholds::default();
    for _ in 0..thresholds.min_requests {
        let (v, _) = judge(
            &DiffConfig::default(),
            &stats,
            ENDPOINT,
            &ex,
            &response(&new),
            Secondary::Answered(&response(&secondary)),
        );
        assert_eq!(v, Verdict::Noise { suppressed: 1 });
    }
    assert_eq!(
        stats.lock().unwrap().requests(endpoint),
        thresholds.min_requests
    );
    let (v, _) = judge(
        &DiffConfig::default(),
        &stats,
        ENDPOINT,
        &ex,
        &response(&new),
        Secondary::Failed("connect"),
    );
    assert_eq!(v, Verdict::Noise { suppressed: 1 });
    assert_eq!(
        stats.lock().unwrap().requests(endpoint),
        thresholds.min_requests
    );
}

#[test]
fn a_real_difference_with_the_secondary_agreeing_is_a_mismatch() {
    let old = json!({"ts": 0, "plan": "basic"});
    let new = json!({"ts": 5, "plan": "premium"});
    let secondary = json!({"ts": 9, "plan": "basic"});
    let ex = exchange("/users/7", &old);
    let v = judge_answered(&ex, &new, &secondary);
    let m = mismatch(v);
    assert_eq!(locations(&m), ["body:/plan"]);
    assert_eq!(m.suppressed, 1);
    assert_eq!(m.noise_unchecked, None);
}
