//! Connection sampling, the agent's half: the threshold the kernel is given
//! for `--sample F`, and the same [`parallelrun_common::conn_hash`] over a
//! [`ConnKey`], so that a pcap read offline keeps exactly the connections a
//! live capture with the same F would have copied.
//!
//! Sampling whole connections (not requests) keeps keep-alive and
//! pipelined framing intact, and lets the kernel skip the copy: its cost,
//! the agent's and the new service's all scale with F.

use parallelrun_common::SAMPLE_ALL;

use crate::{model::ConnKey, service::addr16};

/// The kernel's sampling threshold for a fraction `f` of connections, in
/// (0, 1]: `f * 2^32`, so that `conn_hash < threshold` holds for a share
/// `f` of well-spread hashes; 1 (or more) keeps all ([`SAMPLE_ALL`]).
pub fn sample_threshold(f: f64) -> u64 {
    if f >= 1.0 {
        SAMPLE_ALL
    } else {
        // In [0, 2^32): f64's 53-bit mantissa holds it exactly enough.
        (f.max(0.0) * SAMPLE_ALL as f64).round() as u64
    }
}

/// The connection's hash as the kernel computes it: addresses as 16 bytes
/// (IPv4 in the first 4), ports in host order, client first.
pub fn conn_hash(conn: &ConnKey) -> u32 {
    parallelrun_common::conn_hash(
        &addr16(conn.client.ip()),
        conn.client.port(),
        &addr16(conn.server.ip()),
        conn.server.port(),
    )
}

/// Whether `conn` is among the connections a capture with `threshold`
/// copies.
pub fn conn_sampled(conn: &ConnKey, threshold: u64) -> bool {
    threshold >= SAMPLE_ALL || parallelrun_common::sampled(conn_hash(conn), threshold)
}

#[cfg(test)]
mod tests;
