use std::{borrow::Cow, io::Write, time::Duration};

use etherparse::PacketBuilder;
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter, RawBlock,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
            section_header::SectionHeaderBlock, simple_packet::SimplePacketBlock,
        },
    },
};
use tempfile::TempDir;

use super::*;

const CLIENT4: &str = "10.0.0.1:40000";
const SERVICE4: &str = "10.0.0.2:8080";
const CLIENT6: &str = "[fd00::1]:40000";
const SERVICE6: &str = "[fd00::2]:8080";
const ACK_NO: u32 = 7777;

/// A delivered segment, owned.
#[derive(Debug, PartialEq, Eq)]
struct Seg {
    ts_ns: u64,
    conn: ConnKey,
    direction: Direction,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
    missing: u32,
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn services(list: &[&str]) -> Vec<ServiceAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// An IP packet carrying one TCP segment.
fn ip_tcp(src: &str, dst: &str, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
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

fn ip_udp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(53, 8080)
        .write(&mut out, b"dns")
        .unwrap();
    out
}

fn ethertype_of(ip: &[u8]) -> [u8; 2] {
    if ip[0] >> 4 == 4 {
        [0x08, 0x00]
    } else {
        [0x86, 0xdd]
    }
}

/// Frames an IP packet for a link type.
fn frame(linktype: u32, ip: &[u8]) -> Vec<u8> {
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

/// An Ethernet frame with VLAN tags (outer first) around an IP packet.
fn vlan_frame(tags: &[(u16, u16)], ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype_of(ip));
    f.extend_from_slice(ip);
    f
}

struct Rec {
    ts: Duration,
    data: Vec<u8>,
    orig_len: u32,
}

fn rec(data: Vec<u8>) -> Rec {
    Rec {
        ts: Duration::from_secs(1_700_000_000),
        orig_len: data.len() as u32,
        data,
    }
}

fn write_pcap_with(
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

fn write_pcap(dir: &TempDir, linktype: u32, recs: &[Rec]) -> PathBuf {
    write_pcap_with(
        dir,
        linktype,
        Endianness::Little,
        TsResolution::NanoSecond,
        recs,
    )
}

fn read_all(path: &Path, svc: &[&str]) -> (Vec<Seg>, ReadStats) {
    let mut src = PcapSource::open(path, &services(svc)).unwrap();
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
            + stats.malformed
            + stats.headers_cut
            + stats.unsupported_linktype,
        "every packet is counted once: {stats:?}"
    );
    (segs, stats)
}

fn owned(s: &TcpSegment<'_>) -> Seg {
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

fn conn(client: &str, server: &str) -> ConnKey {
    ConnKey {
        client: sa(client),
        server: sa(server),
    }
}

const DATA: u8 = tcp_flags::ACK | tcp_flags::PSH;

#[test]
fn every_link_type_both_directions_v4_and_v6() {
    let dir = TempDir::new().unwrap();
    for linktype in [1, 101, 228, 229, 113, 276, 0, 108] {
        let families: &[(&str, &str)] = match linktype {
            228 => &[(CLIENT4, SERVICE4)],
            229 => &[(CLIENT6, SERVICE6)],
            _ => &[(CLIENT4, SERVICE4), (CLIENT6, SERVICE6)],
        };
        let mut recs = Vec::new();
        for (client, service) in families {
            recs.push(rec(frame(
                linktype,
                &ip_tcp(client, service, 100, DATA, b"GET / HTTP/1.1\r\n\r\n"),
            )));
            recs.push(rec(frame(
                linktype,
                &ip_tcp(service, client, 500, DATA, b"HTTP/1.1 200 OK\r\n\r\n"),
            )));
        }
        let path = write_pcap(&dir, linktype, &recs);
        let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
        let mut want = Vec::new();
        for (client, service) in families {
            let c = conn(client, service);
            want.push(Seg {
                ts_ns: 1_700_000_000_000_000_000,
                conn: c,
                direction: Direction::Request,
                seq: 100,
                ack: ACK_NO,
                flags: DATA,
                payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                missing: 0,
            });
            want.push(Seg {
                ts_ns: 1_700_000_000_000_000_000,
                conn: c,
                direction: Direction::Response,
                seq: 500,
                ack: ACK_NO,
                flags: DATA,
                payload: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
                missing: 0,
            });
        }
        assert_eq!(segs, want, "link type {linktype}");
        assert_eq!(stats.segments, want.len() as u64, "link type {linktype}");
    }
}

#[test]
fn vlan_and_qinq_tags() {
    let dir = TempDir::new().unwrap();
    let ip = ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"x");
    let ip6 = ip_tcp(SERVICE6, CLIENT6, 2, DATA, b"y");
    let path = write_pcap(
        &dir,
        1,
        &[
            rec(vlan_frame(&[(0x8100, 10)], &ip)),
            rec(vlan_frame(&[(0x88a8, 100), (0x8100, 10)], &ip6)),
            rec(vlan_frame(&[(0x8100, 100), (0x8100, 10)], &ip)),
        ],
    );
    let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
    assert_eq!(stats.segments, 3);
    assert_eq!(segs[0].payload, b"x");
    assert_eq!(segs[1].direction, Direction::Response);
    assert_eq!(segs[1].conn, conn(CLIENT6, SERVICE6));
    assert_eq!(segs[2].payload, b"x");
}

#[test]
fn byte_orders_and_timestamp_resolutions() {
    let dir = TempDir::new().unwrap();
    let ts = Duration::new(1_700_000_000, 123_456_789);
    let data = frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"x"));
    for (endianness, res, want) in [
        (
            Endianness::Big,
            TsResolution::MicroSecond,
            1_700_000_000_123_456_000,
        ),
        (
            Endianness::Little,
            TsResolution::MicroSecond,
            1_700_000_000_123_456_000,
        ),
        (
            Endianness::Big,
            TsResolution::NanoSecond,
            1_700_000_000_123_456_789,
        ),
        (
            Endianness::Little,
            TsResolution::NanoSecond,
            1_700_000_000_123_456_789,
        ),
    ] {
        let recs = [Rec {
            ts,
            orig_len: data.len() as u32,
            data: data.clone(),
        }];
        let path = dir.path().join(format!("{endianness:?}-{res:?}.pcap"));
        std::fs::rename(write_pcap_with(&dir, 1, endianness, res, &recs), &path).unwrap();
        let (segs, _) = read_all(&path, &[SERVICE4]);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].ts_ns, want, "{endianness:?} {res:?}");
    }
}

