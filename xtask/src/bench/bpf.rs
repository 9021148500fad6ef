//! Kernel-side cost: BPF run-time statistics and an empty TC program that
//! measures their own floor.
//!
//! Statistics are switched on with `BPF_ENABLE_STATS` rather than the
//! `kernel.bpf_stats_enabled` sysctl: the same kernel switch, but held by a
//! file descriptor, so it goes back off when the bench ends however it ends
//! (even SIGKILL), and it never turns off statistics someone else enabled.
//! The counters are the ones `bpftool prog show` prints (`run_time_ns`,
//! `run_cnt`); they are read from the owning process's
//! `/proc/PID/fdinfo`, which also tells our program apart from other
//! `parallelrun` programs loaded on the machine.
//!
//! Why raw bpf(2) calls and not aya. aya 0.14 does expose part of this
//! publicly: `aya::sys::enable_stats(Stats::RunTime)` (an `OwnedFd`, as here)
//! and `aya::programs::loaded_programs()` with `ProgramInfo::run_time` /
//! `run_count`. It does not cover the rest, which needs raw calls anyway:
//! - loading the two-instruction empty program: aya loads programs only out
//!   of an ELF object (`EbpfLoader::load`), it has no public way to load
//!   hand-written instructions, and this crate has no eBPF object of its own
//!   (it is built before `cargo xtask setup` installs bpf-linker);
//! - attaching that fd-only program with a TCX link: `SchedClassifier`
//!   attaches only programs aya holds (loaded from an object, or a pin);
//! - telling which programs the agent's process holds: `loaded_programs()`
//!   lists the whole machine by id, and a name filter would confuse the
//!   agent with other `parallelrun` programs (other checkouts' tests run
//!   beside the bench), so the ids come from `/proc/PID/fdinfo`, which
//!   carries `run_time_ns`/`run_cnt` too.
//!
//! Switching would replace only `BPF_ENABLE_STATS`, a ten-line call, at the
//! price of aya and its ~25 dependencies (aya-obj, object, hashbrown, ...)
//! in xtask, which is kept to anyhow/clap/libc/serde/serde_json so that it
//! builds fast on a fresh machine before anything else. So: raw calls.

