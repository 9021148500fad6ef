//! `parallelrun replay` through its command line, without root: the test
//! writes a pcap of an old service's conversations, runs new (and secondary)
//! services in-process on loopback, runs the binary with the flags under test
//! and checks its `--stats-json` and mismatch log for what each flag
//! promises. Every run must account for every request it saw.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{
    convert::Infallible,
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use etherparse::PacketBuilder;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};
use serde_json::Value;

const CLIENT: [u8; 4] = [10, 9, 0, 2];
const OLD: [u8; 4] = [10, 9, 0, 1];
const OLD_PORT: u16 = 8080;

// ---------------------------------------------------------------- captures

/// A pcap of conversations with the old service, built packet by packet.
struct Capture {
    packets: Vec<Vec<u8>>,
}

/// One request and the old service's response, as bytes on the wire.
struct Exchange {
    request: Vec<u8>,
    response: Vec<u8>,
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: old.example\r\nUser-Agent: t\r\n\r\n").into_bytes()
}

fn method(method: &str, target: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: old.example\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

impl Capture {
    fn new() -> Self {
        Self {
            packets: Vec::new(),
        }
    }

    fn packet(&mut self, to_server: bool, port: u16, seq: u32, ack: u32, flags: &str, data: &[u8]) {
        let (src, dst, sport, dport) = if to_server {
            (CLIENT, OLD, port, OLD_PORT)
        } else {
            (OLD, CLIENT, OLD_PORT, port)
        };
        let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, seq, 65535);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('F') {
            b = b.fin();
        }
        if flags.contains('A') {
            b = b.ack(ack);
        }
        let mut out = Vec::with_capacity(b.size(data.len()));
        b.write(&mut out, data).expect("packet");
        self.packets.push(out);
    }

    /// One keep-alive connection from client port `port` carrying
    /// `exchanges` in order, opened and closed cleanly.
    fn connection(&mut self, port: u16, exchanges: &[Exchange]) {
        let (mut c, mut s) = (1000u32, 5000u32);
        self.packet(true, port, c, 0, "S", &[]);
        self.packet(false, port, s, c + 1, "SA", &[]);
        c += 1;
        s += 1;
        for ex in exchanges {
            for piece in ex.request.chunks(1400) {
                self.packet(true, port, c, s, "A", piece);
                c += piece.len() as u32;
            }
            for piece in ex.response.chunks(1400) {
                self.packet(false, port, s, c, "A", piece);
                s += piece.len() as u32;
            }
        }
        self.packet(true, port, c, s, "FA", &[]);
        self.packet(false, port, s, c + 1, "FA", &[]);
    }

    fn write(&self, path: &Path) {
        let header = PcapHeader {
            datalink: DataLink::RAW,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(File::create(path).expect("pcap file"), header)
            .expect("pcap header");
        for (i, p) in self.packets.iter().enumerate() {
            let ts = Duration::from_secs(1_700_000_000) + Duration::from_micros(100 * i as u64);
            w.write_packet(&PcapPacket::new(ts, p.len() as u32, p))
                .expect("pcap packet");
        }
    }
}

// ---------------------------------------------------------------- services

/// What a service answers to one request, after `delay`.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
}

impl Reply {
    fn ok(body: &[u8]) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.to_vec(),
            delay: Duration::ZERO,
        }
    }
}

type Answer = Box<dyn Fn(&Request<Bytes>) -> Reply + Send + Sync>;

/// What a service saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    arrivals: Mutex<Vec<Instant>>,
    hosts: Mutex<Vec<String>>,
    methods: Mutex<Vec<String>>,
}

