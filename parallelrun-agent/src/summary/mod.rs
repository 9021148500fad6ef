//! Per-endpoint results of a run, and the summary file that carries them.
//!
//! Data flows one way: the pipeline records each request's outcome under
//! its endpoint ([`Results`], bounded) → a [`Summary`] snapshot, written
//! atomically as JSON (`--summary FILE`, [`file`]) → read back, several
//! merged into one ([`merge`]) → rendered ([`crate::report::table`],
//! [`crate::report::html`]) or judged ([`verdict`]). A fleet's summary can
//! also be rebuilt from the agents' metrics in Prometheus ([`prometheus`]:
//! counts exactly, latencies from buckets).
//!
//! # Invariants (checked on every summary read, see [`file::read`])
//!
//! - Per endpoint and in `totals`: `seen = matched + mismatched + noise +
//!   skipped + lost + replay_errors` and `compared = matched + mismatched +
//!   noise`; `skipped` and `lost` equal the sums of their by-reason maps.
//! - `totals` is the sum of the endpoints' counts.
//! - A location's `noise ≤ raw` and `reported ≤ raw`; `reported` counts
//!   mismatched requests, so it is at most the endpoint's `mismatched`.
//! - Each latency histogram's `count` is the count of its decoded `hdr`.
//!
//! Summaries merge only when their [`Rules`] are equal: the same endpoint
//! patterns and bounds give the same endpoints, so the merged totals are
//! exactly those one agent seeing all the traffic would have written.
//!
//! The arithmetic — adding counts, latencies, locations and examples, the
//! bounds, and the [`RegressionRule`] — lives in one place, [`merge`], used
//! both by [`Results`] (recording, folding, snapshotting) and by merging.

pub mod file;
pub mod latency;
pub mod merge;
pub mod prometheus;
pub mod record;
pub mod verdict;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::{latency::Latency, record::Results};

/// `format` of every summary file.
pub const FORMAT: &str = "parallelrun-summary";
/// The schema version this build writes and reads.
pub const VERSION: u32 = 1;
pub use crate::endpoint::OTHER;

/// A summary file: one run of one agent, or several merged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The rules the results were grouped and judged by.
    pub rules: Rules,
    /// The agents and runs merged into this summary (one when written by an
    /// agent).
    pub sources: Vec<Source>,
    /// Every endpoint's counts added up.
    pub totals: Counts,
    /// Sorted by name; at most `rules.max_endpoints` plus [`OTHER`].
    pub endpoints: Vec<EndpointSummary>,
}

/// What must be equal for two summaries to merge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// `--endpoint` patterns, in the order given (first match wins).
    pub endpoint_patterns: Vec<String>,
    /// Endpoints kept apart at most; the rest are counted in [`OTHER`].
    pub max_endpoints: usize,
    /// Distinct values a path position takes before it is learned to be a
    /// parameter (see [`crate::endpoint`]).
    pub learn_after: usize,
    /// Difference locations kept per endpoint; the rest are counted in
    /// [`EndpointSummary::other_locations`].
    pub max_locations: usize,
    /// When new is marked slower than the secondary.
    pub regression: RegressionRule,
}

/// A latency regression: at p50 or at p99, the new service's latency is
/// above `ratio` × the secondary's *and* at least `min_delta_ms` above it,
/// both histograms holding at least `min_samples` values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionRule {
    pub ratio: f64,
    pub min_delta_ms: f64,
    pub min_samples: u64,
}

/// One agent run a summary comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The agent's node: `--node`, by default its host name.
    pub host: String,
    /// What it watched: `iface:eth0` or `pcap:FILE`.
    pub input: String,
    /// The new service replays went to (`IP:PORT`).
    pub new: String,
    /// The secondary, when there was one.
    pub secondary: Option<String>,
    /// RFC 3339, when the run started and when this summary was written.
    pub started: String,
    pub updated: String,
    /// False while the run goes on (a summary rewritten every few seconds),
    /// true in the one written at its end.
    pub finished: bool,
}

/// Outcome counts. Every request seen ends in exactly one outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub seen: u64,
    pub compared: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub noise: u64,
    pub skipped: u64,
    pub lost: u64,
    pub replay_errors: u64,
    /// `skipped` by reason ([`crate::metrics::SkipReason::name`]).
    pub skipped_by: BTreeMap<String, u64>,
    /// `lost` by cause ([`crate::model::LossCause::name`]).
    pub lost_by: BTreeMap<String, u64>,
}

impl Counts {
    /// The outcomes, each under the name the metrics give it
    /// (`endpoint_requests_total{outcome}`).
    pub fn outcomes(&self) -> [(&'static str, u64); 6] {
        [
            ("matched", self.matched),
            ("mismatched", self.mismatched),
            ("noise", self.noise),
            ("skipped", self.skipped),
            ("lost", self.lost),
            ("replay_error", self.replay_errors),
        ]
    }
}

/// Everything known about one endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSummary {
    /// `METHOD /path/{id}` (see [`crate::endpoint`]) or [`OTHER`].
    pub endpoint: String,
    pub counts: Counts,
    /// Sorted by `reported`, then `raw`, descending; at most
    /// `rules.max_locations`.
    pub differences: Vec<Location>,
    /// Differences at locations beyond `rules.max_locations` (reported ones).
    pub other_locations: u64,
    pub latency: Latencies,
    /// Derived from `latency` by `rules.regression`; recomputed on merge.
    pub regression: Option<Regression>,
    /// A few mismatched requests, for reproducing one (copy as curl).
    pub examples: Vec<Example>,
}

/// One place responses differ at, generalised over array indices
/// (`body:/items/*/price`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    #[serde(rename = "where")]
    pub location: String,
    /// Compared requests whose old and new responses differed here.
    pub raw: u64,
    /// Of those, the ones where the difference was noise.
    pub noise: u64,
    /// Mismatched requests reporting a difference here (not noise).
    pub reported: u64,
    /// The first few reported requests' ids (as in the mismatch log).
    pub example_ids: Vec<u64>,
    /// The old and new values of the first reported one (cut, redacted as
    /// the mismatch log does).
    pub example_old: serde_json::Value,
    pub example_new: serde_json::Value,
}

/// Latency distributions of one endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latencies {
    /// The old service, as seen on the wire.
    pub old: Latency,
    /// The new service, replayed.
    pub new: Latency,
    /// The secondary (the old version), replayed by the same client: the
    /// fair reference for `new`.
    pub secondary: Latency,
}

/// Why an endpoint is marked as a latency regression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regression {
    /// `p50` or `p99`: the first quantile the rule fired at.
    pub quantile: String,
    pub new_ms: f64,
    pub secondary_ms: f64,
    pub ratio: f64,
}

/// A request kept to reproduce a mismatch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// As in the mismatch log.
    pub id: u64,
    pub method: String,
    /// Secret query values redacted.
    pub target: String,
    /// In wire order; values of the log's redacted headers replaced by
    /// `[redacted]`.
    pub headers: Vec<(String, String)>,
    /// The body as UTF-8 (lossy) when it is text, cut at a bound.
    pub body: String,
    /// Bytes of the body not kept (beyond the bound, or all of a binary one).
    pub body_omitted: u64,
}
