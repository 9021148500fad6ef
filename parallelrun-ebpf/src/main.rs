//! parallelrun's TC classifier.
//!
//! Attached (TCX) on ingress and egress of one interface, it copies every TCP
//! segment to or from an old service into the `EVENTS` ring buffer: SYN, FIN,
//! RST and every segment with payload, as a [`SegmentHeader`] followed by the
//! payload bytes. Pure ACKs are skipped. It never drops, delays or changes a
//! packet: every path returns `TCX_NEXT`, so TCX runs the next program (or
//! the default action) exactly as if this one were not there.
//!
//! Each record is written once, straight into ring memory: the program
//! reserves a record of the smallest size class that holds the payload
//! (the layout of [`parallelrun_common::SizedRecord`]: payload capacities
//! are the powers of two in [`CLASSES`], 64 B to 64 KiB; segments without
//! payload are a bare header), loads the payload into it with
//! `bpf_skb_load_bytes`, writes the header field by field and submits it.
//! The earlier design copied every payload twice (into a per-CPU scratch
//! slot, then into the ring with `bpf_ringbuf_output`).
//!
//! Ring space is the price: a record takes at most twice
//! `header + payload` (the class rounds the payload up to the next power of
//! two, at least 64 bytes), so in the worst case the ring holds half as
//! many bytes of payload before it is full; typical traffic is between
//! (full-MSS and 64 KiB GSO segments fill their class to 70–99 %). The
//! padding is never read (the agent reads `captured_len` bytes) and holds
//! only older bytes of this same ring.
//!
//! Packets pay for selection in this order, cheapest first: one lookup in
//! the `PORTS` bitmap (is either port an old service's?), and only then the
//! `SERVICES` hash (exact address, then any address). With `--sample`, a
//! segment whose connection's [`conn_hash_words`] is at or above
//! `SAMPLE_THRESHOLD` is counted ([`Counter::SampledOut`]) and not copied,
//! so the capture's cost scales with the sampled fraction.
//!
//! Verifier rules that shape the code (see each site):
//! - `bpf_ringbuf_reserve` needs a size known at load time: hence the size
//!   classes; `class_of` leaves a constant size on each of its paths and
//!   the verifier follows each path separately, so the copy code after it
//!   is emitted once (649 instructions in all instead of 2,619 with one
//!   inlined copy per class).
//! - `bpf_skb_load_bytes` needs a length provably in `1..=P` for a
//!   destination of `P` bytes: `min` is not tracked through LLVM's codegen,
//!   the mask `((n - 1) & (P - 1)) + 1` is (P a power of two, n > 0).
//! - A reservation must be submitted or discarded on every path.
//! - 512 bytes of stack: the payload lives only in ring memory.
//!
//! Headers it cannot parse (an IPv4 header length or a TCP data offset below
//! the 20-byte minimum) are passed untouched and counted as
//! [`Counter::Malformed`], never read further.
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