/// An HTTP/1.1 service on 127.0.0.1 (hyper), on its own thread and runtime;
/// stopped when dropped.
struct Service {
    addr: SocketAddr,
    seen: Arc<Seen>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Service {
    fn start(answer: Answer) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let answer = Arc::new(answer);
        let s = Arc::clone(&seen);
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let stream = tokio::select! {
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut stopped => return,
                    };
                    let (answer, seen) = (Arc::clone(&answer), Arc::clone(&s));
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (answer, seen) = (Arc::clone(&answer), Arc::clone(&seen));
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let req = Request::from_parts(parts, body);
                                seen.requests.fetch_add(1, SeqCst);
                                let now = seen.in_flight.fetch_add(1, SeqCst) + 1;
                                seen.max_in_flight.fetch_max(now, SeqCst);
                                seen.arrivals.lock().unwrap().push(Instant::now());
                                seen.methods.lock().unwrap().push(req.method().to_string());
                                if let Some(h) = req.headers().get("host") {
                                    seen.hosts
                                        .lock()
                                        .unwrap()
                                        .push(h.to_str().unwrap_or("").into());
                                }
                                let reply = answer(&req);
                                tokio::time::sleep(reply.delay).await;
                                seen.in_flight.fetch_sub(1, SeqCst);
                                let mut r = Response::builder().status(reply.status);
                                for (n, v) in reply.headers {
                                    r = r.header(n, v);
                                }
                                Ok::<_, Infallible>(
                                    r.body(Full::new(Bytes::from(reply.body)))
                                        .expect("response"),
                                )
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        Self {
            addr,
            seen,
            _stop: stop,
        }
    }
}

/// The query value of `key` in a request target.
fn query(req: &Request<Bytes>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

// ---------------------------------------------------------------- runs

/// One finished `parallelrun replay` run.
struct Run {
    stats: Value,
    log: Vec<Value>,
    dir: tempfile::TempDir,
    elapsed: Duration,
}

impl Run {
    fn outcome(&self, key: &str) -> u64 {
        self.stats["outcomes"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("no outcomes.{key} in {}", self.stats))
    }

    fn skipped(&self, reason: &str) -> u64 {
        self.stats["outcomes"]["skipped"][reason]
            .as_u64()
            .unwrap_or(0)
    }

    fn lost(&self, cause: &str) -> u64 {
        self.stats["outcomes"]["lost"][cause].as_u64().unwrap_or(0)
    }

    fn seen(&self) -> u64 {
        self.stats["requests_seen"].as_u64().expect("requests_seen")
    }

    fn wheres(&self) -> Vec<String> {
        self.log
            .iter()
            .flat_map(|e| e["differences"].as_array().cloned().unwrap_or_default())
            .filter_map(|d| d["where"].as_str().map(String::from))
            .collect()
    }
}

/// Runs `parallelrun replay` over `capture` against `new` (and `secondary`)
/// with `args`; it must succeed. See [`replay_exit`].
fn replay(capture: &Capture, new: &Service, secondary: Option<&Service>, args: &[&str]) -> Run {
    let (code, run) = replay_exit(capture, new, secondary, args);
    assert_eq!(code, Some(0), "replay {args:?} failed");
    run
}

/// Runs `parallelrun replay` over `capture` against `new` (and `secondary`)
/// with `args`, checks that every request seen has exactly one outcome and
/// returns its exit code.
fn replay_exit(
    capture: &Capture,
    new: &Service,
    secondary: Option<&Service>,
    args: &[&str],
) -> (Option<i32>, Run) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("old.pcap");
    capture.write(&pcap);
    let (log, stats) = (dir.path().join("log.jsonl"), dir.path().join("stats.json"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_parallelrun"));
    cmd.arg("replay")
        .arg("--pcap")
        .arg(&pcap)
        .args(["--old", &format!("10.9.0.1:{OLD_PORT}")])
        .args(["--new", &new.addr.to_string()])
        .arg("--log")
        .arg(&log)
        .arg("--stats-json")
        .arg(&stats);
    if let Some(s) = secondary {
        cmd.args(["--secondary", &s.addr.to_string()]);
    }
    if !args.contains(&"--metrics") {
        cmd.arg("--no-metrics");
    }
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let out = wait(cmd, Duration::from_secs(120));
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && out.status.code().is_some_and(|c| c <= 2),
        "replay {args:?} failed: {}\n{stderr}",
        out.status
    );
    let stats: Value =
        serde_json::from_slice(&std::fs::read(&stats).expect("stats json")).expect("stats");
    let log = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line"))
        .collect();
    assert_eq!(stats["unaccounted"], 0, "{args:?}: {stats}");
    let run = Run {
        stats,
        log,
        dir,
        elapsed,
    };
    let o = &run.stats["outcomes"];
    let sum = |v: &Value| {
        v.as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>())
    };
    let accounted = ["matched", "mismatched", "noise", "replay_errors"]
        .iter()
        .map(|k| run.outcome(k))
        .sum::<u64>()
        + sum(&o["skipped"])
        + sum(&o["lost"]);
    assert_eq!(
        accounted,
        run.seen(),
        "{args:?}: every request has one outcome: {}",
        run.stats
    );
    (out.status.code(), run)
}

