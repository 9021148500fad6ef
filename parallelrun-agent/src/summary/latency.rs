//! A latency distribution: an HdrHistogram of microseconds (1 µs to 1 h,
//! 3 significant digits), mergeable by addition, carried in JSON as its
//! V2-deflate serialisation in base64 beside a few readable figures.

use serde::{Deserialize, Serialize};

/// A latency histogram. In JSON: `{"count", "p50_ms", "p99_ms", "max_ms",
/// "hdr"}`; on read only `hdr` is decoded, `count` is checked against it and
/// the figures are recomputed.
#[derive(Clone, Debug)]
pub struct Latency {
    // TODO(helper): hdrhistogram::Histogram<u64>
}

impl Latency {
    pub fn new() -> Self {
        todo!()
    }

    /// Records one latency (clamped to the histogram's range).
    pub fn record_ns(&mut self, ns: u64) {
        let _ = ns;
        todo!()
    }

    pub fn count(&self) -> u64 {
        todo!()
    }

    /// The value at quantile `q` (0..=1) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let _ = q;
        todo!()
    }

    /// Values ≤ `le_seconds` (for Prometheus buckets).
    pub fn count_le(&self, le_seconds: f64) -> u64 {
        let _ = le_seconds;
        todo!()
    }

    /// Sum of recorded values in seconds (approximate: bucket midpoints).
    pub fn sum_seconds(&self) -> f64 {
        todo!()
    }

    /// Adds `other`'s values.
    pub fn add(&mut self, other: &Latency) {
        let _ = other;
        todo!()
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Latency {
    fn eq(&self, _other: &Self) -> bool {
        todo!()
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        todo!()
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(_d: D) -> Result<Self, D::Error> {
        todo!()
    }
}
