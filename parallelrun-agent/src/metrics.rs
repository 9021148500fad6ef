//! Prometheus metrics: what the agent counts, and the HTTP endpoint that
//! serves them (`GET /metrics`, OpenMetrics text format).
//!
//! Every name starts with `parallelrun_`:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `requests_captured_total` | counter | |
//! | `replayed_total`, `matched_total`, `mismatched_total`, `noise_total` | counter | |
//! | `noise_unchecked_total` | counter | |
//! | `skipped_total` | counter | `reason` ([`SkipReason::name`]) |
//! | `lost_total` | counter | `cause` ([`LossCause::name`]) |
//! | `replay_errors_total` | counter | `target` (`new`, `secondary`), `kind` |
//! | `log_errors_total` | counter | |
//! | `ring_buffer_drops_total` | counter | |
//! | `kernel_packets_seen_total`, `kernel_packets_matched_total`, `kernel_records_total`, `kernel_payload_bytes_total`, `kernel_truncated_total`, `kernel_read_errors_total`, `kernel_malformed_total`, `kernel_sampled_out_total` | counter | |
//! | `reassembly_connections`, `reassembly_buffered_bytes` | gauge | |
//! | `interfaces_attached` | gauge | |
//! | `interface_attaches_total`, `interface_detaches_total`, `interface_attach_errors_total` | counter | |
//! | `old_latency_seconds`, `new_latency_seconds` | histogram | |
//!
//! and, when the run keeps per-endpoint results, the series of
//! [`endpoints`](mod@endpoints) (`endpoint_requests_total` and others);
//! with `--nats`, the publisher's ([`crate::publish::stats`]).
//!
//! Label values come from fixed sets (enums and `&'static str`), so the
//! number of series is bounded.

use std::{
    convert::Infallible,
    fmt::Write as _,
    future::Future,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use parallelrun_common::{COUNTER_COUNT, Counter as KernelCounter};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tracing::{debug, warn};

use crate::{
    capture::{InterfaceStats, KernelCounters},
    model::LossCause,
    summary::Results,
};

pub mod endpoints;

/// Upper bounds of the latency histograms, in seconds: 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections to the metrics endpoint served at once; more are closed.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a captured request was not replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// Its method is not one that is replayed (only GET, HEAD and OPTIONS
    /// unless asked for more).
    Method = 0,
    /// Its path is excluded (or not included) by the path filters.
    Filter = 1,
    /// Not chosen by sampling.
    Sample = 2,
    /// Over the replay rate limit.
    RateLimit = 3,
    /// No replay capacity left (too many replays in flight).
    Overload = 4,
    /// The new service is considered down; replays are paused.
    NewDown = 5,
}

impl SkipReason {
    /// Every reason, in discriminant order (`ALL[r as usize] == r`).
    pub const ALL: [SkipReason; 6] = [
        SkipReason::Method,
        SkipReason::Filter,
        SkipReason::Sample,
        SkipReason::RateLimit,
        SkipReason::Overload,
        SkipReason::NewDown,
    ];

    /// Stable snake_case name, used in metrics labels, JSON and summaries.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::Method => "method",
            SkipReason::Filter => "filter",
            SkipReason::Sample => "sample",
            SkipReason::RateLimit => "rate_limit",
            SkipReason::Overload => "overload",
            SkipReason::NewDown => "new_down",
        }
    }
}

impl EncodeLabelValue for SkipReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.name())
    }
}

impl EncodeLabelValue for LossCause {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.name())
    }
}

/// Where a failed replay was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReplayTarget {
    /// The new service version under test.
    New,
    /// The secondary (a second instance of the old version, for noise).
    Secondary,
}

impl ReplayTarget {
    /// Both targets.
    pub const ALL: [ReplayTarget; 2] = [ReplayTarget::New, ReplayTarget::Secondary];

    /// `new` or `secondary`.
    pub fn name(self) -> &'static str {
        match self {
            ReplayTarget::New => "new",
            ReplayTarget::Secondary => "secondary",
        }
    }
}

