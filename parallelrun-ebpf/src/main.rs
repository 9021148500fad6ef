//! parallelrun's TC classifier.
//!
//! Attached (TCX) on ingress and egress of one interface, it copies every TCP
//! segment to or from an old service into the `EVENTS` ring buffer: SYN, FIN,
//! RST and every segment with payload, as a [`SegmentHeader`] followed by the
//! payload bytes. Pure ACKs are skipped. It never drops, delays or changes a
//! packet: every path returns `TCX_NEXT`, so TCX runs the next program (or
//! the default action) exactly as if this one were not there.
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
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use parallelrun_common::{
    COUNTER_COUNT, Counter, DEFAULT_RING_BYTES, Direction, HEADER_LEN, MAX_PAYLOAD, MAX_SERVICES,
    Record, SegmentHeader, ServiceKey, tcp_flags,
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

/// One scratch [`Record`] per CPU, indexed by `bpf_get_smp_processor_id()`.
/// A plain `Array` and not a `PerCpuArray`: per-CPU values are capped at
/// 32 KiB, a record is 64 KiB + header. The agent sets max_entries to the
/// number of possible CPUs. Programs on one CPU do not interleave (TC runs
/// with migration and bottom halves disabled), so a slot has one writer.
#[map]
static SCRATCH: Array<Record> = Array::with_max_entries(1, 0);

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

/// Addresses, ports and lengths of one TCP segment.
struct Segment {
    family: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
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
    let tcp: [u8; TCP_MIN_LEN] = ctx.load(seg.l4_off).map_err(|_| ())?;
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if doff < TCP_MIN_LEN {
        // A data offset below 5 words would put the payload inside the TCP
        // header: not a segment to parse. The stack drops it; we only count.
        count(Counter::Malformed, 1);
        return Err(());
    }
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let direction = if is_service(seg.family, &seg.daddr, dport) {
        Direction::Request
    } else if is_service(seg.family, &seg.saddr, sport) {
        Direction::Response
    } else {
        return Ok(());
    };
    count(Counter::PacketsMatched, 1);

    let flags = tcp[13];
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

    // Records are built in a per-CPU scratch slot and copied out with
    // `output` rather than written in place with `reserve`: their length
    // varies (header + 0..=64 KiB of payload), and bpf_ringbuf_reserve needs
    // a size the verifier knows to be constant. Reserving the maximum for
    // every record would waste the ring on small segments. (A dynptr
    // reservation, bpf_ringbuf_reserve_dynptr, takes a variable size and
    // would save the second copy: a later change.)
    // SAFETY: bpf_get_smp_processor_id has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(rec) = SCRATCH.get_ptr_mut(cpu) else {
        count(Counter::ReadErrors, 1);
        return Err(());
    };
    // SAFETY: `rec` is this CPU's slot of SCRATCH (non-null, aligned, valid
    // for the run). Only programs on this CPU use the slot and they do not
    // nest (see SCRATCH), so this is the only reference to it.
    let rec = unsafe { &mut *rec };

    let mut captured = 0usize;
    if payload_len > 0 {
        if payload_len > MAX_PAYLOAD {
            count(Counter::Truncated, 1);
        }
        // Verifier: bpf_skb_load_bytes needs a length provably in
        // 1..=MAX_PAYLOAD (zero is "invalid zero-sized read"). `min` alone is
        // not tracked through LLVM's codegen; the mask is, and it keeps the
        // value unchanged for 1..=MAX_PAYLOAD (MAX_PAYLOAD is a power of two).
        let n = payload_len.min(MAX_PAYLOAD);
        let n = ((n - 1) & (MAX_PAYLOAD - 1)) + 1;
        // bpf_skb_load_bytes again: `payload_off + n` past the skb's end
        // fails at run time (counted below). Only the destination's bound is
        // the verifier's: n <= MAX_PAYLOAD, the size of `rec.payload`.
        // SAFETY: `ctx.skb.skb` is the program's context pointer and the
        // destination is `rec.payload`, writable for n <= MAX_PAYLOAD bytes.
        let ret = unsafe {
            bpf_skb_load_bytes(
                ctx.skb.skb as *const _,
                payload_off as u32,
                rec.payload.as_mut_ptr().cast(),
                n as u32,
            )
        };
        if ret != 0 {
            count(Counter::ReadErrors, 1);
            return Err(());
        }
        captured = n;
    }

    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    rec.header = SegmentHeader {
        ts_ns,
        saddr: seg.saddr,
        daddr: seg.daddr,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        payload_len: payload_len as u32,
        captured_len: captured as u32,
        sport,
        dport,
        family: seg.family,
        direction: direction as u8,
        flags,
        _pad: 0,
        drop_epoch: DROPS.get(0).map_or(0, |d| *d as u32),
        _pad2: 0,
    };

    // Verifier: the output length must be bounded by the map value size;
    // `captured` is 0 or in 1..=MAX_PAYLOAD, so this is at most a Record.
    let len = (HEADER_LEN + captured).min(core::mem::size_of::<Record>());
    // SAFETY: `rec` is a whole Record whose bytes are all initialised (map
    // values are zero-filled at creation; Record has no padding) and
    // `len <= size_of::<Record>()`; `rec` is not used while `bytes` lives.
    let bytes = unsafe { core::slice::from_raw_parts((rec as *const Record).cast::<u8>(), len) };
    // Wake the agent only once a batch is waiting: a wakeup is an IRQ work
    // item (on some hypervisors a trapping self-IPI costing microseconds),
    // and per-record wakeups were most of this program's cost. The agent
    // also polls every few milliseconds, so a quiet trickle is not stranded.
    // Only the record that crosses the threshold wakes it: one wakeup per
    // batch, not one per record while the agent catches up.
    // SAFETY: as L2_LEN: a plain read of an initialised `u64` static.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let wakeup = if waiting < threshold && waiting + len as u64 >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match EVENTS.output::<[u8]>(bytes, wakeup as u64) {
        Ok(()) => {
            count(Counter::RecordsEmitted, 1);
            count(Counter::BytesEmitted, captured as u64);
        }
        // The only failure of bpf_ringbuf_output is "no room": count it, the
        // agent reports it as a capture loss.
        Err(_) => {
            count(Counter::RingBufFull, 1);
            if let Some(d) = DROPS.get_ptr_mut(0) {
                // Shared by all CPUs, and the bpf target has no atomic
                // fetch_add in `core`: CPUs racing here may lose an
                // increment, but the value always changes, which is all a
                // reader of `drop_epoch` needs.
                // SAFETY: `d` points to DROPS' only value, a u64 valid for
                // the program's run; volatile access never tears an aligned
                // u64 on the bpf target.
                unsafe {
                    core::ptr::write_volatile(d, core::ptr::read_volatile(d).wrapping_add(1))
                };
            }
        }
    }
    Ok(())
}

