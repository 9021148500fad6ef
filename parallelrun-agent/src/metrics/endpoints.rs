//! Per-endpoint series, read from the run's [`Results`] at each scrape so
//! that they always equal what the summary file says:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `endpoint_requests_total` | counter | `endpoint`, `outcome` (`matched`, `mismatched`, `noise`, `skipped`, `lost`, `replay_error`) |
//! | `endpoint_compared_total` | counter | `endpoint` |
//! | `endpoint_latency_seconds` | histogram | `endpoint`, `side` (`old`, `new`, `secondary`) |
//!
//! `endpoint` takes at most `--max-endpoints` values plus `other`: the
//! classifier ([`crate::endpoint`]) bounds them. When learning folds
//! endpoints into a template, their series stop and the template's carries
//! their counts from then on (a new series, not a counter reset).

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter},
    registry::Unit,
};

use super::LATENCY_BUCKETS;
use crate::summary::{Latency, Results};

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
