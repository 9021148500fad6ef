use super::*;

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
    assert_eq!(p.filter("POST", "/api/x"), Some(SkipReason::Method));
    assert_eq!(p.filter("GET", "/other"), Some(SkipReason::Filter));
    assert_eq!(
        p.filter("GET", "/api/admin/users"),
        Some(SkipReason::Filter)
    );
    assert_eq!(p.filter("get", "/api/x?q=/api/admin"), None);
}
