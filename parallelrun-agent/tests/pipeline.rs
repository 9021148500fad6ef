//! The pipeline's classification, without root: synthetic TCP segments of
//! an old service's conversations go into a [`Pipeline`] whose new service
//! (and secondary) are tiny HTTP servers in this process, on 127.0.0.1.
//! Each test checks the outcomes it provokes, the mismatch log, the
//! metrics, and that every request seen has exactly one outcome: seen =
//! matched + mismatched + noise + skipped + lost + replay errors, in the
//! run's counters and, added up over endpoints, in its per-endpoint results
//! (and their metrics).

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    num::NonZeroU32,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use parallelrun_agent::{
    diff::{DiffConfig, NoiseThresholds},
    endpoint::Endpoints,
    http::{DigestPolicy, HttpConfig},
    metrics::Metrics,
    model::{ConnKey, Direction, TcpSegment, tcp_flags},
    pipeline::{AccountingSnapshot, Pipeline, PipelineConfig, Policy, Targets},
    reassembly::ReassemblyConfig,
    replay::{ReplayConfig, Replayer},
    report::log::{LogConfig, MismatchLog},
    summary::{Counts, RegressionRule, Results, Rules, Source, Summary},
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

// ---------------------------------------------------------------------------
// Services

/// How a test service answers a path.
#[derive(Clone, Debug)]
struct Reply {
    body: Bytes,
    /// Content-Type, then any other headers.
    headers: Vec<(String, String)>,
    /// Answer only once [`Service::release`] was called.
    hold: bool,
}

/// JSON bodies by path; paths in `held` wait for [`Service::release`].
#[derive(Clone, Debug, Default)]
struct Answers {
    bodies: HashMap<String, String>,
    /// Non-JSON answers: headers (Content-Type first) and body.
    raw: HashMap<String, (Vec<(String, String)>, Bytes)>,
    held: Vec<String>,
    /// Every path not listed holds.
    hold_all: bool,
}

impl Answers {
    fn with(mut self, path: &str, body: Value) -> Self {
        self.bodies.insert(path.to_owned(), body.to_string());
        self
    }

    /// Answers `path` with `body` and `headers` (Content-Type included).
    fn with_bytes(mut self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Self {
        let headers = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        self.raw
            .insert(path.to_owned(), (headers, Bytes::from(body)));
        self
    }

    fn held(mut self, path: &str) -> Self {
        self.held.push(path.to_owned());
        self
    }

    fn reply(&self, path: &str) -> Reply {
        let (headers, body) = self.raw.get(path).cloned().unwrap_or_else(|| {
            let json = self
                .bodies
                .get(path)
                .cloned()
                .unwrap_or_else(|| "{}".into());
            (
                vec![("Content-Type".to_owned(), "application/json".to_owned())],
                Bytes::from(json),
            )
        });
        Reply {
            body,
            headers,
            hold: self.hold_all || self.held.iter().any(|h| h == path),
        }
    }
}

/// An HTTP/1.1 service on 127.0.0.1 (hyper), answering JSON.
struct Service {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    release: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Service {
    async fn start(answers: Answers) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, released) = watch::channel(false);
        let hits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&hits);
        let answers = Arc::new(answers);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answers = Arc::clone(&answers);
                let released = released.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        counter.fetch_add(1, Relaxed);
                        let reply = answers.reply(req.uri().path());
                        let mut released = released.clone();
                        async move {
                            if reply.hold {
                                let _ = released.wait_for(|r| *r).await;
                            }
                            let mut res = Response::builder();
                            for (name, value) in &reply.headers {
                                res = res.header(name, value);
                            }
                            let res = res.body(Full::new(reply.body)).expect("a valid response");
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            hits,
            release,
            task,
        }
    }

    /// Requests received.
    fn hits(&self) -> u64 {
        self.hits.load(Relaxed)
    }

    /// Held requests are answered, and every later one at once.
    fn release(&self) {
        self.release.send_replace(true);
    }

    /// A handle that releases the held requests later (from another task).
    fn releaser(&self) -> impl FnOnce() + Send + 'static {
        let tx = self.release.clone();
        move || {
            tx.send_replace(true);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address where nothing listens (connections are refused).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A "service" that accepts connections, reads a little and closes them
/// without answering.
async fn closing_service() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
            drop(stream);
        }
    });
    (addr, task)
}

// ---------------------------------------------------------------------------
// The old service's wire

/// One captured segment, owning its payload.
struct Seg {
    conn: ConnKey,
    direction: Direction,
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
    ts_ns: u64,
}

/// One connection to the old service being written.
struct Conn {
    key: ConnKey,
    client_seq: u32,
    server_seq: u32,
}

/// The segments of the old service's conversations, in capture order.
#[derive(Default)]
struct Wire {
    segs: Vec<Seg>,
    ts_ns: u64,
    conns: u16,
}