use std::{
    collections::BTreeMap,
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use anyhow::{Context as _, Result, bail};

use super::sys::Netns;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_STATS_RUN_TIME: u32 = 0;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<RawFd> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`,
    // its size is passed, and the kernel zero-fills the rest.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}

/// Run-time statistics on while this lives.
pub struct StatsOn(
    #[allow(
        dead_code,
        reason = "held only to keep the statistics on until dropped"
    )]
    OwnedFd,
);

pub fn enable_stats() -> Result<StatsOn> {
    #[repr(C)]
    struct Attr {
        kind: u32,
    }
    let fd = bpf(
        BPF_ENABLE_STATS,
        &Attr {
            kind: BPF_STATS_RUN_TIME,
        },
    )
    .context("BPF_ENABLE_STATS (kernel run-time statistics for BPF programs)")?;
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    Ok(StatsOn(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `run_time_ns` and `run_cnt` of one program.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl RunStats {
    pub fn since(self, before: RunStats) -> RunStats {
        RunStats {
            run_time_ns: self.run_time_ns.saturating_sub(before.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(before.run_cnt),
        }
    }

    pub fn ns_per_run(self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

fn parse_fdinfo(text: &str) -> Option<(u32, RunStats)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        u32::try_from(field("prog_id:")?).ok()?,
        RunStats {
            run_time_ns: field("run_time_ns:")?,
            run_cnt: field("run_cnt:")?,
        },
    ))
}

/// Statistics of every BPF program process `pid` holds, summed (the agent
/// holds one classifier, attached at ingress and egress).
pub fn process_prog_stats(pid: i32) -> Result<RunStats> {
    let mut progs = BTreeMap::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for e in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = fs::read_to_string(e?.path()) else {
            continue;
        };
        if let Some((id, s)) = parse_fdinfo(&text) {
            progs.insert(id, s);
        }
    }
    if progs.is_empty() {
        bail!("process {pid} holds no BPF program");
    }
    Ok(progs.values().fold(RunStats::default(), |a, s| RunStats {
        run_time_ns: a.run_time_ns + s.run_time_ns,
        run_cnt: a.run_cnt + s.run_cnt,
    }))
}

/// A TC program that returns `TCX_NEXT`, as the agent's does, and nothing
/// else, attached (TCX) at ingress and egress of one interface: its ns per
/// run is the floor of the statistics (timestamps, dispatch), to read the
/// agent's program against. Detached on drop.
pub struct EmptyProg {
    prog: OwnedFd,
    _links: Vec<OwnedFd>,
}

impl EmptyProg {
    pub fn attach(ns: &Netns, ifname: &str) -> Result<Self> {
        #[repr(C)]
        struct Insn {
            code: u8,
            regs: u8,
            off: i16,
            imm: i32,
        }
        #[repr(C)]
        struct Load {
            prog_type: u32,
            insn_cnt: u32,
            insns: u64,
            license: u64,
            log_level: u32,
            log_size: u32,
            log_buf: u64,
            kern_version: u32,
            prog_flags: u32,
            prog_name: [u8; 16],
        }
        let insns = [
            // r0 = -1 (TCX_NEXT, the value of TC_ACT_UNSPEC)
            Insn {
                code: 0xb7,
                regs: 0,
                off: 0,
                imm: -1,
            },
            // exit
            Insn {
                code: 0x95,
                regs: 0,
                off: 0,
                imm: 0,
            },
        ];
        let license = c"GPL";
        let mut prog_name = [0u8; 16];
        prog_name[..13].copy_from_slice(b"prbench_empty");
        let fd = bpf(
            BPF_PROG_LOAD,
            &Load {
                prog_type: BPF_PROG_TYPE_SCHED_CLS,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level: 0,
                log_size: 0,
                log_buf: 0,
                kern_version: 0,
                prog_flags: 0,
                prog_name,
            },
        )
        .context("loading the empty TC program")?;
        // SAFETY: a new fd the kernel just returned.
        let prog = unsafe { OwnedFd::from_raw_fd(fd) };
        let prog_fd = prog.as_raw_fd() as u32;
        let ifname = ifname.to_owned();
        // The interface index is resolved in the namespace of the caller.
        let links = ns.run_in(move || {
            #[repr(C)]
            struct Link {
                prog_fd: u32,
                target_ifindex: u32,
                attach_type: u32,
                flags: u32,
                relative_fd: u32,
                _pad: u32,
                expected_revision: u64,
            }
            let c = std::ffi::CString::new(ifname.clone())?;
            // SAFETY: a valid C string.
            let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {ifname}");
            }
            let mut raw = Vec::new();
            for attach_type in [BPF_TCX_INGRESS, BPF_TCX_EGRESS] {
                let fd = bpf(
                    BPF_LINK_CREATE,
                    &Link {
                        prog_fd,
                        target_ifindex: ifindex,
                        attach_type,
                        flags: 0,
                        relative_fd: 0,
                        _pad: 0,
                        expected_revision: 0,
                    },
                )
                .context("attaching the empty TC program (TCX link)")?;
                raw.push(fd);
            }
            Ok(raw)
        })?;
        Ok(Self {
            prog,
            // SAFETY: fresh fds from BPF_LINK_CREATE, owned only here.
            _links: links
                .into_iter()
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                .collect(),
        })
    }

    pub fn stats(&self) -> Result<RunStats> {
        let path = format!("/proc/self/fdinfo/{}", self.prog.as_raw_fd());
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_fdinfo(&text)
            .map(|(_, s)| s)
            .context("no run statistics in the empty program's fdinfo")
    }
}

/// What the kernel's per-record cost is read against, for one body size:
/// the empty program's floor (from the same run's tcpdump phase) plus a
/// copy of the mean payload the program captured, timed here in user space
/// (the TC program's unavoidable work is dispatch and one copy of the
/// payload into the ring).
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelFloor {
    pub size: &'static str,
    /// `bytes_emitted / records_emitted` over the size's B runs at a fixed
    /// rate.
    pub mean_payload_bytes: f64,
    /// Median over [`MEMCPY_REPS`] repetitions of one copy of that many
    /// bytes.
    pub memcpy_ns: f64,
}

/// Repetitions of the memcpy timing; the median is kept.
pub const MEMCPY_REPS: usize = 31;

/// Median time of one copy of `len` bytes between two buffers (each
/// repetition times enough copies to last about a millisecond).
pub fn memcpy_ns(len: usize) -> f64 {
    let len = len.max(1);
    let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut dst = vec![0u8; len];
    let copies = ((8usize << 20) / len).clamp(16, 100_000);
    let mut per_copy: Vec<f64> = (0..MEMCPY_REPS)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..copies {
                dst.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&mut dst);
            }
            t.elapsed().as_nanos() as f64 / copies as f64
        })
        .collect();
    per_copy.sort_by(f64::total_cmp);
    per_copy[per_copy.len() / 2]
}