/// Runs `cmd` to completion, killing it after `limit`.
fn wait(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd.spawn().expect("start parallelrun");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("parallelrun output"),
        Err(_) => {
            // SAFETY: kill(2) with a pid we started; at worst ESRCH.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("parallelrun did not finish within {limit:?}");
        }
    }
}

/// `n` GET requests `/item?k=K` over `conns` connections, each answered by
/// the old service with `old(k)`.
fn items(n: u64, conns: u64, old: impl Fn(u64) -> Vec<u8>) -> Capture {
    let mut c = Capture::new();
    for conn in 0..conns {
        let exchanges: Vec<Exchange> = (0..n)
            .filter(|k| k % conns == conn)
            .map(|k| Exchange {
                request: get(&format!("/item?k={k}")),
                response: old(k),
            })
            .collect();
        c.connection(40000 + conn as u16, &exchanges);
    }
    c
}

fn json(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("json")
}

/// A service answering `/item?k=K` with `body(k)` as JSON.
fn json_service(delay: Duration, body: impl Fn(u64) -> Value + Send + Sync + 'static) -> Service {
    Service::start(Box::new(move |req| {
        let k = query(req, "k").unwrap_or(0);
        Reply {
            headers: vec![("content-type".into(), "application/json".into())],
            delay,
            ..Reply::ok(&json(body(k)))
        }
    }))
}

fn old_json(body: impl Fn(u64) -> Value) -> impl Fn(u64) -> Vec<u8> {
    move |k| response(200, &[("Content-Type", "application/json")], &json(body(k)))
}

// ---------------------------------------------------------------- tests

