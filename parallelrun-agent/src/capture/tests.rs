use super::*;

#[test]
fn wakeup_threshold_is_a_quarter_of_the_ring_up_to_256_kib() {
    const KIB: u32 = 1024;
    for (ring, want) in [
        (4 * KIB, 1024),
        (16 * KIB, 4 * 1024),
        (256 * KIB, 64 * 1024),
        (1024 * KIB, 256 * 1024),
        (32 * 1024 * KIB, 256 * 1024),
        (1 << 31, 256 * 1024),
    ] {
        assert_eq!(wakeup_threshold(ring), want, "ring of {ring} bytes");
    }
}

#[test]
fn wakeup_threshold_is_always_reachable() {
    // Below the ring's capacity, and above zero, so a record can cross it.
    for shift in 12..32 {
        let ring = 1u32 << shift;
        let t = wakeup_threshold(ring);
        assert!(t > 0 && t < u64::from(ring), "ring {ring}: threshold {t}");
    }
}

#[test]
fn malformed_counter_is_serialised_and_exported() {
    let mut k = KernelCounters::default();
    k.0[Counter::Malformed as usize] = 3;
    let json = serde_json::to_value(k).unwrap();
    assert_eq!(json["malformed"], 3);
    assert!(k.iter().any(|(name, v)| name == "malformed" && v == 3));

    let m = crate::metrics::Metrics::new();
    m.set_kernel(&k);
    let text = m.encode();
    assert!(
        text.lines()
            .any(|l| l == "parallelrun_kernel_malformed_total 3"),
        "{text}"
    );
}
