//! Kernel side of the pipeline: load the TC program, tell it which old
//! services to watch, attach it to the interfaces followed ([`follow`]) and
//! read captured segments from its ring buffer.
#![deny(clippy::undocumented_unsafe_blocks)]

mod attach_set;
mod follow;
mod iface;
mod links;
mod sample;
mod segment;
mod select;
#[cfg(test)]
pub(crate) use segment::tests as segment_tests;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    io,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramError, SchedClassifier, TcAttachType,
        tc::{self, SchedClassifierLinkId},
    },
    util::KernelVersion,
};
use parallelrun_common::{
    COUNTER_COUNT, Counter, MAX_SERVICES, PORT_BITMAP_LEN, ServiceKey, set_port,
};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

pub use self::{
    attach_set::{Action, AttachSet},
    follow::{Follower, InterfaceStats},
    iface::{Interface, InterfaceError},
    links::{Link, LinkEvent, LinkWatcher, LinksError},
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
    #[error(
        "{iface} has a {l2_len}-byte link-layer header but this capture was loaded for {loaded}-byte ones (its first interface); follow raw IP interfaces (tun, wireguard) and Ethernet ones with an agent each"
    )]
    LinkLayer {
        iface: String,
        l2_len: u32,
        loaded: u32,
    },
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

/// The loaded program, its maps and the interfaces it is attached to.
/// Dropping it (or [`Capture::detach`]) removes the program from every
/// interface; TCX links also vanish when the process dies, so a killed
/// agent leaves nothing behind.
pub struct Capture {
    ebpf: Option<Ebpf>,
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    clock: Clock,
    /// The `L2_LEN` the program was loaded with.
    l2_len: u32,
    /// Whether the kernel has TCX (else: clsact qdiscs over netlink).
    tcx: bool,
    /// The links made on each interface, by interface index.
    attached: BTreeMap<u32, Attachment>,
    /// `drop_epoch` of the last record read (see [`Segment::drops_before`]).
    drop_epoch: u32,
}

