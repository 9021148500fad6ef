//! Link layers, IP and TCP: every link type, VLAN tags, truncation, what is
//! skipped and counted, and which segments belong to an old service. Each
//! case is written as a pcap file and read back.

use std::time::Duration;
use tempfile::TempDir;

use super::super::tests::{
    ACK_NO, CLIENT4, CLIENT6, DATA, Rec, SERVICE4, SERVICE6, Seg, conn, ethertype_of, frame,
    ip_tcp, ip_udp, read_all, rec, write_pcap,
};
use super::ReadStats;
use crate::model::{ConnKey, Direction, tcp_flags};

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

#[test]
fn null_loopback_with_unknown_family_is_not_ip() {
    let dir = TempDir::new().unwrap();
    let mut f = 99u32.to_le_bytes().to_vec();
    f.extend_from_slice(&ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"x"));
    let path = write_pcap(&dir, 0, &[rec(f)]);
    let (_, stats) = read_all(&path, &[SERVICE4]);
    assert_eq!(stats.not_ip, 1);
}

/// A PPPoE session frame (RFC 2516) around `ip`, with the PPP protocol
/// field given as bytes (two, or one when compressed), behind `vlan` tags.
fn pppoe_frame(vlan: &[(u16, u16)], protocol: &[u8], ip: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0, 0x0c, 0x29, 0x39, 0xf3, 0xc3, 0, 0x0c, 0x29, 0x20, 0x8e, 0xa1,
    ];
    for (tpid, vid) in vlan {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    let length = (protocol.len() + ip.len()) as u16;
    f.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x00, 0x2d]);
    f.extend_from_slice(&length.to_be_bytes());
    f.extend_from_slice(protocol);
    f.extend_from_slice(ip);
    f
}

#[test]
fn pppoe_session_frames_carry_ipv4_and_ipv6() {
    let dir = TempDir::new().unwrap();
    let get = b"GET / HTTP/1.1\r\n\r\n";
    let v4 = ip_tcp(CLIENT4, SERVICE4, 100, DATA, get);
    let v6 = ip_tcp(CLIENT6, SERVICE6, 200, DATA, get);
    // Ethernet padding after the PPPoE payload is not TCP payload.
    let mut padded = pppoe_frame(&[], &[0x00, 0x21], &v4);
    padded.extend_from_slice(&[0; 6]);
    let lcp = pppoe_frame(&[], &[0xc0, 0x21], &[1, 1, 0, 4]);
    let mut discovery = pppoe_frame(&[], &[], &[]);
    discovery[13] = 0x63; // EtherType 0x8863: PPPoE discovery
    let mut bad_version = pppoe_frame(&[], &[0x00, 0x21], &v4);
    bad_version[14] = 0x21;
    let recs = [
        rec(pppoe_frame(&[], &[0x00, 0x21], &v4)),
        // Protocol field compressed, as in suricata's pppoe-session-http.pcap.
        rec(pppoe_frame(&[], &[0x21], &v4)),
        rec(pppoe_frame(&[], &[0x00, 0x57], &v6)),
        rec(pppoe_frame(&[], &[0x57], &v6)),
        rec(pppoe_frame(&[(0x8100, 7)], &[0x00, 0x21], &v4)),
        rec(padded),
        rec(lcp),
        rec(discovery),
        rec(bad_version),
        rec(pppoe_frame(&[], &[], &[])[..20].to_vec()),
    ];
    let path = write_pcap(&dir, 1, &recs);
    let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
    let got: Vec<_> = segs
        .iter()
        .map(|s| (s.conn, s.seq, &s.payload[..], s.missing))
        .collect();
    let v4c = conn(CLIENT4, SERVICE4);
    let v6c = conn(CLIENT6, SERVICE6);
    assert_eq!(
        got,
        [
            (v4c, 100, &get[..], 0),
            (v4c, 100, get, 0),
            (v6c, 200, get, 0),
            (v6c, 200, get, 0),
            (v4c, 100, get, 0),
            (v4c, 100, get, 0),
        ]
    );
    assert_eq!(
        stats,
        ReadStats {
            packets: 10,
            segments: 6,
            not_ip: 2,
            malformed: 2,
            ..ReadStats::default()
        }
    );
    // Linux cooked capture names the EtherType too.
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x88, 0x64];
    sll.extend_from_slice(&pppoe_frame(&[], &[0x21], &v4)[14..]);
    let path = write_pcap(&dir, 113, &[rec(sll)]);
    let (segs, _) = read_all(&path, &[SERVICE4]);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].payload, get);
}
