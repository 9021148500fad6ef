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

use crate::{capture::Segment, private_file};

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
        let file = private_file::create(path).map_err(|source| PcapError::Create {
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
mod tests;
