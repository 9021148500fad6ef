//! Test support for parallelrun's integration tests: network namespaces and
//! veth pairs made per test, a real HTTP server and a recording client that
//! run inside them, the agent as a child process, and an independent pcap
//! reader that rebuilds TCP byte streams, and a real nats-server.
//!
//! Every helper panics on failure (a test should stop at the first surprise)
//! and cleans up in `Drop`, so a failing test leaves no namespace behind.

// Used by the demo binary only (cargo has no binary-only dependencies).
use clap as _;
// Used by the capture tests (conn_hash for the sampling checks).
use parallelrun_common as _;
use tempfile as _;
// The test binaries' dev-dependency, which this library's test build sees.
#[cfg(test)]
use base64 as _;
#[cfg(test)]
use parallelrun_agent as _;

pub mod agent;
pub mod app;
pub mod browser;
pub mod client;
pub mod faults;
pub mod h2;
pub mod h2raw;
pub mod nats;
pub mod netns;
pub mod pcap;
pub mod prometheus;
pub mod server;
pub mod tcpdump;
pub mod tun;

/// Deterministic body bytes for a response of `len` bytes: a pattern that
/// does not repeat with any small period, so misplaced data is caught.
pub fn body_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + i / 251) % 253) as u8).collect()
}

/// Panics unless running as root: these tests attach eBPF programs.
pub fn require_root() {
    assert!(
        parallelrun_sandbox::is_root(),
        "integration tests attach eBPF programs and create network namespaces: run them as root with `cargo xtask test`"
    );
}
