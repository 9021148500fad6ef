//! The core loop, fed live from the ring buffer or offline from a pcap:
//! segments → [`Reassembler`] → [`HttpTracker`] → exchanges → replay to the
//! new (and secondary) service → [`diff`](crate::diff) → noise
//! cancellation → mismatch log and metrics.
//!
//! Accounting: every request whose head was parsed ends in exactly one of
//! matched, mismatched, noise, skipped (by reason), lost (by cause) or
//! replay error. [`Pipeline::unaccounted`] checks it. With per-endpoint
//! [`Results`] kept, each outcome is also recorded under the request's
//! endpoint ([`crate::endpoint`]), the one its noise statistics use too.
//!
//! Each stage has its module: which requests are replayed ([`Policy`],
//! [`Breaker`]), how an answer is judged (`compare`), the counters
//! ([`Accounting`]) and which targets are refused ([`check_targets`]). This
//! module holds the loop itself and the replay decision.
//!
//! # Replay capacity
//!
//! A request is replayed to every target or to none: the secondary is part
//! of the decision, never an extra taken when it happens to be free. Its
//! capacity is one slot of the queue (`max_queue` replays and
//! `max_queue_bytes` bytes waiting or running, for the new service and the
//! secondary together: they replay the same exchange) and an in-flight
//! permit on each target (`Targets::acquire`). A replay's bytes are its
//! captured request, the old response's body as kept, and one more such
//! body per target for the response it reads (see [`queue_weight`]); a
//! digested body ([`crate::http::DigestPolicy`]) weighs nothing, which is
//! why the agent's memory does not grow with body size × queue depth for
//! binary and large bodies. Live capture never waits
//! for a queue slot: without one the request is skipped as `overload`.
//! Offline replay waits. A replay in the queue waits for its permits.

mod accounting;
mod compare;
mod policy;
mod targets;

use std::{
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::task::JoinSet;
use tracing::{debug, warn};

pub use self::{
    accounting::{Accounting, AccountingSnapshot},
    policy::{Breaker, DEFAULT_METHODS, Policy},
    targets::{TargetError, check_targets, host_addresses},
};
use self::{
    compare::{Secondary, Verdict},
    policy::Sampler,
};
use crate::{
    diff::{DiffConfig, EndpointNoise, NoiseThresholds},
    endpoint::Endpoints,
    http::{HttpConfig, HttpTracker, track::HttpStats},
    metrics::{Metrics, ReplayTarget, SkipReason},
    model::{Exchange, Outcome, TcpSegment, timestamp, wall_ns},
    reassembly::{Reassembler, ReassemblyConfig, ReassemblyStats},
    replay::{Permit, ReplayError, Replayed, Replayer},
    report::log::{self, EventKind, LogConfig, LogEvent, MismatchLog, Side},
    summary::{
        OTHER, Results,
        record::{Compared, Judged},
    },
};

/// Everything the pipeline needs.
pub struct PipelineConfig {
    pub reassembly: ReassemblyConfig,
    pub http: HttpConfig,
    pub policy: Policy,
    pub diff: DiffConfig,
    pub noise: NoiseThresholds,
    /// How the run waits for replay capacity: live capture must never wait
    /// (it skips and counts `overload`); offline replay waits.
    pub wait_for_capacity: bool,
    /// How long to wait for replays still in flight at the end.
    pub drain_timeout: Duration,
    /// Replays waiting for a connection or running, at most (bounds memory
    /// when the new service is slower than the old one).
    pub max_queue: usize,
    /// Bytes the replays waiting or running may hold (captured request and
    /// old response), at most. One exchange larger than this is always let
    /// through alone.
    pub max_queue_bytes: usize,
    /// How requests are grouped into endpoints.
    pub endpoints: Endpoints,
    /// Where per-endpoint results are kept (for the summary file, the
    /// per-endpoint metrics and verdicts); `None`: not kept.
    pub results: Option<Arc<Mutex<Results>>>,
}

/// Queue weight of an exchange: the KiB its replay holds (at least 1): the
/// captured request, the old response's body as kept (nothing of a
/// digested one), and while it runs each target's response, expected to be
/// kept like the old one (whole, or digested as it is read).
fn queue_weight(ex: &Exchange, targets: usize) -> u32 {
    let body = ex.response.body.len();
    let bytes = ex.request.raw.len() + body * (1 + targets);
    u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX)
}

