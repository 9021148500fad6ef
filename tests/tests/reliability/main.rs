//! Reliability and security: faults, floods and hostile input never hurt
//! production and never break the accounting.
//!
//! Each test builds its own namespaces (a client and a server namespace
//! joined by a veth pair, see [`fixture::Env`]), runs the agent attached to
//! the server's veth end, injects one kind of trouble and checks three things:
//! the old service's clients are served correctly (and, where it matters,
//! as fast as without the agent); the agent survives, stays within its
//! memory bounds and stops cleanly; and its final counters account for
//! every request (`requests_seen == matched + mismatched + noise + skipped
//! + lost + replay_errors`, `unaccounted == 0`).
//!
//! One test binary, a module per area (signals, restart, a failing new
//! service, an unwritable log, a vanishing interface, floods, hostile input,
//! security, CPU priority, soak), on the fixture of [`fixture`].
//!
//! Run as root (they attach eBPF programs and create namespaces):
//!
//! ```sh
//! cargo build -p parallelrun-agent
//! PARALLELRUN_BIN=$PWD/target/debug/parallelrun \
//!     cargo test -p parallelrun-tests --test reliability
//! ```
//!
//! The soak test is not part of CI; run it alone, for `SOAK_SECS` seconds
//! (default 1800), with the release build:
//!
//! ```sh
//! cargo xtask build --release
//! SOAK_SECS=1800 PARALLELRUN_BIN=$PWD/target/release/parallelrun \
//!     cargo test --release -p parallelrun-tests --test reliability -- --ignored soak --nocapture
//! ```
//!
//! Topology, unless a test says otherwise: the old service on the server's
//! veth address `:8080`; the new service on `127.0.0.1:9090` and the
//! secondary on `127.0.0.1:9091` inside the server namespace, so replays
//! cross that namespace's `lo` and are never captured.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

mod fixture;

mod floods;
mod hostile;
mod interface;
mod log_full;
mod new_service;
mod priority;
mod restart;
mod security;
mod signals;
mod soak;
