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

/// `parallelrun record` on `iface` in `ns`, writing a pcap and its final
/// counters into a temporary directory; `args` go after `record`.
struct Recording {
    agent: Agent,
    pcap: std::path::PathBuf,
    stats: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Recording {
    fn start(ns: &Netns, iface: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("capture.pcap");
        let stats = dir.path().join("stats.json");
        let mut argv = vec!["record", "--iface", iface];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&[
            "--pcap",
            pcap.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
        ]);
        Self {
            agent: Agent::start(ns, &argv),
            pcap,
            stats,
            _dir: dir,
        }
    }
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
    let (ns, iface) = match side {
        Side::Service => (&pair.server, &pair.server_if),
        Side::Host => (&pair.client, &pair.client_if),
    };
    let old = server.addr.to_string();
    let Recording {
        mut agent,
        pcap: pcap_path,
        stats: stats_path,
        _dir,
    } = Recording::start(ns, iface, &["--old", &old]);

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
    let retransmitted = || raw::snmp(&ns)["Tcp:RetransSegs"];
    let before = retransmitted();
    let conv =
        ns.run(move || client::keep_alive(addr, &["/bytes/3000", "/bytes/200000", "/bytes/10"]));
    thread::sleep(Duration::from_millis(300));
    agent.stop();
    // TCP itself may send a segment twice on a loaded machine (a tail loss
    // probe): those copies were on the wire. Any other duplicate would be
    // the program seeing one segment on two hooks.
    let resent = usize::try_from(retransmitted() - before).unwrap_or(0);