#[test]
fn snaplen_cut_payload_becomes_missing_and_cut_headers_are_counted() {
    let dir = TempDir::new().unwrap();
    let payload = [b'a'; 100];
    let v4 = frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, &payload));
    let v6 = frame(1, &ip_tcp(SERVICE6, CLIENT6, 1, DATA, &payload));
    // Ethernet 14 + IPv4 20 + TCP 20: cut 30 payload bytes in.
    let cut = |full: &Vec<u8>, keep: usize| Rec {
        ts: Duration::ZERO,
        orig_len: full.len() as u32,
        data: full[..keep].to_vec(),
    };
    let path = write_pcap(
        &dir,
        1,
        &[
            cut(&v4, 14 + 20 + 20 + 30),
            cut(&v6, 14 + 40 + 20 + 10),
            // Inside the TCP header, then inside the IP header.
            cut(&v4, 14 + 20 + 10),
            cut(&v4, 14 + 10),
        ],
    );
    let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
    assert_eq!(segs.len(), 2);
    assert_eq!((segs[0].payload.len(), segs[0].missing), (30, 70));
    assert_eq!((segs[1].payload.len(), segs[1].missing), (10, 90));
    assert_eq!(stats.truncated, 2);
    assert_eq!(stats.headers_cut, 2);
    assert_eq!(stats.malformed, 0);
}

#[test]
fn ethernet_padding_is_not_payload() {
    let dir = TempDir::new().unwrap();
    let mut f = frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"ab"));
    f.resize(60, 0);
    let path = write_pcap(&dir, 1, &[rec(f)]);
    let (segs, _) = read_all(&path, &[SERVICE4]);
    assert_eq!(
        (segs[0].payload.as_slice(), segs[0].missing),
        (&b"ab"[..], 0)
    );
}