/// Replay targets.
pub struct Targets {
    pub new: Replayer,
    pub secondary: Option<Replayer>,
}

/// What the replays of one exchange answered: the new service, and the
/// secondary when there is one.
type Answers = (
    Result<Replayed, ReplayError>,
    Option<Result<Replayed, ReplayError>>,
);

impl Targets {
    /// An in-flight permit on the new service and, with a secondary, one
    /// there too: a replay starts only once it holds both. They are taken
    /// in one order (new first), so replays waiting for both never wait on
    /// one another for good.
    async fn acquire(&self) -> (Permit, Option<Permit>) {
        let new = self.new.acquire().await;
        let secondary = match &self.secondary {
            Some(s) => Some(s.acquire().await),
            None => None,
        };
        (new, secondary)
    }

    /// Replays `ex` to the new service and the secondary at once, on the
    /// permits [`Targets::acquire`] took.
    async fn send(&self, (new, secondary): (Permit, Option<Permit>), ex: &Exchange) -> Answers {
        tokio::join!(self.new.send(new, ex.protocol, &ex.request), async {
            // Boxed: without a secondary, the task does not carry a second
            // replay future.
            match self.secondary.as_ref().zip(secondary) {
                Some((s, permit)) => Some(Box::pin(s.send(permit, ex.protocol, &ex.request)).await),
                None => None,
            }
        })
    }
}

/// Where logged events also go (NATS, [`crate::publish`]): called with
/// each event the mismatch log is given, before its line is written;
/// must not wait.
pub trait EventSink: Send + Sync {
    /// `json` is the event's line as the log wrote it ([`log::encode`]):
    /// redacted, without its newline.
    fn event(&self, ev: &LogEvent, json: &Bytes);
}

/// What the replay tasks share.
struct Shared {
    targets: Targets,
    breaker: Breaker,
    diff: DiffConfig,
    endpoints: Mutex<EndpointNoise>,
    log: Mutex<MismatchLog>,
    /// The log's redaction: events are encoded once, outside its lock.
    log_cfg: LogConfig,
    events: std::sync::OnceLock<Arc<dyn EventSink>>,
    metrics: Arc<Metrics>,
    acc: Arc<Accounting>,
    results: Option<Arc<Mutex<Results>>>,
}

/// The pipeline of one run. Feed it segments with [`Pipeline::push`], call
/// [`Pipeline::dispatch`] after each batch, [`Pipeline::tick`] about once a
/// second, and [`Pipeline::finish`] at the end.
pub struct Pipeline {
    reassembler: Reassembler<HttpTracker>,
    endpoints: Endpoints,
    ready: Vec<Exchange>,
    policy: Policy,
    sampler: Sampler,
    limiter: Option<DefaultDirectRateLimiter>,
    wait_for_capacity: bool,
    drain_timeout: Duration,
    tasks: JoinSet<()>,
    /// Skip every replay (overload) while the agent is over its memory cap.
    shedding: bool,
    /// Slots for replays waiting for a connection or running.
    queue: Arc<tokio::sync::Semaphore>,
    /// KiB held by replays waiting or running (see [`queue_weight`]).
    queue_bytes: Arc<tokio::sync::Semaphore>,
    /// Permits of `queue_bytes` in all.
    queue_kib: u32,
    shared: Arc<Shared>,
    /// Newest segment timestamp: the pipeline's notion of "now" (pcap time
    /// offline, capture time live).
    now_ns: u64,
}