    let packets = pcap::read(&pcap_path);
    assert_captured_exactly(&packets, &conv);
    let dups = pcap::duplicates(&packets);
    assert!(
        dups.len() <= resent,
        "{} segments captured twice but TCP retransmitted {resent}, first: {:?}",
        dups.len(),
        dups.first()
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
    let old = server.addr.to_string();
    let Recording {
        mut agent,
        pcap: pcap_path,
        stats: stats_path,
        _dir,
    } = Recording::start(
        &pair.server,
        &pair.server_if,
        &["--old", &old, "--ring-size", "16KiB"],
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

/// Headers the TC program must not parse: an IPv4 header length (IHL) or a
/// TCP data offset below 5 words. Sent as raw Ethernet frames (AF_PACKET)
/// from the client namespace to an old service, each is passed to the
/// server's stack (which counts it as an IP header error or a TCP error:
/// had the program dropped it, those counters would not move), counted as
/// `kernel.malformed`, and never recorded. A well-formed segment sent the
/// same way is recorded, so the path itself is proven to work.
///
/// The frames are made so that a parser trusting the header would match an
/// old service: with IHL 0 it would read the ports at the IP header's start
/// (the "destination port" is tot_len, 8080); with IHL 4 at its byte 16 (the
/// "destination port" is the last two bytes of 10.77.0.1, i.e. 1).
#[test]
fn malformed_headers_pass_are_counted_and_never_recorded() {
    require_root();
    let pair = Pair::new(Family::V4);
    let Recording {
        mut agent,
        pcap: pcap_path,
        stats: stats_path,
        _dir,
    } = Recording::start(
        &pair.server,
        &pair.server_if,
        &["--old", "10.77.0.1:8080", "--old", "10.77.0.1:1"],
    );

    let server_mac = raw::mac(&pair.server, &pair.server_if);
    let before = raw::snmp(&pair.server);
    let control = b"well-formed control segment".as_slice();
    let frames = vec![
        // IHL 0 and 4: a header shorter than its fixed part.
        raw::frame(server_mac, 0, 5, 8080, 8080, b"malformed ihl 0"),
        raw::frame(server_mac, 4, 5, 0, 8080, b"malformed ihl 4"),
        // TCP data offset 0 and 4, in an otherwise valid IPv4 packet.
        raw::frame(server_mac, 5, 0, 0, 8080, b"malformed doff 0"),
        raw::frame(server_mac, 5, 4, 0, 8080, b"malformed doff 4"),
        raw::frame(server_mac, 5, 5, 0, 8080, control),
    ];
    let client_if = pair.client_if.clone();
    pair.client.run(move || raw::send(&client_if, &frames));
    thread::sleep(Duration::from_millis(300));
    let after = raw::snmp(&pair.server);
    agent.stop();

    // Passed: the server's stack saw each and dropped it itself.
    let delta = |key: &str| after[key] - before[key];
    assert_eq!(delta("Ip:InHdrErrors"), 2, "IHL < 5 frames not passed on");
    assert_eq!(
        delta("Tcp:InErrs"),
        2,
        "data offset < 5 segments not passed on"
    );

    let s = stats(&stats_path);
    assert_eq!(counter(&s, "kernel", "malformed"), 4, "{s}");
    assert_eq!(counter(&s, "kernel", "read_errors"), 0, "{s}");
    assert_eq!(
        counter(&s, "kernel", "records_emitted"),
        counter(&s, "agent", "records")
    );
    // Recorded: the control segment (once), and whatever the server
    // answered it with (a RST: nothing listens); none of the malformed.
    let service: SocketAddr = "10.77.0.1:8080".parse().unwrap();
    let packets = pcap::read(&pcap_path);
    let requests: Vec<_> = packets
        .iter()
        .filter(|p| p.dst.ip() == service.ip())
        .collect();
    assert_eq!(requests.len(), 1, "requests recorded: {requests:?}");
    assert_eq!(requests[0].dst, service);
    assert_eq!(requests[0].payload, control);
    assert!(
        packets.iter().all(|p| p.src == service || p.dst == service),
        "{packets:?}"
    );
}

/// Raw frames for `malformed_headers_pass_are_counted_and_never_recorded`.
mod raw {
    use std::{collections::HashMap, os::fd::AsRawFd as _, os::fd::FromRawFd as _};

    use parallelrun_tests::netns::{Netns, run};

    /// The interface's MAC address, as the namespace's /sys shows it.
    pub fn mac(ns: &Netns, iface: &str) -> [u8; 6] {
        let out = run(ns
            .command("cat")
            .arg(format!("/sys/class/net/{iface}/address")));
        let text = String::from_utf8(out.stdout).unwrap();
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("MAC address"))
            .collect();
        bytes.try_into().expect("6-byte MAC address")
    }

    /// `/proc/net/snmp` of the namespace as `"Proto:Field" -> value`.
    pub fn snmp(ns: &Netns) -> HashMap<String, i64> {
        let out = run(ns.command("cat").arg("/proc/net/snmp"));
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut map = HashMap::new();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let mut names = names.split_whitespace();
            let proto = names.next().unwrap_or_default().to_owned();
            for (name, value) in names.zip(values.split_whitespace().skip(1)) {
                if let Ok(v) = value.parse() {
                    map.insert(format!("{proto}{name}"), v);
                }
            }
        }
        map
    }

    fn checksum(chunks: &[&[u8]]) -> u16 {
        let mut sum = 0u32;
        for b in chunks.iter().flat_map(|c| c.chunks(2)) {
            sum += u32::from(u16::from_be_bytes([b[0], *b.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// An Ethernet frame from 10.77.0.2 to 10.77.0.1:`dport` carrying
    /// `payload`, with a 20-byte IPv4 header that says `ihl` words and a
    /// 20-byte TCP header that says `doff` words; `tot_len` 0 means the
    /// real length. Checksums are right for what the headers say.
    pub fn frame(
        dst: [u8; 6],
        ihl: u8,
        doff: u8,
        tot_len: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let (src_ip, dst_ip) = ([10, 77, 0, 2], [10, 77, 0, 1]);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40_000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq; ack stays 0
        tcp[12] = doff << 4;
        tcp[13] = 0x18; // PSH, ACK
        tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
        tcp.extend_from_slice(payload);
        let tcp_len = (tcp.len() as u16).to_be_bytes();
        let sum = checksum(&[&src_ip, &dst_ip, &[0, 6], &tcp_len, &tcp]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());

        let len = if tot_len == 0 {
            20 + tcp.len() as u16
        } else {
            tot_len
        };
        let mut ip = vec![0x40 | ihl, 0];
        ip.extend_from_slice(&len.to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]); // id, DF, ttl, tcp
        ip.extend_from_slice(&src_ip);
        ip.extend_from_slice(&dst_ip);
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());

        let mut frame = dst.to_vec();
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]); // src, IPv4
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&tcp);
        frame
    }

    /// Sends each frame as it is out of `iface` (AF_PACKET), in the calling
    /// thread's network namespace.
    pub fn send(iface: &str, frames: &[Vec<u8>]) {
        let name = std::ffi::CString::new(iface).unwrap();
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "no interface {iface}");
        // SAFETY: socket(2) takes no pointers. Protocol 0: send only.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh fd owned by nobody else; closed on drop, panic or not.
        let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        for frame in frames {
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: `frame` and `addr` are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(
                n,
                frame.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The 16-byte address layout of the kernel's records (IPv4 first).
fn addr16(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut a = [0; 16];
            a[..4].copy_from_slice(&v4.octets());
            a
        }
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// `record --sample 0.5` over 40 keep-alive connections: the kernel copies
/// exactly the connections whose conn_hash is under half of 2^32, each whole
/// (every request and response byte, SYN to FIN, both directions), nothing of
/// the others, and counts what it left out as sampled_out.
fn sampling_by_connection(family: Family) {
    use parallelrun_common::{SAMPLE_ALL, conn_hash, sampled};
    require_root();
    const CONNS: usize = 40;
    let pair = Pair::new(family);
    let server = Server::start(&pair.server, SocketAddr::new(pair.server_ip, 8080));
    let old = server.addr.to_string();
    let Recording {
        mut agent,
        pcap: pcap_path,
        stats: stats_path,
        _dir,
    } = Recording::start(
        &pair.server,
        &pair.server_if,
        &["--old", &old, "--sample", "0.5"],
    );
    let addr = server.addr;
    let convs: Vec<Conversation> = pair.client.run(move || {
        (0..CONNS)
            .map(|_| client::keep_alive(addr, &["/bytes/100", "/bytes/5000", "/bytes/70000"]))
            .collect()
    });
    thread::sleep(Duration::from_millis(300));
    agent.stop();

    let packets = pcap::read(&pcap_path);
    let threshold = SAMPLE_ALL / 2;
    let mut kept = 0;
    for c in &convs {
        assert_eq!(c.body_lens, vec![100, 5000, 70000]);
        // The client is the connection's local end, the server its peer.
        let hash = conn_hash(
            &addr16(c.local.ip()),
            c.local.port(),
            &addr16(c.peer.ip()),
            c.peer.port(),
        );
        let of_conn = packets
            .iter()
            .filter(|p| {
                (p.src == c.local && p.dst == c.peer) || (p.src == c.peer && p.dst == c.local)
            })
            .count();
        if sampled(hash, threshold) {
            kept += 1;
            assert_captured_exactly(&packets, c);
        } else {
            assert_eq!(of_conn, 0, "connection {} was sampled out", c.local);
        }
    }
    // 40 connections on random ephemeral ports: all on one side of the
    // threshold has probability 2^-39.
    assert!(0 < kept && kept < CONNS, "{kept} of {CONNS} kept");

    let s = stats(&stats_path);
    // Every connection left out had at least its two SYNs, a FIN each way,
    // three requests and three responses (the 70 KB one in several
    // segments): ten segments that are not pure ACKs.
    let sampled_out = counter(&s, "kernel", "sampled_out");
    assert!(
        sampled_out >= 10 * (CONNS - kept) as u64,
        "sampled_out {sampled_out} for {} connections left out",
        CONNS - kept
    );
    assert_eq!(counter(&s, "kernel", "ringbuf_full_drops"), 0);
    assert_eq!(counter(&s, "kernel", "read_errors"), 0);
    assert_eq!(
        counter(&s, "kernel", "records_emitted"),
        counter(&s, "agent", "records")
    );
}

#[test]
fn ipv4_sampling_copies_exactly_the_connections_conn_hash_selects() {
    sampling_by_connection(Family::V4);
}

#[test]
fn ipv6_sampling_copies_exactly_the_connections_conn_hash_selects() {
    sampling_by_connection(Family::V6);
}