/// The program's links on one interface.
struct Attachment {
    name: String,
    links: Vec<SchedClassifierLinkId>,
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
    /// Loads and configures the program for interfaces whose link-layer
    /// header is `l2_len` bytes long, attached nowhere yet.
    fn load(cfg: &CaptureConfig, l2_len: u32) -> Result<Self, CaptureError> {
        let object: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/parallelrun"));
        if object.is_empty() {
            return Err(CaptureError::Load(
                "this binary was built with AYA_BUILD_SKIP=1 and carries no eBPF program; \
                 rebuild without it (`cargo xtask build`)"
                    .into(),
            ));
        }
        let wakeup_bytes = wakeup_threshold(cfg.ring_bytes);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", cfg.ring_bytes)
            .override_global("L2_LEN", &l2_len, true)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("SAMPLE_THRESHOLD", &cfg.sample_threshold, true)
            .load(object)
            .map_err(|e| classify_load_error(&e))?;

        {
            let mut services: HashMap<_, ServiceKey, u8> = HashMap::try_from(
                ebpf.map_mut("SERVICES")
                    .ok_or_else(|| missing("map SERVICES"))?,
            )
            .map_err(|e| CaptureError::Load(e.to_string()))?;
            for s in &cfg.services {
                services
                    .insert(s.key(), 1, 0)
                    .map_err(|e| CaptureError::Load(format!("configuring {s}: {e}")))?;
            }
        }
        {
            // The ports' bitmap, the kernel's prefilter in front of SERVICES.
            let mut bitmap = [0u8; PORT_BITMAP_LEN];
            for s in &cfg.services {
                set_port(&mut bitmap, s.key().port);
            }
            let mut ports: Array<_, [u8; PORT_BITMAP_LEN]> =
                Array::try_from(ebpf.map_mut("PORTS").ok_or_else(|| missing("map PORTS"))?)
                    .map_err(|e| CaptureError::Load(e.to_string()))?;
            ports
                .set(0, bitmap, 0)
                .map_err(|e| CaptureError::Load(format!("configuring the port bitmap: {e}")))?;
        }
        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| missing("map EVENTS"))?,
        )
        .map_err(|e| CaptureError::Load(e.to_string()))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("COUNTERS")
                .ok_or_else(|| missing("map COUNTERS"))?,
        )
        .map_err(|e| CaptureError::Load(e.to_string()))?;

        let prog = program(&mut ebpf)?;
        prog.load().map_err(classify_program_error)?;
        if let Ok(info) = prog.info() {
            debug!(
                xlated_insns = info.size_translated().map(|b| b / 8),
                verified_insns = info.verified_instruction_count(),
                wakeup_bytes,
                sample_threshold = cfg.sample_threshold,
                "TC program loaded"
            );
        }

        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        if !tcx {
            warn!(
                "kernel older than 6.6: attaching through a clsact qdisc (netlink), which \
                 survives the agent if it is killed; prefer a kernel with TCX"
            );
        }
        info!(
            services = %cfg.services.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            ring_bytes = cfg.ring_bytes,
            l2_len,
            "TC program ready"
        );
        Ok(Self {
            ebpf: Some(ebpf),
            ring: register(ring)?,
            counters,
            clock: Clock::now(),
            l2_len,
            tcx,
            attached: BTreeMap::new(),
            drop_epoch: 0,
        })
    }

    /// Attaches the program to `iface` (both directions; ingress only on
    /// loopback). On error nothing stays attached to it.
    fn attach_iface(&mut self, iface: &Interface) -> Result<(), CaptureError> {
        if iface.l2_len != self.l2_len {
            return Err(CaptureError::LinkLayer {
                iface: iface.name.clone(),
                l2_len: iface.l2_len,
                loaded: self.l2_len,
            });
        }
        if self.attached.contains_key(&iface.index) {
            return Ok(());
        }
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or_else(|| CaptureError::Load("the capture was detached".into()))?;
        if !self.tcx
            && let Err(e) = tc::qdisc_add_clsact(&iface.name)
        {
            debug!("clsact qdisc on {}: {e} (already present?)", iface.name);
        }
        // On loopback every packet passes egress and then ingress: one hook
        // sees each segment exactly once.
        let hooks: &[(TcAttachType, &'static str)] = if iface.loopback {
            &[(TcAttachType::Ingress, "ingress")]
        } else {
            &[
                (TcAttachType::Ingress, "ingress"),
                (TcAttachType::Egress, "egress"),
            ]
        };
        let prog = program(ebpf)?;
        let mut links = Vec::with_capacity(hooks.len());
        for &(hook, name) in hooks {
            match prog.attach(&iface.name, hook) {
                Ok(id) => links.push(id),
                Err(e) => {
                    for id in links {
                        let _ = prog.detach(id);
                    }
                    return Err(CaptureError::Attach {
                        iface: iface.name.clone(),
                        hook: name,
                        reason: error_chain(&e),
                    });
                }
            }
        }
        let hooks: Vec<_> = hooks.iter().map(|&(_, n)| n).collect();
        info!(iface = %iface.name, index = iface.index, hooks = %hooks.join(","), "attached");
        self.attached.insert(
            iface.index,
            Attachment {
                name: iface.name.clone(),
                links,
            },
        );
        Ok(())
    }

    /// Removes the program from the interface of this index, if attached
    /// (its links are closed; the kernel already dropped them if the
    /// interface is gone).
    fn detach_iface(&mut self, index: u32) {
        let Some(att) = self.attached.remove(&index) else {
            return;
        };
        if let Some(prog) = self.ebpf.as_mut().and_then(|e| program(e).ok()) {
            for id in att.links {
                if let Err(e) = prog.detach(id) {
                    debug!(iface = %att.name, "detaching: {} (the interface is gone?)", error_chain(&e));
                }
            }
        }
        info!(iface = %att.name, index, "detached");
    }

    /// Removes the program from every interface. The ring buffer and
    /// counters stay readable, so what was captured before can still be
    /// drained.
    pub fn detach(&mut self) {
        if self.ebpf.take().is_some() {
            let names: Vec<_> = std::mem::take(&mut self.attached)
                .into_values()
                .map(|a| a.name)
                .collect();
            info!(ifaces = %names.join(","), "detached");
        }
    }

    /// Waits until records are available, then hands up to `max` of them to
    /// `f` in order. Returns how many were handed over.
    ///
    /// A segment that follows records the kernel dropped (ring buffer full)
    /// has `drops_before` set, so the holes it reveals are blamed on them.
    pub async fn next_batch(
        &mut self,
        max: usize,
        mut f: impl FnMut(Result<Segment<'_>, SegmentError>),
    ) -> Result<usize, CaptureError> {
        loop {
            // The kernel wakes us only when a batch is waiting (see the TC
            // program); below that, records are collected by this poll.
            match tokio::time::timeout(POLL_EVERY, self.ring.readable_mut()).await {
                Ok(guard) => {
                    let mut guard = guard?;
                    let n = read_records(guard.get_inner_mut(), max, &mut self.drop_epoch, &mut f);
                    if n < max {
                        // Drained: wait for the next wake-up or poll.
                        guard.clear_ready();
                    }
                    if n > 0 {
                        return Ok(n);
                    }
                }
                Err(_elapsed) => {
                    let n = read_records(self.ring.get_mut(), max, &mut self.drop_epoch, &mut f);
                    if n > 0 {
                        return Ok(n);
                    }
                }
            }
        }
    }

    /// Hands every record already in the ring buffer to `f` without waiting.
    pub fn drain(&mut self, mut f: impl FnMut(Result<Segment<'_>, SegmentError>)) -> usize {
        read_records(
            self.ring.get_mut(),
            usize::MAX,
            &mut self.drop_epoch,
            &mut f,
        )
    }

    /// Kernel counters summed over all CPUs.
    pub fn kernel_counters(&self) -> KernelCounters {
        let mut out = KernelCounters::default();
        for c in Counter::ALL {
            out.0[c as usize] = sum_counter(&self.counters, c);
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
