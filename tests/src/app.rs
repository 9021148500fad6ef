//! A sample HTTP/1.1 service in two versions, for replay tests: the old one
//! and a new one with deliberate differences. Runs in a namespace like
//! [`crate::server::Server`] and counts the requests it served per path, so
//! a test can prove what was (or was not) replayed to it.
//!
//! Routes (the same on both flavors unless said):
//! - `GET /users/{n}`: `{"id":n,"name":"user n","plan":"basic","tags":["a","b"]}`;
//!   [`Flavor::New`] answers `"plan":"premium"` for n = 7.
//! - `GET /status`: old 200 `ok`, new 500 `error`.
//! - `GET /version`: header `X-Version: 1` (new: `2`), same body.
//! - `GET /gzip`: gzip-encoded `{"items":[1,2,3]}` (new: `[1,2,4]`).
//! - `GET /random`: `{"value":42,"nonce":"<16 random hex digits>"}`, a new
//!   nonce on every response (per-response noise).
//! - `GET /same/{anything}`: the same JSON on both, with a `Date` (the
//!   instance's skewed clock) and a random `X-Request-Id`: values that
//!   differ on every response and must be ignored by default.
//! - `GET /chunked`: a 50 000-byte JSON body, sent chunked.
//! - `GET /big`: 1 MiB of [`crate::body_pattern`].
//! - `POST /orders`: reads the body, then 201 `{"created":true}`.
//! - anything else: 404.
//!
//! Each instance also keeps how the requests it served were marked: their
//! `Host` and their fields whose name ends in `-shadow` ([`App::marks`]).
//!
//! An instance can be made slow ([`App::set_delay`]): its answers to the
//! paths under a prefix wait a fixed time, as a secondary on a busier host
//! would. It counts the requests it is working on at once
//! ([`App::peak_in_flight`]), so a test can prove a bound on concurrency or
//! that it was reached.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io::Write as _,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, header::HeaderMap, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use parallelrun_sandbox::utc::UtcTime;

use crate::{
    body_pattern,
    netns::Netns,
    server::{Background, Body, Chunks, full},
};

/// Which version of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The version in production.
    Old,
    /// The version under test, with the differences listed in the module docs.
    New,
}

/// What the service counts: requests served by path (query excluded) and
/// connections.
#[derive(Default)]
struct Counts {
    hits: Mutex<BTreeMap<String, u64>>,
    connections: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    /// Requests being handled (body read, answer not yet returned).
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// Answers returned (after any delay), by path.
    answered: Mutex<BTreeMap<String, u64>>,
    /// Paths under this prefix are answered after this delay.
    delay: Mutex<Option<(String, Duration)>>,
    /// The first [`MAX_MARKS`] requests' marks.
    marks: Mutex<Vec<Marks>>,
}

/// How many requests' [`Marks`] an instance keeps.
const MAX_MARKS: usize = 10_000;

/// What a request carried that tells a replay from production.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marks {
    pub path: String,
    pub host: Option<String>,
    /// Fields whose name ends in `-shadow` (lowercase), in order.
    pub shadow: Vec<(String, String)>,
}

impl Marks {
    fn of(req: &Request<Incoming>) -> Self {
        let text =
            |v: &hyper::header::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        Self {
            path: req.uri().path().to_owned(),
            host: req.headers().get("host").map(text),
            shadow: req
                .headers()
                .iter()
                .filter(|(name, _)| name.as_str().ends_with("-shadow"))
                .map(|(name, value)| (name.as_str().to_owned(), text(value)))
                .collect(),
        }
    }
}

impl Counts {
    /// The delay of an answer to `path`, as set now.
    fn delay_of(&self, path: &str) -> Option<Duration> {
        match &*self.delay.lock().unwrap() {
            Some((prefix, d)) if path.starts_with(prefix.as_str()) => Some(*d),
            _ => None,
        }
    }
}

/// One request being handled, uncounted on drop (also when hyper drops the
/// handler because its connection went away).
struct InFlight<'a>(&'a Counts);

