//! Captured segments as a standard pcap file (LINKTYPE_RAW, nanosecond
//! timestamps) that tcpdump, tshark and Wireshark read.
//!
//! The kernel side copies TCP payloads, not headers; each record becomes an
//! IPv4 or IPv6 packet with a TCP header rebuilt from the record (addresses,
//! ports, sequence and acknowledgement numbers, flags) and valid checksums.
//! A super-packet larger than one IP packet can hold is written as several
//! consecutive packets with advancing sequence numbers.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    time::Duration,
};

use etherparse::{PacketBuilder, PacketBuilderStep, TcpHeader};
use parallelrun_common::tcp_flags;
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};

use crate::capture::Segment;

/// Largest TCP payload in one synthesized IPv4 packet (65535 - 20 - 20); the
/// IPv6 limit (65535 - 20) is larger, so this serves both.
const MAX_CHUNK: usize = 65_495;
/// Snapshot length written in the file header: every packet fits.
const SNAPLEN: u32 = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot create pcap file {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("writing pcap: {0}")]
    Write(#[from] pcap_file::PcapError),
    #[error("building packet: {0}")]
    Build(String),
}

/// Writes segments to a pcap stream.
pub struct PcapSink<W: Write> {
    writer: PcapWriter<W>,
    /// Reused for every packet: no allocation per segment once warm.
    buf: Vec<u8>,
    packets: u64,
}

impl PcapSink<BufWriter<File>> {
    pub fn create(path: &Path) -> Result<Self, PcapError> {
        let file = File::create(path).map_err(|source| PcapError::Create {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(BufWriter::with_capacity(1 << 20, file))
    }
}

impl<W: Write> PcapSink<W> {
    pub fn new(w: W) -> Result<Self, PcapError> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: SNAPLEN,
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
        };
        Ok(Self {
            writer: PcapWriter::with_header(w, header)?,
            buf: Vec::with_capacity(SNAPLEN as usize),
            packets: 0,
        })
    }

    /// Packets written so far (a segment may need more than one).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Writes one segment; `ts` is its wall-clock time since the Unix epoch.
    pub fn write(&mut self, seg: &Segment<'_>, ts: Duration) -> Result<(), PcapError> {
        let h = &seg.header;
        let mut chunks = seg.payload.chunks(MAX_CHUNK).peekable();
        let mut offset = 0u32;
        let mut first = true;
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            let mut flags = h.flags;
            if !first {
                flags &= !tcp_flags::SYN;
            }
            if !last {
                flags &= !(tcp_flags::FIN | tcp_flags::RST);
            }
            self.packet(seg, h.seq.wrapping_add(offset), flags, chunk)?;
            // A truncated segment keeps its full length on record in orig_len
            // of the last packet; the bytes beyond MAX_PAYLOAD were never seen.
            offset = offset.wrapping_add(chunk.len() as u32);
            let orig_extra = if last && seg.truncated() {
                (h.payload_len - h.captured_len) as usize
            } else {
                0
            };
            let orig_len = (self.buf.len() + orig_extra).min(u32::MAX as usize) as u32;
            let packet = PcapPacket::new(ts, orig_len, &self.buf);
            self.writer.write_packet(&packet)?;
            self.packets += 1;
            first = false;
            if last {
                return Ok(());
            }
        }
    }

    fn packet(
        &mut self,
        seg: &Segment<'_>,
        seq: u32,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), PcapError> {
        let h = &seg.header;
        let builder = if h.family == 4 {
            let mut s = [0u8; 4];
            let mut d = [0u8; 4];
            s.copy_from_slice(&h.saddr[..4]);
            d.copy_from_slice(&h.daddr[..4]);
            PacketBuilder::ipv4(s, d, 64)
        } else {
            PacketBuilder::ipv6(h.saddr, h.daddr, 64)
        };
        let tcp = with_flags(builder.tcp(h.sport, h.dport, seq, u16::MAX), flags, h.ack);
        self.buf.clear();
        tcp.write(&mut self.buf, payload)
            .map_err(|e| PcapError::Build(e.to_string()))
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> Result<W, PcapError> {
        let mut w = self.writer.into_writer();
        w.flush()
            .map_err(|e| PcapError::Write(pcap_file::PcapError::IoError(e)))?;
        Ok(w)
    }
}

/// Sets the TCP flags of `flags` (and the acknowledgement number when ACK
/// is set) on a packet being built.
pub(crate) fn with_flags(
    mut tcp: PacketBuilderStep<TcpHeader>,
    flags: u8,
    ack: u32,
) -> PacketBuilderStep<TcpHeader> {
    if flags & tcp_flags::ACK != 0 {
        tcp = tcp.ack(ack);
    }
    if flags & tcp_flags::SYN != 0 {
        tcp = tcp.syn();
    }
    if flags & tcp_flags::FIN != 0 {
        tcp = tcp.fin();
    }
    if flags & tcp_flags::RST != 0 {
        tcp = tcp.rst();
    }
    if flags & tcp_flags::PSH != 0 {
        tcp = tcp.psh();
    }
    tcp
}

#[cfg(test)]
mod tests {
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
}
