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
