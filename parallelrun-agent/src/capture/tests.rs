use super::*;

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
