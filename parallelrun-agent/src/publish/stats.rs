//! What the publisher counts, for `--stats-json` and Prometheus:
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `parallelrun_nats_published_total` | counter | results (events and summaries) in messages JetStream acknowledged (duplicates included: each was stored once) |
//! | `parallelrun_nats_duplicates_total` | counter | of those, the ones in messages JetStream had already stored under their id |
//! | `parallelrun_nats_dropped_total` | counter | results dropped: the buffer was full, or left unpublished at exit |
//! | `parallelrun_nats_errors_total` | counter | failed publishes and stream look-ups (each retried) |
//! | `parallelrun_nats_buffered` | gauge | results waiting in the buffer |

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};
use serde::Serialize;

use super::queue::Queue;

/// Counters the publisher task and the pipeline update.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub duplicates: AtomicU64,
    /// Left in the buffer at exit (the buffer counts its own drops).
    pub abandoned: AtomicU64,
    pub errors: AtomicU64,
}

/// The publisher's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PublishStats {
    pub published: u64,
    pub duplicates: u64,
    pub dropped: u64,
    pub errors: u64,
    pub buffered: u64,
    /// The most the buffer ever held.
    pub max_buffered: u64,
}

/// Counters and buffer together: what a snapshot reads.
#[derive(Debug)]
pub struct Shared {
    pub counters: Counters,
    pub queue: Queue,
    pub max_buffered: AtomicU64,
}

impl Shared {
    pub fn new(queue: Queue) -> Self {
        Self {
            counters: Counters::default(),
            queue,
            max_buffered: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> PublishStats {
        let c = &self.counters;
        PublishStats {
            published: c.published.load(Relaxed),
            duplicates: c.duplicates.load(Relaxed),
            dropped: self.queue.dropped() + c.abandoned.load(Relaxed),
            errors: c.errors.load(Relaxed),
            buffered: self.queue.len(),
            max_buffered: self.max_buffered.load(Relaxed),
        }
    }
}

/// Encodes the publisher's series at each scrape.
#[derive(Debug)]
pub struct StatsCollector(pub(super) Arc<Shared>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        for (name, help, v) in [
            (
                "nats_published",
                "Results (events and summaries) in messages JetStream acknowledged",
                s.published,
            ),
            (
                "nats_duplicates",
                "Acknowledged results JetStream had already stored under their message id",
                s.duplicates,
            ),
            (
                "nats_dropped",
                "Results dropped: the NATS buffer was full, or left unpublished at exit",
                s.dropped,
            ),
            ("nats_errors", "Failed NATS publishes (retried)", s.errors),
        ] {
            let e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(e)?;
        }
        let e = encoder.encode_descriptor(
            "nats_buffered",
            "Results waiting to be published to NATS",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(s.buffered).unwrap_or(i64::MAX)).encode(e)?;
        Ok(())
    }
}
