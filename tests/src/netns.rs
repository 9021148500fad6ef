//! Network namespaces and veth pairs owned by one test.

use std::{
    fs::File,
    net::IpAddr,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call (interface names are
/// limited to 15 bytes).
pub fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// A network namespace, deleted (with every interface in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// A command run inside the namespace through `ip netns exec`.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a new thread that has entered this namespace; sockets it
    /// creates live in the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Runs `f` inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f)
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Not `ip()`: never panic in drop, a failing test is already panicking.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: valid fd of a network namespace; affects only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Which addresses a pair uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Two namespaces joined by a veth pair: `server` holds the old service,
/// `client` the clients. Each end has an address of `family`.
pub struct Pair {
    pub server: Netns,
    pub client: Netns,
    /// The server namespace's end (the service's own interface).
    pub server_if: String,
    /// The client namespace's end (a host-side veth facing the service).
    pub client_if: String,
    pub server_ip: IpAddr,
    pub client_ip: IpAddr,
}

impl Pair {
    pub fn new(family: Family) -> Self {
        let server = Netns::new("prs");
        let client = Netns::new("prc");
        let server_if = unique("vs");
        let client_if = unique("vc");
        server.ip(&[
            "link",
            "add",
            &server_if,
            "type",
            "veth",
            "peer",
            "name",
            &client_if,
            "netns",
            &client.name,
        ]);
        let (s, c, cidr) = match family {
            Family::V4 => ("10.77.0.1", "10.77.0.2", "24"),
            Family::V6 => ("fd77::1", "fd77::2", "64"),
        };
        for (ns, ifname, addr) in [(&server, &server_if, s), (&client, &client_if, c)] {
            let a = format!("{addr}/{cidr}");
            if family == Family::V6 {
                ns.ip(&["addr", "add", &a, "dev", ifname, "nodad"]);
            } else {
                ns.ip(&["addr", "add", &a, "dev", ifname]);
            }
            ns.ip(&["link", "set", ifname, "up"]);
        }
        Self {
            server,
            client,
            server_if,
            client_if,
            server_ip: s.parse().unwrap(),
            client_ip: c.parse().unwrap(),
        }
    }
}
