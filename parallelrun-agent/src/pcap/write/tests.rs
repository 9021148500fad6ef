use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;

use super::*;
use crate::capture::segment_tests::{header, record};

fn read_back(bytes: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
    let mut r = PcapReader::new(bytes).unwrap();
    assert_eq!(r.header().datalink, DataLink::RAW);
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let s = SlicedPacket::from_ip(&p.data).unwrap();
        assert!(matches!(
            s.net,
            Some(NetSlice::Ipv4(_)) | Some(NetSlice::Ipv6(_))
        ));
        let Some(TransportSlice::Tcp(tcp)) = s.transport else {
            panic!("not TCP")
        };
        let flags = (tcp.fin() as u8) | ((tcp.syn() as u8) << 1) | ((tcp.ack() as u8) << 4);
        out.push((tcp.sequence_number(), flags, tcp.payload().to_vec()));
    }
    out
}

#[test]
fn one_segment_one_packet() {
    let rec = record(header(5), b"hello");
    let seg = Segment::parse(&rec).unwrap();
    let mut sink = PcapSink::new(Vec::new()).unwrap();
    sink.write(&seg, Duration::from_secs(1)).unwrap();
    let bytes = sink.finish().unwrap();
    assert_eq!(
        read_back(&bytes),
        vec![(1000, tcp_flags::ACK, b"hello".to_vec())]
    );
}

#[test]
fn super_packets_are_split_with_advancing_sequence_numbers() {
    let payload: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let mut h = header(payload.len() as u32);
    h.flags |= tcp_flags::FIN;
    let rec = record(h, &payload);
    let seg = Segment::parse(&rec).unwrap();
    let mut sink = PcapSink::new(Vec::new()).unwrap();
    sink.write(&seg, Duration::ZERO).unwrap();
    assert_eq!(sink.packets(), 2);
    let got = read_back(&sink.finish().unwrap());
    assert_eq!(got[0].0, 1000);
    assert_eq!(got[1].0, 1000 + MAX_CHUNK as u32);
    // FIN only on the last piece.
    assert_eq!(got[0].1 & tcp_flags::FIN, 0);
    assert_eq!(got[1].1 & tcp_flags::FIN, tcp_flags::FIN);
    let joined: Vec<u8> = got.into_iter().flat_map(|(_, _, p)| p).collect();
    assert_eq!(joined, payload);
}

#[test]
fn syn_without_payload_and_ipv6() {
    let mut h = header(0);
    h.flags = tcp_flags::SYN;
    h.family = 6;
    h.saddr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let rec = record(h, b"");
    let seg = Segment::parse(&rec).unwrap();
    let mut sink = PcapSink::new(Vec::new()).unwrap();
    sink.write(&seg, Duration::ZERO).unwrap();
    assert_eq!(
        read_back(&sink.finish().unwrap()),
        vec![(1000, tcp_flags::SYN, vec![])]
    );
}
