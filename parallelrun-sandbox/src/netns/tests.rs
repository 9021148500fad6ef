use super::unique;

#[test]
fn unique_names_fit_an_interface_name() {
    let (a, b) = (unique("prs"), unique("prs"));
    assert_ne!(a, b);
    assert!(a.starts_with("prs"));
    // IFNAMSIZ - 1, for the counters a test run reaches.
    assert!(a.len() <= 15, "{a}");
}
