use bytes::Bytes;

use super::*;
use crate::model::Header;

fn req(method: &str, target: &str) -> Request {
    Request {
        method: method.into(),
        target: target.into(),
        version: 1,
        headers: Vec::new(),
        body: Bytes::new(),
        trailers: Vec::new(),
        raw: Bytes::new(),
    }
}

fn call(path: &str) -> Request {
    let mut r = req("POST", path);
    r.headers = vec![Header::new("content-type", "application/grpc+proto")];
    r
}

const S: u64 = 1_000_000_000;

#[test]
fn breaker_trips_after_repeated_connect_failures_and_probes() {
    let b = Breaker::default();
    for _ in 0..Breaker::TRIP_AFTER - 1 {
        b.record(true, 10 * S);
    }
    assert!(b.allow(10 * S), "not yet tripped");
    b.record(true, 10 * S);
    assert!(b.is_open());
    assert!(!b.allow(10 * S + 1), "open: skip");
    // After PROBE_EVERY one probe goes through, the next caller waits.
    assert!(b.allow(11 * S + 1));
    assert!(!b.allow(11 * S + 2));
    // The probe succeeded: closed again.
    b.record(false, 11 * S + 3);
    assert!(!b.is_open());
    assert!(b.allow(11 * S + 4));
}

#[test]
fn other_errors_do_not_trip_the_breaker() {
    let b = Breaker::default();
    for _ in 0..10 {
        b.record(false, S);
    }
    assert!(!b.is_open());
}

#[test]
fn policy_filters_methods_and_paths() {
    let p = Policy {
        path_prefixes: vec!["/api/".into()],
        exclude_prefixes: vec!["/api/admin".into()],
        ..Policy::default()
    };
    assert_eq!(p.filter(&req("POST", "/api/x")), Some(SkipReason::Method));
    assert_eq!(p.filter(&req("GET", "/other")), Some(SkipReason::Filter));
    assert_eq!(
        p.filter(&req("GET", "/api/admin/users")),
        Some(SkipReason::Filter)
    );
    assert_eq!(p.filter(&req("get", "/api/x?q=/api/admin")), None);
}

#[test]
fn grpc_calls_are_replayed_only_when_a_method_glob_matches() {
    let none = Policy {
        methods: vec!["GET".into(), "POST".into()],
        ..Policy::default()
    };
    // POST among the methods does not let gRPC calls through.
    assert_eq!(
        none.filter(&call("/u.v1.Users/Get")),
        Some(SkipReason::Method)
    );
    assert_eq!(none.filter(&req("POST", "/u.v1.Users/Get")), None);
    let p = Policy {
        grpc_methods: vec!["/u.v1.Users/Get*".into(), "/health.*".into()],
        exclude_prefixes: vec!["/u.v1.Users/GetSecret".into()],
        ..Policy::default()
    };
    assert_eq!(p.filter(&call("/u.v1.Users/Get")), None);
    assert_eq!(p.filter(&call("/u.v1.Users/GetMany")), None);
    assert_eq!(p.filter(&call("/health.v1.Health/Check")), None);
    assert_eq!(
        p.filter(&call("/u.v1.Users/Create")),
        Some(SkipReason::Method)
    );
    assert_eq!(
        p.filter(&call("/u.v1.Users/GetSecret")),
        Some(SkipReason::Filter)
    );
}

#[test]
fn sampling_keeps_the_fraction_and_a_seed_repeats_it() {
    let policy = |sample, seed| Policy {
        sample,
        sample_seed: Some(seed),
        ..Policy::default()
    };
    let run = |p: &Policy| {
        let mut s = Sampler::new(p);
        (0..10_000).map(|_| s.sampled()).collect::<Vec<_>>()
    };
    let a = run(&policy(0.25, 7));
    let kept = a.iter().filter(|k| **k).count();
    // 10 000 draws at 0.25: 2 500 ± 43 (one sigma).
    assert!((2_300..=2_700).contains(&kept), "{kept}");
    assert_eq!(run(&policy(0.25, 7)), a, "same seed, same choice");
    assert_ne!(run(&policy(0.25, 8)), a, "another seed, another choice");
    assert!(run(&policy(1.0, 7)).iter().all(|k| *k), "1 keeps all");
    let unseeded = Policy {
        sample: 0.5,
        ..Policy::default()
    };
    let kept = run(&unseeded).iter().filter(|k| **k).count();
    assert!((4_700..=5_300).contains(&kept), "{kept}");
}