use aya_ebpf::{
    bindings::{
        BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, tcx_action_base::TCX_NEXT,
    },
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use parallelrun_common::{
    CLASSES, COUNTER_COUNT, Counter, DEFAULT_RING_BYTES, Direction, MAX_PAYLOAD, MAX_SERVICES,
    PORT_BITMAP_LEN, SAMPLE_ALL, SegmentHeader, ServiceKey, conn_hash_words, has_port, sampled,
    tcp_flags,
};
// The package's library is only the agent's build-dependency handle.
use parallelrun_ebpf as _;

/// Captured segments, consumed by the agent. Resized by the agent at load.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Old services to watch; written by the agent before attaching.
#[map]
static SERVICES: HashMap<ServiceKey, u8> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Per-CPU counters indexed by [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Ring-buffer-full drops over all CPUs (one slot; see where it is bumped).
/// Every record carries its value at write time (`drop_epoch`), so the agent
/// knows exactly which records follow a loss.
#[map]
static DROPS: Array<u64> = Array::with_max_entries(1, 0);

/// One bit per TCP port: set for the port of every old service (written by
/// the agent before attaching). A packet neither of whose ports is set is
/// not ours after this one array lookup, before any `SERVICES` lookup.
#[map]
static PORTS: Array<[u8; PORT_BITMAP_LEN]> = Array::with_max_entries(1, 0);

/// Length of the link-layer header in front of the IP header: 14 for
/// Ethernet and loopback, 0 for L3 devices (tun, wireguard). Set at load.
#[unsafe(no_mangle)]
static L2_LEN: u32 = 14;

/// Bytes waiting in the ring buffer from which a record wakes the agent
/// (see `observe`); below it the agent's poll timer collects them. Set at
/// load from the ring size (the agent's `capture::wakeup_threshold`): a
/// fixed value at or above the ring's capacity would never be reached.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 256 * 1024;

/// Connection sampling: a segment is copied only if its connection's
/// [`conn_hash_words`] is below this (0..=2^32; a fraction F is `F * 2^32`). Set
/// at load from `--sample`; the default keeps every connection.
#[unsafe(no_mangle)]
static SAMPLE_THRESHOLD: u64 = SAMPLE_ALL;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
/// Smallest IPv4 header (IHL 5) and TCP header (data offset 5), in bytes.
const IPV4_MIN_LEN: usize = 20;
const TCP_MIN_LEN: usize = 20;

#[classifier]
pub fn parallelrun(ctx: TcContext) -> i32 {
    count(Counter::PacketsSeen, 1);
    let _ = observe(&ctx);
    // Observe only: let the packet continue through the TCX chain untouched.
    // TCX_NEXT (-1) is TC_ACT_UNSPEC's value: under TCX the next program in
    // the chain runs (or, after the last, the default: pass); on the clsact
    // fallback for older kernels (cls_bpf in direct-action mode) the next
    // filter runs, and after the last the packet goes on unclassified,
    // which is also "pass". TC_ACT_OK/TCX_PASS would end the chain instead.
    TCX_NEXT
}

#[inline(always)]
fn count(counter: Counter, n: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: `c` points into this CPU's slot of a per-CPU array, valid
        // for the program's run; TC programs run with migration disabled and
        // do not nest on one CPU, so nothing else writes it meanwhile.
        unsafe { *c += n };
    }
}

/// The IPv4 header's first 20 bytes as they lie in the packet. Multi-byte
/// fields are in network byte order; addresses are kept as the native
/// (little-endian) words a load gives, which is the memory layout of the
/// record header's byte arrays and what [`conn_hash_words`] takes. Typed
/// loads keep LLVM from splitting byte arrays into per-byte stack slots
/// (it did: ~150 byte moves per record to rebuild the header).
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

/// The fixed IPv6 header, as [`Ipv4Hdr`].
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Hdr {
    version_tc_flow: u32,
    payload_len: u16,
    next_header: u8,
    hop_limit: u8,
    saddr: [u32; 4],
    daddr: [u32; 4],
}

/// The TCP header without options, as [`Ipv4Hdr`].
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHdr {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    /// Data offset in the high nibble.
    doff: u8,
    flags: u8,
    window: u16,
    check: u16,
    urg: u16,
}

/// Addresses, ports and lengths of one TCP segment.
struct Segment {
    family: u8,
    /// 16 bytes as four native words (IPv4 in the first, the rest zero).
    saddr: [u32; 4],
    daddr: [u32; 4],
    /// Offset of the TCP header from the start of the skb data.
    l4_off: usize,
    /// TCP payload length according to the IP header (0 when the IP header
    /// does not say: IPv4 GSO/BIG TCP with tot_len 0, IPv6 jumbograms).
    ip_payload_len: usize,
}

#[inline(always)]
fn observe(ctx: &TcContext) -> Result<(), ()> {
    // SAFETY: a plain read of an initialised `u32` static. Volatile so the
    // compiler reads the value the loader wrote into .rodata instead of
    // folding in the default.
    let l2 = unsafe { core::ptr::read_volatile(&L2_LEN) } as usize;
    // __sk_buff.protocol holds the ethertype in network byte order.
    let proto = u16::from_be(ctx.skb.protocol() as u16);
    let seg = match proto {
        ETH_P_IP => ipv4(ctx, l2)?,
        ETH_P_IPV6 => ipv6(ctx, l2)?,
        _ => return Ok(()),
    };

    // `ctx.load` is bpf_skb_load_bytes: the helper checks offset and length
    // against the skb at run time and fails past its end (linear head or
    // not), so this read needs no bound the verifier can see; the bounds
    // are the helper's, not the verifier's.
    let tcp: TcpHdr = ctx.load(seg.l4_off).map_err(|_| ())?;
    let doff = ((tcp.doff >> 4) as usize) * 4;
    if doff < TCP_MIN_LEN {
        // A data offset below 5 words would put the payload inside the TCP
        // header: not a segment to parse. The stack drops it; we only count.
        count(Counter::Malformed, 1);
        return Err(());
    }
    let sport = u16::from_be(tcp.sport);
    let dport = u16::from_be(tcp.dport);
    // Prefilter: one lookup of the port bitmap decides for most foreign
    // packets; only a packet with an old service's port pays for the
    // `SERVICES` hash lookups (up to two per port).
    let Some(ports) = PORTS.get(0) else {
        return Ok(());
    };
    // Verifier: `port >> 3` of a u16 is at most 8191, inside the bitmap.
    let (d_port, s_port) = (has_port(ports, dport), has_port(ports, sport));
    let direction = if d_port && is_service(seg.family, &seg.daddr, dport) {
        Direction::Request
    } else if s_port && is_service(seg.family, &seg.saddr, sport) {
        Direction::Response
    } else {
        return Ok(());
    };
    count(Counter::PacketsMatched, 1);

    let flags = tcp.flags;
    let payload_off = seg.l4_off + doff;
    // Payload length from the skb (covers GSO/GRO super-packets), cut to what
    // the IP header says when it says anything (drops Ethernet padding).
    let mut payload_len = (ctx.len() as usize).saturating_sub(payload_off);
    if seg.ip_payload_len > 0 {
        payload_len = payload_len.min(seg.ip_payload_len.saturating_sub(doff));
    }
    if payload_len == 0 && flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) == 0 {
        return Ok(()); // pure ACK
    }

    // Connection sampling, symmetric: the client is the source of a
    // request and the destination of a response, so both directions of a
    // connection hash alike and a sampled connection is copied whole.
    // SAFETY: as L2_LEN: a plain read of an initialised `u64` static.
    let threshold = unsafe { core::ptr::read_volatile(&SAMPLE_THRESHOLD) };
    if threshold < SAMPLE_ALL {
        let hash = match direction {
            Direction::Request => conn_hash_words(&seg.saddr, sport, &seg.daddr, dport),
            Direction::Response => conn_hash_words(&seg.daddr, dport, &seg.saddr, sport),
        };
        if !sampled(hash, threshold) {
            count(Counter::SampledOut, 1);
            return Ok(());
        }
    }

    if payload_len > MAX_PAYLOAD {
        count(Counter::Truncated, 1);
    }
    let captured = payload_len.min(MAX_PAYLOAD);
    let rec = Rec {
        skb: ctx,
        payload_off: payload_off as u32,
        captured,
        payload_len: payload_len as u32,
        saddr: seg.saddr,
        daddr: seg.daddr,
        seq: u32::from_be(tcp.seq),
        ack: u32::from_be(tcp.ack),
        sport,
        dport,
        family: seg.family,
        direction: direction as u8,
        flags,
    };
    rec.emit();
    Ok(())
}