impl EncodeLabelValue for ReplayTarget {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.name())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    reason: SkipReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LostLabels {
    cause: LossCause,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplayErrorLabels {
    target: ReplayTarget,
    kind: &'static str,
}

/// The agent's metrics. Cheap to update from any thread: every method takes
/// `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    captured: Counter,
    replayed: Counter,
    matched: Counter,
    mismatched: Counter,
    noise: Counter,
    noise_unchecked: Counter,
    skipped: Family<SkipLabels, Counter>,
    lost: Family<LostLabels, Counter>,
    replay_errors: Family<ReplayErrorLabels, Counter>,
    log_errors: Counter,
    /// Indexed by [`KernelCounter`] (`c as usize`).
    kernel: [Counter; COUNTER_COUNT as usize],
    /// Kernel totals already added to `kernel`.
    kernel_seen: Mutex<[u64; COUNTER_COUNT as usize]>,
    connections: Gauge,
    buffered_bytes: Gauge,
    interfaces_attached: Gauge,
    /// Attaches, detaches and attach errors, as in [`InterfaceStats`].
    interfaces: [Counter; 3],
    /// Interface totals already added to `interfaces`.
    interfaces_seen: Mutex<[u64; 3]>,
    old_latency: Histogram,
    new_latency: Histogram,
}

impl Metrics {
    /// All metrics registered, at zero; every `reason` and `cause` label
    /// value is present from the start.
    pub fn new() -> Arc<Self> {
        Self::with_endpoints(None)
    }

    /// As [`Metrics::new`], with the per-endpoint series of `results` too.
    pub fn with_endpoints(results: Option<Arc<Mutex<Results>>>) -> Arc<Self> {
        Self::with_collector(results, None)
    }

