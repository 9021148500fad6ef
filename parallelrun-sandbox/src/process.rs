//! Child processes that cannot outlive their owner, and what `/proc` says
//! about a process.
//!
//! A [`Proc`] gets SIGTERM when the thread that started it dies
//! (`PR_SET_PDEATHSIG`), even by SIGKILL, and is stopped on drop: SIGTERM,
//! then SIGKILL after its grace period. It is reaped through its guard
//! only, and never signalled once reaped, so a recycled pid is never hit.

use std::{
    io,
    os::unix::process::CommandExt as _,
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use crate::{Error, Result, signal};

/// A child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    /// What the child is, for messages.
    pub name: String,
    child: Child,
    /// How long drop waits after SIGTERM before SIGKILL.
    grace: Duration,
}

impl Proc {
    /// Spawns `cmd` in this process's group, with SIGTERM as its
    /// parent-death signal. The death signal follows the *thread* that
    /// forks: spawn from a thread that lives as long as the child should.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        // SAFETY: prctl is async-signal-safe; nothing else runs before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("cannot start {name}: {cmd:?}"), e))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            grace: Duration::from_secs(3),
        })
    }

    /// [`Proc::spawn`] in a process group of its own: a terminal's Ctrl-C,
    /// which goes to the foreground group, reaches the owner alone, which
    /// then stops its children in order.
    pub fn spawn_own_group(name: &str, cmd: &mut Command) -> Result<Self> {
        Self::spawn(name, cmd.process_group(0))
    }

    /// How long drop waits after SIGTERM before SIGKILL (3 s unless set;
    /// zero: SIGKILL at once).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The child's stdout, when it was piped (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stderr, when it was piped (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// The exit status once the child has exited (it is reaped then; the
    /// status is kept and returned again).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the child to exit by itself, up to `limit`; kills it and
    /// fails on timeout or when a stop signal arrives (see [`signal`]).
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.exited() {
                return Ok(st);
            }
            if let Err(e) = signal::check() {
                self.kill();
                return Err(e);
            }
            if Instant::now() >= end {
                self.kill();
                return Err(Error::Other(format!(
                    "{} did not finish within {limit:?}",
                    self.name
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` unless the child has exited (once reaped, its pid may be
    /// another process's).
    pub fn signal(&mut self, sig: i32) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on our own child, not reaped yet (checked
            // above; only this guard reaps it).
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// Sends `sig` (0: none, only wait) unless the child has exited, and
    /// waits up to `limit` for the exit; SIGKILL, and an error, after that.
    pub fn stop(&mut self, sig: i32, limit: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.exited() {
            return Ok(st);
        }
        self.signal(sig);
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(st) = self.exited() {
                return Ok(st);
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(Error::Other(format!(
            "{} did not exit within {limit:?} of signal {sig}",
            self.name
        )))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.stop(libc::SIGTERM, self.grace);
        }
    }
}

/// Whether process `pid` no longer runs: `/proc` has no such process, or
/// only a zombie waiting to be reaped. For any pid (a child whose guard
/// holds it, an earlier run named by a file); it never reaps.
pub fn is_gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        // pid (comm) state ...: comm may hold spaces, the state follows ')'.
        stat.rsplit_once(") ")
            .is_none_or(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

/// Every process running now (the numeric entries of `/proc`); empty when
/// `/proc` cannot be read. A process may be gone by the time it is looked at.
pub fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc").map_or_else(
        |_| Vec::new(),
        |dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        },
    )
}

/// The inode of process `pid`'s network namespace (`/proc/PID/ns/net`,
/// `net:[INODE]`), or `None` when the process is gone.
pub fn net_namespace(pid: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    link.to_str()?
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn status_kib(pid: i32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(path.clone(), e))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error::Other(format!("no {field} in {path}")))
}

#[cfg(test)]
mod tests;
