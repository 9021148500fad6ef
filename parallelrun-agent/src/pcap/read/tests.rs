use std::{
    fs::File,
    io::Write,
    net::{IpAddr, SocketAddr},
    ops::ControlFlow,
    path::{Path, PathBuf},
    time::Duration,
};

use etherparse::PacketBuilder;
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};
use tempfile::TempDir;

use super::*;
use crate::model::{ConnKey, Direction, tcp_flags};

pub(super) const CLIENT4: &str = "10.0.0.1:40000";
pub(super) const SERVICE4: &str = "10.0.0.2:8080";
pub(super) const CLIENT6: &str = "[fd00::1]:40000";
pub(super) const SERVICE6: &str = "[fd00::2]:8080";
pub(super) const ACK_NO: u32 = 7777;

/// A delivered segment, owned.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Seg {
    pub(super) ts_ns: u64,
    pub(super) conn: ConnKey,
    pub(super) direction: Direction,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: u8,
    pub(super) payload: Vec<u8>,
    pub(super) missing: u32,
}

pub(super) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) fn services(list: &[&str]) -> Vec<ServiceAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// An IP packet carrying one TCP segment.
pub(super) fn ip_tcp(src: &str, dst: &str, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = (sa(src), sa(dst));
    let builder = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed address families"),
    };
    let tcp = crate::pcap::write::with_flags(
        builder.tcp(src.port(), dst.port(), seq, 65535),
        flags,
        ACK_NO,
    );
    let mut out = Vec::new();
    tcp.write(&mut out, payload).unwrap();
    out
}

pub(super) fn ip_udp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(53, 8080)
        .write(&mut out, b"dns")
        .unwrap();
    out
}

pub(super) fn ethertype_of(ip: &[u8]) -> [u8; 2] {
    if ip[0] >> 4 == 4 {
        [0x08, 0x00]
    } else {
        [0x86, 0xdd]
    }
}

/// Frames an IP packet for a link type.
pub(super) fn frame(linktype: u32, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    match linktype {
        1 => {
            f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ethertype_of(ip));
        }
        101 | 228 | 229 => {}
        113 => {
            // packet type, ARPHRD_ETHER, address length, address (8), protocol
            f.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            f.extend_from_slice(&ethertype_of(ip));
        }
        276 => {
            // protocol, reserved, ifindex, ARPHRD_ETHER, packet type,
            // address length, address (8)
            f.extend_from_slice(&ethertype_of(ip));
            f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        }
        0 => {
            // AF_INET / AF_INET6 (macOS) in the writer's (little-endian) order
            let family: u32 = if ip[0] >> 4 == 4 { 2 } else { 30 };
            f.extend_from_slice(&family.to_le_bytes());
        }
        108 => {
            // network byte order; AF_INET6 as on Linux
            let family: u32 = if ip[0] >> 4 == 4 { 2 } else { 10 };
            f.extend_from_slice(&family.to_be_bytes());
        }
        _ => panic!("no framing for {linktype}"),
    }
    f.extend_from_slice(ip);
    f
}

pub(super) struct Rec {
    pub(super) ts: Duration,
    pub(super) data: Vec<u8>,
    pub(super) orig_len: u32,
}

pub(super) fn rec(data: Vec<u8>) -> Rec {
    Rec {
        ts: Duration::from_secs(1_700_000_000),
        orig_len: data.len() as u32,
        data,
    }
}

pub(super) fn write_pcap_with(
    dir: &TempDir,
    linktype: u32,
    endianness: Endianness,
    ts_resolution: TsResolution,
    recs: &[Rec],
) -> PathBuf {
    let path = dir.path().join(format!("{linktype}-{endianness:?}.pcap"));
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: 65535,
        datalink: DataLink::from(linktype),
        ts_resolution,
        endianness,
    };
    let mut w = PcapWriter::with_header(File::create(&path).unwrap(), header).unwrap();
    for r in recs {
        w.write_packet(&PcapPacket::new(r.ts, r.orig_len, &r.data))
            .unwrap();
    }
    w.into_writer().flush().unwrap();
    path
}

pub(super) fn write_pcap(dir: &TempDir, linktype: u32, recs: &[Rec]) -> PathBuf {
    write_pcap_with(
        dir,
        linktype,
        Endianness::Little,
        TsResolution::NanoSecond,
        recs,
    )
}