/// The record size (header + payload capacity) and the payload mask of the
/// smallest class that holds `captured` payload bytes (0: a bare header).
///
/// Verifier: bpf_ringbuf_reserve needs a size known to be constant. The
/// branches below leave a constant (size, mask) pair on every path, and the
/// verifier follows each path on its own from here (the reservation size
/// is a "precise" register, so paths with different sizes are never merged),
/// so one copy of the code after it serves every class.
#[inline(always)]
fn class_of(captured: usize) -> (u64, usize) {
    const H: usize = core::mem::size_of::<SegmentHeader>();
    // `black_box` keeps LLVM from turning the chain into arithmetic on
    // `captured` (a computed size would not be a constant to the verifier).
    let c = core::hint::black_box(captured);
    let p = if c == 0 {
        0
    } else if c <= CLASSES[0] {
        CLASSES[0]
    } else if c <= CLASSES[1] {
        CLASSES[1]
    } else if c <= CLASSES[2] {
        CLASSES[2]
    } else if c <= CLASSES[3] {
        CLASSES[3]
    } else if c <= CLASSES[4] {
        CLASSES[4]
    } else if c <= CLASSES[5] {
        CLASSES[5]
    } else if c <= CLASSES[6] {
        CLASSES[6]
    } else if c <= CLASSES[7] {
        CLASSES[7]
    } else if c <= CLASSES[8] {
        CLASSES[8]
    } else if c <= CLASSES[9] {
        CLASSES[9]
    } else {
        CLASSES[10]
    };
    ((H + p) as u64, p.wrapping_sub(1))
}

