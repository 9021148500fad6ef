//! Kernel side of the pipeline: load the TC program, tell it which old
//! services to watch, attach it to the interfaces followed ([`follow`]) and
//! read captured segments from its ring buffer.
#![deny(clippy::undocumented_unsafe_blocks)]

mod attach_set;
mod follow;
mod iface;
mod links;
mod program;
mod sample;
mod segment;
mod select;
#[cfg(test)]
pub(crate) use segment::tests as segment_tests;
#[cfg(test)]
mod tests;

use std::{
    io,
    task::Poll,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, SchedClassifier},
    util::KernelVersion,
};
use parallelrun_common::{COUNTER_COUNT, Counter, MAX_SERVICES};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use self::program::Program;
pub use self::{
    follow::{Follower, InterfaceStats},
    iface::{Interface, InterfaceError},
    links::{Link, LinkEvent, LinksError},
    sample::{conn_hash, conn_sampled, sample_threshold},
    segment::{Segment, SegmentError},
    select::{IfaceSelector, SelectorError},
};
use crate::service::ServiceAddr;

/// What to capture and where.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    pub iface: IfaceSelector,
    pub services: Vec<ServiceAddr>,
    /// Ring buffer size in bytes: a power of two and a multiple of the page size.
    pub ring_bytes: u32,
    /// Connection sampling in the kernel: only connections whose
    /// [`parallelrun_common::conn_hash`] is below this are copied (see
    /// [`sample_threshold`]); [`parallelrun_common::SAMPLE_ALL`] copies
    /// every connection.
    pub sample_threshold: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Interface(#[from] InterfaceError),
    #[error(transparent)]
    Links(#[from] LinksError),
    #[error("give at least one old service with --old IP:PORT or --old :PORT")]
    NoServices,
    #[error("at most {MAX_SERVICES} old services can be watched at once, got {0}")]
    TooManyServices(usize),
    #[error(
        "ring buffer size {0} is not a power of two multiple of the page size ({1} bytes); try 16MiB or 64MiB"
    )]
    RingSize(u32, usize),
    #[error(
        "not allowed to load eBPF programs: run as root (`cargo xtask run -- ...` does) or give the binary CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON ({0})"
    )]
    Privileges(String),
    #[error(
        "this kernel has no usable BPF support ({0}); parallelrun needs Linux >= 6.6 built with CONFIG_BPF_SYSCALL and CONFIG_NET_CLS_BPF"
    )]
    NoBpf(String),
    #[error("loading the eBPF program failed: {0}")]
    Load(String),
    #[error(
        "the kernel verifier rejected the TC program; please report this with `uname -r` and the log:\n{0}"
    )]
    Verifier(String),
    #[error(
        "interface {0} was removed while attached; the capture stopped (what was seen until then is reported)"
    )]
    InterfaceRemoved(String),
    #[error("attaching to {iface} ({hook}) failed: {reason}")]
    Attach {
        iface: String,
        hook: &'static str,
        reason: String,
    },
    #[error("reading the ring buffer: {0}")]
    Io(#[from] io::Error),
}

/// The loaded programs (one per link-layer header length met, see
/// [`program`]) and the clock of their timestamps. Dropping it (or
/// [`Capture::detach`]) removes them from every interface; TCX links also
/// vanish when the process dies, so a killed agent leaves nothing behind.
pub struct Capture {
    cfg: CaptureConfig,
    programs: Vec<Program>,
    clock: Clock,
    /// Whether the kernel has TCX (else: clsact qdiscs over netlink).
    tcx: bool,
    /// The program read first by the next [`Capture::next_batch`], so that
    /// a busy ring does not starve the others.
    next: usize,
}

/// Checks what can be checked before anything is loaded.
fn check_config(cfg: &CaptureConfig) -> Result<(), CaptureError> {
    if cfg.services.is_empty() {
        return Err(CaptureError::NoServices);
    }
    if cfg.services.len() > MAX_SERVICES as usize {
        return Err(CaptureError::TooManyServices(cfg.services.len()));
    }
    let page = page_size();
    if !cfg.ring_bytes.is_power_of_two() || (cfg.ring_bytes as usize) < page {
        return Err(CaptureError::RingSize(cfg.ring_bytes, page));
    }
    Ok(())
}

