//! Network namespaces, and the veth pairs and addresses inside them.
//!
//! A [`Netns`] is deleted on drop together with everything in it: the
//! processes still running there are killed first (their own guards should
//! have stopped them already; this catches what they started, such as nginx
//! workers), then the namespace goes, and with it its interfaces, so both
//! ends of every veth pair that has an end in it. Names come from
//! [`unique`] (tests, demo) or from the caller (the bench, which finds the
//! namespaces of an earlier run by their names).

use std::{
    ffi::OsStr,
    fs::File,
    net::IpAddr,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use crate::{Error, Result, run};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `PREFIX`, the pid (mod
/// 100 000), `x`, a counter. Short enough for an interface name (at most
/// 15 bytes) with a prefix of up to 3 bytes.
pub fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// A network namespace, deleted on drop with its processes and interfaces.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace `name` and brings its loopback up.
    pub fn create(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // Owned from here on: removed again if the rest fails.
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Takes charge of an existing namespace (one an earlier run left
    /// behind): it is deleted on drop like one this process made.
    pub fn adopt(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args)).map(drop)
    }

    /// A command run inside the namespace (`ip netns exec`, which execs it
    /// in place: the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `sysctl -w KEY=VALUE` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        run(self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]))
        .map(drop)
    }

    /// A veth pair: `name` in this namespace, its peer `peer` in `peer_ns`.
    /// Both ends go when either namespace does.
    pub fn add_veth(&self, name: &str, peer: &str, peer_ns: &Netns) -> Result<()> {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            &peer_ns.name,
        ])
    }

    /// Gives the interface `ifname` the address `addr/prefix_len` and brings
    /// it up. An IPv6 address skips duplicate address detection, so that it
    /// is usable at once.
    pub fn address(&self, ifname: &str, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let cidr = format!("{addr}/{prefix_len}");
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", ifname];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.ip(&args)?;
        self.ip(&["link", "set", ifname, "up"])
    }

    /// The namespace's file (`/run/netns/NAME`), for [`enter`].
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread that entered this namespace (sockets it opens
    /// and interface indexes it resolves are the namespace's) and returns
    /// its result; a panic of `f` becomes an error.
    pub fn run_in<T, E>(&self, f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let path = self.path();
        thread::spawn(move || {
            enter(&path)?;
            f()
        })
        .join()
        .map_err(|_| Error::Other(format!("a thread in namespace {} panicked", self.name)))?
    }

    /// The namespace's inode, as `/proc/PID/ns/net` links name it.
    pub fn inode(&self) -> Result<u64> {
        let path = self.path();
        std::fs::metadata(&path)
            .map(|m| m.ino())
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))
    }

    /// Processes whose network namespace this is.
    fn pids(&self) -> Vec<i32> {
        run(Command::new("ip").args(["netns", "pids", &self.name]))
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill(2); the pid was in this namespace, which only its
            // owner starts processes in.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Never fail in drop: the owner may be unwinding already.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Moves the calling thread into the namespace at `path` (see
/// [`Netns::path`]); other threads stay where they are.
pub fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // SAFETY: a valid fd of a network namespace; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::last_os(format!("setns {}", path.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
