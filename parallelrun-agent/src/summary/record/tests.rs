use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::{
    model::Header,
    summary::{RegressionRule, file},
};

/// Rules for tests: `max_endpoints` and `max_locations` as given.
pub(crate) fn rules(max_endpoints: usize, max_locations: usize) -> Rules {
    Rules {
        endpoint_patterns: vec!["GET /users/{id}".into()],
        max_endpoints,
        learn_after: 10,
        max_locations,
        regression: RegressionRule {
            ratio: 1.2,
            min_delta_ms: 5.0,
            min_samples: 10,
        },
    }
}

pub(crate) fn source() -> Source {
    Source {
        host: "host-a".into(),
        input: "iface:eth0".into(),
        new: "10.0.0.2:8080".into(),
        secondary: Some("10.0.0.3:8080".into()),
        started: "2024-05-01T12:00:00.000Z".into(),
        updated: String::new(),
        finished: false,
    }
}

pub(crate) fn results(max_endpoints: usize, max_locations: usize) -> Results {
    Results::new(
        rules(max_endpoints, max_locations),
        source(),
        vec!["x-api-key".into(), "set-cookie".into()],
    )
}

pub(crate) fn request(target: &str) -> Request {
    Request {
        method: "GET".into(),
        target: target.into(),
        version: 1,
        headers: vec![Header::new("Host", "example.com")],
        body: Bytes::new(),
        trailers: Vec::new(),
        raw: Bytes::new(),
    }
}

pub(crate) fn diff(location: &str, old: Value, new: Value) -> Difference {
    Difference {
        location: location.into(),
        old,
        new,
    }
}

/// A compared request with the given differences (reported only when
/// mismatched) and latencies of `ms` each.
pub(crate) fn compared<'a>(
    id: u64,
    judged: Judged,
    raw: &'a [Difference],
    reported: &'a [Difference],
    request: &'a Request,
    ms: u64,
) -> Compared<'a> {
    Compared {
        id,
        judged,
        raw,
        reported,
        request,
        old_ns: ms * 1_000_000,
        new_ns: ms * 1_000_000,
        secondary_ns: Some(ms * 1_000_000),
    }
}

/// The snapshot survives being written and read back: every invariant
/// holds.
pub(crate) fn checked(s: &Summary) {
    let bytes = serde_json::to_vec(s).unwrap();
    let back = file::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&back, s);
}

fn endpoint<'a>(s: &'a Summary, name: &str) -> &'a EndpointSummary {
    s.endpoints
        .iter()
        .find(|e| e.endpoint == name)
        .unwrap_or_else(|| panic!("no endpoint {name}"))
}

#[test]
fn every_outcome_is_counted_once() {
    let mut r = results(10, 10);
    let req = request("/a");
    r.lost("GET /a", "timeout");
    r.lost("GET /a", "timeout");
    r.lost("GET /a", "gap");
    r.skipped("GET /a", "rate_limited");
    r.replay_error("GET /a");
    r.compared("GET /a", compared(1, Judged::Matched, &[], &[], &req, 3));
    r.compared("GET /b", compared(2, Judged::Noise, &[], &[], &req, 3));
    let s = r.snapshot(true);
    checked(&s);
    assert_eq!(s.format, FORMAT);
    assert_eq!(s.version, VERSION);
    assert_eq!(s.sources.len(), 1);
    assert!(s.sources[0].finished);
    assert!(
        s.sources[0].updated.ends_with('Z'),
        "{}",
        s.sources[0].updated
    );
    let a = &endpoint(&s, "GET /a").counts;
    assert_eq!((a.seen, a.compared, a.matched), (6, 1, 1));
    assert_eq!((a.lost, a.skipped, a.replay_errors), (3, 1, 1));
    assert_eq!(a.lost_by["timeout"], 2);
    assert_eq!(a.lost_by["gap"], 1);
    assert_eq!(a.skipped_by["rate_limited"], 1);
    assert_eq!(s.totals.seen, 7);
    assert_eq!(s.totals.noise, 1);
    assert_eq!(
        s.endpoints
            .iter()
            .map(|e| e.endpoint.as_str())
            .collect::<Vec<_>>(),
        ["GET /a", "GET /b"]
    );
    let l = &endpoint(&s, "GET /a").latency;
    assert_eq!(
        (l.old.count(), l.new.count(), l.secondary.count()),
        (1, 1, 1)
    );
}

#[test]
fn latencies_record_the_secondary_only_when_it_answered() {
    let mut r = results(10, 10);
    let req = request("/a");
    let mut c = compared(1, Judged::Matched, &[], &[], &req, 3);
    c.secondary_ns = None;
    r.compared("GET /a", c);
    let s = r.snapshot(false);
    let l = &endpoint(&s, "GET /a").latency;
    assert_eq!(
        (l.old.count(), l.new.count(), l.secondary.count()),
        (1, 1, 0)
    );
}

