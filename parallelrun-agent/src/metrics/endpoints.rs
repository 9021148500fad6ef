//! Per-endpoint series, read from the run's [`Results`] at each scrape so
//! that they always equal what the summary file says:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `endpoint_requests_total` | counter | `endpoint`, `outcome` (`matched`, `mismatched`, `noise`, `skipped`, `lost`, `replay_error`) |
//! | `endpoint_compared_total` | counter | `endpoint` |
//! | `endpoint_latency_seconds` | histogram | `endpoint`, `side` (`old`, `new`, `secondary`) |
//!
//! | `endpoint_skipped_total` | counter | `endpoint`, `reason` (only reasons that occurred) |
//! | `endpoint_lost_total` | counter | `endpoint`, `cause` (only causes that occurred) |
//! | `rules_info` | info | the summary's rules: `endpoint_patterns` (joined by `,`), `max_endpoints`, `learn_after`, `max_locations`, `regression_ratio`, `regression_min_delta_ms`, `regression_min_samples` |
//!
//! With these, a fleet's summary can be rebuilt from Prometheus
//! ([`crate::summary::prometheus`]): the counts exactly, the latencies at
//! the buckets' resolution, and the rules the agents must agree on.
//!
//! `endpoint` takes at most `--max-endpoints` values plus `other`: the
//! classifier ([`crate::endpoint`]) bounds them. When learning folds
//! endpoints into a template, their series stop and the template's carries
//! their counts from then on (a new series, not a counter reset).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, info::Info},
    registry::Unit,
};

use super::LATENCY_BUCKETS;
use crate::summary::{Counts, Latency, Results, Rules};

/// Encodes the per-endpoint series of `results` at each scrape.
#[derive(Debug)]
pub(super) struct EndpointCollector {
    pub(super) results: Arc<Mutex<Results>>,
}

impl Collector for EndpointCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let summary = match self.results.lock() {
            Ok(r) => r.snapshot(false),
            // A replay task panicked while recording: no per-endpoint series
            // rather than a failed scrape.
            Err(_) => return Ok(()),
        };
        let mut requests = encoder.encode_descriptor(
            "endpoint_requests",
            "Requests seen per endpoint, by outcome",
            None,
            MetricType::Counter,
        )?;
        for ep in &summary.endpoints {
            for (outcome, v) in ep.counts.outcomes() {
                let labels = [("endpoint", ep.endpoint.as_str()), ("outcome", outcome)];
                ConstCounter::new(v).encode(requests.encode_family(&labels)?)?;
            }
        }
        for (name, help, label, by) in [
            (
                "endpoint_skipped",
                "Requests not replayed per endpoint, by reason",
                "reason",
                (|c: &Counts| &c.skipped_by) as fn(&Counts) -> &BTreeMap<String, u64>,
            ),
            (
                "endpoint_lost",
                "Requests not paired with a response per endpoint, by cause",
                "cause",
                |c: &Counts| &c.lost_by,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for ep in &summary.endpoints {
                for (value, n) in by(&ep.counts) {
                    let labels = [("endpoint", ep.endpoint.as_str()), (label, value.as_str())];
                    ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let rules = rules_labels(&summary.rules);
        Info::new(rules).encode(encoder.encode_descriptor(
            "rules",
            "The rules results are grouped and judged by (agents of one fleet must agree)",
            None,
            MetricType::Info,
        )?)?;
        let mut compared = encoder.encode_descriptor(
            "endpoint_compared",
            "Requests compared per endpoint (matched + mismatched + noise)",
            None,
            MetricType::Counter,
        )?;
        for ep in &summary.endpoints {
            let labels = [("endpoint", ep.endpoint.as_str())];
            ConstCounter::new(ep.counts.compared).encode(compared.encode_family(&labels)?)?;
        }
        let mut latency = encoder.encode_descriptor(
            "endpoint_latency",
            "Latency per endpoint: old (wire), new and secondary (replayed)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for ep in &summary.endpoints {
            let l = &ep.latency;
            for (side, hist) in [
                ("old", &l.old),
                ("new", &l.new),
                ("secondary", &l.secondary),
            ] {
                let labels = [("endpoint", ep.endpoint.as_str()), ("side", side)];
                let buckets = buckets(hist);
                latency
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        hist.sum_seconds(),
                        hist.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

/// What [`rules_labels`] percent-encodes in a pattern: what would need
/// escaping in a label value (which the encoder does not escape), the
/// separator and `%` itself.
pub const PATTERN_ESCAPES: &AsciiSet = &CONTROLS.add(b'"').add(b'\\').add(b',').add(b'%');

/// The labels of `rules_info`: each field of [`Rules`] under its name
/// (`regression.ratio` as `regression_ratio`), numbers as Rust prints them
/// (they parse back to the same value), the patterns joined by `,`, each
/// percent-encoded by [`PATTERN_ESCAPES`].
pub fn rules_labels(rules: &Rules) -> Vec<(&'static str, String)> {
    let r = &rules.regression;
    let patterns: Vec<String> = rules
        .endpoint_patterns
        .iter()
        .map(|p| utf8_percent_encode(p, PATTERN_ESCAPES).to_string())
        .collect();
    vec![
        ("endpoint_patterns", patterns.join(",")),
        ("max_endpoints", rules.max_endpoints.to_string()),
        ("learn_after", rules.learn_after.to_string()),
        ("max_locations", rules.max_locations.to_string()),
        ("regression_ratio", r.ratio.to_string()),
        ("regression_min_delta_ms", r.min_delta_ms.to_string()),
        ("regression_min_samples", r.min_samples.to_string()),
    ]
}

/// Per-bucket (not cumulative) counts at [`LATENCY_BUCKETS`] and `+Inf`.
fn buckets(hist: &Latency) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
    let mut below = 0;
    for le in LATENCY_BUCKETS {
        let n = hist.count_le(le);
        out.push((le, n.saturating_sub(below)));
        below = n;
    }
    out.push((f64::MAX, hist.count().saturating_sub(below)));
    out
}
