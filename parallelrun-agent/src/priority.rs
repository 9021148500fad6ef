//! CPU priority of the live commands: production first.
//!
//! The agent shares its CPUs with the service it observes. Scheduled as an
//! equal (SCHED_OTHER), its batches of ring-buffer records, reassembly,
//! replays and diffs preempt the old service and stretch its tail latency
//! even at a small fraction of the machine (nginx, 1 KiB, 5,000 req/s on 2
//! cores: p99 ×1.7). Under SCHED_IDLE the agent runs only on CPU time no
//! SCHED_OTHER task wants: production always preempts it, and when
//! production needs every core the agent falls behind and sheds, which the
//! existing counters report (ring-buffer drops, `overload` skips).
//!
//! Why SCHED_IDLE and not a cgroup with a minimal `cpu.weight`: it is a
//! per-thread attribute any unprivileged process may set on itself, it
//! needs no cgroup delegation or writable cgroupfs (this project's hosts
//! run a hybrid setup whose v2 hierarchy has no `cpu` controller), and a
//! minimal weight still gives the agent its share of every scheduling
//! period, while SCHED_IDLE yields at once to any runnable production
//! thread. README "Performance" has the side-by-side measurements.
//!
//! The policy is set on the main thread before the async runtime or any
//! other thread exists: threads inherit it from the thread that creates
//! them, so every thread of the agent has it. [`check_threads`] reads the
//! policy of each thread back from `/proc/self/task/*/stat`.

use std::{fmt, io};

use tracing::{info, warn};

/// CPU priority of every agent thread (`--priority`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// SCHED_IDLE: only CPU time production leaves over.
    Idle,
    /// The scheduling the agent was started with (SCHED_OTHER unless set
    /// otherwise, e.g. with `chrt` or systemd's `CPUSchedulingPolicy=`).
    Normal,
}

/// `SCHED_IDLE` in `/proc/*/stat`'s `policy` field and for
/// `sched_setscheduler`.
const SCHED_IDLE: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum PriorityError {
    #[error(
        "cannot run the agent at idle CPU priority (SCHED_IDLE): {0}. Without it the agent \
         competes with production for the CPU; pass --priority normal to run anyway"
    )]
    SetIdle(io::Error),
    #[error("cannot read the scheduling policy of this process's threads: {0}")]
    Read(io::Error),
}

/// A scheduling policy as `/proc/*/stat` numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy(pub u32);

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("SCHED_OTHER"),
            1 => f.write_str("SCHED_FIFO"),
            2 => f.write_str("SCHED_RR"),
            3 => f.write_str("SCHED_BATCH"),
            5 => f.write_str("SCHED_IDLE"),
            6 => f.write_str("SCHED_DEADLINE"),
            n => write!(f, "policy {n}"),
        }
    }
}

/// Applies `p` to every thread of this process (call it before any other
/// thread exists, so that the threads created later inherit it).
pub fn apply(p: Priority) -> Result<(), PriorityError> {
    if p == Priority::Normal {
        return Ok(());
    }
    for tid in thread_ids().map_err(PriorityError::Read)? {
        set_idle(tid).map_err(PriorityError::SetIdle)?;
    }
    Ok(())
}

/// Switches thread `tid` (0: the calling thread) to SCHED_IDLE.
fn set_idle(tid: i32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration; on
    // Linux the pid argument names a thread.
    let r = unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &raw const param) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Logs the priority in effect once the runtime's threads exist, and warns
/// when a thread does not have the policy `p` asked for.
pub fn check_threads(p: Priority) {
    let threads = match thread_policies() {
        Ok(t) => t,
        Err(e) => {
            warn!("{}", PriorityError::Read(e));
            return;
        }
    };
    match p {
        Priority::Idle => {
            let other: Vec<String> = threads
                .iter()
                .filter(|(_, pol)| pol.0 != SCHED_IDLE)
                .map(|(tid, pol)| format!("{tid}: {pol}"))
                .collect();
            if other.is_empty() {
                info!(
                    threads = threads.len(),
                    "CPU priority: idle (SCHED_IDLE on every thread): production preempts the \
                     agent; when it needs every core the agent sheds (ring-buffer drops, overload)"
                );
            } else {
                warn!(
                    threads = %other.join(", "),
                    "CPU priority: idle asked, but these threads are not SCHED_IDLE and compete \
                     with production"
                );
            }
        }
        Priority::Normal => {
            let mut seen: Vec<Policy> = threads.iter().map(|(_, pol)| *pol).collect();
            seen.sort_by_key(|pol| pol.0);
            seen.dedup();
            let seen: Vec<String> = seen.iter().map(ToString::to_string).collect();
            info!(
                threads = threads.len(),
                policy = %seen.join(", "),
                "CPU priority: normal (as started, --priority normal): the agent competes with \
                 production for the CPU"
            );
        }
    }
}

/// Ids of this process's threads.
fn thread_ids() -> io::Result<Vec<i32>> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir("/proc/self/task")? {
        if let Some(tid) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            ids.push(tid);
        }
    }
    Ok(ids)
}

/// Every thread of this process with its scheduling policy.
pub fn thread_policies() -> io::Result<Vec<(i32, Policy)>> {
    let mut out = Vec::new();
    for tid in thread_ids()? {
        // A thread may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
            continue;
        };
        let policy = policy_from_stat(&stat).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no policy field in /proc/self/task/{tid}/stat"),
            )
        })?;
        out.push((tid, policy));
    }
    Ok(out)
}

/// Field 41 (`policy`) of a `/proc/*/stat` line. The command name (field
/// 2) is in parentheses and may itself hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn policy_from_stat(stat: &str) -> Option<Policy> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // `rest` starts with field 3 (state).
    rest.split_whitespace()
        .nth(41 - 3)?
        .parse()
        .ok()
        .map(Policy)
}

#[cfg(test)]
mod tests;