#[test]
fn tso_packet_without_ip_length_uses_the_record_lengths() {
    // tcpdump on the sending host sees GSO packets with IPv4 total
    // length 0; only orig_len tells how long they were.
    let dir = TempDir::new().unwrap();
    let mut ip = ip_tcp(CLIENT4, SERVICE4, 1, DATA, &[b'a'; 40]);
    ip[2] = 0;
    ip[3] = 0;
    let f = frame(1, &ip);
    let path = write_pcap(
        &dir,
        1,
        &[Rec {
            ts: Duration::ZERO,
            orig_len: f.len() as u32 + 1000,
            data: f,
        }],
    );
    let (segs, stats) = read_all(&path, &[SERVICE4]);
    assert_eq!((segs[0].payload.len(), segs[0].missing), (40, 1000));
    assert_eq!(stats.truncated, 1);
}

#[test]
fn skipped_packets_are_counted() {
    let dir = TempDir::new().unwrap();
    let request = ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"x");
    let mut first_fragment = request.clone();
    first_fragment[6] |= 0x20; // more fragments
    let mut later_fragment = request.clone();
    later_fragment[7] = 8; // offset 64 bytes
    let mut v6_fragment = ip_tcp(CLIENT6, SERVICE6, 1, DATA, b"x");
    v6_fragment[6] = 44; // next header: fragment
    let len = u16::from_be_bytes([v6_fragment[4], v6_fragment[5]]) + 8;
    v6_fragment[4..6].copy_from_slice(&len.to_be_bytes());
    v6_fragment.splice(40..40, [6, 0, 0, 1, 0, 0, 0, 9]); // offset 0, M=1
    let mut bad_ihl = request.clone();
    bad_ihl[0] = 0x43;
    let mut bad_data_offset = request.clone();
    bad_data_offset[20 + 12] = 0x20;
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    let recs = [
        rec(frame(1, &request)),
        rec(arp),
        rec(frame(1, &ip_udp([10, 0, 0, 1], [10, 0, 0, 2]))),
        rec(frame(1, &first_fragment)),
        rec(frame(1, &later_fragment)),
        rec(frame(1, &v6_fragment)),
        rec(frame(1, &ip_tcp(CLIENT4, "10.0.0.2:9090", 1, DATA, b"x"))),
        rec(frame(1, &ip_tcp("10.0.0.3:1", "10.0.0.4:2", 1, DATA, b"x"))),
        rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, 2, tcp_flags::ACK, b""))),
        rec(frame(1, &bad_ihl)),
        rec(frame(1, &bad_data_offset)),
        rec(vec![1, 2, 3]),
    ];
    let path = write_pcap(&dir, 1, &recs);
    let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
    assert_eq!(segs.len(), 1);
    assert_eq!(
        stats,
        ReadStats {
            packets: 12,
            segments: 1,
            pure_acks: 1,
            not_ip: 1,
            not_tcp: 1,
            fragments: 3,
            other_traffic: 2,
            malformed: 3,
            ..ReadStats::default()
        }
    );
}

#[test]
fn syn_fin_rst_without_payload_are_delivered() {
    let dir = TempDir::new().unwrap();
    let recs = [
        tcp_flags::SYN,
        tcp_flags::FIN | tcp_flags::ACK,
        tcp_flags::RST,
    ]
    .map(|flags| rec(frame(101, &ip_tcp(CLIENT4, SERVICE4, 1, flags, b""))));
    let path = write_pcap(&dir, 101, &recs);
    let (segs, stats) = read_all(&path, &[SERVICE4]);
    let flags: Vec<u8> = segs.iter().map(|s| s.flags).collect();
    assert_eq!(
        flags,
        [
            tcp_flags::SYN,
            tcp_flags::FIN | tcp_flags::ACK,
            tcp_flags::RST
        ]
    );
    assert_eq!(stats.pure_acks, 0);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let dir = TempDir::new().unwrap();
    let mut ip = ip_tcp(CLIENT6, SERVICE6, 1, DATA, b"hop");
    ip[6] = 0; // next header: hop-by-hop options
    let len = u16::from_be_bytes([ip[4], ip[5]]) + 8;
    ip[4..6].copy_from_slice(&len.to_be_bytes());
    ip.splice(40..40, [6, 0, 1, 4, 0, 0, 0, 0]); // next: TCP; PadN
    let path = write_pcap(&dir, 101, &[rec(ip)]);
    let (segs, _) = read_all(&path, &[SERVICE6]);
    assert_eq!(segs[0].payload, b"hop");
}