#[test]
fn endpoints_beyond_the_bound_go_to_other() {
    let mut r = results(2, 10);
    for name in ["GET /a", "GET /b", "GET /c", "GET /d", OTHER, "GET /a"] {
        r.replay_error(name);
    }
    let s = r.snapshot(false);
    checked(&s);
    let names: Vec<_> = s.endpoints.iter().map(|e| e.endpoint.as_str()).collect();
    assert_eq!(names, ["GET /a", "GET /b", OTHER]);
    assert_eq!(endpoint(&s, OTHER).counts.seen, 3);
    assert_eq!(endpoint(&s, "GET /a").counts.seen, 2);
}

// Depends on `crate::endpoint::generalise_location`.
#[test]
fn locations_count_raw_noise_and_reported_once_per_request() {
    let mut r = results(10, 10);
    let req = request("/a");
    let raw = [
        diff("body:/items/0/price", json!(1), json!(2)),
        diff("body:/items/1/price", json!(3), json!(4)),
        diff("header:date", json!("x"), json!("y")),
    ];
    let reported = [diff("body:/items/1/price", json!(3), json!(4))];
    r.compared(
        "GET /a",
        compared(5, Judged::Mismatched, &raw, &reported, &req, 3),
    );
    r.compared("GET /a", compared(6, Judged::Noise, &raw, &[], &req, 3));
    // Reported locations of a request not mismatched are not reported.
    r.compared(
        "GET /a",
        compared(7, Judged::Noise, &raw, &reported, &req, 3),
    );
    let s = r.snapshot(false);
    checked(&s);
    let e = endpoint(&s, "GET /a");
    let locs: Vec<_> = e
        .differences
        .iter()
        .map(|l| (l.location.as_str(), l.raw, l.noise, l.reported))
        .collect();
    assert_eq!(
        locs,
        [("body:/items/*/price", 3, 2, 1), ("header:date", 3, 3, 0)]
    );
    let price = &e.differences[0];
    assert_eq!(price.example_ids, [5]);
    assert_eq!(
        (&price.example_old, &price.example_new),
        (&json!(3), &json!(4))
    );
    assert_eq!(e.differences[1].example_ids, Vec::<u64>::new());
    assert_eq!(e.differences[1].example_old, Value::Null);
}

// Depends on `crate::endpoint::generalise_location`.
#[test]
fn location_examples_keep_the_lowest_ids_cut_and_redacted() {
    let mut r = results(10, 10);
    let req = request("/a");
    let long = "é".repeat(300);
    for id in [9, 4, 7, 2, 8] {
        let d = [
            diff("header:X-Api-Key", json!(format!("k{id}")), Value::Null),
            diff(
                "body:/name",
                json!({"v": long.clone(), "id": id}),
                json!(id),
            ),
        ];
        r.compared("GET /a", compared(id, Judged::Mismatched, &d, &d, &req, 3));
    }
    let s = r.snapshot(false);
    checked(&s);
    let e = endpoint(&s, "GET /a");
    for l in &e.differences {
        assert_eq!(l.example_ids, [2, 4, 7], "{}", l.location);
        assert_eq!(l.reported, 5);
    }
    let key = e
        .differences
        .iter()
        .find(|l| l.location == "header:X-Api-Key")
        .unwrap();
    assert_eq!(key.example_old, json!(REDACTED));
    assert_eq!(key.example_new, Value::Null);
    let name = e
        .differences
        .iter()
        .find(|l| l.location == "body:/name")
        .unwrap();
    assert_eq!(name.example_new, json!(2));
    let v = name.example_old["v"].as_str().unwrap();
    assert!(v.starts_with(&"é".repeat(100)), "{v}");
    assert!(v.ends_with("…(+400 bytes)"), "{v}");
    assert_eq!(name.example_old["id"], json!(2));
}

// Depends on `crate::endpoint::generalise_location`.
#[test]
fn locations_beyond_the_bound_count_in_other_locations() {
    let mut r = results(10, 2);
    let req = request("/a");
    let d = [
        diff("status", json!(200), json!(500)),
        diff("header:etag", json!("a"), json!("b")),
    ];
    r.compared("GET /a", compared(1, Judged::Mismatched, &d, &d, &req, 3));
    let more = [
        diff("body:/x", json!(1), json!(2)),
        diff("body:/y", json!(1), json!(2)),
        diff("status", json!(200), json!(500)),
    ];
    r.compared(
        "GET /a",
        compared(2, Judged::Mismatched, &more, &more, &req, 3),
    );
    // Noise at a location beyond the bound is not counted anywhere.
    r.compared("GET /a", compared(3, Judged::Noise, &more, &[], &req, 3));
    let s = r.snapshot(false);
    checked(&s);
    let e = endpoint(&s, "GET /a");
    let locs: Vec<_> = e
        .differences
        .iter()
        .map(|l| (l.location.as_str(), l.raw, l.noise, l.reported))
        .collect();
    assert_eq!(locs, [("status", 3, 1, 2), ("header:etag", 1, 0, 1)]);
    assert_eq!(e.other_locations, 2);
}