const OLD: &str = "10.0.0.2:8080";

impl Wire {
    fn seg(&mut self, conn: ConnKey, direction: Direction, seq: u32, flags: u8, payload: &[u8]) {
        self.ts_ns += 1_000;
        self.segs.push(Seg {
            conn,
            direction,
            seq,
            flags,
            payload: payload.to_vec(),
            ts_ns: self.ts_ns,
        });
    }

    /// A new connection: SYN, SYN-ACK.
    fn open(&mut self) -> Conn {
        self.conns += 1;
        let key = ConnKey {
            client: SocketAddr::from(([10, 0, 0, 1], 40_000 + self.conns)),
            server: OLD.parse().unwrap(),
        };
        let (client_seq, server_seq) = (1_000, 5_000);
        self.seg(key, Direction::Request, client_seq, tcp_flags::SYN, &[]);
        self.seg(
            key,
            Direction::Response,
            server_seq,
            tcp_flags::SYN | tcp_flags::ACK,
            &[],
        );
        Conn {
            key,
            client_seq: client_seq + 1,
            server_seq: server_seq + 1,
        }
    }

    /// Bytes from one side of `c`, in segments of at most 1448 bytes (no
    /// ACK flag: an ACK would declare bytes not yet seen missing).
    fn send(&mut self, c: &mut Conn, direction: Direction, bytes: &[u8]) {
        for chunk in bytes.chunks(1448) {
            let seq = match direction {
                Direction::Request => &mut c.client_seq,
                Direction::Response => &mut c.server_seq,
            };
            let at = *seq;
            *seq = seq.wrapping_add(chunk.len() as u32);
            self.seg(c.key, direction, at, tcp_flags::PSH, chunk);
        }
    }

    /// One request and the old service's answer.
    fn exchange(&mut self, c: &mut Conn, request: &[u8], response: &[u8]) {
        self.send(c, Direction::Request, request);
        self.send(c, Direction::Response, response);
    }

    /// The client resets the connection.
    fn reset(&mut self, c: &Conn) {
        self.seg(c.key, Direction::Request, c.client_seq, tcp_flags::RST, &[]);
    }

    /// Both sides close the connection.
    fn close(&mut self, c: &Conn) {
        self.seg(c.key, Direction::Request, c.client_seq, tcp_flags::FIN, &[]);
        self.seg(
            c.key,
            Direction::Response,
            c.server_seq,
            tcp_flags::FIN,
            &[],
        );
    }

    /// Feeds every segment so far to `p` (and forgets them).
    fn feed(&mut self, p: &mut Pipeline) {
        for s in self.segs.drain(..) {
            p.push(&TcpSegment {
                ts_ns: s.ts_ns,
                conn: s.conn,
                direction: s.direction,
                seq: s.seq,
                ack: 0,
                flags: s.flags,
                payload: &s.payload,
                missing: 0,
            });
        }
    }
}

fn request(method: &str, path: &str) -> Vec<u8> {
    let body = if method == "POST" { "{}" } else { "" };
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    format!("{method} {path} HTTP/1.1\r\nHost: old.test\r\n{length}\r\n{body}").into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    request("GET", path)
}

