//! Types shared by the parallelrun TC program (kernel side) and the agent.
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel writes these
//! structs into BPF maps and the ring buffer, the agent reads them back byte
//! for byte. With the `user` feature the types implement [`aya::Pod`].
#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

/// Largest payload copied from one skb. GSO/GRO super-packets carry up to
/// 64 KiB; a larger payload (BIG TCP) is cut here and counted as truncated.
/// Must stay a power of two: the kernel side clamps with `& (MAX_PAYLOAD - 1)`.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Default size of the capture ring buffer in bytes (power of two, page multiple).
pub const DEFAULT_RING_BYTES: u32 = 32 * 1024 * 1024;

/// Upper bound on configured old services (entries of the `SERVICES` map).
pub const MAX_SERVICES: u32 = 64;

/// Which way a segment travels relative to the old service.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to old service.
    Request = 0,
    /// Old service to client.
    Response = 1,
}

impl Direction {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Request),
            1 => Some(Self::Response),
            _ => None,
        }
    }
}

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Fixed header of every ring-buffer record; `captured_len` payload bytes
/// follow it directly. Addresses are 16 bytes; IPv4 uses the first 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the program saw the skb.
    pub ts_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Sequence and acknowledgement numbers, host byte order.
    pub seq: u32,
    pub ack: u32,
    /// TCP payload bytes carried by the skb.
    pub payload_len: u32,
    /// Payload bytes that follow this header (less than `payload_len` only
    /// when the skb carried more than [`MAX_PAYLOAD`]).
    pub captured_len: u32,
    /// Ports, host byte order.
    pub sport: u16,
    pub dport: u16,
    /// 4 or 6.
    pub family: u8,
    /// A [`Direction`] as u8.
    pub direction: u8,
    /// TCP flags byte (see [`tcp_flags`]).
    pub flags: u8,
    pub _pad: u8,
    /// Ring-buffer-full drops so far (all CPUs, wrapping) when this record
    /// was written. A record whose value differs from the previous one's
    /// follows lost records: the gaps it reveals are ring-buffer drops.
    pub drop_epoch: u32,
    pub _pad2: u32,
}

/// Size of [`SegmentHeader`] on the wire of the ring buffer.
pub const HEADER_LEN: usize = core::mem::size_of::<SegmentHeader>();

/// One per-CPU scratch slot: the record is assembled here, then copied into
/// the ring buffer with its exact length (header + captured payload).
#[repr(C)]
pub struct Record {
    pub header: SegmentHeader,
    pub payload: [u8; MAX_PAYLOAD],
}

/// Key of the `SERVICES` map: an old service's address and port.
/// `family == 0` with an all-zero address means "any address" (`:PORT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    /// 0 (any address), 4 or 6.
    pub family: u8,
    pub _pad: u8,
}

impl ServiceKey {
    pub const fn any_addr(port: u16) -> Self {
        Self {
            addr: [0; 16],
            port,
            family: 0,
            _pad: 0,
        }
    }
}

/// Indices of the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every skb the program ran on.
    PacketsSeen = 0,
    /// TCP segments to or from an old service (pure ACKs included).
    PacketsMatched = 1,
    /// Records written to the ring buffer.
    RecordsEmitted = 2,
    /// Payload bytes written to the ring buffer.
    BytesEmitted = 3,
    /// Records lost because the ring buffer was full.
    RingBufFull = 4,
    /// Segments whose payload exceeded [`MAX_PAYLOAD`] and was cut.
    Truncated = 5,
    /// Segments that matched but could not be read (helper failure, no
    /// scratch slot): never expected, counted so a loss is never silent.
    ReadErrors = 6,
    /// IPv4 TCP packets with a header length (IHL) below 5 words, and TCP
    /// segments (IPv4 or IPv6) with a data offset below 5 words: not parsed,
    /// passed untouched, never recorded. Counted for every packet on the
    /// interface, before the old services are matched (a header that cannot
    /// be parsed has no trustworthy ports). The kernel's stack drops them.
    Malformed = 7,
}

impl Counter {
    pub const ALL: [Counter; 8] = [
        Counter::PacketsSeen,
        Counter::PacketsMatched,
        Counter::RecordsEmitted,
        Counter::BytesEmitted,
        Counter::RingBufFull,
        Counter::Truncated,
        Counter::ReadErrors,
        Counter::Malformed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::PacketsSeen => "packets_seen",
            Counter::PacketsMatched => "packets_matched",
            Counter::RecordsEmitted => "records_emitted",
            Counter::BytesEmitted => "bytes_emitted",
            Counter::RingBufFull => "ringbuf_full_drops",
            Counter::Truncated => "truncated",
            Counter::ReadErrors => "read_errors",
            Counter::Malformed => "malformed",
        }
    }
}

/// Number of entries in the `COUNTERS` map.
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), only integers and byte arrays, no implicit padding
    // (HEADER_LEN == 72 is asserted below): every bit pattern is a valid
    // value and every byte is initialised.
    unsafe impl aya::Pod for super::SegmentHeader {}
    // SAFETY: as above; size 20 with no implicit padding (asserted below).
    unsafe impl aya::Pod for super::ServiceKey {}
}

// `KernelCounters` and the agent index arrays by `counter as usize`.
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i] as usize == i);
        i += 1;
    }
};
const _: () = assert!(HEADER_LEN == 72);
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(MAX_PAYLOAD.is_power_of_two());