pub(super) fn read_all(path: &Path, svc: &[&str]) -> (Vec<Seg>, ReadStats) {
    read_sampled(path, svc, SAMPLE_ALL)
}

/// [`read_all`] with connection sampling at `threshold`.
pub(super) fn read_sampled(path: &Path, svc: &[&str], threshold: u64) -> (Vec<Seg>, ReadStats) {
    let mut src = PcapSource::open(path, &services(svc)).unwrap();
    src.sample_connections(threshold);
    let mut segs = Vec::new();
    src.for_each(|s| segs.push(owned(s))).unwrap();
    let stats = src.stats().clone();
    assert_eq!(
        stats.packets,
        stats.segments
            + stats.pure_acks
            + stats.not_ip
            + stats.not_tcp
            + stats.fragments
            + stats.other_traffic
            + stats.sampled_out
            + stats.malformed
            + stats.headers_cut
            + stats.unsupported_linktype,
        "every packet is counted once: {stats:?}"
    );
    (segs, stats)
}

pub(super) fn owned(s: &TcpSegment<'_>) -> Seg {
    Seg {
        ts_ns: s.ts_ns,
        conn: s.conn,
        direction: s.direction,
        seq: s.seq,
        ack: s.ack,
        flags: s.flags,
        payload: s.payload.to_vec(),
        missing: s.missing,
    }
}

pub(super) fn conn(client: &str, server: &str) -> ConnKey {
    ConnKey {
        client: sa(client),
        server: sa(server),
    }
}

pub(super) const DATA: u8 = tcp_flags::ACK | tcp_flags::PSH;

/// Offline connection sampling keeps exactly the connections the kernel
/// would (the same conn_hash), each whole: both directions, SYN to FIN.
/// Pure ACKs are skipped before sampling, as in the kernel, and every
/// segment of a connection left out is counted as sampled_out.
#[test]
fn connection_sampling_keeps_whole_connections_by_hash() {
    let dir = TempDir::new().unwrap();
    let mut recs = Vec::new();
    let clients: Vec<String> = (0..200)
        .map(|i| format!("10.0.0.1:{}", 40000 + i))
        .collect();
    for c in &clients {
        for (src, dst, flags, payload) in [
            (c.as_str(), SERVICE4, tcp_flags::SYN, &b""[..]),
            (SERVICE4, c.as_str(), tcp_flags::SYN | tcp_flags::ACK, b""),
            (c.as_str(), SERVICE4, DATA, b"GET / HTTP/1.1\r\n\r\n"),
            (SERVICE4, c.as_str(), tcp_flags::ACK, b""),
            (
                SERVICE4,
                c.as_str(),
                DATA,
                b"HTTP/1.1 204 No Content\r\n\r\n",
            ),
            (c.as_str(), SERVICE4, tcp_flags::FIN | tcp_flags::ACK, b""),
        ] {
            recs.push(rec(frame(1, &ip_tcp(src, dst, 1, flags, payload))));
        }
    }
    let path = write_pcap(&dir, 1, &recs);
    let threshold = crate::capture::sample_threshold(0.3);
    let (segs, stats) = read_sampled(&path, &[SERVICE4], threshold);
    let expected: Vec<ConnKey> = clients
        .iter()
        .map(|c| conn(c, SERVICE4))
        .filter(|k| crate::capture::conn_sampled(k, threshold))
        .collect();
    // About 30 % of 200 (deterministic: fixed tuples).
    assert!((40..=80).contains(&expected.len()), "{}", expected.len());
    for k in &expected {
        let of: Vec<&Seg> = segs.iter().filter(|s| s.conn == *k).collect();
        assert_eq!(of.len(), 5, "{k:?}: every segment but the pure ACK");
        assert!(of.iter().any(|s| s.direction == Direction::Response));
    }
    assert_eq!(
        segs.len(),
        5 * expected.len(),
        "no segment of another connection"
    );
    let left_out = (clients.len() - expected.len()) as u64;
    assert_eq!(stats.sampled_out, 5 * left_out);
    assert_eq!(stats.pure_acks, clients.len() as u64);

    // F = 1 keeps everything.
    let (all, stats) = read_sampled(&path, &[SERVICE4], SAMPLE_ALL);
    assert_eq!(all.len(), 5 * clients.len());
    assert_eq!(stats.sampled_out, 0);
}