    /// As [`Metrics::with_endpoints`], with the series of `extra` too (the
    /// NATS publisher's, [`crate::publish::stats`]).
    pub fn with_collector(
        results: Option<Arc<Mutex<Results>>>,
        extra: Option<Box<dyn prometheus_client::collector::Collector>>,
    ) -> Arc<Self> {
        let mut registry = Registry::with_prefix("parallelrun");
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let captured = counter(
            &mut registry,
            "requests_captured",
            "Requests paired with the old service's response",
        );
        let replayed = counter(
            &mut registry,
            "replayed",
            "Requests replayed to the new service",
        );
        let matched = counter(
            &mut registry,
            "matched",
            "Replays whose response matched the old one",
        );
        let mismatched = counter(
            &mut registry,
            "mismatched",
            "Replays whose response differed (logged to the mismatch log)",
        );
        let noise = counter(
            &mut registry,
            "noise",
            "Replays whose differences were all noise (not logged)",
        );
        let noise_unchecked = counter(
            &mut registry,
            "noise_unchecked",
            "Mismatches logged without noise cancellation: the secondary gave no response",
        );
        let log_errors = counter(
            &mut registry,
            "log_errors",
            "Events that could not be written to the mismatch log",
        );

        let skipped = Family::<SkipLabels, Counter>::default();
        registry.register(
            "skipped",
            "Captured requests not replayed, by reason",
            skipped.clone(),
        );
        for reason in SkipReason::ALL {
            skipped.get_or_create_owned(&SkipLabels { reason });
        }
        let lost = Family::<LostLabels, Counter>::default();
        registry.register(
            "lost",
            "Requests seen that could not be paired with a response, by cause",
            lost.clone(),
        );
        for cause in LossCause::ALL {
            lost.get_or_create_owned(&LostLabels { cause });
        }
        let replay_errors = Family::<ReplayErrorLabels, Counter>::default();
        registry.register(
            "replay_errors",
            "Replays that got no response, by target and kind of failure",
            replay_errors.clone(),
        );

        let kernel = KernelCounter::ALL.map(|c| {
            let (name, help, unit) = kernel_metric(c);
            let counter = Counter::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, counter.clone()),
                None => registry.register(name, help, counter.clone()),
            }
            counter
        });

        let connections = Gauge::default();
        registry.register(
            "reassembly_connections",
            "Connections being reassembled",
            connections.clone(),
        );
        let buffered_bytes = Gauge::default();
        registry.register_with_unit(
            "reassembly_buffered",
            "Bytes held by reassembly (out of order or awaiting parsing)",
            Unit::Bytes,
            buffered_bytes.clone(),
        );
        let interfaces_attached = Gauge::default();
        registry.register(
            "interfaces_attached",
            "Interfaces the capture is attached to now",
            interfaces_attached.clone(),
        );
        let interfaces = [
            (
                "interface_attaches",
                "Interfaces attached to (once per appearance)",
            ),
            (
                "interface_detaches",
                "Interfaces detached from (gone, or renamed out of --iface)",
            ),
            (
                "interface_attach_errors",
                "Interfaces matching --iface that could not be attached (see the agent's warning)",
            ),
        ]
        .map(|(name, help)| counter(&mut registry, name, help));
        let old_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "old_latency",
            "The old service's latency, as seen on the wire",
            Unit::Seconds,
            old_latency.clone(),
        );
        let new_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "new_latency",
            "The new service's latency to replays",
            Unit::Seconds,
            new_latency.clone(),
        );

        if let Some(results) = results {
            registry.register_collector(Box::new(endpoints::EndpointCollector { results }));
        }
        if let Some(extra) = extra {
            registry.register_collector(extra);
        }
        Arc::new(Self {
            registry,
            captured,
            replayed,
            matched,
            mismatched,
            noise,
            noise_unchecked,
            skipped,
            lost,
            replay_errors,
            log_errors,
            kernel,
            kernel_seen: Mutex::new([0; COUNTER_COUNT as usize]),
            connections,
            buffered_bytes,
            interfaces_attached,
            interfaces,
            interfaces_seen: Mutex::new([0; 3]),
            old_latency,
            new_latency,
        })
    }

    /// A request was paired with the old service's response.
    pub fn captured(&self) {
        self.captured.inc();
    }

    /// A request was replayed to the new service.
    pub fn replayed(&self) {
        self.replayed.inc();
    }

    /// A replay's response matched the old one.
    pub fn matched(&self) {
        self.matched.inc();
    }

    /// A replay's response differed from the old one.
    pub fn mismatched(&self) {
        self.mismatched.inc();
    }

    /// A replay's differences were all noise.
    pub fn noise(&self) {
        self.noise.inc();
    }

    /// A mismatch was logged without noise cancellation (also counted by
    /// [`mismatched`](Self::mismatched)): the secondary gave no response.
    pub fn noise_unchecked(&self) {
        self.noise_unchecked.inc();
    }

    /// A captured request was not replayed.
    pub fn skipped(&self, reason: SkipReason) {
        self.skipped.get_or_create(&SkipLabels { reason }).inc();
    }

    /// A request seen could not be paired with a response.
    pub fn lost(&self, cause: LossCause) {
        self.lost.get_or_create(&LostLabels { cause }).inc();
    }

    /// A replay to `target` got no response; `kind` names the failure
    /// (e.g. `connect`, `timeout`). A `&'static str` so that the label
    /// values stay a fixed set.
    pub fn replay_error(&self, target: ReplayTarget, kind: &'static str) {
        self.replay_errors
            .get_or_create(&ReplayErrorLabels { target, kind })
            .inc();
    }

    /// `events` could not be written to the mismatch log.
    pub fn log_errors(&self, events: u64) {
        self.log_errors.inc_by(events);
    }

    /// Takes the kernel's running totals (as read from its per-CPU
    /// counters) and adds what they grew by since the last call, so calling
    /// it periodically never counts twice. A total lower than the last one
    /// (the program was reloaded) counts from zero. Feeds
    /// `ring_buffer_drops_total` too.
    pub fn set_kernel(&self, totals: &KernelCounters) {
        let mut seen = self
            .kernel_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in KernelCounter::ALL {
            let i = c as usize;
            let now = totals.get(c);
            let delta = if now >= seen[i] { now - seen[i] } else { now };
            if delta > 0 {
                self.kernel[i].inc_by(delta);
            }
            seen[i] = now;
        }
    }

    /// Takes the running totals of the interfaces followed and adds what
    /// they grew by since the last call (as [`Metrics::set_kernel`]).
    pub fn set_interfaces(&self, stats: &InterfaceStats) {
        self.interfaces_attached
            .set(i64::try_from(stats.attached).unwrap_or(i64::MAX));
        let mut seen = self
            .interfaces_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let totals = [stats.attaches, stats.detaches, stats.attach_errors];
        for ((counter, seen), now) in self.interfaces.iter().zip(seen.iter_mut()).zip(totals) {
            if now > *seen {
                counter.inc_by(now - *seen);
            }
            *seen = now;
        }
    }

    /// The reassembly's current size.
    pub fn set_reassembly(&self, connections: u64, buffered_bytes: u64) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.connections.set(clamp(connections));
        self.buffered_bytes.set(clamp(buffered_bytes));
    }

    /// The old service's latency for one request, in nanoseconds.
    pub fn observe_old(&self, latency_ns: u64) {
        self.old_latency.observe(latency_ns as f64 / 1e9);
    }

    /// The new service's latency for one replay, in nanoseconds.
    pub fn observe_new(&self, latency_ns: u64) {
        self.new_latency.observe(latency_ns as f64 / 1e9);
    }

    /// All metrics in the OpenMetrics text format ([`CONTENT_TYPE`]),
    /// ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and neither can our label values.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            warn!("encoding metrics failed: {e}");
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

