//! What parallelrun's integration tests, its demo and its live bench need
//! from the host to run the agent for real: network namespaces joined by
//! veth pairs, child processes that cannot outlive their owner, and stop
//! signals turned into a flag.
//!
//! Every resource is owned by a guard that removes it in `Drop`:
//! [`Netns`] deletes its namespace (with the processes and interfaces in
//! it), [`Proc`] stops its child (SIGTERM, then SIGKILL), and
//! [`signal::Ignored`] restores a signal's disposition. So a failure, a
//! panic or an interrupt (see [`signal`]) leaves nothing behind.
//!
//! The API is fallible ([`Result`]): the bench turns errors into its own,
//! and the tests crate wraps it in helpers that panic at the first surprise.
//! It depends on `libc` alone, because xtask uses it and is built before
//! anything else is installed. For the same reason it also holds the one
//! piece of calendar arithmetic both sides need ([`utc`]).

mod netns;
mod process;
pub mod signal;
pub mod utc;

use std::{
    fmt, io,
    process::{Command, ExitStatus, Output, Stdio},
};

pub use crate::{
    netns::{Netns, enter, unique},
    process::{Proc, is_gone, net_namespace, pids, status_kib},
};

/// What went wrong, said the way the operator needs it.
#[derive(Debug)]
pub enum Error {
    /// A command could not be started, or a system call or a file
    /// operation failed: `what` was being done.
    Io { what: String, source: io::Error },
    /// A command ran and failed.
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// A stop signal arrived (see [`signal::install_stop_handlers`]).
    Interrupted(i32),
    /// Anything else: a child that did not finish in time, a thread that
    /// panicked, a file without the expected field.
    Other(String),
}

impl Error {
    fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// The last OS error, while doing `what`.
    fn last_os(what: impl Into<String>) -> Self {
        Self::io(what, io::Error::last_os_error())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::Failed {
                command,
                status,
                stderr,
            } => write!(f, "{command} failed ({status}): {stderr}"),
            Self::Interrupted(_) => f.write_str("interrupted: cleaning up"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

// The cause is part of the message (`Display`), so `source` stays `None`:
// a chain printer would say it twice.
impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs a command to completion (stdin closed); its output, or an error
/// with its stderr when it cannot start or fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("cannot start {cmd:?}"), e))?;
    if !out.status.success() {
        return Err(Error::Failed {
            command: format!("{cmd:?}"),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// Whether this process runs as root (namespaces and eBPF need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
