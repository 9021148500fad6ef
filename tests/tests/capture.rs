//! Kernel capture, end to end: the agent attaches its TC program for real in
//! test-made network namespaces, a real HTTP server answers a recording
//! client, and the pcap the agent writes must rebuild, byte for byte, what
//! the client sent and received.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{net::SocketAddr, thread, time::Duration};

use parallelrun_tests::{
    agent::{Agent, attached, counter, stats},
    client::{self, Conversation},
    netns::{Family, Netns, Pair, run},
    pcap, require_root,
    server::Server,
};

const MIB: usize = 1 << 20;

/// Keep-alive requests of several sizes, including a 1 MiB response that
/// the sender's stack hands to the device as GSO super-packets.
const PATHS: &[&str] = &[
    "/bytes/100",
    "/bytes/5000",
    "/bytes/1048576",
    "/chunked/70000",
    "/nope",
];

/// Where the agent runs relative to the service.
#[derive(Clone, Copy, Debug)]
enum Side {
    /// On the service's own interface: requests arrive on ingress,
    /// responses leave on egress.
    Service,
    /// On the client's veth, facing the service: the reverse.
    Host,
}

/// Both directions of `conv`, rebuilt from the capture, equal what the client
/// sent and received; the connection's SYNs and FINs were captured.
fn assert_captured_exactly(packets: &[pcap::Packet], conv: &Conversation) -> usize {
    let req = pcap::stream(packets, conv.local, conv.peer);
    let resp = pcap::stream(packets, conv.peer, conv.local);
    assert!(
        req.bytes == conv.sent,
        "request stream differs from what the client sent ({} vs {} bytes)",
        req.bytes.len(),
        conv.sent.len()
    );
    assert!(
        resp.bytes == conv.received,
        "response stream differs from what the client received ({} vs {} bytes)",
        resp.bytes.len(),
        conv.received.len()
    );
    assert!(req.saw_syn && resp.saw_syn, "SYN missing");
    assert!(req.saw_fin && resp.saw_fin, "FIN missing");
    resp.max_payload
}

fn capture_on_veth(family: Family, side: Side) {
    require_root();
    let pair = Pair::new(family);
    let server = Server::start(&pair.server, SocketAddr::new(pair.server_ip, 8080));
    let dir = tempfile::tempdir().unwrap();
    let pcap_path = dir.path().join("capture.pcap");
    let stats_path = dir.path().join("stats.json");
    let (ns, iface) = match side {
        Side::Service => (&pair.server, &pair.server_if),
        Side::Host => (&pair.client, &pair.client_if),
    };
    let old = server.addr.to_string();
    let mut agent = Agent::start(
        ns,
        &[
            "record",
            "--iface",
            iface,
            "--old",
            &old,
            "--pcap",
            pcap_path.to_str().unwrap(),
            "--stats-json",
            stats_path.to_str().unwrap(),
        ],
    );

    let addr = server.addr;
    let convs: Vec<Conversation> = pair.client.run(move || {
        vec![
            client::keep_alive(addr, PATHS),
            client::keep_alive(addr, &["/bytes/1"]),
        ]
    });
    assert_eq!(convs[0].body_lens, vec![100, 5000, MIB, 70000, 10]);
    thread::sleep(Duration::from_millis(300));
    agent.stop();

    let packets = pcap::read(&pcap_path);
    let max_payload = convs
        .iter()
        .map(|c| assert_captured_exactly(&packets, c))
        .max()
        .unwrap();
    // The 1 MiB response left the server's stack in super-packets larger
    // than any MTU-sized frame: the capture kept them whole.
    assert!(
        max_payload > 1500,
        "largest captured payload {max_payload}: no GSO/GRO packet seen"
    );

    let s = stats(&stats_path);
    assert_eq!(counter(&s, "kernel", "ringbuf_full_drops"), 0);
    assert_eq!(counter(&s, "kernel", "truncated"), 0);
    assert_eq!(
        counter(&s, "kernel", "records_emitted"),
        counter(&s, "agent", "records")
    );
}

#[test]
fn ipv4_on_the_service_interface() {
    capture_on_veth(Family::V4, Side::Service);
}

#[test]
fn ipv6_on_the_service_interface() {
    capture_on_veth(Family::V6, Side::Service);
}

#[test]
fn ipv4_on_a_host_side_veth() {
    capture_on_veth(Family::V4, Side::Host);
}

#[test]
fn ipv6_on_a_host_side_veth() {
    capture_on_veth(Family::V6, Side::Host);
}