#[test]
fn services_match_like_the_kernel() {
    let dir = TempDir::new().unwrap();
    let recs = [
        // :8080 matches any address.
        ip_tcp("10.0.0.1:1", "192.168.1.1:8080", 1, DATA, b"a"),
        // 10.0.0.2:9000 matches only that address.
        ip_tcp("10.0.0.1:1", "10.0.0.2:9000", 1, DATA, b"b"),
        ip_tcp("10.0.0.1:1", "10.0.0.3:9000", 1, DATA, b"c"),
        ip_tcp("10.0.0.2:9000", "10.0.0.1:1", 1, DATA, b"d"),
        // Between two services: the destination wins, a request.
        ip_tcp("10.0.0.2:9000", "10.0.0.9:8080", 1, DATA, b"e"),
        ip_tcp("[fd00::7]:1", "[fd00::9]:8080", 1, DATA, b"f"),
    ]
    .map(rec);
    let path = write_pcap(&dir, 101, &recs);
    let (segs, stats) = read_all(&path, &[":8080", "10.0.0.2:9000"]);
    let got: Vec<(Vec<u8>, Direction, ConnKey)> = segs
        .into_iter()
        .map(|s| (s.payload, s.direction, s.conn))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                b"a".to_vec(),
                Direction::Request,
                conn("10.0.0.1:1", "192.168.1.1:8080")
            ),
            (
                b"b".to_vec(),
                Direction::Request,
                conn("10.0.0.1:1", "10.0.0.2:9000")
            ),
            (
                b"d".to_vec(),
                Direction::Response,
                conn("10.0.0.1:1", "10.0.0.2:9000")
            ),
            (
                b"e".to_vec(),
                Direction::Request,
                conn("10.0.0.2:9000", "10.0.0.9:8080")
            ),
            (
                b"f".to_vec(),
                Direction::Request,
                conn("[fd00::7]:1", "[fd00::9]:8080")
            ),
        ]
    );
    assert_eq!(stats.other_traffic, 1);
}

fn open_err(path: &Path, svc: &[&str]) -> PcapReadError {
    match PcapSource::open(path, &services(svc)) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

#[test]
fn not_a_capture_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "GET / HTTP/1.1\r\n").unwrap();
    let e = open_err(&text, &[SERVICE4]);
    assert!(matches!(e, PcapReadError::NotPcap { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("not a pcap or pcapng file"), "{msg}");
    assert!(msg.contains("looks like text"), "{msg}");

    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, "").unwrap();
    assert!(open_err(&empty, &[SERVICE4]).to_string().contains("empty"));

    let gz = dir.path().join("c.pcap.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0]).unwrap();
    assert!(open_err(&gz, &[SERVICE4]).to_string().contains("gzip"));

    let short = dir.path().join("short.pcap");
    std::fs::write(&short, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).unwrap();
    assert!(matches!(
        open_err(&short, &[SERVICE4]),
        PcapReadError::Header { .. }
    ));

    let missing = dir.path().join("nope.pcap");
    assert!(matches!(
        open_err(&missing, &[SERVICE4]),
        PcapReadError::Open { .. }
    ));
    assert!(matches!(open_err(&text, &[]), PcapReadError::NoServices));
}

#[test]
fn unsupported_link_type_names_the_supported_ones() {
    let dir = TempDir::new().unwrap();
    let path = write_pcap(&dir, 147, &[]);
    let e = open_err(&path, &[SERVICE4]);
    let msg = e.to_string();
    assert!(msg.contains("link type 147"), "{msg}");
    assert!(msg.contains("LINUX_SLL2 (276)"), "{msg}");
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

fn idb(
    linktype: u32,
    options: Vec<InterfaceDescriptionOption<'static>>,
) -> InterfaceDescriptionBlock<'static> {
    InterfaceDescriptionBlock {
        linktype: DataLink::from(linktype),
        snaplen: 0,
        options,
    }
}

fn epb(interface_id: u32, units: u64, data: &[u8]) -> EnhancedPacketBlock<'_> {
    EnhancedPacketBlock {
        interface_id,
        // pcap-file writes the Duration's nanoseconds as raw units.
        timestamp: Duration::from_nanos(units),
        original_len: data.len() as u32,
        data: Cow::Borrowed(data),
        options: vec![],
    }
}