/// The old service's 200 with a JSON body.
fn ok(body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The old service's 200 with `body` of `content_type`.
fn ok_bytes(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// `n` exchanges `GET {path}` answered `{body}` on one connection.
fn repeat(wire: &mut Wire, n: usize, path: impl Fn(usize) -> String, body: &Value) {
    let mut c = wire.open();
    for i in 0..n {
        wire.exchange(&mut c, &get(&path(i)), &ok(body));
    }
    wire.close(&c);
}

// ---------------------------------------------------------------------------
// The pipeline under test

struct Options {
    policy: Policy,
    /// Offline: wait for capacity. Live: skip as overload.
    offline: bool,
    max_queue: usize,
    max_queue_bytes: usize,
    max_in_flight: usize,
    drain_timeout: Duration,
    /// Request timeout of the replays to the secondary.
    secondary_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            offline: true,
            max_queue: 1024,
            max_queue_bytes: 64 << 20,
            max_in_flight: 64,
            drain_timeout: Duration::from_secs(5),
            secondary_timeout: ReplayConfig::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

fn live() -> Options {
    Options {
        offline: false,
        ..Options::default()
    }
}

struct Rig {
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    results: Arc<Mutex<Results>>,
    log: PathBuf,
    _dir: TempDir,
}

impl Rig {
    fn new(new: SocketAddr, secondary: Option<SocketAddr>, o: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mismatches.jsonl");
        let results = Arc::new(Mutex::new(Results::new(
            Rules {
                endpoint_patterns: Vec::new(),
                max_endpoints: 100,
                learn_after: 50,
                max_locations: 50,
                regression: RegressionRule {
                    ratio: 1.2,
                    min_delta_ms: 1.0,
                    min_samples: 20,
                },
            },
            Source {
                host: "test".into(),
                input: "synthetic".into(),
                new: new.to_string(),
                secondary: secondary.map(|s| s.to_string()),
                started: String::new(),
                updated: String::new(),
                finished: false,
            },
            Vec::new(),
        )));
        let replayer = |target, timeout| {
            Replayer::new(ReplayConfig {
                max_in_flight: o.max_in_flight,
                max_idle: o.max_in_flight,
                request_timeout: timeout,
                digest: Some(DigestPolicy::default()),
                ..ReplayConfig::new(target)
            })
        };
        let targets = Targets {
            new: replayer(new, ReplayConfig::DEFAULT_REQUEST_TIMEOUT),
            secondary: secondary.map(|s| replayer(s, o.secondary_timeout)),
        };
        let cfg = PipelineConfig {
            reassembly: ReassemblyConfig::default(),
            // Old, new and secondary responses digested as in a real run.
            http: HttpConfig {
                digest: Some(DigestPolicy::default()),
                ..HttpConfig::default()
            },
            policy: o.policy,
            diff: DiffConfig::default(),
            noise: NoiseThresholds::default(),
            wait_for_capacity: o.offline,
            drain_timeout: o.drain_timeout,
            max_queue: o.max_queue,
            max_queue_bytes: o.max_queue_bytes,
            endpoints: Endpoints::new(Vec::new(), 100, 50),
            results: Some(Arc::clone(&results)),
        };
        let metrics = Metrics::with_endpoints(Some(Arc::clone(&results)));
        let pipeline = Pipeline::new(
            cfg,
            targets,
            MismatchLog::open(LogConfig::new(&log)).unwrap(),
            Arc::clone(&metrics),
        );
        Self {
            pipeline,
            metrics,
            results,
            log,
            _dir: dir,
        }
    }

    /// Feeds `wire` and starts the replays of what it completed.
    async fn feed(&mut self, wire: &mut Wire) {
        wire.feed(&mut self.pipeline);
        self.pipeline.dispatch().await;
    }

    /// Ends the run; returns the final counters, checked to add up.
    async fn finish(&mut self) -> AccountingSnapshot {
        self.pipeline.finish().await;
        self.accounted()
    }

    /// The counters now, checked to add up (every request seen has an
    /// outcome: call once no replay is in flight).
    fn accounted(&self) -> AccountingSnapshot {
        let a = self.pipeline.accounting();
        let seen = self.pipeline.http_stats().requests_seen;
        assert_eq!(
            seen,
            a.matched
                + a.mismatched
                + a.noise
                + a.skipped_total()
                + a.lost_total()
                + a.replay_errors,
            "seen = matched + mismatched + noise + skipped + lost + replay errors: {a:#?}"
        );
        assert_eq!(self.pipeline.unaccounted(), 0, "{a:#?}");
        // The same outcomes, added up over the endpoints.
        let summary = self.summary();
        let t = &summary.totals;
        let want = Counts {
            seen,
            compared: a.matched + a.mismatched + a.noise,
            matched: a.matched,
            mismatched: a.mismatched,
            noise: a.noise,
            skipped: a.skipped_total(),
            lost: a.lost_total(),
            replay_errors: a.replay_errors,
            skipped_by: a
                .skipped
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            lost_by: a
                .lost
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
        };
        assert_eq!(*t, want, "per-endpoint totals");
        // And the per-endpoint metrics say what the summary says.
        for ep in &summary.endpoints {
            for (outcome, n) in ep.counts.outcomes() {
                let series = format!(
                    "parallelrun_endpoint_requests_total{{endpoint=\"{}\",outcome=\"{outcome}\"}}",
                    ep.endpoint
                );
                assert_eq!(self.metric(&series), n, "{series}");
            }
        }
        a
    }

    /// The per-endpoint results now.
    fn summary(&self) -> Summary {
        self.results.lock().unwrap().snapshot(false)
    }

    /// Waits (reaping replays) until `done` holds of the counters.
    async fn wait_until(&mut self, done: impl Fn(&AccountingSnapshot) -> bool) {
        let start = Instant::now();
        while !done(&self.pipeline.accounting()) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out: {:#?}",
                self.pipeline.accounting()
            );
            self.pipeline.tick(0);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The mismatch log's events.
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A metric's value, `series` as encoded (name and labels).
    fn metric(&self, series: &str) -> u64 {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
            .parse()
            .unwrap()
    }
}

fn skipped(a: &AccountingSnapshot, reason: &str) -> u64 {
    a.skipped[reason]
}

/// A secondary that answers `path` as the old service does, with the noise
/// of a second instance.
fn timestamped(ts: u64) -> Value {
    json!({"id": 7, "ts": ts})
}

// ---------------------------------------------------------------------------
// Outcomes

/// Matched, mismatched and noise with a secondary: identical answers match;
/// a difference the secondary does not share is a mismatch, logged with
/// the secondary's side; a difference it shares is noise, not logged.
#[tokio::test]
async fn matched_mismatched_and_noise_with_a_secondary() {
    let new = Service::start(
        Answers::default()
            .with("/same", json!({"v": 1}))
            .with("/plan", json!({"plan": "premium", "ts": 2}))
            .with("/random", timestamped(2)),
    )
    .await;
    let secondary = Service::start(
        Answers::default()
            .with("/same", json!({"v": 1}))
            .with("/plan", json!({"plan": "basic", "ts": 3}))
            .with("/random", timestamped(3)),
    )
    .await;
    let mut rig = Rig::new(new.addr, Some(secondary.addr), Options::default());
    let mut wire = Wire::default();
    let mut c = wire.open();
    wire.exchange(&mut c, &get("/same"), &ok(&json!({"v": 1})));
    wire.exchange(
        &mut c,
        &get("/plan"),
        &ok(&json!({"plan": "basic", "ts": 1})),
    );
    wire.exchange(&mut c, &get("/random"), &ok(&timestamped(1)));
    wire.close(&c);
    rig.feed(&mut wire).await;
    let a = rig.finish().await;

    assert_eq!((a.matched, a.mismatched, a.noise), (1, 1, 1), "{a:#?}");
    assert_eq!(a.replayed, 3);
    assert_eq!(a.noise_differences, 2, "ts of /plan and of /random");
    assert_eq!((a.secondary_errors, a.noise_unchecked), (0, 0));
    assert_eq!((new.hits(), secondary.hits()), (3, 3));
    let events = rig.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let ev = &events[0];
    assert_eq!(ev["kind"], "mismatch");
    assert_eq!(ev["target"], "/plan");
    assert_eq!(
        ev["differences"],
        json!([{"where": "body:/plan", "old": "basic", "new": "premium"}])
    );
    assert_eq!(ev["secondary"]["status"], 200);
    assert!(ev.get("noise_unchecked").is_none(), "{ev}");
    assert_eq!(rig.metric("parallelrun_matched_total"), 1);
    assert_eq!(rig.metric("parallelrun_mismatched_total"), 1);
    assert_eq!(rig.metric("parallelrun_noise_total"), 1);
    assert_eq!(rig.metric("parallelrun_noise_unchecked_total"), 0);
}

/// Methods not replayed and filtered paths are skipped, never sent.
#[tokio::test]
async fn skipped_by_method_and_filter() {
    let new = Service::start(Answers::default().with("/api/x", json!({}))).await;
    let policy = Policy {
        path_prefixes: vec!["/api/".into()],
        exclude_prefixes: vec!["/api/admin".into()],
        ..Policy::default()
    };
    let mut rig = Rig::new(
        new.addr,
        None,
        Options {
            policy,
            ..Options::default()
        },
    );
    let mut wire = Wire::default();
    let mut c = wire.open();
    wire.exchange(&mut c, &request("POST", "/api/x"), &ok(&json!({})));
    wire.exchange(&mut c, &request("DELETE", "/api/x"), &ok(&json!({})));
    wire.exchange(&mut c, &get("/other"), &ok(&json!({})));
    wire.exchange(&mut c, &get("/api/admin/users"), &ok(&json!({})));
    wire.exchange(&mut c, &get("/api/x"), &ok(&json!({})));
    wire.close(&c);
    rig.feed(&mut wire).await;
    let a = rig.finish().await;

    assert_eq!(skipped(&a, "method"), 2, "{a:#?}");
    assert_eq!(skipped(&a, "filter"), 2, "{a:#?}");
    assert_eq!(a.matched, 1);
    assert_eq!(new.hits(), 1, "only the GET of /api/x was replayed");
    assert_eq!(
        rig.metric("parallelrun_skipped_total{reason=\"method\"}"),
        2
    );
    assert_eq!(
        rig.metric("parallelrun_skipped_total{reason=\"filter\"}"),
        2
    );
}

/// `--sample 0.3` replays about 30 % of 1000 requests (a fixed seed makes
/// the draw repeatable); the rest are skipped as `sample`.
#[tokio::test]
async fn sampling_replays_the_fraction_asked_for() {
    const N: usize = 1000;
    let new = Service::start(Answers::default().with("/x", json!({"v": 1}))).await;
    let policy = Policy {
        sample: 0.3,
        sample_seed: Some(42),
        ..Policy::default()
    };
    let mut rig = Rig::new(
        new.addr,
        None,
        Options {
            policy,
            ..Options::default()
        },
    );
    let mut wire = Wire::default();
    repeat(&mut wire, N, |_| "/x".into(), &json!({"v": 1}));
    rig.feed(&mut wire).await;
    let a = rig.finish().await;

    // 1000 draws at 0.3: 300 ± 14.5 (one sigma).
    assert!((240..=360).contains(&a.matched), "{a:#?}");
    assert_eq!(a.matched + skipped(&a, "sample"), N as u64, "{a:#?}");
    assert_eq!(a.replayed, a.matched);
    assert_eq!(new.hits(), a.matched);
}

/// `--rate`: live, replays beyond the rate are skipped (`rate_limit`);
/// offline, the run waits for the rate instead.
#[tokio::test]
async fn rate_limit_skips_live_and_waits_offline() {
    let new = Service::start(Answers::default().with("/x", json!({"v": 1}))).await;
    let rate = |n| Policy {
        rate: NonZeroU32::new(n),
        ..Policy::default()
    };

    let mut rig = Rig::new(
        new.addr,
        None,
        Options {
            policy: rate(2),
            ..live()
        },
    );
    let mut wire = Wire::default();
    repeat(&mut wire, 20, |_| "/x".into(), &json!({"v": 1}));
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    // A burst of the rate's size passes at once, the rest is over it.
    assert_eq!(a.matched, 2, "{a:#?}");
    assert_eq!(skipped(&a, "rate_limit"), 18, "{a:#?}");
    assert_eq!(
        rig.metric("parallelrun_skipped_total{reason=\"rate_limit\"}"),
        18
    );

    let mut rig = Rig::new(
        new.addr,
        None,
        Options {
            policy: rate(5),
            ..Options::default()
        },
    );
    let mut wire = Wire::default();
    repeat(&mut wire, 10, |_| "/x".into(), &json!({"v": 1}));
    let start = Instant::now();
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    assert_eq!(a.matched, 10, "{a:#?}");
    assert_eq!(a.skipped_total(), 0, "{a:#?}");
    // 5 at once, then one per 200 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
}

/// `--max-queue`: live, a request finding every queue slot taken is
/// skipped as overload; offline, it waits for one.
#[tokio::test]
async fn queue_count_is_overload_live_and_waits_offline() {
    let new = Service::start(
        Answers::default()
            .with("/slow", json!({"v": 1}))
            .with("/x", json!({"v": 1}))
            .held("/slow"),
    )
    .await;
    let mut rig = Rig::new(
        new.addr,
        None,
        Options {
            max_queue: 1,
            ..live()
        },
    );
    let mut wire = Wire::default();
    let mut c = wire.open();
    wire.exchange(&mut c, &get("/slow"), &ok(&json!({"v": 1})));
    for _ in 0..4 {
        wire.exchange(&mut c, &get("/x"), &ok(&json!({"v": 1})));
    }
    wire.close(&c);
    rig.feed(&mut wire).await;
    assert_eq!(skipped(&rig.pipeline.accounting(), "overload"), 4);
    new.release();
    let a = rig.finish().await;
    assert_eq!(a.matched, 1, "{a:#?}");
    assert_eq!(skipped(&a, "overload"), 4, "{a:#?}");
    assert_eq!(
        rig.metric("parallelrun_skipped_total{reason=\"overload\"}"),
        4
    );

    // Offline the same capture waits: every request is replayed.
    let new = Service::start(
        Answers::default()
            .with("/slow", json!({"v": 1}))
            .with("/x", json!({"v": 1}))
            .held("/slow"),
    )
    .await;
    let mut rig = Rig::new(
        new.addr,
        None,
        Options {
            max_queue: 1,
            ..Options::default()
        },
    );
    let mut wire = Wire::default();
    let mut c = wire.open();
    wire.exchange(&mut c, &get("/slow"), &ok(&json!({"v": 1})));
    for _ in 0..4 {
        wire.exchange(&mut c, &get("/x"), &ok(&json!({"v": 1})));
    }
    wire.close(&c);
    let release = new.releaser();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        release();
    });
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    assert_eq!(a.matched, 5, "{a:#?}");
    assert_eq!(a.skipped_total(), 0, "{a:#?}");
}

/// `--max-queue-bytes`: live, a request whose bytes do not fit beside those
/// queued is skipped as overload, while a smaller one still fits.
#[tokio::test]
async fn queue_bytes_are_overload_live() {
    let big = json!({"b": "x".repeat(6 * 1024)});
    let medium = json!({"b": "y".repeat(3 * 1024)});
    let new = Service::start(
        Answers::default()
            .with("/big", big.clone())
            .with("/medium", medium.clone())
            .with("/small", json!({}))
            .held("/big"),
    )
    .await;
    let mut rig = Rig::new(
        new.addr,
        None,
        Options {
            max_queue_bytes: 16 * 1024,
            ..live()
        },
    );
    let mut wire = Wire::default();
    let mut c = wire.open();
    // A replay weighs its request, the old body and the new response,
    // expected as large: 13 KiB of the 16 queued, then 7 KiB: over; then
    // 1 KiB: fits.
    wire.exchange(&mut c, &get("/big"), &ok(&big));
    wire.exchange(&mut c, &get("/medium"), &ok(&medium));
    wire.exchange(&mut c, &get("/small"), &ok(&json!({})));
    wire.close(&c);
    rig.feed(&mut wire).await;
    new.release();
    let a = rig.finish().await;
    assert_eq!(a.matched, 2, "{a:#?}");
    assert_eq!(skipped(&a, "overload"), 1, "{a:#?}");
    assert_eq!(new.hits(), 2);
    assert!(rig.events().is_empty());
}

/// While the agent sheds load (memory cap), every replay is overload.
#[tokio::test]
async fn shedding_is_overload() {
    let new = Service::start(Answers::default().with("/x", json!({"v": 1}))).await;
    let mut rig = Rig::new(new.addr, None, live());
    rig.pipeline.set_shedding(true);
    let mut wire = Wire::default();
    repeat(&mut wire, 3, |_| "/x".into(), &json!({"v": 1}));
    rig.feed(&mut wire).await;
    rig.pipeline.set_shedding(false);
    repeat(&mut wire, 2, |_| "/x".into(), &json!({"v": 1}));
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    assert_eq!(skipped(&a, "overload"), 3, "{a:#?}");
    assert_eq!(a.matched, 2, "{a:#?}");
    assert_eq!(new.hits(), 2);
}

/// The secondary is part of the replay decision: with its one connection
/// busy, a request waits in the queue for it (and the next one, finding
/// the queue full, is skipped) instead of being compared without it, where
/// its noise would have been a mismatch. Offline, all of them wait.
#[tokio::test]
async fn secondary_capacity_is_part_of_the_replay_decision() {
    for offline in [false, true] {
        let new = Service::start(Answers::default().with("/random", timestamped(2))).await;
        let secondary = Service::start(
            Answers::default()
                .with("/random", timestamped(3))
                .held("/random"),
        )
        .await;
        let mut rig = Rig::new(
            new.addr,
            Some(secondary.addr),
            Options {
                offline,
                max_queue: 2,
                max_in_flight: 1,
                ..Options::default()
            },
        );
        let mut wire = Wire::default();
        repeat(&mut wire, 3, |_| "/random".into(), &timestamped(1));
        let release = secondary.releaser();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            release();
        });
        rig.feed(&mut wire).await;
        let a = rig.finish().await;
        let replayed = if offline { 3 } else { 2 };
        assert_eq!(a.noise, replayed, "offline {offline}: {a:#?}");
        assert_eq!(a.replayed, replayed);
        assert_eq!(skipped(&a, "overload"), 3 - replayed, "{a:#?}");
        assert_eq!((a.mismatched, a.noise_unchecked), (0, 0), "{a:#?}");
        assert_eq!((new.hits(), secondary.hits()), (replayed, replayed));
        assert!(rig.events().is_empty(), "{:#?}", rig.events());
    }
}