/// Name (without prefix and `_total`), help and unit of a kernel counter.
fn kernel_metric(c: KernelCounter) -> (&'static str, &'static str, Option<Unit>) {
    match c {
        KernelCounter::PacketsSeen => (
            "kernel_packets_seen",
            "Packets the TC program ran on (all traffic of the interface)",
            None,
        ),
        KernelCounter::PacketsMatched => (
            "kernel_packets_matched",
            "TCP segments to or from an old service",
            None,
        ),
        KernelCounter::RecordsEmitted => (
            "kernel_records",
            "Records the TC program wrote to the ring buffer",
            None,
        ),
        KernelCounter::BytesEmitted => (
            "kernel_payload",
            "Payload bytes the TC program wrote to the ring buffer",
            Some(Unit::Bytes),
        ),
        KernelCounter::RingBufFull => (
            "ring_buffer_drops",
            "Records lost because the ring buffer was full (raise --ring-size)",
            None,
        ),
        KernelCounter::Truncated => (
            "kernel_truncated",
            "Segments whose payload was cut (over 64 KiB in one skb)",
            None,
        ),
        KernelCounter::ReadErrors => (
            "kernel_read_errors",
            "Segments the TC program matched but could not read",
            None,
        ),
        KernelCounter::Malformed => (
            "kernel_malformed",
            "Packets passed unparsed: IPv4 header length or TCP data offset below 20 bytes",
            None,
        ),
        KernelCounter::SampledOut => (
            "kernel_sampled_out",
            "Segments of connections left out by connection sampling (--sample), not copied",
            None,
        ),
    }
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "cannot serve metrics on {addr}: {source}; choose a free address with --metrics 127.0.0.1:PORT (port 0 picks any), or turn them off with --no-metrics"
    )]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Serves `metrics` over HTTP/1.1 on `addr` until `shutdown` resolves:
/// `GET` (or `HEAD`) `/metrics` or `/` → 200 with [`Metrics::encode`];
/// another method there → 405; any other path → 404. Returns the address
/// bound (useful with port 0) once listening; the server runs in a spawned
/// task. At most 64 connections are served at once; after shutdown, open
/// connections get 5 s to finish.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, MetricsError> {
    let bind_err = |source| MetricsError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    tokio::spawn(accept_loop(listener, metrics, shutdown));
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop_rx) = watch::channel(());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = shutdown.as_mut() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    warn!("metrics endpoint: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("metrics endpoint: {MAX_CONNECTIONS} connections open, closing a new one");
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let res = respond(&metrics, &req);
                async move { Ok::<_, Infallible>(res) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    debug!("metrics endpoint: connection ended: {e}");
                },
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status, body: &'static str| {
        let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    };
    match req.uri().path() {
        "/metrics" | "/" => match *req.method() {
            Method::GET | Method::HEAD => {
                let mut res = Response::new(Full::new(Bytes::from(metrics.encode())));
                res.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
                res
            }
            _ => {
                let mut res = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only GET and HEAD are served here\n",
                );
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                res
            }
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        ),
    }
}

#[cfg(test)]
mod tests;