impl Pipeline {
    pub fn new(
        cfg: PipelineConfig,
        targets: Targets,
        log: MismatchLog,
        metrics: Arc<Metrics>,
    ) -> Self {
        let queue_kib = u32::try_from(cfg.max_queue_bytes / 1024)
            .unwrap_or(u32::MAX)
            .clamp(
                1,
                u32::try_from(tokio::sync::Semaphore::MAX_PERMITS).unwrap_or(u32::MAX),
            );
        let limiter = cfg
            .policy
            .rate
            .map(|r| RateLimiter::direct(Quota::per_second(r)));
        Self {
            reassembler: Reassembler::new(cfg.reassembly, HttpTracker::new(cfg.http)),
            endpoints: cfg.endpoints,
            ready: Vec::new(),
            sampler: Sampler::new(&cfg.policy),
            policy: cfg.policy,
            limiter,
            wait_for_capacity: cfg.wait_for_capacity,
            drain_timeout: cfg.drain_timeout,
            tasks: JoinSet::new(),
            shedding: false,
            queue: Arc::new(tokio::sync::Semaphore::new(cfg.max_queue.max(1))),
            queue_bytes: Arc::new(tokio::sync::Semaphore::new(queue_kib as usize)),
            queue_kib,
            shared: Arc::new(Shared {
                targets,
                breaker: Breaker::default(),
                diff: cfg.diff,
                endpoints: Mutex::new(EndpointNoise::new(cfg.noise)),
                log_cfg: log.config().clone(),
                log: Mutex::new(log),
                events: std::sync::OnceLock::new(),
                metrics,
                acc: Arc::new(Accounting::default()),
                results: cfg.results,
            }),
            now_ns: 0,
        }
    }

    /// Also hands every logged event to `sink` (set once; later calls are
    /// ignored).
    pub fn publish_events(&self, sink: Arc<dyn EventSink>) {
        let _ = self.shared.events.set(sink);
    }

    /// Feeds one segment. Completed exchanges wait for [`Pipeline::dispatch`].
    pub fn push(&mut self, seg: &TcpSegment<'_>) {
        self.now_ns = self.now_ns.max(seg.ts_ns);
        self.reassembler.push(seg);
        self.collect();
    }

    /// The kernel reported ring-buffer drops since the last call: the next
    /// gaps are attributed to them.
    /// (Metrics count the drops themselves, from the kernel counters.)
    pub fn note_ring_drops(&mut self) {
        self.reassembler.note_ring_drops();
    }

    /// Periodic work: write out the log's waiting lines, expire idle
    /// connections, refresh gauges, reap tasks.
    pub fn tick(&mut self, now_ns: u64) {
        self.shared.flush_log();
        self.now_ns = self.now_ns.max(now_ns);
        self.reassembler.expire(self.now_ns);
        self.collect();
        let stats = self.reassembler.stats();
        self.shared
            .metrics
            .set_reassembly(self.reassembler.connections() as u64, stats.buffered_bytes);
        self.reap_finished();
    }

    fn collect(&mut self) {
        let shared = &self.shared;
        for outcome in self.reassembler.handler_mut().outcomes() {
            match outcome {
                Outcome::Paired(ex) => self.ready.push(ex),
                Outcome::Lost(lost) => {
                    shared.acc.lost[lost.cause as usize].fetch_add(1, Relaxed);
                    // Logged (target redacted) where it was lost: http::track.
                    shared.metrics.lost(lost.cause);
                    if shared.results.is_some() {
                        let endpoint = match (&lost.method, &lost.target) {
                            (Some(m), Some(t)) => classify(&mut self.endpoints, shared, m, t),
                            _ => Arc::from(OTHER),
                        };
                        shared.record(|r| r.lost(&endpoint, lost.cause.name()));
                    }
                }
            }
        }
        // Live capture never waits for capacity, so an exchange is started
        // or skipped as soon as it is paired: held until the end of the
        // batch instead, a ring buffer's worth of exchanges (a batch is up
        // to 4096 records of up to 64 KiB) would sit here with their bodies,
        // beside any queue bound.
        if !self.wait_for_capacity && !self.ready.is_empty() {
            let mut ready = std::mem::take(&mut self.ready);
            for ex in ready.drain(..) {
                self.start_now(ex);
            }
            self.ready = ready;
        }
    }

