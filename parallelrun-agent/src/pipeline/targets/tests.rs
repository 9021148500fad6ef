use super::*;

#[test]
fn replay_targets_must_not_be_old_services() {
    let old: Vec<ServiceAddr> = vec![":8080".parse().unwrap()];
    let new: SocketAddr = "10.0.0.9:8080".parse().unwrap();
    assert!(check_targets(&old, &[("--new", new)]).is_err());
    let new: SocketAddr = "10.0.0.9:9090".parse().unwrap();
    assert!(check_targets(&old, &[("--new", new)]).is_ok());
}
