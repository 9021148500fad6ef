//! HTTP/2 and gRPC, end to end, with real components in test-made
//! namespaces: nghttpd, h2load and nghttp; a grpcio server (old, new,
//! secondary flavors) and client for `tests/grpc/users.proto`; tcpdump as
//! the witness and tshark as the independent reader of each stream.
//!
//! Topology, per test: a client namespace and a server namespace joined
//! by a veth pair ([`Pair`]). The old service listens on the server's veth
//! address; other versions on the server namespace's loopback.
//!
//! `infra`: the components alone, without the agent, so that a failure in
//! the agent's tests is never the rig's. `h2c`: plain HTTP/2 (nghttpd,
//! h2load) captured, replayed and compared, and cross-checked with tshark.
//! `grpc`: gRPC calls compared message by message. `joined`: connections
//! that began before the agent did.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

mod grpc;
mod h2c;
mod infra;
mod joined;

use std::path::{Path, PathBuf};

use parallelrun_tests::{
    netns::{Family, Pair},
    require_root,
    tcpdump::Tcpdump,
};
use tempfile::TempDir;

/// One test's namespaces and scratch directory. Fields drop in order: the
/// directory goes, then the namespaces (with whatever still runs in them);
/// services are the tests' locals and stop first.
pub struct Rig {
    pub dir: TempDir,
    pub pair: Pair,
}

impl Rig {
    pub fn start() -> Self {
        Self::start_with(Family::V4)
    }

    pub fn start_with(family: Family) -> Self {
        require_root();
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            pair: Pair::new(family),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// tcpdump on the server's veth end, writing `NAME.pcap`.
    pub fn tcpdump(&self, name: &str) -> Tcpdump {
        Tcpdump::start(
            &self.pair.server,
            &self.pair.server_if,
            &self.path(&format!("{name}.pcap")),
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