    fn skip(&self, reason: SkipReason, endpoint: &str) {
        self.shared.acc.skipped[reason as usize].fetch_add(1, Relaxed);
        self.shared.metrics.skipped(reason);
        self.shared.record(|r| r.skipped(endpoint, reason.name()));
    }

    /// The endpoint of a request ([`classify`]).
    fn classify(&mut self, method: &str, target: &str) -> Arc<str> {
        classify(&mut self.endpoints, &self.shared, method, target)
    }

    /// Starts a replay for each completed exchange, or counts why not.
    /// Offline this waits for the rate limit and for queue capacity; live
    /// (which never waits) every exchange was started when it was paired.
    pub async fn dispatch(&mut self) {
        // Taken out (keeping its allocation for the next batch) so that
        // `self` stays usable across the awaits below.
        let mut ready = std::mem::take(&mut self.ready);
        for ex in ready.drain(..) {
            if !self.wait_for_capacity {
                self.start_now(ex);
                continue;
            }
            let endpoint = self.classify(&ex.request.method, &ex.request.target);
            if !self.screen(&ex, &endpoint) {
                continue;
            }
            if let Some(l) = &self.limiter {
                l.until_ready().await;
            }
            if !self.screen_capacity(&endpoint) {
                continue;
            }
            let weight = self.weight(&ex);
            let bytes = Arc::clone(&self.queue_bytes)
                .acquire_many_owned(weight)
                .await
                .ok();
            let count = Arc::clone(&self.queue).acquire_owned().await.ok();
            match bytes.zip(count) {
                Some(slot) => self.spawn_replay(ex, endpoint, slot),
                None => self.skip(SkipReason::Overload, &endpoint),
            }
        }
        self.ready = ready;
    }

    /// Starts a replay of `ex` or counts why not, without waiting (live).
    fn start_now(&mut self, ex: Exchange) {
        let endpoint = self.classify(&ex.request.method, &ex.request.target);
        if !self.screen(&ex, &endpoint) {
            return;
        }
        if let Some(l) = &self.limiter
            && l.check().is_err()
        {
            self.skip(SkipReason::RateLimit, &endpoint);
            return;
        }
        if !self.screen_capacity(&endpoint) {
            return;
        }
        // Queue slots bound the replays waiting or running, by count and by
        // the bytes they hold; live capture never waits for them: it skips
        // and counts overload.
        let weight = self.weight(&ex);
        let slot = Arc::clone(&self.queue_bytes)
            .try_acquire_many_owned(weight)
            .ok()
            .zip(Arc::clone(&self.queue).try_acquire_owned().ok());
        match slot {
            Some(slot) => self.spawn_replay(ex, endpoint, slot),
            None => self.skip(SkipReason::Overload, &endpoint),
        }
    }

    /// Counts `ex` as captured; false (and counted) when the policy or the
    /// sampler skips it.
    fn screen(&mut self, ex: &Exchange, endpoint: &str) -> bool {
        self.shared.acc.captured.fetch_add(1, Relaxed);
        self.shared.metrics.captured();
        self.shared.metrics.observe_old(ex.old_latency_ns());
        if let Some(reason) = self.policy.filter(&ex.request) {
            self.skip(reason, endpoint);
            return false;
        }
        if !self.sampler.sampled() {
            self.skip(SkipReason::Sample, endpoint);
            return false;
        }
        true
    }

    /// False (and counted) while load is shed or the new service is down.
    fn screen_capacity(&self, endpoint: &str) -> bool {
        if self.shedding {
            self.skip(SkipReason::Overload, endpoint);
            return false;
        }
        if !self.shared.breaker.allow(wall_ns()) {
            self.skip(SkipReason::NewDown, endpoint);
            return false;
        }
        true
    }