#[test]
fn examples_are_the_first_mismatched_requests_redacted() {
    let mut r = results(10, 10);
    let mut req = request("/login?user=bob&api_key=s3cret&page=1");
    req.method = "POST".into();
    req.headers = vec![
        Header::new("Host", "example.com"),
        Header::new("Authorization", "Bearer abc"),
        Header::new("COOKIE", "sid=1"),
        Header::new("Proxy-Authorization", "Basic x"),
        Header::new("X-API-Key", "k"),
        Header::new("X-Trace", "t1"),
    ];
    req.body = Bytes::from("ü".repeat(3000));
    let mut binary = request("/upload");
    binary.body = Bytes::from_static(&[0xff, 0xfe, 0x00, 0x01]);
    for id in [10, 3, 7, 1] {
        let req = if id == 7 { &binary } else { &req };
        r.compared(
            "POST /login",
            compared(id, Judged::Mismatched, &[], &[], req, 3),
        );
    }
    // Not mismatched: never an example.
    r.compared("POST /login", compared(0, Judged::Noise, &[], &[], &req, 3));
    let s = r.snapshot(false);
    checked(&s);
    let e = endpoint(&s, "POST /login");
    assert_eq!(
        e.examples.iter().map(|x| x.id).collect::<Vec<_>>(),
        [1, 3, 7]
    );
    let x = &e.examples[0];
    assert_eq!(x.method, "POST");
    assert_eq!(x.target, "/login?user=bob&api_key=[redacted]&page=1");
    let headers: Vec<(&str, &str)> = x
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        headers,
        [
            ("Host", "example.com"),
            ("Authorization", REDACTED),
            ("COOKIE", REDACTED),
            ("Proxy-Authorization", REDACTED),
            ("X-API-Key", REDACTED),
            ("X-Trace", "t1"),
        ]
    );
    assert_eq!(x.body, "ü".repeat(2048));
    assert_eq!(x.body_omitted, 6000 - 4096);
    let b = &e.examples[2];
    assert_eq!((b.body.as_str(), b.body_omitted), ("", 4));
}

#[test]
fn fold_moves_results_into_the_template() {
    let mut r = results(10, 10);
    let req = request("/users/1");
    r.lost("GET /users/1", "gap");
    r.compared(
        "GET /users/1",
        compared(1, Judged::Mismatched, &[], &[], &req, 3),
    );
    r.compared(
        "GET /users/2",
        compared(2, Judged::Matched, &[], &[], &req, 3),
    );
    r.replay_error("GET /users/{id}");
    r.fold("GET /users/1", "GET /users/{id}");
    r.fold("GET /users/2", "GET /users/{id}");
    r.fold("GET /nothing", "GET /users/{id}");
    r.fold("GET /users/{id}", "GET /users/{id}");
    let s = r.snapshot(false);
    checked(&s);
    assert_eq!(s.endpoints.len(), 1);
    let e = &s.endpoints[0];
    assert_eq!(e.endpoint, "GET /users/{id}");
    assert_eq!((e.counts.seen, e.counts.compared), (4, 2));
    assert_eq!((e.counts.lost, e.counts.replay_errors), (1, 1));
    assert_eq!(e.latency.new.count(), 2);
    assert_eq!(e.examples.len(), 1);
}

fn timed(r: &mut Results, n: u64, new_ms: u64, secondary_ms: u64) {
    let req = request("/a");
    for id in 0..n {
        r.compared(
            "GET /a",
            Compared {
                new_ns: new_ms * 1_000_000,
                secondary_ns: Some(secondary_ms * 1_000_000),
                ..compared(id, Judged::Matched, &[], &[], &req, 1)
            },
        );
    }
}

#[test]
fn a_slower_new_service_is_marked_a_regression() {
    let mut r = results(10, 10);
    timed(&mut r, 20, 50, 20);
    let s = r.snapshot(false);
    checked(&s);
    let reg = s.endpoints[0].regression.as_ref().expect("a regression");
    assert_eq!(reg.quantile, "p50");
    // Within the histograms' 1 %.
    assert!((reg.new_ms - 50.0).abs() < 0.5, "{reg:?}");
    assert!((reg.secondary_ms - 20.0).abs() < 0.2, "{reg:?}");
    assert!((reg.ratio - 2.5).abs() < 0.05, "{reg:?}");
}

#[test]
fn equally_fast_or_too_few_or_too_close_is_not_a_regression() {
    let mut equal = results(10, 10);
    timed(&mut equal, 20, 20, 20);
    assert_eq!(equal.snapshot(false).endpoints[0].regression, None);
    // Slower, but fewer than min_samples.
    let mut few = results(10, 10);
    timed(&mut few, 9, 50, 20);
    assert_eq!(few.snapshot(false).endpoints[0].regression, None);
    // 2 × slower but only 2 ms: below min_delta_ms.
    let mut close = results(10, 10);
    timed(&mut close, 20, 4, 2);
    assert_eq!(close.snapshot(false).endpoints[0].regression, None);
}

#[test]
fn a_slower_p99_alone_is_marked_at_p99() {
    let mut r = results(10, 10);
    timed(&mut r, 200, 20, 20);
    timed(&mut r, 10, 500, 30);
    let reg = r.snapshot(false).endpoints[0]
        .regression
        .clone()
        .expect("a regression");
    assert_eq!(reg.quantile, "p99");
}