impl<'a> InFlight<'a> {
    fn start(counts: &'a Counts) -> Self {
        let now = counts.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        counts.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(counts)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open connection, uncounted on drop.
struct Open(Arc<Counts>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running service; stopped on drop.
pub struct App {
    pub addr: SocketAddr,
    pub flavor: Flavor,
    counts: Arc<Counts>,
    _background: Background,
}

impl App {
    /// Starts the service in `ns` listening on `addr` (port 0 picks one).
    pub fn start(ns: &Netns, addr: SocketAddr, flavor: Flavor) -> Self {
        let counts = Arc::<Counts>::default();
        let counted = Arc::clone(&counts);
        // The clock of this instance: a fixed skew, as between two hosts, so
        // that Date headers differ between instances even within one second.
        let skew = Duration::from_secs(rand::random_range(1..3600));
        let background = Background::start(ns, addr, move |stream| {
            let counts = Arc::clone(&counted);
            counts.connections.fetch_add(1, Ordering::Relaxed);
            let open = counts.open.fetch_add(1, Ordering::Relaxed) + 1;
            counts.peak_open.fetch_max(open, Ordering::Relaxed);
            tokio::spawn(async move {
                let _open = Open(Arc::clone(&counts));
                let service = service_fn(move |req| {
                    let counts = Arc::clone(&counts);
                    async move { Ok::<_, Infallible>(handle(req, flavor, skew, &counts).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        });
        Self {
            addr: background.addr,
            flavor,
            counts,
            _background: background,
        }
    }

    /// Requests served whose path starts with `path_prefix` (`"/"`: all).
    pub fn hits(&self, path_prefix: &str) -> u64 {
        self.counts
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _)| path.starts_with(path_prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counts.connections.load(Ordering::Relaxed)
    }

    /// The most connections that were open at once.
    pub fn peak_connections(&self) -> u64 {
        self.counts.peak_open.load(Ordering::Relaxed)
    }

    /// From now on, requests whose path starts with `path_prefix` are
    /// answered `delay` after their body was read (`Duration::ZERO`: at
    /// once again). A request already waiting keeps the delay it got.
    pub fn set_delay(&self, path_prefix: &str, delay: Duration) {
        *self.counts.delay.lock().unwrap() =
            (!delay.is_zero()).then(|| (path_prefix.to_owned(), delay));
    }

    /// The most requests that were being handled at once (each counted from
    /// its body read to its answer, delay included).
    pub fn peak_in_flight(&self) -> u64 {
        self.counts.peak_in_flight.load(Ordering::Relaxed)
    }

    /// The marks of the requests served so far (the first [`MAX_MARKS`]).
    pub fn marks(&self) -> Vec<Marks> {
        self.counts.marks.lock().unwrap().clone()
    }

    /// Answers returned so far (after their delay) to paths starting with
    /// `path_prefix`. Below [`App::hits`] while requests are being handled,
    /// or when a delayed request's connection closed before its answer.
    pub fn answered(&self, path_prefix: &str) -> u64 {
        self.counts
            .answered
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _)| path.starts_with(path_prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

fn json(value: serde_json::Value) -> Response<Body> {
    full(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&value).unwrap(),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// The body of `GET /chunked`: JSON of about 50 000 bytes.
pub fn chunked_body() -> Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| {
        let rows: Vec<serde_json::Value> = (0..1000)
            .map(|i| serde_json::json!({"row": i, "label": format!("row number {i:05}")}))
            .collect();
        serde_json::to_vec(&serde_json::json!({ "rows": rows }))
            .unwrap()
            .into()
    })
    .clone()
}

/// The body of `GET /big`: 1 MiB of [`body_pattern`], made once (the
/// services must stay cheap: they share a few CPUs with the agent).
fn big_body() -> Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| body_pattern(1 << 20).into()).clone()
}

/// The gzip-encoded body of `GET /gzip`, made once per flavor.
fn gzip_body(flavor: Flavor) -> Bytes {
    static BODIES: OnceLock<[Bytes; 2]> = OnceLock::new();
    let bodies = BODIES.get_or_init(|| {
        [3, 4].map(|last| {
            let json = serde_json::to_vec(&serde_json::json!({"items": [1, 2, last]})).unwrap();
            gzip(&json).into()
        })
    });
    bodies[usize::from(flavor == Flavor::New)].clone()
}

async fn handle(
    req: Request<Incoming>,
    flavor: Flavor,
    skew: Duration,
    counts: &Counts,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    {
        let mut marks = counts.marks.lock().unwrap();
        if marks.len() < MAX_MARKS {
            marks.push(Marks::of(&req));
        }
    }
    // Read any request body whole before answering (keep-alive continues).
    let _ = req.into_body().collect().await;
    *counts.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let _in_flight = InFlight::start(counts);
    if let Some(delay) = counts.delay_of(&path) {
        tokio::time::sleep(delay).await;
    }
    let response = answer(&method, &path, flavor, skew);
    *counts.answered.lock().unwrap().entry(path).or_default() += 1;
    response
}

/// The answer to `method path` (see the module docs).
fn answer(method: &Method, path: &str, flavor: Flavor, skew: Duration) -> Response<Body> {
    let new = flavor == Flavor::New;
    match (method, path) {
        (&Method::POST, "/orders") => Response::builder()
            .status(StatusCode::CREATED)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"created":true}"#)).boxed())
            .unwrap(),
        (&Method::GET, "/status") if new => {
            full(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "error\n")
        }
        (&Method::GET, "/status") => full(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/version") => {
            let mut r = full(StatusCode::OK, "text/plain", "version\n");
            let v = if new { "2" } else { "1" };
            r.headers_mut().insert("x-version", v.parse().unwrap());
            r
        }
        (&Method::GET, "/gzip") => {
            let mut r = full(StatusCode::OK, "application/json", gzip_body(flavor));
            r.headers_mut()
                .insert("content-encoding", "gzip".parse().unwrap());
            r
        }
        (&Method::GET, "/random") => json(serde_json::json!({
            "value": 42,
            "nonce": format!("{:016x}", rand::random::<u64>()),
        })),
        (&Method::GET, "/chunked") => {
            // No length known up front: hyper sends Transfer-Encoding: chunked.
            let body = chunked_body();
            let chunks: Vec<Bytes> = (0..body.len())
                .step_by(4000)
                .map(|i| body.slice(i..(i + 4000).min(body.len())))
                .collect();
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Chunks(chunks.into_iter()).boxed())
                .unwrap()
        }
        (&Method::GET, "/big") => full(StatusCode::OK, "application/octet-stream", big_body()),
        (&Method::GET, p) if p.starts_with("/same/") => {
            let mut r = json(serde_json::json!({"same": true, "path": p}));
            let h = r.headers_mut();
            let date = http_date(SystemTime::now() - skew);
            h.insert("date", date.parse().unwrap());
            let id = format!("{:032x}", rand::random::<u128>());
            h.insert("x-request-id", id.parse().unwrap());
            r
        }
        (&Method::GET, p) => match p
            .strip_prefix("/users/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) => {
                let plan = if new && n == 7 { "premium" } else { "basic" };
                json(serde_json::json!({
                    "id": n,
                    "name": format!("user {n}"),
                    "plan": plan,
                    "tags": ["a", "b"],
                }))
            }
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn not_found() -> Response<Body> {
    full(StatusCode::NOT_FOUND, "text/plain", "not found\n")
}

/// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(t: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = UtcTime::of(t);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[t.weekday as usize],
        t.day,
        MONTHS[t.month as usize - 1],
        t.year,
        t.hour,
        t.minute,
        t.second
    )
}

/// A response as a client received it (body as sent, not decoded).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends each `(method, path, body)` in turn on one keep-alive connection
/// (hyper's client) and returns the replies; closes the connection and waits
/// until it is closed. Runs in the calling thread's network namespace.
pub fn fetch(server: SocketAddr, requests: &[(&str, &str, &[u8])]) -> Vec<Reply> {
    let requests: Vec<(Method, String, Bytes)> = requests
        .iter()
        .map(|(m, p, b)| {
            (
                m.parse().unwrap(),
                (*p).to_owned(),
                Bytes::copy_from_slice(b),
            )
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(server),
        )
        .await
        .unwrap_or_else(|_| panic!("connect {server}: timed out"))
        .unwrap_or_else(|e| panic!("connect {server}: {e}"));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        let conn = tokio::spawn(conn);
        let mut replies = Vec::new();
        for (method, path, body) in requests {
            let req = Request::builder()
                .method(method)
                .uri(&path)
                .header("host", "old.test")
                .header("user-agent", "parallelrun-tests")
                .body(Full::new(body))
                .unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
                .await
                .unwrap_or_else(|_| panic!("{path}: no response within 20 s"))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{path}: reading body: {e}"))
                .to_bytes();
            replies.push(Reply {
                status,
                headers,
                body,
            });
        }
        drop(sender);
        let _ = conn.await;
        replies
    })
}
