use super::*;

fn old(list: &[&str]) -> Vec<ServiceAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn check(olds: &[&str], target: &str, host: &[&str]) -> Result<(), TargetError> {
    let host: Vec<IpAddr> = host.iter().map(|h| h.parse().unwrap()).collect();
    check_targets(&old(olds), &[("--new", target.parse().unwrap())], &host)
}

/// The host of most tests: one interface address besides loopback.
const HOST: &[&str] = &["127.0.0.1", "::1", "10.0.0.5"];

#[test]
fn replay_targets_must_not_be_old_services() {
    let old: Vec<ServiceAddr> = vec![":8080".parse().unwrap()];
    let new: SocketAddr = "10.0.0.9:8080".parse().unwrap();
    assert!(check_targets(&old, &[("--new", new)], &[]).is_err());
    let new: SocketAddr = "10.0.0.9:9090".parse().unwrap();
    assert!(check_targets(&old, &[("--new", new)], &[]).is_ok());
}

#[test]
fn an_old_address_is_refused() {
    let err = check(&["10.0.0.5:8080"], "10.0.0.5:8080", &[]).unwrap_err();
    assert!(matches!(err, TargetError::OldService { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "--new 10.0.0.5:8080 is an old service (--old 10.0.0.5:8080): replay targets must be \
         other instances, or the old service would receive replayed traffic"
    );
    // IPv4-mapped is the IPv4 address.
    let err = check(&["10.0.0.5:8080"], "[::ffff:10.0.0.5]:8080", &[]).unwrap_err();
    assert!(matches!(err, TargetError::OldService { .. }), "{err:?}");
}

#[test]
fn every_address_of_an_old_port_is_refused() {
    for target in ["10.0.0.9:8080", "127.0.0.1:8080", "[fd00::9]:8080"] {
        let err = check(&[":8080"], target, &[]).unwrap_err();
        assert!(
            matches!(err, TargetError::OldOnEveryAddress { .. }),
            "{target}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("--old :8080"), "{msg}");
        assert!(msg.contains("another port"), "{msg}");
        assert!(msg.contains("--old IP:8080"), "{msg}");
    }
}

/// `--old 10.0.0.5:8080 --new 127.0.0.1:8080`: an old service listening on
/// all addresses answers both.
#[test]
fn loopback_on_an_old_port_is_refused() {
    for target in [
        "127.0.0.1:8080",
        "127.0.0.2:8080",
        "[::1]:8080",
        "[::ffff:127.0.0.1]:8080",
    ] {
        let err = check(&["10.0.0.5:8080"], target, &[]).unwrap_err();
        let TargetError::OldServicesHost { place, .. } = &err else {
            panic!("{target}: {err:?}");
        };
        assert_eq!(*place, "a loopback address", "{target}");
        let msg = err.to_string();
        assert!(msg.contains("0.0.0.0:8080 or [::]:8080"), "{msg}");
        assert!(msg.contains("another port"), "{msg}");
    }
}

#[test]
fn the_unspecified_address_on_an_old_port_is_refused() {
    for target in ["0.0.0.0:8080", "[::]:8080"] {
        let err = check(&["10.0.0.5:8080"], target, &[]).unwrap_err();
        let TargetError::OldServicesHost { place, .. } = &err else {
            panic!("{target}: {err:?}");
        };
        assert_eq!(*place, "the unspecified address (this host)", "{target}");
    }
}

#[test]
fn an_address_of_this_host_on_an_old_port_is_refused() {
    let host = ["127.0.0.1", "10.0.0.5", "10.0.0.6", "fd00::6"];
    for target in ["10.0.0.6:8080", "[fd00::6]:8080", "[::ffff:10.0.0.6]:8080"] {
        let err = check(&["10.0.0.5:8080"], target, &host).unwrap_err();
        let TargetError::OldServicesHost { place, .. } = &err else {
            panic!("{target}: {err:?}");
        };
        assert_eq!(*place, "an address of this host", "{target}");
    }
}

#[test]
fn other_ports_and_other_hosts_are_accepted() {
    // Another port, on this host.
    for target in [
        "127.0.0.1:9090",
        "10.0.0.5:9090",
        "0.0.0.0:9090",
        "[::1]:9090",
    ] {
        assert_eq!(
            check(&["10.0.0.5:8080", ":8081"], target, HOST),
            Ok(()),
            "{target}"
        );
    }
    // The old service's port on other hosts (the README's example).
    let host: Vec<IpAddr> = HOST.iter().map(|h| h.parse().unwrap()).collect();
    let targets = [
        ("--new", "10.0.0.9:8080".parse().unwrap()),
        ("--secondary", "10.0.0.6:8080".parse().unwrap()),
    ];
    assert_eq!(
        check_targets(&old(&["10.0.0.5:8080"]), &targets, &host),
        Ok(())
    );
}

#[test]
fn every_target_and_every_old_service_is_checked() {
    let host: Vec<IpAddr> = HOST.iter().map(|h| h.parse().unwrap()).collect();
    let targets = [
        ("--new", "10.0.0.9:9090".parse().unwrap()),
        ("--secondary", "127.0.0.1:8081".parse().unwrap()),
    ];
    let err =
        check_targets(&old(&["10.0.0.5:8080", "10.0.0.5:8081"]), &targets, &host).unwrap_err();
    let TargetError::OldServicesHost { flag, old, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(flag, "--secondary");
    assert_eq!(old.to_string(), "10.0.0.5:8081");
}

/// What getifaddrs lists is local (a socket binds to it), and loopback is
/// listed when it is configured.
#[test]
fn host_addresses_lists_this_hosts_interfaces() {
    let addrs = host_addresses().unwrap();
    let mut unique = addrs.clone();
    unique.dedup();
    assert_eq!(unique, addrs, "sorted, each once");
    let is_link_local = |a: &IpAddr| matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local());
    for a in addrs.iter().filter(|a| !is_link_local(a)) {
        assert!(
            std::net::UdpSocket::bind((*a, 0)).is_ok(),
            "{a} is listed but not local"
        );
    }
    if std::net::UdpSocket::bind("127.0.0.1:0").is_ok() {
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }
}