#[test]
fn pcapng_sections_interfaces_and_packet_blocks() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("c.pcapng");
    let eth = frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"eth"));
    let raw = ip_tcp(SERVICE6, CLIENT6, 2, DATA, b"raw");
    let sll2 = frame(276, &ip_tcp(CLIENT4, SERVICE4, 3, DATA, b"sll2"));
    let mut w =
        PcapNgWriter::with_endianness(File::create(&path).unwrap(), Endianness::Big).unwrap();
    // Interface 0: Ethernet, nanoseconds. 1: an unsupported link type.
    // 2: RAW, default microseconds, +10 s offset.
    w.write_pcapng_block(idb(1, vec![InterfaceDescriptionOption::IfTsResol(9)]))
        .unwrap();
    w.write_pcapng_block(idb(147, vec![])).unwrap();
    w.write_pcapng_block(idb(101, vec![InterfaceDescriptionOption::IfTsOffset(10)]))
        .unwrap();
    w.write_pcapng_block(epb(0, 1_700_000_000_123_456_789, &eth))
        .unwrap();
    w.write_pcapng_block(epb(1, 0, b"usb")).unwrap();
    w.write_pcapng_block(epb(2, 1_700_000_000_123_456, &raw))
        .unwrap();
    // A packet block naming an interface that was never described.
    let mut body = Vec::new();
    for v in [7u32, 0, 0, 4, 4] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(b"lost");
    w.write_raw_block(&RawBlock {
        type_: ENHANCED_PACKET_BLOCK,
        initial_len: 12 + body.len() as u32,
        body: Cow::Owned(body),
        trailer_len: 12 + 24,
    })
    .unwrap();
    // A new little-endian section: interfaces start over. Simple packet
    // blocks (interface 0, no timestamp) and 2^-n resolution.
    w.write_pcapng_block(SectionHeaderBlock {
        endianness: Endianness::Little,
        ..SectionHeaderBlock::default()
    })
    .unwrap();
    w.write_pcapng_block(idb(
        276,
        vec![InterfaceDescriptionOption::IfTsResol(0x80 | 10)],
    ))
    .unwrap();
    w.write_pcapng_block(SimplePacketBlock {
        original_len: sll2.len() as u32,
        data: Cow::Borrowed(&sll2),
    })
    .unwrap();
    w.write_pcapng_block(epb(0, 3 * 1024 + 512, &sll2)).unwrap();
    w.into_inner().flush().unwrap();

    let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
    let got: Vec<(u64, Vec<u8>)> = segs.into_iter().map(|s| (s.ts_ns, s.payload)).collect();
    assert_eq!(
        got,
        vec![
            (1_700_000_000_123_456_789, b"eth".to_vec()),
            (1_700_000_010_123_456_000, b"raw".to_vec()),
            (0, b"sll2".to_vec()),
            (3_500_000_000, b"sll2".to_vec()),
        ]
    );
    assert_eq!(stats.unsupported_linktype, 1);
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.packets, 6);
}

#[test]
fn timestamp_units() {
    let iface = |unit, offset_s| Iface {
        link: None,
        snaplen: 0,
        unit,
        offset_s,
    };
    assert_eq!(iface(TsUnit::Pow10(6), 0).ts_ns(5), 5_000);
    assert_eq!(iface(TsUnit::Pow10(9), 0).ts_ns(5), 5);
    assert_eq!(iface(TsUnit::Pow10(12), 0).ts_ns(5_000), 5);
    assert_eq!(iface(TsUnit::Pow10(127), 0).ts_ns(u64::MAX), 0);
    assert_eq!(iface(TsUnit::Pow10(0), 0).ts_ns(u64::MAX), u64::MAX);
    assert_eq!(iface(TsUnit::Pow2(1), 0).ts_ns(3), 1_500_000_000);
    assert_eq!(iface(TsUnit::Pow2(127), 0).ts_ns(3), 0);
    assert_eq!(iface(TsUnit::Pow10(0), -5).ts_ns(3), 0);
    assert_eq!(iface(TsUnit::Pow10(0), 2).ts_ns(3), 5_000_000_000);
}

#[test]
fn null_loopback_with_unknown_family_is_not_ip() {
    let dir = TempDir::new().unwrap();
    let mut f = 99u32.to_le_bytes().to_vec();
    f.extend_from_slice(&ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"x"));
    let path = write_pcap(&dir, 0, &[rec(f)]);
    let (_, stats) = read_all(&path, &[SERVICE4]);
    assert_eq!(stats.not_ip, 1);
}
