//! The parallelrun agent as a library: the pipeline stages, each in its own
//! module, in the order data flows through them: ring buffer ([`capture`])
//! or pcap file ([`pcap`]) → segments ([`model`]) → streams ([`reassembly`],
//! [`stream`]) → exchanges ([`http`]) → replay ([`replay`]) → differences
//! ([`diff`]) → mismatch log ([`report`]), [`metrics`] and NATS ([`publish`]). The `parallelrun`
//! binary is the command line over it.

// Used by the `parallelrun` binary only (cargo has no binary-only
// dependencies); named here so that `unused_crate_dependencies` still checks
// every other one.
use anyhow as _;
use clap as _;
use tracing_subscriber as _;

pub mod capabilities;
pub mod capture;
pub mod diff;
pub mod endpoint;
pub mod glob;
pub mod grpc;
pub mod http;
pub mod http2;
pub mod metrics;
pub mod model;
pub mod pcap;
pub mod pipeline;
pub mod private_file;
pub mod publish;
pub mod reassembly;
pub mod redact;
pub mod replay;
pub mod report;
pub mod service;
pub mod shutdown;
pub mod stream;
pub mod summary;