#[test]
fn identical_versions_match_from_a_pcap() {
    let capture = items(40, 4, old_json(|k| serde_json::json!({"k": k})));
    let new = json_service(Duration::ZERO, |k| serde_json::json!({"k": k}));
    let run = replay(&capture, &new, None, &[]);
    assert_eq!(run.seen(), 40);
    assert_eq!(run.outcome("matched"), 40, "{}", run.stats);
    assert!(run.log.is_empty());
    assert_eq!(new.seen.requests.load(SeqCst), 40);
    assert!(run.stats["pcap"]["packets"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn ignore_header_and_ignore_pointer_remove_those_differences() {
    let capture = items(20, 2, old_json(|k| serde_json::json!({"k": k, "ts": 1})));
    let new = Service::start(Box::new(|req| {
        let k = query(req, "k").unwrap_or(0);
        Reply {
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-build".into(), "v2".into()),
            ],
            ..Reply::ok(&json(serde_json::json!({"k": k, "ts": 2})))
        }
    }));
    let plain = replay(&capture, &new, None, &[]);
    assert_eq!(plain.outcome("mismatched"), 20);
    let wheres = plain.wheres();
    assert!(wheres.contains(&"header:x-build".to_owned()), "{wheres:?}");
    assert!(wheres.contains(&"body:/ts".to_owned()), "{wheres:?}");

    let header_only = replay(&capture, &new, None, &["--ignore-header", "X-Build"]);
    assert_eq!(header_only.outcome("mismatched"), 20);
    assert!(
        !header_only
            .wheres()
            .iter()
            .any(|w| w.starts_with("header:"))
    );

    let both = replay(
        &capture,
        &new,
        None,
        &["--ignore-header", "x-*", "--ignore-pointer", "/ts"],
    );
    assert_eq!(both.outcome("matched"), 20, "{}", both.stats);
    assert!(both.log.is_empty());
}

#[test]
fn sample_by_request_replays_about_that_fraction() {
    let capture = items(400, 4, old_json(|k| serde_json::json!({"k": k})));
    let new = json_service(Duration::ZERO, |k| serde_json::json!({"k": k}));
    let run = replay(
        &capture,
        &new,
        None,
        &["--sample", "0.25", "--sample-by", "request"],
    );
    let replayed = run.outcome("matched");
    // Binomial(400, 0.25): mean 100, sd 8.7; ±5 sd.
    assert!((56..=144).contains(&replayed), "{replayed} of 400 replayed");
    assert_eq!(run.skipped("sample") + replayed, 400);
    assert_eq!(new.seen.requests.load(SeqCst) as u64, replayed);
}

/// `--sample 0.25` (by connection, the default) replays exactly the
/// requests of the connections whose 4-tuple hash is under a quarter of
/// 2^32, every one of them: the connections a live capture with the same
/// flag copies. The others never become requests; the pcap reader counts
/// their segments as sampled_out.
#[test]
fn sample_replays_whole_connections_chosen_by_hash() {
    use parallelrun_agent::{
        capture::{conn_sampled, sample_threshold},
        model::ConnKey,
    };
    let (n, conns) = (400u64, 80u64);
    let capture = items(n, conns, old_json(|k| serde_json::json!({"k": k})));
    let new = json_service(Duration::ZERO, |k| serde_json::json!({"k": k}));
    let run = replay(&capture, &new, None, &["--sample", "0.25"]);
    let threshold = sample_threshold(0.25);
    let kept = (0..conns)
        .filter(|c| {
            let conn = ConnKey {
                client: SocketAddr::from((CLIENT, 40000 + *c as u16)),
                server: SocketAddr::from((OLD, OLD_PORT)),
            };
            conn_sampled(&conn, threshold)
        })
        .count() as u64;
    // Fixed tuples: the count is deterministic, about a quarter of 80.
    assert!(
        (8..=32).contains(&kept),
        "{kept} of {conns} connections kept"
    );
    let per_conn = n / conns;
    assert_eq!(run.seen(), kept * per_conn, "{}", run.stats);
    assert_eq!(run.outcome("matched"), kept * per_conn);
    assert_eq!(run.skipped("sample"), 0);
    assert_eq!(new.seen.requests.load(SeqCst) as u64, kept * per_conn);
    // SYN, SYN-ACK, two FINs and one segment per request and per response.
    let segments_per_conn = 4 + 2 * per_conn;
    assert_eq!(
        run.stats["pcap"]["sampled_out"].as_u64(),
        Some((conns - kept) * segments_per_conn),
        "{}",
        run.stats
    );
}

#[test]
fn rate_paces_offline_replays() {
    let capture = items(30, 3, old_json(|k| serde_json::json!({"k": k})));
    let new = json_service(Duration::ZERO, |k| serde_json::json!({"k": k}));
    let run = replay(&capture, &new, None, &["--rate", "10"]);
    // Offline replay waits for the limiter instead of skipping.
    assert_eq!(run.outcome("matched"), 30, "{}", run.stats);
    assert_eq!(run.skipped("rate_limit"), 0);
    let arrivals = new.seen.arrivals.lock().unwrap().clone();
    let span = arrivals
        .iter()
        .max()
        .unwrap()
        .duration_since(*arrivals.iter().min().unwrap());
    // A burst of at most 10, then 10 per second: 20 more take ≥ 1.9 s.
    assert!(
        span >= Duration::from_millis(1800),
        "30 replays at --rate 10 took {span:?}"
    );
}

#[test]
fn queue_and_in_flight_bounds_limit_concurrency() {
    // 2 KiB bodies: each waiting replay weighs 3 KiB of --max-queue-bytes.
    let big = |k: u64| serde_json::json!({"k": k, "pad": "x".repeat(2048)});
    let capture = items(12, 4, old_json(big));
    let slow = || json_service(Duration::from_millis(40), big);

    let new = slow();
    let run = replay(&capture, &new, None, &["--max-queue-bytes", "4KiB"]);
    assert_eq!(run.outcome("matched"), 12, "{}", run.stats);
    assert_eq!(
        new.seen.max_in_flight.load(SeqCst),
        1,
        "4 KiB holds one 3 KiB replay"
    );

    let new = slow();
    let run = replay(&capture, &new, None, &["--max-queue", "2"]);
    assert_eq!(run.outcome("matched"), 12);
    assert!(new.seen.max_in_flight.load(SeqCst) <= 2);

    let new = slow();
    let run = replay(&capture, &new, None, &["--max-in-flight", "1"]);
    assert_eq!(run.outcome("matched"), 12);
    assert_eq!(new.seen.max_in_flight.load(SeqCst), 1);

    let new = slow();
    let run = replay(&capture, &new, None, &[]);
    assert_eq!(run.outcome("matched"), 12);
    assert!(
        new.seen.max_in_flight.load(SeqCst) > 1,
        "without bounds replays overlap"
    );
}

/// Old, secondary and new share a field `v` that differs by request: the
/// secondary differs from old on 1 request in 4 (noise), the new version on
/// 2 in 4 (one of them the secondary's). Per-request cancellation removes
/// the shared one. Per endpoint (whose statistics count the requests that
/// differed at all), field `v` differs raw on all of them and as noise on
/// half: |raw − noise| is a third of raw + noise and half the requests, so
/// the defaults (relative 0.2, absolute 0.0003) report the rest, and a
/// relative threshold of 0.5 or an absolute one of 0.6 calls them noise.
#[test]
fn noise_thresholds_decide_per_endpoint() {
    let v = |k: u64| serde_json::json!({"v": k % 2});
    let capture = items(120, 1, old_json(v));
    let flip =
        |k: u64, flip: bool| serde_json::json!({"v": if flip { (k + 1) % 2 } else { k % 2 }});
    let secondary = json_service(Duration::ZERO, move |k| flip(k, k % 4 == 0));
    let new = json_service(Duration::ZERO, move |k| flip(k, k % 4 <= 1));
    let args = ["--max-in-flight", "1"];

    let default = replay(&capture, &new, Some(&secondary), &args);
    assert_eq!(default.outcome("matched"), 60, "{}", default.stats);
    assert_eq!(
        default.outcome("noise"),
        30,
        "shared with the secondary: {}",
        default.stats
    );
    assert_eq!(default.outcome("mismatched"), 30);
    assert!(default.wheres().iter().all(|w| w == "body:/v"));

    for (flag, value) in [("--noise-relative", "0.5"), ("--noise-absolute", "0.6")] {
        let mut a = args.to_vec();
        a.extend([flag, value]);
        let lenient = replay(&capture, &new, Some(&secondary), &a);
        // Until an endpoint has 20 differing requests nothing is noise on
        // it: the first 10 of the 30 are reported.
        let reported = lenient.outcome("mismatched");
        assert!((1..=12).contains(&reported), "{flag}: {}", lenient.stats);
        assert_eq!(lenient.outcome("noise") + lenient.outcome("mismatched"), 60);
    }
}

#[test]
fn methods_and_path_filters_choose_what_is_replayed() {
    let mut capture = Capture::new();
    let ok = || response(200, &[], b"ok");
    capture.connection(
        41000,
        &[
            Exchange {
                request: get("/api/a"),
                response: ok(),
            },
            Exchange {
                request: get("/api/internal/b"),
                response: ok(),
            },
            Exchange {
                request: get("/static/c"),
                response: ok(),
            },
            Exchange {
                request: method("POST", "/api/orders", "{}"),
                response: ok(),
            },
            Exchange {
                request: method("DELETE", "/api/a", ""),
                response: ok(),
            },
        ],
    );
    let answer = || Service::start(Box::new(|_| Reply::ok(b"ok")));

    let new = answer();
    let run = replay(&capture, &new, None, &[]);
    assert_eq!(run.outcome("matched"), 3);
    assert_eq!(
        run.skipped("method"),
        2,
        "POST and DELETE are not replayed by default"
    );

    let new = answer();
    let run = replay(
        &capture,
        &new,
        None,
        &[
            "--methods",
            "GET,POST",
            "--path-prefix",
            "/api",
            "--exclude-path-prefix",
            "/api/internal",
        ],
    );
    assert_eq!(run.outcome("matched"), 2, "{}", run.stats);
    assert_eq!(run.skipped("filter"), 2);
    assert_eq!(run.skipped("method"), 1);
    let mut methods = new.seen.methods.lock().unwrap().clone();
    methods.sort();
    assert_eq!(methods, ["GET", "POST"]);
}

#[test]
fn host_timeout_and_max_body() {
    let mut capture = Capture::new();
    capture.connection(
        42000,
        &[
            Exchange {
                request: get("/fast"),
                response: response(200, &[], b"ok"),
            },
            Exchange {
                request: get("/slow"),
                response: response(200, &[], b"ok"),
            },
            Exchange {
                request: get("/big"),
                response: response(200, &[], &vec![b'x'; 300_000]),
            },
        ],
    );
    let new = Service::start(Box::new(|req| Reply {
        delay: if req.uri().path() == "/slow" {
            Duration::from_millis(2500)
        } else {
            Duration::ZERO
        },
        ..Reply::ok(b"ok")
    }));
    let run = replay(
        &capture,
        &new,
        None,
        &[
            "--host",
            "new.example",
            "--timeout",
            "1",
            "--max-body",
            "100KiB",
        ],
    );
    assert_eq!(run.lost("too_large"), 1, "{}", run.stats);
    assert_eq!(run.outcome("replay_errors"), 1);
    assert_eq!(run.outcome("matched"), 1);
    let err = run
        .log
        .iter()
        .find(|e| e["kind"] == "replay_error")
        .expect("a replay_error event");
    assert_eq!(err["target"], "/slow");
    assert!(
        new.seen
            .hosts
            .lock()
            .unwrap()
            .iter()
            .all(|h| h == "new.example"),
        "--host rewrites Host"
    );
}

#[test]
fn reassembly_and_buffer_limits_are_enforced() {
    // Two connections whose exchanges interleave in time.
    let mut a = Capture::new();
    let ex = |k: u64| Exchange {
        request: get(&format!("/item?k={k}")),
        response: old_json(|k| serde_json::json!({"k": k}))(k),
    };
    a.connection(43000, &[ex(0), ex(1)]);
    let mut b = Capture::new();
    b.connection(43001, &[ex(2), ex(3)]);
    let mut capture = Capture::new();
    // The first connection's handshake and first request, then all of the
    // second, then the rest of the first: with room for one connection, the
    // first is evicted (its waiting request lost) when the second opens,
    // and picked up again mid-stream after.
    capture.packets.extend(a.packets[..3].iter().cloned());
    capture.packets.extend(b.packets.iter().cloned());
    capture.packets.extend(a.packets[3..].iter().cloned());
    let new = json_service(Duration::ZERO, |k| serde_json::json!({"k": k}));

    let run = replay(&capture, &new, None, &[]);
    assert_eq!(run.outcome("matched"), 4, "{}", run.stats);

    let run = replay(&capture, &new, None, &["--max-connections", "1"]);
    assert_eq!(run.lost("evicted"), 1, "{}", run.stats);
    assert!(run.stats["reassembly"]["evicted"].as_u64() >= Some(1));
    assert_eq!(run.outcome("matched"), 3, "{}", run.stats);

    // Flags that bound memory parse and leave a small run unchanged.
    let run = replay(
        &capture,
        &new,
        None,
        &[
            "--max-conn-buffer",
            "64KiB",
            "--max-buffer",
            "1MiB",
            "--max-http-buffer",
            "1MiB",
            "--idle-timeout",
            "30",
            "--duration",
            "60",
        ],
    );
    assert_eq!(run.outcome("matched"), 4, "{}", run.stats);
}

#[test]
fn log_rotation_and_metrics_flags() {
    let capture = items(60, 2, old_json(|k| serde_json::json!({"k": k})));
    let new = json_service(Duration::ZERO, |k| serde_json::json!({"k": k + 1}));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let metrics = format!("127.0.0.1:{port}");
    // --rate makes the run last long enough to scrape it.
    let (run, scraped) = thread::scope(|scope| {
        let run = scope.spawn(|| {
            replay(
                &capture,
                &new,
                None,
                &[
                    "--log-max-size",
                    "4KiB",
                    "--log-keep",
                    "2",
                    "--metrics",
                    &metrics,
                    "--rate",
                    "20",
                ],
            )
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut scraped = None;
        while scraped.is_none() && Instant::now() < deadline && !run.is_finished() {
            scraped = scrape(&metrics);
            thread::sleep(Duration::from_millis(100));
        }
        (run.join().expect("replay thread"), scraped)
    });
    let scraped = scraped.expect("metrics served while the run lasted");
    assert!(
        scraped.contains("parallelrun_requests_captured_total"),
        "{scraped}"
    );
    assert_eq!(run.outcome("mismatched"), 60);
    let files: Vec<PathBuf> = std::fs::read_dir(run.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("log.jsonl"))
        .collect();
    assert_eq!(files.len(), 3, "the log and 2 rotated files: {files:?}");
    for f in &files {
        assert!(
            std::fs::metadata(f).expect("size").len() <= 4096 + 2048,
            "{f:?} over its cap"
        );
    }
    assert!(
        run.elapsed >= Duration::from_secs(1),
        "60 replays at --rate 20"
    );
}

/// `GET /metrics` from `addr`, if it answers 200.
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

#[test]
fn bad_flags_are_clear_errors() {
    let new = json_service(Duration::ZERO, |k| serde_json::json!({"k": k}));
    let capture = items(1, 1, old_json(|k| serde_json::json!({"k": k})));
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("old.pcap");
    capture.write(&pcap);
    let pcap = pcap.to_string_lossy().into_owned();
    let new = new.addr.to_string();
    for (args, says) in [
        (vec!["--sample", "1.5"], "sample"),
        (vec!["--rate", "0"], "rate"),
        (vec!["--max-queue-bytes", "lots"], "max-queue-bytes"),
        (vec!["--ignore-pointer", "no-slash"], "ignore-pointer"),
        (vec!["--noise-relative", "2"], "noise-relative"),
        (vec!["--secondary", &new], "secondary"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_parallelrun"))
            .args([
                "replay",
                "--pcap",
                &pcap,
                "--old",
                "10.9.0.1:8080",
                "--new",
                &new,
                "--no-metrics",
            ])
            .args(&args)
            .arg("--log")
            .arg(dir.path().join("log.jsonl"))
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `--until-verdict` exits with the verdict's code (0 ready, 1 not ready);
/// summaries of runs grouped by other `--endpoint` rules do not merge, and
/// the error names the file and the rule; a summary's counts are the run's.
#[test]
fn until_verdict_exits_with_the_decision_and_other_rules_do_not_merge() {
    let capture = items(60, 2, old_json(|k| serde_json::json!({"k": k})));
    let same = json_service(Duration::ZERO, |k| serde_json::json!({"k": k}));
    let other = json_service(Duration::ZERO, |k| serde_json::json!({"k": k + 1}));
    let rules = ["--until-verdict", "--min-compared", "20"];
    let dir = tempfile::tempdir().expect("tempdir");
    let (ready, broken, patterned) = (
        dir.path().join("ready.json"),
        dir.path().join("broken.json"),
        dir.path().join("patterned.json"),
    );
    let with = |summary: &Path, extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
        a.extend(["--summary".to_owned(), summary.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let args = with(&ready, &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, run) = replay_exit(&capture, &same, None, &refs);
    assert_eq!(code, Some(0), "{}", run.stats);
    let summary: Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    assert_eq!(summary["totals"]["matched"], run.outcome("matched"));
    assert_eq!(summary["endpoints"][0]["endpoint"], "GET /item");

    let args = with(&broken, &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, run) = replay_exit(&capture, &other, None, &refs);
    assert_eq!(code, Some(1), "{}", run.stats);

    let args = with(&patterned, &["--endpoint", "GET /{any*}"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _) = replay_exit(&capture, &same, None, &refs);
    assert_eq!(code, Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_parallelrun"))
        .arg("report")
        .args([&ready, &patterned])
        .output()
        .expect("parallelrun report");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&patterned.display().to_string()), "{err}");
    assert!(err.contains("endpoint_patterns"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