/// A new service that refuses connections: the first replays are replay
/// errors (logged), then the breaker skips the rest as `new_down`.
#[tokio::test]
async fn refused_connections_are_replay_errors_then_new_down() {
    let mut rig = Rig::new(closed_port().await, None, live());
    let mut wire = Wire::default();
    repeat(&mut wire, 5, |i| format!("/x/{i}"), &json!({}));
    rig.feed(&mut wire).await;
    rig.wait_until(|a| a.replay_errors == 5).await;
    repeat(&mut wire, 5, |i| format!("/y/{i}"), &json!({}));
    rig.feed(&mut wire).await;
    assert!(rig.pipeline.new_service_down());
    let a = rig.finish().await;
    // The breaker lets a probe through each second: on a slow machine one
    // of the later requests may be one.
    assert!(skipped(&a, "new_down") >= 4, "{a:#?}");
    assert_eq!(a.replay_errors + skipped(&a, "new_down"), 10, "{a:#?}");
    assert_eq!(
        rig.metric("parallelrun_replay_errors_total{target=\"new\",kind=\"connect\"}"),
        a.replay_errors
    );
    let events = rig.events();
    assert_eq!(events.len() as u64, a.replay_errors);
    assert!(
        events.iter().all(|e| e["kind"] == "replay_error"),
        "{events:#?}"
    );
    assert!(
        events[0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect to the new service"),
        "{events:#?}"
    );
}

/// A new service that closes without answering: replay errors, logged
/// with why, and the breaker stays closed (the service is up).
#[tokio::test]
async fn a_new_service_closing_without_an_answer_is_a_replay_error() {
    let (addr, server) = closing_service().await;
    let mut rig = Rig::new(addr, None, Options::default());
    let mut wire = Wire::default();
    repeat(&mut wire, 6, |i| format!("/x/{i}"), &json!({}));
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    server.abort();
    assert_eq!(a.replay_errors, 6, "{a:#?}");
    assert_eq!(skipped(&a, "new_down"), 0);
    assert!(!rig.pipeline.new_service_down());
    assert_eq!(
        rig.metric("parallelrun_replay_errors_total{target=\"new\",kind=\"closed\"}"),
        6
    );
    assert_eq!(rig.events().len(), 6);
}

/// Requests without a response on the wire are lost, by cause; the others
/// on the wire are replayed as usual.
#[tokio::test]
async fn requests_without_a_response_are_lost() {
    let new = Service::start(Answers::default().with("/x", json!({"v": 1}))).await;
    let mut rig = Rig::new(new.addr, None, Options::default());
    let mut wire = Wire::default();
    let mut c = wire.open();
    wire.exchange(&mut c, &get("/x"), &ok(&json!({"v": 1})));
    wire.send(&mut c, Direction::Request, &get("/reset"));
    wire.reset(&c);
    // A request still waiting for its response when the capture ends.
    let mut d = wire.open();
    wire.send(&mut d, Direction::Request, &get("/pending"));
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    assert_eq!(a.matched, 1, "{a:#?}");
    assert_eq!(a.lost_total(), 2, "{a:#?}");
    assert_eq!(new.hits(), 1, "lost requests are not replayed");
    let lost: u64 = ["closed", "timeout"].iter().map(|c| a.lost[*c]).sum();
    assert_eq!(lost, 2, "{a:#?}");
}

/// A secondary that times out: a mismatch says its noise was not checked
/// (and is counted so); a match needs no check but the secondary error is
/// counted all the same.
#[tokio::test]
async fn a_secondary_timeout_leaves_noise_unchecked_and_says_so() {
    let new = Service::start(
        Answers::default()
            .with("/plan", json!({"plan": "premium", "ts": 2}))
            .with("/same", json!({"v": 1})),
    )
    .await;
    let secondary = Service::start(Answers {
        hold_all: true,
        ..Answers::default()
    })
    .await;
    let mut rig = Rig::new(
        new.addr,
        Some(secondary.addr),
        Options {
            secondary_timeout: Duration::from_millis(200),
            ..Options::default()
        },
    );
    let mut wire = Wire::default();
    let mut c = wire.open();
    wire.exchange(
        &mut c,
        &get("/plan"),
        &ok(&json!({"plan": "basic", "ts": 1})),
    );
    wire.exchange(&mut c, &get("/same"), &ok(&json!({"v": 1})));
    wire.close(&c);
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    assert_eq!((a.matched, a.mismatched, a.noise), (1, 1, 0), "{a:#?}");
    assert_eq!(a.noise_unchecked, 1, "{a:#?}");
    assert_eq!(a.secondary_errors, 2, "{a:#?}");
    let events = rig.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let ev = &events[0];
    assert_eq!(ev["target"], "/plan");
    assert_eq!(ev["noise_unchecked"], "secondary timeout");
    assert!(ev.get("secondary").is_none(), "{ev}");
    // Both differences are reported: neither could be checked.
    assert_eq!(ev["differences"].as_array().unwrap().len(), 2, "{ev}");
    assert_eq!(rig.metric("parallelrun_noise_unchecked_total"), 1);
    assert_eq!(
        rig.metric("parallelrun_replay_errors_total{target=\"secondary\",kind=\"timeout\"}"),
        2
    );
}

/// More differences than an event lists, the first hundred of them noise
/// and a real one after them: a mismatch, logged with the real one.
#[tokio::test]
async fn a_real_difference_after_a_hundred_noisy_ones_is_logged() {
    let items = |ts: &dyn Fn(usize) -> u64, v: &dyn Fn(usize) -> u64| {
        let items: Vec<Value> = (0..150).map(|i| json!({"ts": ts(i), "v": v(i)})).collect();
        json!({ "items": items })
    };
    let old = items(&|_| 0, &|_| 7);
    let new = Service::start(Answers::default().with(
        "/items",
        items(&|i| i as u64 + 1, &|i| if i == 120 { 8 } else { 7 }),
    ))
    .await;
    let secondary =
        Service::start(Answers::default().with("/items", items(&|i| i as u64 + 500, &|_| 7))).await;
    let mut rig = Rig::new(new.addr, Some(secondary.addr), Options::default());
    let mut wire = Wire::default();
    repeat(&mut wire, 1, |_| "/items".into(), &old);
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    assert_eq!((a.mismatched, a.noise), (1, 0), "{a:#?}");
    assert_eq!(a.noise_differences, 150);
    let events = rig.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["differences"],
        json!([{"where": "body:/items/120/v", "old": 7, "new": 8}])
    );
    assert!(events[0].get("omitted").is_none(), "{}", events[0]);
}