#[test]
fn file_cut_mid_record_delivers_what_is_there() {
    let dir = TempDir::new().unwrap();
    let one = rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"first")));
    let two = rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, 6, DATA, b"second")));
    let path = write_pcap(&dir, 1, &[one, two]);
    let len = std::fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (segs, stats) = read_all(&path, &[SERVICE4]);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].payload, b"first");
    assert!(stats.cut_short);
}

#[test]
fn try_for_each_stops_and_resumes() {
    let dir = TempDir::new().unwrap();
    let recs: Vec<Rec> = (0..3u8)
        .map(|i| rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, i.into(), DATA, &[i]))))
        .collect();
    let path = write_pcap(&dir, 1, &recs);
    let mut src = PcapSource::open(&path, &services(&[SERVICE4])).unwrap();
    let first = src.try_for_each(|s| ControlFlow::Break(s.payload.to_vec()));
    assert_eq!(first.unwrap(), ControlFlow::Break(vec![0]));
    let mut rest = Vec::new();
    src.for_each(|s| rest.extend_from_slice(s.payload)).unwrap();
    assert_eq!(rest, [1, 2]);
    // Ended: nothing more.
    src.for_each(|_| panic!("delivered after the end")).unwrap();
    assert_eq!(src.stats().segments, 3);
}

#[test]
fn read_batch_bounds_the_packets_read() {
    let dir = TempDir::new().unwrap();
    let mut recs: Vec<Rec> = (0..5u8)
        .map(|i| rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, i.into(), DATA, &[i]))))
        .collect();
    // Not a segment: still a packet of the budget.
    recs.insert(2, rec(frame(1, &ip_udp([10, 0, 0, 1], [10, 0, 0, 2]))));
    let path = write_pcap(&dir, 1, &recs);
    let mut src = PcapSource::open(&path, &services(&[SERVICE4])).unwrap();
    let mut batches = Vec::new();
    loop {
        let mut batch = Vec::new();
        let more = src.read_batch(2, |s| batch.push(s.payload[0])).unwrap();
        batches.push(batch);
        if !more {
            break;
        }
    }
    assert_eq!(
        batches,
        [vec![0, 1], vec![2], vec![3, 4], vec![]],
        "2 packets per batch, the last call finds the end"
    );
    assert_eq!(src.stats().packets, 6);
    assert!(!src.read_batch(2, |_| panic!("after the end")).unwrap());
}

#[test]
fn a_capture_without_old_service_segments_says_what_it_held() {
    let dir = TempDir::new().unwrap();
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let recs = [
        rec(arp.clone()),
        rec(arp),
        rec(frame(1, &ip_udp([10, 0, 0, 1], [10, 0, 0, 2]))),
        rec(frame(1, &ip_tcp(CLIENT4, "10.0.0.2:9090", 1, DATA, b"x"))),
    ];
    let path = write_pcap(&dir, 1, &recs);
    let mut src = PcapSource::open(&path, &services(&[SERVICE4])).unwrap();
    assert_eq!(src.nothing_found(), None, "nothing read yet: no packets");
    src.for_each(|_| {}).unwrap();
    let what = src.nothing_found().expect("nothing for an old service");
    assert!(what.starts_with(&path.display().to_string()), "{what}");
    assert!(what.contains("link type ETHERNET (1)"), "{what}");
    assert!(what.contains("none of its 4 packets"), "{what}");
    assert!(what.contains("2 not IP"), "{what}");
    assert!(what.contains("1 IP but not TCP"), "{what}");
    assert!(
        what.contains("1 TCP of other services (check --old"),
        "{what}"
    );
    assert!(!what.contains("fragments"), "only what was there: {what}");

    // One segment of an old service, even without payload: nothing to say.
    let recs = [rec(frame(
        1,
        &ip_tcp(CLIENT4, SERVICE4, 1, tcp_flags::ACK, b""),
    ))];
    let path = write_pcap(&dir, 1, &recs);
    let mut src = PcapSource::open(&path, &services(&[SERVICE4])).unwrap();
    src.for_each(|_| {}).unwrap();
    assert_eq!(src.nothing_found(), None);

    // No packets at all.
    let path = write_pcap(&dir, 113, &[]);
    let mut src = PcapSource::open(&path, &services(&[SERVICE4])).unwrap();
    src.for_each(|_| {}).unwrap();
    let what = src.nothing_found().unwrap();
    assert!(
        what.ends_with("(link type LINUX_SLL (113)) holds no packets"),
        "{what}"
    );
}