    /// `ex`'s [`queue_weight`] in permits of `queue_bytes`.
    fn weight(&self, ex: &Exchange) -> u32 {
        let targets = 1 + usize::from(self.shared.targets.secondary.is_some());
        queue_weight(ex, targets).min(self.queue_kib)
    }

    /// Replays `ex` in a task holding its queue `slot`.
    fn spawn_replay(
        &mut self,
        ex: Exchange,
        endpoint: Arc<str>,
        slot: (
            tokio::sync::OwnedSemaphorePermit,
            tokio::sync::OwnedSemaphorePermit,
        ),
    ) {
        self.shared.acc.replayed.fetch_add(1, Relaxed);
        self.shared.metrics.replayed();
        let mut pending = Pending {
            shared: Arc::clone(&self.shared),
            endpoint,
            done: false,
        };
        self.tasks.spawn(async move {
            let _slot = slot;
            let shared = Arc::clone(&pending.shared);
            let permits = shared.targets.acquire().await;
            let (new, secondary) = shared.targets.send(permits, &ex).await;
            shared.complete(ex, &pending.endpoint, new, secondary);
            pending.disarm();
        });
        self.reap_finished();
    }

    /// The input ended: close every connection, replay what completed and
    /// wait (bounded) for replays in flight, then write out the log's
    /// waiting lines. Replays still running at the deadline are counted as
    /// replay errors.
    pub async fn finish(&mut self) {
        self.drain().await;
        self.shared.flush_log();
    }

    /// Pairs what is left and waits (up to the drain timeout) for the
    /// replays in flight.
    async fn drain(&mut self) {
        self.reassembler.finish(self.now_ns);
        self.collect();
        self.dispatch().await;
        let deadline = tokio::time::sleep(self.drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => match next {
                    None => break,
                    Some(Err(e)) => {
                        self.task_failed(&e);
                    }
                    Some(Ok(())) => {}
                },
                () = &mut deadline => break,
            }
        }
        if self.tasks.is_empty() {
            return;
        }
        // Cancel what is left; a task that finished in the meantime has
        // already recorded its outcome, so only the cancelled ones count.
        self.tasks.abort_all();
        let mut cancelled = 0u64;
        while let Some(res) = self.tasks.join_next().await {
            if res.is_err() {
                cancelled += 1;
                self.shared
                    .metrics
                    .replay_error(ReplayTarget::New, "timeout");
            }
        }
        warn!(
            cancelled,
            "replays still in flight at the end were cancelled; counted as replay errors"
        );
        self.shared.acc.replay_errors.fetch_add(cancelled, Relaxed);
    }

    /// Collects finished replay tasks. A task that panicked recorded no
    /// outcome: it counts as a replay error so that the accounting holds.
    fn reap_finished(&mut self) {
        while let Some(res) = self.tasks.try_join_next() {
            if let Err(e) = res {
                self.task_failed(&e);
            }
        }
    }

    fn task_failed(&self, e: &tokio::task::JoinError) {
        warn!("a replay task failed: {e}; counted as a replay error");
        self.shared.acc.replay_errors.fetch_add(1, Relaxed);
        self.shared
            .metrics
            .replay_error(ReplayTarget::New, "internal");
    }

    pub fn accounting(&self) -> AccountingSnapshot {
        self.shared.acc.snapshot()
    }

    pub fn http_stats(&self) -> &HttpStats {
        self.reassembler.handler().stats()
    }

    pub fn reassembly_stats(&self) -> &ReassemblyStats {
        self.reassembler.stats()
    }

    /// Requests seen minus requests with an outcome. Zero once
    /// [`Pipeline::finish`] has returned; while running, the requests still
    /// in connections or in flight.
    pub fn unaccounted(&self) -> i128 {
        let seen = self.http_stats().requests_seen as i128;
        seen - self.accounting().accounted() as i128
    }

    /// Sheds load (skips every replay as overload) while `on`.
    pub fn set_shedding(&mut self, on: bool) {
        self.shedding = on;
    }

    pub fn shedding(&self) -> bool {
        self.shedding
    }

    /// True while replays pause because the new service refuses connections.
    pub fn new_service_down(&self) -> bool {
        self.shared.breaker.is_open()
    }

    /// Replays in flight now.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// The per-endpoint results kept, if any.
    pub fn results(&self) -> Option<&Arc<Mutex<Results>>> {
        self.shared.results.as_ref()
    }
}