impl Capture {
    /// Loads the program for interfaces whose link-layer header is
    /// `l2_len` bytes long, attached nowhere yet.
    fn new(cfg: &CaptureConfig, l2_len: u32) -> Result<Self, CaptureError> {
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        if !tcx {
            warn!(
                "kernel older than 6.6: attaching through a clsact qdisc (netlink), which \
                 survives the agent if it is killed; prefer a kernel with TCX"
            );
        }
        let first = Program::load(cfg, l2_len)?;
        Ok(Self {
            cfg: cfg.clone(),
            programs: vec![first],
            clock: Clock::now(),
            tcx,
            next: 0,
        })
    }

    /// Attaches to `iface` the program of its link-layer header length,
    /// loaded (with a ring buffer of its own) if none is yet.
    fn attach_iface(&mut self, iface: &Interface) -> Result<(), CaptureError> {
        let i = match self.programs.iter().position(|p| p.l2_len == iface.l2_len) {
            Some(i) => i,
            None => {
                info!(
                    iface = %iface.name,
                    l2_len = iface.l2_len,
                    "another link-layer header length: loading a second program with its own ring buffer"
                );
                self.programs.push(Program::load(&self.cfg, iface.l2_len)?);
                self.programs.len() - 1
            }
        };
        self.programs[i].attach_iface(iface, self.tcx)
    }

    /// Removes the program from the interface of this index, if attached.
    fn detach_iface(&mut self, index: u32) {
        for p in &mut self.programs {
            p.detach_iface(index);
        }
    }

    /// Removes the programs from every interface. The ring buffers and
    /// counters stay readable, so what was captured before can still be
    /// drained.
    pub fn detach(&mut self) {
        for p in &mut self.programs {
            p.detach();
        }
    }

    /// Waits until records are available, then hands up to `max` of them to
    /// `f`, in order within each ring. Returns how many were handed over.
    ///
    /// A segment that follows records the kernel dropped (ring buffer full)
    /// has `drops_before` set, so the holes it reveals are blamed on them.
    pub async fn next_batch(
        &mut self,
        max: usize,
        mut f: impl FnMut(Result<Segment<'_>, SegmentError>),
    ) -> Result<usize, CaptureError> {
        loop {
            let n = self.read(max, &mut f);
            if n > 0 {
                return Ok(n);
            }
            // The kernel wakes us only when a batch is waiting (see the TC
            // program); below that, records are collected by this poll.
            // Readiness is cleared before the rings are read again, so a
            // record written meanwhile wakes us anew.
            let ready = std::future::poll_fn(|cx| {
                for p in &self.programs {
                    if let Poll::Ready(r) = p.poll_ready(cx) {
                        return Poll::Ready(r);
                    }
                }
                Poll::Pending
            });
            if let Ok(r) = tokio::time::timeout(POLL_EVERY, ready).await {
                r?;
            }
        }
    }

    /// Up to `max` records from the rings, the first one taken in turn.
    fn read(&mut self, max: usize, f: &mut impl FnMut(Result<Segment<'_>, SegmentError>)) -> usize {
        let count = self.programs.len();
        let mut n = 0;
        for k in 0..count {
            let i = (self.next + k) % count;
            n += self.programs[i].read(max - n, f);
            if n >= max {
                break;
            }
        }
        self.next = (self.next + 1) % count.max(1);
        n
    }

    /// Hands every record already in the ring buffers to `f` without waiting.
    pub fn drain(&mut self, mut f: impl FnMut(Result<Segment<'_>, SegmentError>)) -> usize {
        self.read(usize::MAX, &mut f)
    }

    /// Kernel counters summed over all CPUs and programs.
    pub fn kernel_counters(&self) -> KernelCounters {
        let mut out = KernelCounters::default();
        for p in &self.programs {
            p.add_counters(&mut out);
        }
        out
    }

    /// The clock that converts segment timestamps to wall-clock time.
    pub fn clock(&self) -> Clock {
        self.clock
    }
}

/// How often the ring buffer is read when the kernel has not woken us.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// Batch size above which the kernel wakes the agent, at most.
const MAX_WAKEUP_BYTES: u64 = 256 * 1024;

/// Bytes waiting in a ring of `ring_bytes` from which the TC program wakes
/// the agent (its `WAKEUP_BYTES`): `min(256 KiB, ring_bytes / 4)`.
///
/// The kernel wakes the agent only when a record makes the waiting bytes
/// cross this threshold; below it the agent's 5 ms poll collects them. A
/// fixed 256 KiB threshold is never crossed in a ring of 256 KiB or less
/// (records are refused before it fills), so small rings were read only by
/// the poll and overflowed between polls. A quarter of the ring wakes the
/// agent while three quarters are still free for what arrives before it
/// runs; 256 KiB caps the batch for large rings, the size whose single
/// wakeup per batch made most of the per-record wakeup cost go away.
pub fn wakeup_threshold(ring_bytes: u32) -> u64 {
    (u64::from(ring_bytes) / 4).min(MAX_WAKEUP_BYTES)
}

/// Hands up to `max` records to `f`; returns how many.
fn read_records(
    ring: &mut RingBuf<MapData>,
    max: usize,
    drop_epoch: &mut u32,
    f: &mut impl FnMut(Result<Segment<'_>, SegmentError>),
) -> usize {
    let mut n = 0;
    while n < max {
        let Some(item) = ring.next() else { break };
        f(mark_drops(Segment::parse(&item), drop_epoch));
        n += 1;
    }
    n
}

/// Sets `drops_before` when the record's drop epoch moved since `last`.
fn mark_drops<'a>(
    mut seg: Result<Segment<'a>, SegmentError>,
    last: &mut u32,
) -> Result<Segment<'a>, SegmentError> {
    if let Ok(seg) = &mut seg {
        seg.drops_before = seg.header.drop_epoch != *last;
        *last = seg.header.drop_epoch;
    }
    seg
}

/// One kernel counter summed over all CPUs (0 if unreadable).
fn sum_counter(counters: &PerCpuArray<MapData, u64>, c: Counter) -> u64 {
    counters
        .get(&(c as u32), 0)
        .map_or(0, |values| values.iter().sum())
}

/// Registers the ring buffer's epoll-able fd with the tokio reactor.
fn register(ring: RingBuf<MapData>) -> io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the fd belongs to `ring`, which the AsyncFd owns from here on:
    // it stays open and keeps referring to the same map until the AsyncFd
    // is dropped.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Per-CPU kernel counters, summed. Indexed by [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters(pub [u64; COUNTER_COUNT as usize]);

impl KernelCounters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL.iter().map(|&c| (c.name(), self.get(c)))
    }
}

