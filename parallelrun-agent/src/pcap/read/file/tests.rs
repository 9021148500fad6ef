//! File formats: pcap byte orders and timestamp resolutions, files that are
//! not captures, pcapng sections, interfaces and packet blocks, and
//! timestamp units.

use std::{borrow::Cow, fs::File, io::Write, path::Path, time::Duration};

use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcapng::{
        PcapNgWriter, RawBlock,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
            section_header::SectionHeaderBlock, simple_packet::SimplePacketBlock,
        },
    },
};
use tempfile::TempDir;

use super::super::{
    PcapReadError, PcapSource,
    tests::{
        CLIENT4, CLIENT6, DATA, Rec, SERVICE4, SERVICE6, frame, ip_tcp, read_all, services,
        write_pcap, write_pcap_with,
    },
};
use super::*;

fn open_err(path: &Path, svc: &[&str]) -> PcapReadError {
    match PcapSource::open(path, &services(svc)) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
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
fn pcapng_of_unsupported_link_types_says_so() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("usb.pcapng");
    let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
    w.write_pcapng_block(idb(147, vec![])).unwrap();
    w.write_pcapng_block(idb(1, vec![])).unwrap();
    w.write_pcapng_block(idb(147, vec![])).unwrap();
    for iface in [0, 2, 0] {
        w.write_pcapng_block(epb(iface, 0, b"usb")).unwrap();
    }
    w.into_inner().flush().unwrap();
    let mut src = PcapSource::open(&path, &services(&[SERVICE4])).unwrap();
    src.for_each(|_| {}).unwrap();
    let what = src.nothing_found().unwrap();
    assert!(
        what.contains("(link type USER0 (147), ETHERNET (1))"),
        "{what}"
    );
    assert!(what.ends_with("3 of an unsupported link type"), "{what}");
}