/// The endpoint of a request; learning that folds endpoints together moves
/// their results.
fn classify(endpoints: &mut Endpoints, shared: &Shared, method: &str, target: &str) -> Arc<str> {
    let c = endpoints.classify(method, target);
    if !c.folded.is_empty() {
        let into = c.endpoint;
        shared.record(|r| {
            for from in &c.folded {
                r.fold(from, into);
            }
        });
    }
    Arc::from(c.endpoint)
}

/// A replay task's endpoint: a task that ends without recording an outcome
/// (it panicked, or was cancelled at the drain deadline) is a replay error
/// of that endpoint, as the run's counters count it.
struct Pending {
    shared: Arc<Shared>,
    endpoint: Arc<str>,
    done: bool,
}

impl Pending {
    /// The outcome was recorded.
    fn disarm(&mut self) {
        self.done = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.shared.record(|r| r.replay_error(&self.endpoint));
        }
    }
}

impl Shared {
    /// Records into the per-endpoint results, when they are kept.
    fn record(&self, f: impl FnOnce(&mut Results)) {
        if let Some(results) = &self.results
            && let Ok(mut r) = results.lock()
        {
            f(&mut r);
        }
    }

    /// Compares one replayed exchange and records its outcome.
    fn complete(
        &self,
        ex: Exchange,
        endpoint: &str,
        new: Result<Replayed, ReplayError>,
        secondary: Option<Result<Replayed, ReplayError>>,
    ) {
        self.breaker
            .record(matches!(&new, Err(e) if e.kind() == "connect"), wall_ns());
        // A failed secondary is counted whatever the new service answered.
        if let Some(Err(e)) = &secondary {
            self.acc.secondary_errors.fetch_add(1, Relaxed);
            self.metrics.replay_error(ReplayTarget::Secondary, e.kind());
            debug!(id = ex.id, error = %e, "replay to the secondary failed");
        }
        let new = match new {
            Ok(new) => new,
            Err(e) => {
                self.acc.replay_errors.fetch_add(1, Relaxed);
                self.metrics.replay_error(ReplayTarget::New, e.kind());
                debug!(id = ex.id, error = %e, "replay to the new service failed");
                self.record(|r| r.replay_error(endpoint));
                let mut ev = self.event(&ex, EventKind::ReplayError, None, None);
                ev.error = Some(e.to_string());
                self.write(&ev);
                return;
            }
        };
        self.metrics.observe_new(new.latency_ns);
        let answered = match &secondary {
            None => Secondary::None,
            Some(Ok(s)) => Secondary::Answered(&s.response),
            Some(Err(e)) => Secondary::Failed(e.kind()),
        };
        let (verdict, raw) = compare::judge(
            &self.diff,
            &self.endpoints,
            endpoint,
            &ex,
            &new.response,
            answered,
        );
        let (judged, reported): (_, &[_]) = match &verdict {
            Verdict::Matched => (Judged::Matched, &[]),
            Verdict::Noise { .. } => (Judged::Noise, &[]),
            Verdict::Mismatched(m) => (Judged::Mismatched, &m.listed),
        };
        self.record(|r| {
            r.compared(
                endpoint,
                Compared {
                    id: ex.id,
                    judged,
                    raw: &raw,
                    reported,
                    request: &ex.request,
                    old_ns: ex.old_latency_ns(),
                    new_ns: new.latency_ns,
                    secondary_ns: secondary
                        .as_ref()
                        .and_then(|s| s.as_ref().ok())
                        .map(|s| s.latency_ns),
                },
            );
        });
        let m = match verdict {
            Verdict::Matched => {
                self.acc.matched.fetch_add(1, Relaxed);
                self.metrics.matched();
                return;
            }
            Verdict::Noise { suppressed } => {
                self.acc
                    .noise_differences
                    .fetch_add(suppressed as u64, Relaxed);
                self.acc.noise.fetch_add(1, Relaxed);
                self.metrics.noise();
                return;
            }
            Verdict::Mismatched(m) => m,
        };
        self.acc
            .noise_differences
            .fetch_add(m.suppressed as u64, Relaxed);
        self.acc.mismatched.fetch_add(1, Relaxed);
        self.metrics.mismatched();
        if m.noise_unchecked.is_some() {
            self.acc.noise_unchecked.fetch_add(1, Relaxed);
            self.metrics.noise_unchecked();
        }
        let answer = secondary.as_ref().and_then(|s| s.as_ref().ok());
        let mut ev = self.event(&ex, EventKind::Mismatch, Some(&new), answer);
        ev.differences = m.listed;
        ev.omitted = m.omitted;
        ev.noise_unchecked = m.noise_unchecked.map(|kind| format!("secondary {kind}"));
        ev.body_by_digest = m.body_by_digest;
        self.write(&ev);
    }