impl Serialize for KernelCounters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Maps `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, in nanoseconds, taken at attach.
    offset_ns: i128,
}

impl Clock {
    fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// Wall-clock time of a kernel timestamp.
    pub fn wall(&self, ts_ns: u64) -> SystemTime {
        let ns = (ts_ns as i128 + self.offset_ns).max(0);
        UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as i128) as u64)
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// CAP_NET_ADMIN, CAP_PERFMON and CAP_BPF, as bit numbers.
const REQUIRED_CAPS: [(u32, &str); 3] =
    [(12, "CAP_NET_ADMIN"), (38, "CAP_PERFMON"), (39, "CAP_BPF")];

fn check_privileges() -> Result<(), CaptureError> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Ok(()); // cannot tell; the load itself will say
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return Ok(());
    };
    let missing: Vec<_> = REQUIRED_CAPS
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CaptureError::Privileges(format!(
            "missing {}",
            missing.join(", ")
        )))
    }
}

/// The TC program in `ebpf`.
fn program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, CaptureError> {
    ebpf.program_mut("parallelrun")
        .ok_or_else(|| missing("program parallelrun"))?
        .try_into()
        .map_err(|e: ProgramError| CaptureError::Load(e.to_string()))
}

fn missing(what: &str) -> CaptureError {
    CaptureError::Load(format!(
        "the embedded eBPF object has no {what}; rebuild the agent"
    ))
}

/// The text of an error and all its sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        cur = err.source();
    }
    None
}

fn classify_load_error(e: &aya::EbpfError) -> CaptureError {
    let text = error_chain(e);
    match os_error(e) {
        Some(libc::EPERM) | Some(libc::EACCES) => CaptureError::Privileges(text),
        Some(libc::ENOSYS) => CaptureError::NoBpf(text),
        _ => CaptureError::Load(text),
    }
}

fn classify_program_error(e: ProgramError) -> CaptureError {
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &e
    {
        return match io_error.raw_os_error() {
            Some(libc::EPERM) => CaptureError::Privileges(error_chain(&e)),
            Some(libc::ENOSYS) => CaptureError::NoBpf(error_chain(&e)),
            _ => CaptureError::Verifier(verifier_log.to_string()),
        };
    }
    CaptureError::Load(error_chain(&e))
}