/// One segment on its way into the ring: where its payload is in the skb,
/// how much of it is copied, and the fields of its header.
struct Rec<'a> {
    skb: &'a TcContext,
    payload_off: u32,
    /// 0..=MAX_PAYLOAD.
    captured: usize,
    payload_len: u32,
    saddr: [u32; 4],
    daddr: [u32; 4],
    seq: u32,
    ack: u32,
    sport: u16,
    dport: u16,
    family: u8,
    direction: u8,
    flags: u8,
}

impl Rec<'_> {
    /// Reserves a record of the smallest class that holds the payload
    /// (a bare header for a SYN, FIN or RST without payload), loads the
    /// payload into it, writes the header and submits it.
    #[inline(always)]
    fn emit(self) {
        let (size, mask) = class_of(self.captured);
        // Decided before the reservation: the waiting bytes are read
        // without the record's own (see `wakeup_flag`).
        let flags = wakeup_flag(size);
        let Some(mut entry) = EVENTS.reserve_bytes(size as usize, 0) else {
            ring_full();
            return;
        };
        let rec = entry.as_mut_ptr();
        let mut n = 0;
        if self.captured > 0 {
            // Verifier: the length must be provably in 1..=P, P = mask + 1
            // the class's payload capacity (a constant on this path);
            // `captured` is in 1..=P here, which the mask keeps unchanged.
            n = ((self.captured - 1) & mask) + 1;
            // SAFETY: `rec` points to `size` = HEADER_LEN + P reserved,
            // writable bytes of ring memory, and HEADER_LEN + n <= size.
            // The skb pointer is the program's context. bpf_skb_load_bytes
            // checks `payload_off + n` against the skb at run time and fails
            // past its end.
            let ret = unsafe {
                bpf_skb_load_bytes(
                    self.skb.skb.skb as *const _,
                    self.payload_off,
                    rec.add(core::mem::size_of::<SegmentHeader>()).cast(),
                    n as u32,
                )
            };
            if ret != 0 {
                // The reservation must be given back on every path
                // (verifier); a discarded record is skipped by the reader.
                entry.discard(0);
                count(Counter::ReadErrors, 1);
                return;
            }
        }
        // SAFETY: the record starts with a SegmentHeader's worth of reserved
        // bytes (size >= HEADER_LEN), 8-byte aligned (ring records are).
        unsafe { self.write_header(rec.cast(), n as u32) };
        entry.submit(flags);
        count(Counter::RecordsEmitted, 1);
        count(Counter::BytesEmitted, n as u64);
    }

    /// Writes the header field by field straight into ring memory (no
    /// stack copy), with the timestamp and drop epoch taken last.
    ///
    /// # Safety
    /// `h` must be valid for writes of a SegmentHeader and 8-byte aligned.
    #[inline(always)]
    unsafe fn write_header(&self, h: *mut SegmentHeader, captured: u32) {
        use core::ptr::addr_of_mut;
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        let ts_ns = unsafe { bpf_ktime_get_ns() };
        let drop_epoch = DROPS.get(0).map_or(0, |d| *d as u32);
        // SAFETY: `h` is valid and aligned (the caller's contract); the
        // address arrays sit at offsets 8 and 24, 4-byte aligned, and
        // [u32; 4] has the size and layout of [u8; 16] (the words are
        // native loads of the packet's bytes, so the bytes land in packet
        // order).
        unsafe {
            addr_of_mut!((*h).ts_ns).write(ts_ns);
            addr_of_mut!((*h).saddr)
                .cast::<[u32; 4]>()
                .write(self.saddr);
            addr_of_mut!((*h).daddr)
                .cast::<[u32; 4]>()
                .write(self.daddr);
            addr_of_mut!((*h).seq).write(self.seq);
            addr_of_mut!((*h).ack).write(self.ack);
            addr_of_mut!((*h).payload_len).write(self.payload_len);
            addr_of_mut!((*h).captured_len).write(captured);
            addr_of_mut!((*h).sport).write(self.sport);
            addr_of_mut!((*h).dport).write(self.dport);
            addr_of_mut!((*h).family).write(self.family);
            addr_of_mut!((*h).direction).write(self.direction);
            addr_of_mut!((*h).flags).write(self.flags);
            addr_of_mut!((*h)._pad).write(0);
            addr_of_mut!((*h).drop_epoch).write(drop_epoch);
            addr_of_mut!((*h)._pad2).write(0);
        }
    }
}