    fn event(
        &self,
        ex: &Exchange,
        kind: EventKind,
        new: Option<&Replayed>,
        secondary: Option<&Replayed>,
    ) -> LogEvent {
        let ms = |ns: u64| ns as f64 / 1e6;
        LogEvent {
            ts: timestamp(SystemTime::now()),
            id: ex.id,
            kind,
            method: ex.request.method.clone(),
            target: ex.request.target.clone(),
            client: Some(ex.conn.client.to_string()),
            old: Side {
                status: Some(ex.response.status),
                latency_ms: Some(ms(ex.old_latency_ns())),
            },
            new: Side {
                status: new.map(|n| n.response.status),
                latency_ms: new.map(|n| ms(n.latency_ns)),
            },
            secondary: secondary.map(|s| Side {
                status: Some(s.response.status),
                latency_ms: Some(ms(s.latency_ns)),
            }),
            differences: Vec::new(),
            omitted: 0,
            body_by_digest: false,
            noise_unchecked: None,
            error: None,
        }
    }

    fn write(&self, ev: &LogEvent) {
        let json = match log::encode(ev, &self.log_cfg) {
            Ok(json) => Bytes::from(json),
            Err(e) => return self.log_lost(1, &e),
        };
        if let Some(sink) = self.events.get() {
            sink.event(ev, &json);
        }
        self.with_log(|log| log.write_line(&json));
    }

    /// Writes out the log's waiting lines (each tick and at the end).
    fn flush_log(&self) {
        self.with_log(MismatchLog::flush);
    }

    fn with_log(&self, f: impl FnOnce(&mut MismatchLog) -> Result<(), log::Lost>) {
        let res = match self.log.lock() {
            Ok(mut log) => f(&mut log),
            Err(_) => return self.log_lost(1, &"mismatch log lock poisoned"),
        };
        if let Err(lost) = res {
            self.log_lost(lost.events, &lost);
        }
    }

    /// Counts `events` the log lost, and warns on the first of every 1000
    /// (a full disk must not flood stderr).
    fn log_lost(&self, events: u64, e: &dyn std::fmt::Display) {
        let before = self.acc.log_errors.fetch_add(events, Relaxed);
        self.metrics.log_errors(events);
        if before / 1000 != (before + events) / 1000 || before == 0 {
            warn!("cannot write the mismatch log ({e}); capture and counters go on");
        }
    }
}
