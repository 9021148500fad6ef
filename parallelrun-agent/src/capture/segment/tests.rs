#![allow(
    dead_code,
    reason = "builders shared with other modules' tests; not all use every one"
)]
use parallelrun_common::tcp_flags;

use super::*;

/// Builds a record exactly as the kernel lays it out.
pub(crate) fn record(header: SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    // SAFETY: SegmentHeader is repr(C) POD without padding.
    let bytes = unsafe {
        std::slice::from_raw_parts((&header as *const SegmentHeader).cast::<u8>(), HEADER_LEN)
    };
    v.extend_from_slice(bytes);
    v.extend_from_slice(payload);
    v
}

pub(crate) fn header(payload_len: u32) -> SegmentHeader {
    let mut saddr = [0; 16];
    saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    let mut daddr = [0; 16];
    daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
    SegmentHeader {
        ts_ns: 1,
        saddr,
        daddr,
        seq: 1000,
        ack: 2000,
        payload_len,
        captured_len: payload_len,
        sport: 40000,
        dport: 80,
        family: 4,
        direction: Direction::Request as u8,
        flags: tcp_flags::ACK | tcp_flags::PSH,
        _pad: 0,
        drop_epoch: 0,
        _pad2: 0,
    }
}

#[test]
fn parses_in_place() {
    let rec = record(header(5), b"hello");
    let seg = Segment::parse(&rec).unwrap();
    assert_eq!(seg.payload, b"hello");
    assert_eq!(seg.src().to_string(), "10.0.0.1:40000");
    assert_eq!(seg.dst().to_string(), "10.0.0.2:80");
    assert_eq!(seg.direction, Direction::Request);
    assert!(!seg.truncated());
}

#[test]
fn ignores_ring_buffer_padding() {
    let mut rec = record(header(5), b"hello");
    rec.extend_from_slice(&[0, 0, 0]);
    assert_eq!(Segment::parse(&rec).unwrap().payload, b"hello");
}

/// A record padded to its size class, as the kernel reserves it: the class
/// of the smallest power-of-two payload capacity (64 B .. 64 KiB) that
/// holds the payload; the tail is whatever the ring held before.
fn class_record(payload: &[u8]) -> Vec<u8> {
    let class = parallelrun_common::CLASSES
        .into_iter()
        .find(|&c| c >= payload.len())
        .unwrap();
    let mut rec = record(header(payload.len() as u32), payload);
    rec.resize(HEADER_LEN + class, 0xAA);
    rec
}

#[test]
fn ignores_size_class_padding() {
    for len in [1, 63, 64, 65, 1000, 1024, 1025, 40_000, 65_535, 65_536] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let rec = class_record(&payload);
        assert!(
            rec.len() <= 2 * (HEADER_LEN + len),
            "class of {len} over 2x"
        );
        let seg = Segment::parse(&rec).unwrap();
        assert_eq!(seg.payload, &payload[..], "payload of {len}");
        assert_eq!(seg.header.captured_len as usize, len);
        assert!(!seg.truncated());
    }
    // A header-only record (SYN, FIN, RST) carries no payload.
    let mut h = header(0);
    h.flags = tcp_flags::SYN;
    let rec = record(h, b"");
    let seg = Segment::parse(&rec).unwrap();
    assert!(seg.payload.is_empty());
}

/// Padding never makes up for missing payload: a record shorter than its
/// header plus `captured_len` is rejected, whatever class it claims.
#[test]
fn rejects_records_shorter_than_their_payload() {
    let payload = vec![7u8; 1000];
    let mut rec = class_record(&payload);
    rec.truncate(HEADER_LEN + 999);
    assert_eq!(
        Segment::parse(&rec).unwrap_err(),
        SegmentError::Length {
            claimed: 1000,
            carried: 999
        }
    );
    rec.truncate(HEADER_LEN - 1);
    assert_eq!(
        Segment::parse(&rec).unwrap_err(),
        SegmentError::Short(HEADER_LEN - 1)
    );
}

#[test]
fn rejects_malformed_records() {
    assert_eq!(
        Segment::parse(&[0; 10]).unwrap_err(),
        SegmentError::Short(10)
    );
    let rec = record(header(5), b"hel");
    assert!(matches!(
        Segment::parse(&rec),
        Err(SegmentError::Length { .. })
    ));
    let mut h = header(0);
    h.direction = 7;
    assert_eq!(
        Segment::parse(&record(h, b"")).unwrap_err(),
        SegmentError::Direction(7)
    );
    let mut h = header(0);
    h.family = 9;
    assert_eq!(
        Segment::parse(&record(h, b"")).unwrap_err(),
        SegmentError::Family(9)
    );
}

#[test]
fn ipv6_addresses() {
    let mut h = header(0);
    h.family = 6;
    h.saddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
    h.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
    let rec = record(h, b"");
    let seg = Segment::parse(&rec).unwrap();
    assert_eq!(seg.dst().to_string(), "[fd00::2]:80");
}
