//! Fleet results on NATS JetStream: an agent publishes each mismatch log
//! event and its periodic summaries ([`Publisher`]); `report` and
//! `verdict` read the latest summary of every node back ([`fleet`]).
//!
//! Data flows one way: pipeline and results → [`Publisher::event`] /
//! [`Publisher::summary`] (never wait) → the bounded [`queue`] →
//! the publisher [`task`] → JetStream.
//!
//! # Rules
//!
//! - Publishing never blocks the pipeline: a full buffer drops its oldest
//!   results and counts them ([`queue`]); the run goes on comparing.
//! - Events waiting to be published coalesce, one JSON line each, into one
//!   message per subject ([`queue`]); the publisher lingers a moment before
//!   it takes ([`task`]), so a busy agent sends one message, and waits for
//!   one acknowledgement, per many events.
//! - Events are published as the mismatch log writes them: the same bytes,
//!   encoded and redacted once ([`crate::report::log::encode`]); summaries
//!   as `--summary` writes them, on `parallelrun.summary.<service>.<node>`,
//!   the last one `finished`. Subjects and message ids: [`subject`].
//! - NATS away at start or later: the run starts anyway, buffers and
//!   retries; at the end it waits a bounded time to publish what is left
//!   and counts the rest as dropped.

pub mod fleet;
pub mod queue;
pub mod stats;
pub mod subject;
mod task;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use async_nats::ServerAddr;
use bytes::Bytes;
use tokio::task::JoinHandle;
use tracing::warn;

use self::{
    queue::{Message, Queue},
    stats::Shared,
    subject::Subjects,
};
pub use self::{
    stats::{PublishStats, StatsCollector},
    task::{DUPLICATE_WINDOW, stream_config},
};
use crate::{pipeline::EventSink, report::log::LogEvent, summary::Summary};

/// Default stream name.
pub const DEFAULT_STREAM: &str = "PARALLELRUN";

/// Where and how an agent publishes.
#[derive(Clone, Debug)]
pub struct PublishConfig {
    pub url: ServerAddr,
    pub stream: String,
    /// The service shadowed and this agent's name: subject tokens.
    pub service: String,
    pub node: String,
    /// Buffer bounds (results, payload bytes).
    pub max_results: usize,
    pub max_bytes: usize,
}

/// A handle on the publisher: cheap to clone, shared by the pipeline and
/// the results.
#[derive(Clone, Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
    subjects: Arc<Subjects>,
    summaries: Arc<AtomicU64>,
    task: Arc<JoinHandle<()>>,
}

impl Publisher {
    /// Starts the publisher task (in the current tokio runtime). Connecting
    /// happens in the background: an unreachable NATS is not an error.
    pub fn start(cfg: PublishConfig) -> Self {
        let shared = Arc::new(Shared::new(Queue::new(cfg.max_results, cfg.max_bytes)));
        let task = tokio::spawn(task::run(Arc::clone(&shared), cfg.url, cfg.stream));
        Self {
            shared,
            subjects: Arc::new(Subjects::new(&cfg.service, &cfg.node, rand::random())),
            summaries: Arc::new(AtomicU64::new(0)),
            task: Arc::new(task),
        }
    }

    /// The Prometheus series of this publisher.
    pub fn collector(&self) -> StatsCollector {
        StatsCollector(Arc::clone(&self.shared))
    }

    /// The counters now.
    pub fn stats(&self) -> PublishStats {
        self.shared.snapshot()
    }

    fn push(&self, msg: Message) {
        let dropped = self.shared.queue.push(msg);
        let held = self.shared.queue.len();
        self.shared.max_buffered.fetch_max(held, Relaxed);
        if dropped > 0 {
            let total = self.shared.queue.dropped();
            // One warning per 1000 drops.
            if total.saturating_sub(dropped) / 1000 != total / 1000 || total == dropped {
                warn!(
                    dropped = total,
                    "the NATS buffer is full: the oldest results are dropped (raise --nats-buffer)"
                );
            }
        }
    }

    /// Queues `summary` on this node's summary subject.
    pub fn summary(&self, summary: &Summary) {
        let payload = match serde_json::to_vec(summary) {
            Ok(p) => p,
            Err(e) => {
                warn!("cannot encode the summary for NATS: {e}");
                return;
            }
        };
        let n = self.summaries.fetch_add(1, Relaxed);
        self.push(Message {
            subject: self.subjects.summary(),
            id: self.subjects.summary_id(n),
            payload: Bytes::from(payload),
            events: 0,
        });
    }

    /// Waits up to `timeout` for the buffer to empty, stops the task and
    /// counts what is left as dropped; returns the final counters.
    pub async fn finish(&self, timeout: Duration) -> PublishStats {
        let started = Instant::now();
        while !self.shared.queue.is_empty() && started.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        let left = self.shared.queue.len();
        if left > 0 {
            self.shared.counters.abandoned.fetch_add(left, Relaxed);
            warn!(
                left,
                "NATS did not take every result before the end: they are counted as dropped"
            );
        }
        let mut s = self.shared.snapshot();
        s.buffered = 0;
        s
    }
}

impl EventSink for Publisher {
    fn event(&self, ev: &LogEvent, json: &Bytes) {
        self.push(Message {
            subject: self.subjects.event(ev.kind),
            id: self.subjects.event_id(ev.id),
            payload: json.clone(),
            events: 1,
        });
    }
}