#[inline(always)]
fn is_service(family: u8, addr: &[u8; 16], port: u16) -> bool {
    let exact = ServiceKey {
        addr: *addr,
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
    let ip: [u8; IPV4_MIN_LEN] = ctx.load(l3).map_err(|_| ())?;
    if ip[0] >> 4 != 4 || ip[9] != IPPROTO_TCP {
        return Err(());
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < IPV4_MIN_LEN {
        // Below 5 words the "TCP header" would start inside the IP header.
        // The stack drops such a packet (ip_rcv); we only count it.
        count(Counter::Malformed, 1);
        return Err(());
    }
    // Only first fragments carry a TCP header; later ones are skipped.
    let frag_off = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    if frag_off != 0 {
        return Err(());
    }
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr[..4].copy_from_slice(&ip[12..16]);
    daddr[..4].copy_from_slice(&ip[16..20]);
    Ok(Segment {
        family: 4,
        saddr,
        daddr,
        l4_off: l3 + ihl,
        ip_payload_len: tot_len.saturating_sub(ihl),
    })
}

#[inline(always)]
fn ipv6(ctx: &TcContext, l3: usize) -> Result<Segment, ()> {
    // bpf_skb_load_bytes (see `observe`): bounded by the helper at run time.
    let ip: [u8; 40] = ctx.load(l3).map_err(|_| ())?;
    // Extension headers are not followed: TCP must be the next header.
    if ip[0] >> 4 != 6 || ip[6] != IPPROTO_TCP {
        return Err(());
    }
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr.copy_from_slice(&ip[8..24]);
    daddr.copy_from_slice(&ip[24..40]);
    Ok(Segment {
        family: 6,
        saddr,
        daddr,
        l4_off: l3 + 40,
        ip_payload_len: u16::from_be_bytes([ip[4], ip[5]]) as usize,
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