/// The submit flag of a record of `size` bytes. Wake the agent only once a
/// batch is waiting: a wakeup is an IRQ work item (on some hypervisors a
/// trapping self-IPI costing microseconds), and per-record wakeups were most
/// of this program's cost. The agent also polls every few milliseconds, so
/// a quiet trickle is not stranded. Only the record that crosses the
/// threshold wakes it: one wakeup per batch, not one per record while the
/// agent catches up.
#[inline(always)]
fn wakeup_flag(size: u64) -> u64 {
    // SAFETY: as L2_LEN: a plain read of an initialised `u64` static.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if waiting < threshold && waiting + size >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// The only failure of bpf_ringbuf_reserve is "no room": count it, the
/// agent reports it as a capture loss, and move the drop epoch.
#[inline(always)]
fn ring_full() {
    count(Counter::RingBufFull, 1);
    if let Some(d) = DROPS.get_ptr_mut(0) {
        // Shared by all CPUs, and the bpf target has no atomic fetch_add in
        // `core`: CPUs racing here may lose an increment, but the value
        // always changes, which is all a reader of `drop_epoch` needs.
        // SAFETY: `d` points to DROPS' only value, a u64 valid for the
        // program's run; volatile access never tears an aligned u64 on the
        // bpf target.
        unsafe { core::ptr::write_volatile(d, core::ptr::read_volatile(d).wrapping_add(1)) };
    }
}

#[inline(always)]
fn is_service(family: u8, addr: &[u32; 4], port: u16) -> bool {
    let exact = ServiceKey {
        // SAFETY: [u32; 4] and [u8; 16] have the same size, every bit
        // pattern is valid for both; the words are native loads of the
        // address bytes, so this gives the bytes back in packet order.
        addr: unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(*addr) },
        port,
        family,
        _pad: 0,
    };
    // SAFETY: `HashMap::get` is unsafe because the returned reference may
    // change under the caller (the agent can update the map); only whether
    // an entry exists is used, the reference is never read.
    unsafe { SERVICES.get(exact).is_some() || SERVICES.get(ServiceKey::any_addr(port)).is_some() }
}

#[inline(always)]
fn ipv4(ctx: &TcContext, l3: usize) -> Result<Segment, ()> {
    // bpf_skb_load_bytes (see `observe`): bounded by the helper at run time.
    let ip: Ipv4Hdr = ctx.load(l3).map_err(|_| ())?;
    if ip.version_ihl >> 4 != 4 || ip.protocol != IPPROTO_TCP {
        return Err(());
    }
    let ihl = ((ip.version_ihl & 0x0f) as usize) * 4;
    if ihl < IPV4_MIN_LEN {
        // Below 5 words the "TCP header" would start inside the IP header.
        // The stack drops such a packet (ip_rcv); we only count it.
        count(Counter::Malformed, 1);
        return Err(());
    }
    // Only first fragments carry a TCP header; later ones are skipped.
    if u16::from_be(ip.frag_off) & 0x1fff != 0 {
        return Err(());
    }
    let tot_len = u16::from_be(ip.tot_len) as usize;
    Ok(Segment {
        family: 4,
        saddr: [ip.saddr, 0, 0, 0],
        daddr: [ip.daddr, 0, 0, 0],
        l4_off: l3 + ihl,
        ip_payload_len: tot_len.saturating_sub(ihl),
    })
}

#[inline(always)]
fn ipv6(ctx: &TcContext, l3: usize) -> Result<Segment, ()> {
    // bpf_skb_load_bytes (see `observe`): bounded by the helper at run time.
    let ip: Ipv6Hdr = ctx.load(l3).map_err(|_| ())?;
    // Extension headers are not followed: TCP must be the next header.
    // The version is the high nibble of the first byte, the low byte of
    // the native (little-endian) word.
    if (ip.version_tc_flow & 0xff) >> 4 != 6 || ip.next_header != IPPROTO_TCP {
        return Err(());
    }
    Ok(Segment {
        family: 6,
        saddr: ip.saddr,
        daddr: ip.daddr,
        l4_off: l3 + 40,
        ip_payload_len: u16::from_be(ip.payload_len) as usize,
    })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