/// On `lo` every packet passes egress and then ingress: the agent must
/// deliver each segment once. Also checks that tcpdump reads the file.
#[test]
fn loopback_delivers_each_segment_once() {
    require_root();
    let ns = Netns::new("prl");
    let server = Server::start(&ns, "127.0.0.1:0".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let pcap_path = dir.path().join("lo.pcap");
    let old = format!(":{}", server.addr.port());
    let mut agent = Agent::start(
        &ns,
        &[
            "record",
            "--iface",
            "lo",
            "--old",
            &old,
            "--pcap",
            pcap_path.to_str().unwrap(),
        ],
    );
    let addr = server.addr;
    let conv =
        ns.run(move || client::keep_alive(addr, &["/bytes/3000", "/bytes/200000", "/bytes/10"]));
    thread::sleep(Duration::from_millis(300));
    agent.stop();

    let packets = pcap::read(&pcap_path);
    assert_captured_exactly(&packets, &conv);
    let dups = pcap::duplicates(&packets);
    assert!(
        dups.is_empty(),
        "{} segments captured twice, first: {:?}",
        dups.len(),
        dups[0]
    );

    let out = run(std::process::Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&pcap_path));
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(
        lines,
        packets.len(),
        "tcpdump read a different number of packets"
    );
}

/// TCX links belong to the process that made them: when the agent dies by
/// SIGKILL, with no chance to clean up, the kernel removes its programs
/// from the interface.
#[test]
fn sigkill_leaves_nothing_attached() {
    require_root();
    let pair = Pair::new(Family::V4);
    let dir = tempfile::tempdir().unwrap();
    let pcap_path = dir.path().join("k.pcap");
    let iface = pair.server_if.clone();
    assert_eq!(attached(&pair.server, &iface), [0, 0]);
    let mut agent = Agent::start(
        &pair.server,
        &[
            "record",
            "--iface",
            &iface,
            "--old",
            ":80",
            "--pcap",
            pcap_path.to_str().unwrap(),
        ],
    );
    assert_eq!(attached(&pair.server, &iface), [1, 1]);
    let st = agent.stop_with(libc::SIGKILL);
    assert!(!st.success());
    assert_eq!(
        attached(&pair.server, &iface),
        [0, 0],
        "programs left attached after SIGKILL"
    );
}

/// A ring buffer far too small for a 1 MiB response overflows: the kernel
/// side counts every record it could not write, while the production
/// exchange completes intact (the program never drops a packet).
#[test]
fn ring_buffer_overrun_is_counted_and_production_is_untouched() {
    require_root();
    let pair = Pair::new(Family::V4);
    let server = Server::start(&pair.server, SocketAddr::new(pair.server_ip, 8080));
    let dir = tempfile::tempdir().unwrap();
    let pcap_path = dir.path().join("small.pcap");
    let stats_path = dir.path().join("stats.json");
    let old = server.addr.to_string();
    let mut agent = Agent::start(
        &pair.server,
        &[
            "record",
            "--iface",
            &pair.server_if,
            "--old",
            &old,
            "--ring-size",
            "16KiB",
            "--pcap",
            pcap_path.to_str().unwrap(),
            "--stats-json",
            stats_path.to_str().unwrap(),
        ],
    );
    let addr = server.addr;
    let convs = pair.client.run(move || {
        (0..3)
            .map(|_| client::keep_alive(addr, &["/bytes/1048576"]))
            .collect::<Vec<_>>()
    });
    for c in &convs {
        assert_eq!(c.body_lens, vec![MIB]);
        let body = &c.received[c.received.len() - MIB..];
        assert!(
            body == parallelrun_tests::body_pattern(MIB),
            "production response corrupted"
        );
    }
    thread::sleep(Duration::from_millis(300));
    agent.stop();

    let s = stats(&stats_path);
    let drops = counter(&s, "kernel", "ringbuf_full_drops");
    assert!(drops > 0, "no ring-buffer drops counted: {s}");
    // Everything the kernel did write reached the file.
    assert_eq!(
        counter(&s, "kernel", "records_emitted"),
        counter(&s, "agent", "records")
    );
    assert_eq!(
        pcap::read(&pcap_path).len() as u64,
        counter(&s, "agent", "pcap_packets")
    );
    assert!(
        agent.stderr().contains("ring buffer was full"),
        "no warning for the user"
    );
}

/// A missing interface is a clear error, not a panic, and nothing attaches.
#[test]
fn missing_interface_is_a_clear_error() {
    require_root();
    let ns = Netns::new("pre");
    let dir = tempfile::tempdir().unwrap();
    let out = ns
        .command(parallelrun_tests::agent::binary().to_str().unwrap())
        .args(["record", "--iface", "nosuch0", "--old", ":80", "--pcap"])
        .arg(dir.path().join("x.pcap"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interface 'nosuch0' not found"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
