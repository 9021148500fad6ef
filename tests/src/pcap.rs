//! An independent reader for the agent's pcap: parses the packets with
//! etherparse and rebuilds each direction of each connection by sequence
//! number. Deliberately separate from the agent's own code, so that a bug
//! there cannot hide itself here.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::{DataLink, pcap::PcapReader};

/// One TCP packet from the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: Vec<u8>,
}

pub fn read(path: &Path) -> Vec<Packet> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut r = PcapReader::new(file).expect("pcap header");
    assert_eq!(r.header().datalink, DataLink::RAW);
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.expect("pcap packet");
        assert_eq!(
            p.orig_len as usize,
            p.data.len(),
            "truncated packet in pcap"
        );
        let s = SlicedPacket::from_ip(&p.data).expect("IP packet");
        let (sip, dip) = match s.net {
            Some(NetSlice::Ipv4(v4)) => (
                v4.header().source_addr().into(),
                v4.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(v6)) => (
                v6.header().source_addr().into(),
                v6.header().destination_addr().into(),
            ),
            _ => panic!("not IP"),
        };
        let Some(TransportSlice::Tcp(tcp)) = s.transport else {
            panic!("not TCP")
        };
        out.push(Packet {
            src: SocketAddr::new(sip, tcp.source_port()),
            dst: SocketAddr::new(dip, tcp.destination_port()),
            seq: tcp.sequence_number(),
            syn: tcp.syn(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            payload: tcp.payload().to_vec(),
        });
    }
    out
}

/// One direction of one connection.
#[derive(Debug, Default)]
pub struct Stream {
    pub bytes: Vec<u8>,
    pub saw_syn: bool,
    pub saw_fin: bool,
    /// Largest payload carried by one packet (GSO super-packets show here).
    pub max_payload: usize,
}

/// Rebuilds the byte stream from `src` to `dst`: starts after the SYN,
/// places every payload at its sequence offset, and panics on a gap or on
/// overlapping data that differs.
pub fn stream(packets: &[Packet], src: SocketAddr, dst: SocketAddr) -> Stream {
    let mine: Vec<&Packet> = packets
        .iter()
        .filter(|p| p.src == src && p.dst == dst)
        .collect();
    let syn = mine
        .iter()
        .find(|p| p.syn)
        .unwrap_or_else(|| panic!("no SYN from {src} to {dst} in the capture"));
    let isn = syn.seq.wrapping_add(1);
    let mut pieces: BTreeMap<u32, &[u8]> = BTreeMap::new();
    let mut s = Stream {
        saw_syn: true,
        ..Default::default()
    };
    for p in &mine {
        s.saw_fin |= p.fin;
        s.max_payload = s.max_payload.max(p.payload.len());
        if p.payload.is_empty() {
            continue;
        }
        let off = p.seq.wrapping_sub(isn);
        // A retransmission may be cut differently from the original (TCP
        // may resegment): the bytes both carry must be equal, and the
        // longer one is kept.
        let piece = pieces.entry(off).or_insert(&p.payload);
        let common = piece.len().min(p.payload.len());
        assert_eq!(
            &piece[..common],
            &p.payload[..common],
            "retransmission at offset {off} differs"
        );
        if p.payload.len() > piece.len() {
            *piece = &p.payload;
        }
    }
    for (off, data) in pieces {
        let off = off as usize;
        assert!(
            off <= s.bytes.len(),
            "gap in {src} -> {dst}: bytes {}..{off} missing",
            s.bytes.len()
        );
        let overlap = s.bytes.len() - off;
        if overlap >= data.len() {
            assert_eq!(&s.bytes[off..off + data.len()], data, "overlap differs");
            continue;
        }
        assert_eq!(&s.bytes[off..], &data[..overlap], "overlap differs");
        s.bytes.extend_from_slice(&data[overlap..]);
    }
    s
}

/// Pairs (direction, sequence number, payload length, flags) seen more than
/// once: a packet delivered twice by the capture (as happens when both hooks
/// of `lo` report it) shows up here. Real retransmissions are possible but
/// not on an idle loopback.
pub fn duplicates(packets: &[Packet]) -> Vec<&Packet> {
    let mut seen = std::collections::HashSet::new();
    packets
        .iter()
        .filter(|p| !seen.insert((p.src, p.dst, p.seq, p.payload.len(), p.syn, p.fin, p.rst)))
        .collect()
}
