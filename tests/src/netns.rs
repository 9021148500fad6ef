//! Network namespaces and veth pairs owned by one test.
//!
//! The guards are `parallelrun-sandbox`'s, shared with the demo and the
//! bench; this module gives them the manners of a test: a name unique to the
//! test, and a panic at the first failure. A namespace is deleted on drop
//! with everything in it, so a failing test leaves nothing behind.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Deref,
    process::{Command, Output},
    thread,
};

pub use parallelrun_sandbox::unique;

/// The value, or a panic with the error (a test stops at the first surprise).
fn ok<T>(r: parallelrun_sandbox::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Output {
    ok(parallelrun_sandbox::run(cmd))
}

/// A network namespace, deleted (with every process and interface in it)
/// on drop. Derefs to the sandbox's guard for the rest (`name`, `command`).
pub struct Netns(parallelrun_sandbox::Netns);

impl Netns {
    /// A new namespace named [`unique`]`(prefix)`, its loopback up.
    pub fn new(prefix: &str) -> Self {
        Self(ok(parallelrun_sandbox::Netns::create(unique(prefix))))
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        ok(self.0.ip(args));
    }

    /// Runs `f` on a new thread that has entered this namespace; sockets it
    /// creates live in the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = self.0.path();
        thread::spawn(move || {
            ok(parallelrun_sandbox::enter(&path));
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

impl Deref for Netns {
    type Target = parallelrun_sandbox::Netns;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
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
        ok(server.add_veth(&server_if, &client_if, &client));
        let (server_ip, client_ip, prefix_len): (IpAddr, IpAddr, u8) = match family {
            Family::V4 => (
                Ipv4Addr::new(10, 77, 0, 1).into(),
                Ipv4Addr::new(10, 77, 0, 2).into(),
                24,
            ),
            Family::V6 => (
                Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1).into(),
                Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2).into(),
                64,
            ),
        };
        for (ns, ifname, addr) in [
            (&server, &server_if, server_ip),
            (&client, &client_if, client_ip),
        ] {
            ok(ns.address(ifname, addr, prefix_len));
        }
        Self {
            server,
            client,
            server_if,
            client_if,
            server_ip,
            client_ip,
        }
    }
}