/// Replays still in flight when the run's drain time is up are cancelled
/// and counted as replay errors: nothing is left without an outcome.
#[tokio::test]
async fn replays_in_flight_at_the_end_are_cancelled_and_counted() {
    let new = Service::start(Answers {
        hold_all: true,
        ..Answers::default()
    })
    .await;
    let mut rig = Rig::new(
        new.addr,
        None,
        Options {
            drain_timeout: Duration::from_millis(200),
            ..live()
        },
    );
    let mut wire = Wire::default();
    repeat(&mut wire, 4, |i| format!("/x/{i}"), &json!({}));
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    assert_eq!(a.replay_errors, 4, "{a:#?}");
    assert_eq!(a.replayed, 4);
    assert_eq!(rig.pipeline.in_flight(), 0);
    assert_eq!(
        rig.metric("parallelrun_replay_errors_total{target=\"new\",kind=\"timeout\"}"),
        4
    );
}

/// Deterministic bytes that are not text.
fn binary(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn shown(body: &[u8]) -> String {
    format!(
        "<{} bytes, xxh3 {:016x}>",
        body.len(),
        xxhash_rust::xxh3::xxh3_128(body) >> 64
    )
}

/// Binary bodies (digested on the wire and from the new service): equal
/// ones match, gzip of the same bytes differs only in the header, and one
/// flipped byte is a `body` difference showing both lengths and digests.
#[tokio::test]
async fn binary_bodies_compare_by_digest() {
    let octets = "application/octet-stream";
    let body = binary(300 * 1024, 7);
    let mut flipped = body.clone();
    flipped[123_456] ^= 0x80;
    let new = Service::start(
        Answers::default()
            .with_bytes("/same", &[("Content-Type", octets)], body.clone())
            .with_bytes(
                "/gzip",
                &[("Content-Type", octets), ("Content-Encoding", "gzip")],
                gzip(&body),
            )
            .with_bytes("/flip", &[("Content-Type", octets)], flipped.clone()),
    )
    .await;
    let mut rig = Rig::new(new.addr, None, Options::default());
    let mut wire = Wire::default();
    let mut c = wire.open();
    for path in ["/same", "/gzip", "/flip"] {
        wire.exchange(&mut c, &get(path), &ok_bytes(octets, &body));
    }
    wire.close(&c);
    rig.feed(&mut wire).await;
    let a = rig.finish().await;
    assert_eq!((a.matched, a.mismatched), (1, 2), "{a:#?}");
    let events = rig.events();
    let by_target = |t: &str| {
        events
            .iter()
            .find(|e| e["target"] == t)
            .unwrap_or_else(|| panic!("no event for {t}: {events:#?}"))
    };
    let gz = by_target("/gzip");
    assert_eq!(gz["differences"].as_array().unwrap().len(), 1, "{gz:#}");
    assert_eq!(gz["differences"][0]["where"], "header:content-encoding");
    let flip = by_target("/flip");
    assert_eq!(flip["body_by_digest"], true, "{flip:#}");
    assert_eq!(
        flip["differences"],
        json!([{"where": "body", "old": shown(&body), "new": shown(&flipped)}])
    );
}

/// A digested old response weighs next to nothing in the replay queue:
/// live, with 16 KiB of queue and the new service holding its answers,
/// three 300 KiB binary exchanges all fit, where a single kept JSON body of
/// 13 KiB takes most of it (`queue_bytes_are_overload_live`).
#[tokio::test]
async fn digested_bodies_do_not_fill_the_queue() {
    let octets = "image/png";
    let body = binary(300 * 1024, 3);
    let mut answers = Answers::default();
    for path in ["/a", "/b", "/c"] {
        answers = answers
            .with_bytes(path, &[("Content-Type", octets)], body.clone())
            .held(path);
    }
    let new = Service::start(answers).await;
    let mut rig = Rig::new(
        new.addr,
        None,
        Options {
            max_queue_bytes: 16 * 1024,
            ..live()
        },
    );
    let mut wire = Wire::default();
    let mut c = wire.open();
    for path in ["/a", "/b", "/c"] {
        wire.exchange(&mut c, &get(path), &ok_bytes(octets, &body));
    }
    wire.close(&c);
    rig.feed(&mut wire).await;
    new.release();
    let a = rig.finish().await;
    assert_eq!(a.matched, 3, "{a:#?}");
    assert_eq!(skipped(&a, "overload"), 0, "{a:#?}");
    assert!(rig.events().is_empty());
}

/// Live, an exchange is replayed (or skipped) as soon as it is paired, not
/// held with its body until the end of the capture batch.
#[tokio::test]
async fn live_exchanges_start_when_paired() {
    let new = Service::start(Answers::default().with("/x", json!({"v": 1}))).await;
    let mut rig = Rig::new(new.addr, None, live());
    let mut wire = Wire::default();
    repeat(&mut wire, 3, |_| "/x".into(), &json!({"v": 1}));
    // Segments only: no dispatch yet.
    wire.feed(&mut rig.pipeline);
    let a = rig.pipeline.accounting();
    assert_eq!((a.captured, a.replayed), (3, 3), "{a:#?}");
    let a = rig.finish().await;
    assert_eq!(a.matched, 3, "{a:#?}");
}
