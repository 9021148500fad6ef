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

/// Smallest payload capacity of a ring-buffer record (see [`SizedRecord`]).
pub const MIN_CLASS: usize = 64;

/// Payload capacities of the record size classes, smallest first: every
/// power of two from [`MIN_CLASS`] to [`MAX_PAYLOAD`].
pub const CLASSES: [usize; 11] = [
    64,
    128,
    256,
    512,
    1024,
    2048,
    4096,
    8192,
    16 * 1024,
    32 * 1024,
    MAX_PAYLOAD,
];

/// One ring-buffer record of a fixed size class: the header, then room for
/// `P` payload bytes of which the first `header.captured_len` are payload.
///
/// The TC program reserves a record of the smallest class that holds the
/// segment's payload directly in ring memory (bpf_ringbuf_reserve needs a
/// size the verifier knows to be constant) and copies the payload into it
/// once. The bytes after `captured_len` are padding and never read.
/// Segments without payload (SYN, FIN, RST) are a bare [`SegmentHeader`].
///
/// Ring space: with payload capacities as powers of two from 64 bytes, a
/// record of `n` payload bytes takes `HEADER_LEN + P` with `P < 2n` (or
/// `P = 64` for `n <= 64`), so at most twice `HEADER_LEN + n`.
#[repr(C)]
pub struct SizedRecord<const P: usize> {
    pub header: SegmentHeader,
    pub payload: [u8; P],
}

/// Hash of a TCP connection, the same for both of its directions: computed
/// over (client address, client port, server address, server port), where
/// the client of a request-direction segment is its source and of a
/// response-direction segment its destination. Addresses are 16 bytes
/// (IPv4 in the first 4, the rest zero), ports in host byte order.
///
/// Hand-written because the kernel side is `no_std` eBPF: no `std` hasher
/// exists there, the verifier wants straight-line code without loops it
/// cannot bound, and the kernel and the agent must agree bit for bit (a
/// `std` hasher is randomly seeded and may change between releases). Each
/// 32-bit word is folded in with a multiply (FNV-like, 64-bit), then
/// murmur3's 64-bit finalizer spreads every input bit over the result:
/// nine multiplications and a few shifts, cheap in the kernel.
#[inline(always)]
pub fn conn_hash(
    client_addr: &[u8; 16],
    client_port: u16,
    server_addr: &[u8; 16],
    server_port: u16,
) -> u32 {
    conn_hash_words(
        &addr_words(client_addr),
        client_port,
        &addr_words(server_addr),
        server_port,
    )
}

/// An address as the four little-endian 32-bit words [`conn_hash_words`]
/// takes: what a native load of the 16 bytes gives on a little-endian
/// machine (the `bpfel` target the kernel side is built for).
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_le_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_le_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_le_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_le_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// [`conn_hash`] over addresses already loaded as words ([`addr_words`]):
/// the kernel side reads packet headers as words and calls this directly.
#[inline(always)]
pub fn conn_hash_words(
    client_addr: &[u32; 4],
    client_port: u16,
    server_addr: &[u32; 4],
    server_port: u16,
) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    h = (h ^ client_addr[0] as u64).wrapping_mul(K);
    h = (h ^ client_addr[1] as u64).wrapping_mul(K);
    h = (h ^ client_addr[2] as u64).wrapping_mul(K);
    h = (h ^ client_addr[3] as u64).wrapping_mul(K);
    h = (h ^ server_addr[0] as u64).wrapping_mul(K);
    h = (h ^ server_addr[1] as u64).wrapping_mul(K);
    h = (h ^ server_addr[2] as u64).wrapping_mul(K);
    h = (h ^ server_addr[3] as u64).wrapping_mul(K);
    h = (h ^ (((client_port as u64) << 16) | server_port as u64)).wrapping_mul(K);
    // murmur3 fmix64.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// Sampling threshold that keeps every connection: `conn_hash` is a `u32`,
/// so every hash is below 2^32.
pub const SAMPLE_ALL: u64 = 1 << 32;

/// Whether a connection of hash `hash` is sampled under `threshold`
/// (0..=[`SAMPLE_ALL`]; a fraction F of connections is `F * 2^32`).
#[inline(always)]
pub fn sampled(hash: u32, threshold: u64) -> bool {
    (hash as u64) < threshold
}

/// Bytes of the `PORTS` bitmap: one bit per TCP port, set for every port an
/// old service listens on. The TC program looks it up once per packet and
/// consults the `SERVICES` hash only for packets with such a port.
pub const PORT_BITMAP_LEN: usize = 65536 / 8;

/// Sets `port`'s bit in a `PORTS` bitmap.
pub fn set_port(bitmap: &mut [u8; PORT_BITMAP_LEN], port: u16) {
    bitmap[(port >> 3) as usize] |= 1 << (port & 7);
}

/// Whether `port`'s bit is set in a `PORTS` bitmap.
#[inline(always)]
pub fn has_port(bitmap: &[u8; PORT_BITMAP_LEN], port: u16) -> bool {
    bitmap[(port >> 3) as usize] & (1 << (port & 7)) != 0
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
    /// Segments that matched but could not be read (bpf_skb_load_bytes
    /// failed; the reserved record was discarded): never expected, counted
    /// so a loss is never silent.
    ReadErrors = 6,
    /// IPv4 TCP packets with a header length (IHL) below 5 words, and TCP
    /// segments (IPv4 or IPv6) with a data offset below 5 words: not parsed,
    /// passed untouched, never recorded. Counted for every packet on the
    /// interface, before the old services are matched (a header that cannot
    /// be parsed has no trustworthy ports). The kernel's stack drops them.
    Malformed = 7,
    /// Segments of connections left out by connection sampling (`--sample`):
    /// matched and not a pure ACK, but not copied. Their connection's hash
    /// is at or above the sampling threshold.
    SampledOut = 8,
}

impl Counter {
    pub const ALL: [Counter; 9] = [
        Counter::PacketsSeen,
        Counter::PacketsMatched,
        Counter::RecordsEmitted,
        Counter::BytesEmitted,
        Counter::RingBufFull,
        Counter::Truncated,
        Counter::ReadErrors,
        Counter::Malformed,
        Counter::SampledOut,
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
            Counter::SampledOut => "sampled_out",
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
const _: () = {
    let mut i = 0;
    while i < CLASSES.len() {
        assert!(CLASSES[i].is_power_of_two() && CLASSES[i].is_multiple_of(8));
        assert!(i == 0 || CLASSES[i] == 2 * CLASSES[i - 1]);
        i += 1;
    }
    assert!(CLASSES[0] == MIN_CLASS && CLASSES[CLASSES.len() - 1] == MAX_PAYLOAD);
};
// Ring-buffer reservations are 8-byte aligned and sized.
const _: () = assert!(core::mem::size_of::<SizedRecord<MIN_CLASS>>() == HEADER_LEN + MIN_CLASS);

#[cfg(test)]
mod tests;
