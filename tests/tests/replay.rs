//! Live replay, end to end: the agent captures a real old service on its
//! interface, replays each request to a new version (and to a secondary
//! instance of the old one), and its mismatch log and final counters must
//! say exactly what differs, nothing else, and account for every request.
//!
//! Topology, per test: a client namespace and a server namespace joined by a
//! veth pair. In the server namespace: the old service on the veth address
//! (`:8080`), the new one on `127.0.0.1:9090` and the secondary old instance
//! on `127.0.0.1:9091`, so replays cross that namespace's `lo` and are never
//! captured; the agent attached to the server's veth end.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{collections::BTreeMap, net::SocketAddr, thread, time::Duration};

use parallelrun_tests::{
    agent::{Agent, assert_accounted, counter_at, stats},
    app::{App, Flavor, Reply, fetch},
    client,
    netns::{Family, Pair},
    require_root,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const MIB: usize = 1 << 20;
const NEW: &str = "127.0.0.1:9090";
const SECONDARY: &str = "127.0.0.1:9091";

/// One test's services and agent. Fields drop in order: the agent is killed
/// first (if still running), then the services stop, then the namespaces go.
struct Rig {
    agent: Agent,
    old: App,
    new: Option<App>,
    secondary: App,
    dir: TempDir,
    pair: Pair,
}

/// What the agent left behind after it stopped.
struct Results {
    /// The mismatch log, one JSON object per line.
    log: Vec<Value>,
    /// The `--stats-json` file.
    stats: Value,
    stderr: String,
}

impl Rig {
    /// Starts the old service, the new one (`None`: nothing listens on the
    /// new address), the secondary and the agent with `extra` flags.
    fn start(new: Option<Flavor>, extra: &[&str]) -> Self {
        require_root();
        let pair = Pair::new(Family::V4);
        let old = App::start(
            &pair.server,
            SocketAddr::new(pair.server_ip, 8080),
            Flavor::Old,
        );
        let new = new.map(|f| App::start(&pair.server, NEW.parse().unwrap(), f));
        let secondary = App::start(&pair.server, SECONDARY.parse().unwrap(), Flavor::Old);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mismatches.jsonl");
        let stats = dir.path().join("stats.json");
        let old_addr = old.addr.to_string();
        let mut args = vec![
            "run",
            "--iface",
            &pair.server_if,
            "--old",
            &old_addr,
            "--new",
            NEW,
            "--secondary",
            SECONDARY,
            "--log",
            log.to_str().unwrap(),
            "--no-metrics",
            "--stats-json",
            stats.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let agent = Agent::start(&pair.server, &args);
        Self {
            agent,
            old,
            new,
            secondary,
            dir,
            pair,
        }
    }

    fn new_app(&self) -> &App {
        self.new.as_ref().expect("this rig has no new service")
    }

    /// `f` run in the client namespace.
    fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.pair.client.run(f)
    }

    /// `requests` on one keep-alive connection from the client namespace to
    /// the old service.
    fn fetch(&self, requests: &[(&str, &str, &[u8])]) -> Vec<Reply> {
        let addr = self.old.addr;
        let owned: Vec<(String, String, Vec<u8>)> = requests
            .iter()
            .map(|(m, p, b)| ((*m).to_owned(), (*p).to_owned(), b.to_vec()))
            .collect();
        self.client(move || {
            let requests: Vec<(&str, &str, &[u8])> = owned
                .iter()
                .map(|(m, p, b)| (m.as_str(), p.as_str(), b.as_slice()))
                .collect();
            fetch(addr, &requests)
        })
    }

    /// Lets the last segments reach the agent, stops it with SIGTERM (it
    /// must exit cleanly) and reads what it wrote.
    fn stop(&mut self) -> Results {
        thread::sleep(Duration::from_millis(300));
        self.agent.stop();
        let stderr = self.agent.stderr();
        let log_path = self.dir.path().join("mismatches.jsonl");
        let text = std::fs::read_to_string(&log_path).unwrap_or_else(|e| {
            panic!(
                "reading the mismatch log {}: {e}\n{stderr}",
                log_path.display()
            )
        });
        let log = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
            .collect();
        let stats = stats(&self.dir.path().join("stats.json"));
        Results { log, stats, stderr }
    }
}

impl Results {
    /// The counter at JSON pointer `p` of the stats, e.g. `/outcomes/matched`.
    fn n(&self, p: &str) -> u64 {
        counter_at(&self.stats, p)
    }

    /// Every request seen has exactly one outcome, and the agent agrees.
    fn assert_accounted(&self) {
        assert_accounted(&self.stats);
    }

    /// Log events of `kind`.
    fn events(&self, kind: &str) -> Vec<&Value> {
        self.log.iter().filter(|e| e["kind"] == kind).collect()
    }

    /// Mismatch events by target: the `where` of each difference, in order.
    fn wheres(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for ev in self.events("mismatch") {
            let target = ev["target"].as_str().expect("target").to_owned();
            let wheres = ev["differences"]
                .as_array()
                .unwrap_or_else(|| panic!("no differences in {ev}"))
                .iter()
                .map(|d| d["where"].as_str().expect("where").to_owned())
                .collect();
            let dup = out.insert(target.clone(), wheres);
            assert!(dup.is_none(), "two mismatch events for {target}");
        }
        out
    }

    /// The difference at `at` in the mismatch event for `target`.
    fn difference(&self, target: &str, at: &str) -> &Value {
        self.events("mismatch")
            .into_iter()
            .find(|e| e["target"] == target)
            .and_then(|e| {
                e["differences"]
                    .as_array()?
                    .iter()
                    .find(|d| d["where"] == at)
            })
            .unwrap_or_else(|| panic!("no difference {at} for {target} in {:#?}", self.log))
    }
}

/// `conns` keep-alive connections in parallel from the client namespace,
/// each sending `paths(conn)` in turn; returns each connection's body lengths.
fn parallel_keep_alive(
    rig: &Rig,
    conns: usize,
    paths: impl Fn(usize) -> Vec<String>,
) -> Vec<Vec<usize>> {
    let addr = rig.old.addr;
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let paths = paths(c);
            rig.pair.client.spawn(move || {
                let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
                client::keep_alive(addr, &paths).body_lens
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

/// Every replay carries the shadow marker, production requests never do;
/// the marker and Envoy's `-shadow` host suffix are configurable.
#[test]
fn replayed_requests_carry_the_shadow_marker() {
    let host = |m: &parallelrun_tests::app::Marks| m.host.clone().unwrap_or_default();
    // The default: `X-Parallelrun-Shadow: 1`, the captured Host.
    let mut r = Rig::start(Some(Flavor::New), &[]);
    r.fetch(&[("GET", "/users/1", b""), ("GET", "/same/a", b"")]);
    let results = r.stop();
    results.assert_accounted();
    let old = r.old.marks();
    assert_eq!(old.len(), 2);
    assert!(old.iter().all(|m| m.shadow.is_empty()), "{old:?}");
    for marks in [r.new_app().marks(), r.secondary.marks()] {
        assert_eq!(marks.len(), 2, "{marks:?}");
        for m in &marks {
            assert_eq!(
                m.shadow,
                [("x-parallelrun-shadow".to_owned(), "1".to_owned())]
            );
            assert_eq!(host(m), "old.test");
        }
    }

    // Another header, the host suffix; and none at all.
    let mut r = Rig::start(
        Some(Flavor::New),
        &[
            "--shadow-header",
            "X-Env-Shadow: replay",
            "--shadow-host-suffix",
        ],
    );
    r.fetch(&[("GET", "/users/2", b"")]);
    r.stop().assert_accounted();
    let seen = r.new_app().marks();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].shadow,
        [("x-env-shadow".to_owned(), "replay".to_owned())]
    );
    assert_eq!(host(&seen[0]), "old.test-shadow");

    let mut r = Rig::start(Some(Flavor::New), &["--no-shadow-header"]);
    r.fetch(&[("GET", "/users/3", b"")]);
    r.stop().assert_accounted();
    let seen = r.new_app().marks();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].shadow.is_empty(), "{seen:?}");
}

/// The mismatch log, the summary and the stats hold production traffic:
/// readable by their owner only, also when the log existed before.
#[test]
fn files_the_agent_writes_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let mut r = Rig::start(Some(Flavor::New), &["--summary", summary.to_str().unwrap()]);
    r.fetch(&[("GET", "/status", b"")]);
    r.stop().assert_accounted();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for file in [
        r.dir.path().join("mismatches.jsonl"),
        r.dir.path().join("stats.json"),
        summary,
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

/// Two identical versions under thousands of keep-alive requests (JSON,
/// chunked, gzip-encoded, 1 MiB bodies, per-response headers) never produce
/// a mismatch: every request is seen, replayed once and matched.
///
/// The replay queue is made longer than the whole run: the clients go
/// faster than the agent replays, and with the default queue part of the
/// backlog would be skipped as overload, which is another property (see
/// `replay_concurrency_is_bounded_and_overload_counted`).
#[test]
fn identical_versions_have_no_mismatches() {
    const CONNS: usize = 8;
    const PER_CONN: usize = 250;
    let total = (CONNS * PER_CONN) as u64;
    // At the agent's default idle priority a busy test host can starve it
    // until the ring overflows (counted as `ring_buffer_drop`, as designed:
    // it happened in a CI run made while other tests ran beside it). This
    // test is about identical versions never differing, so the agent runs
    // as an equal of the services and sees every request.
    let mut rig = Rig::start(
        Some(Flavor::Old),
        &["--max-queue", "4096", "--priority", "normal"],
    );
    let lens = parallel_keep_alive(&rig, CONNS, |c| {
        (0..PER_CONN)
            .map(|i| match i {
                100 => "/big".to_owned(),
                _ => match i % 5 {
                    0 | 4 => format!("/users/{}", c * 1000 + i),
                    1 => format!("/same/{c}-{i}"),
                    2 => "/chunked".to_owned(),
                    _ => "/gzip".to_owned(),
                },
            })
            .collect()
    });
    for l in &lens {
        assert_eq!(l.len(), PER_CONN);
        assert_eq!(l[100], MIB, "the client got a short /big");
    }
    assert_eq!(rig.old.hits("/"), total);
    let r = rig.stop();

    r.assert_accounted();
    assert!(
        r.log.is_empty(),
        "{} log events for identical versions, first: {:#}",
        r.log.len(),
        r.log[0]
    );
    assert_eq!(r.n("/requests_seen"), total, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/matched"), total, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/replayed"), total, "{:#}", r.stats);
    // Each request reached the new service exactly once.
    assert_eq!(rig.new_app().hits("/"), total);
    assert_eq!(rig.new_app().hits("/big"), CONNS as u64);
}

/// `--max-in-flight` bounds what the agent sends at once (to the new
/// service and to the secondary alike), whatever the load; requests beyond
/// `--max-queue` are skipped as overload and counted, never held; the new
/// service receives exactly the requests counted as replayed.
#[test]
fn replay_concurrency_is_bounded_and_overload_counted() {
    const CONNS: usize = 8;
    const PER_CONN: usize = 100;
    const MAX: u64 = 2;
    let total = (CONNS * PER_CONN) as u64;
    let mut rig = Rig::start(
        Some(Flavor::Old),
        &["--max-in-flight", &MAX.to_string(), "--max-queue", "8"],
    );
    let lens = parallel_keep_alive(&rig, CONNS, |c| {
        (0..PER_CONN).map(|i| format!("/users/{c}{i}")).collect()
    });
    assert!(lens.iter().all(|l| l.len() == PER_CONN));
    let r = rig.stop();

    r.assert_accounted();
    assert!(r.log.is_empty(), "{:#?}", r.log);
    let replayed = r.n("/outcomes/replayed");
    assert_eq!(r.n("/requests_seen"), total, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/matched"), replayed, "{:#}", r.stats);
    assert_eq!(
        r.n("/outcomes/skipped/overload"),
        total - replayed,
        "{:#}",
        r.stats
    );
    assert_eq!(rig.new_app().hits("/"), replayed);
    assert!(rig.secondary.hits("/") <= replayed);
    // One connection per request in flight, kept for reuse.
    assert!(
        rig.new_app().peak_connections() <= MAX,
        "{} connections open at once to the new service with --max-in-flight {MAX}",
        rig.new_app().peak_connections()
    );
    assert!(rig.secondary.peak_connections() <= MAX);
}

/// Each deliberate difference of the new version is reported once, at
/// exactly its place (a JSON field, the status, a header, a field inside a
/// gzip-encoded body), with the old and new values; identical responses and
/// per-response headers (Date, X-Request-Id) are not reported. The client
/// only ever sees the old service.
#[test]
fn deliberate_differences_are_reported() {
    let mut rig = Rig::start(Some(Flavor::New), &[]);
    let paths = [
        "/users/7", "/status", "/version", "/gzip", "/users/1", "/same/x",
    ];
    let replies = rig.fetch(&paths.map(|p| ("GET", p, &b""[..])));
    // Production is untouched: these are the old service's answers.
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let user7: Value = serde_json::from_slice(&replies[0].body).unwrap();
    assert_eq!(user7["plan"], "basic");
    assert_eq!(replies[2].headers["x-version"], "1");
    let r = rig.stop();

    r.assert_accounted();
    let expected: BTreeMap<String, Vec<String>> = [
        ("/users/7", &["body:/plan"][..]),
        ("/status", &["status", "body"]),
        ("/version", &["header:x-version"]),
        ("/gzip", &["body:/items/2"]),
    ]
    .into_iter()
    .map(|(t, w)| (t.to_owned(), w.iter().map(|s| (*s).to_owned()).collect()))
    .collect();
    assert_eq!(r.wheres(), expected, "log: {:#?}", r.log);
    assert_eq!(r.log.len(), 4, "unexpected events: {:#?}", r.log);

    let d = r.difference("/users/7", "body:/plan");
    assert_eq!((&d["old"], &d["new"]), (&json!("basic"), &json!("premium")));
    let d = r.difference("/status", "status");
    assert_eq!((&d["old"], &d["new"]), (&json!(200), &json!(500)));
    let d = r.difference("/version", "header:x-version");
    assert_eq!((&d["old"], &d["new"]), (&json!("1"), &json!("2")));
    // Decoded from gzip on both sides, compared as JSON.
    let d = r.difference("/gzip", "body:/items/2");
    assert_eq!((&d["old"], &d["new"]), (&json!(3), &json!(4)));

    // The event itself: who asked, what each side answered.
    let ev = r.events("mismatch")[0];
    assert_eq!(ev["method"], "GET");
    let client = ev["client"].as_str().expect("client");
    assert!(
        client.starts_with(&format!("{}:", rig.pair.client_ip)),
        "client {client}"
    );
    for ev in r.events("mismatch") {
        let expected_new = if ev["target"] == "/status" { 500 } else { 200 };
        assert_eq!(ev["old"]["status"], 200, "{ev}");
        assert_eq!(ev["new"]["status"], expected_new, "{ev}");
        assert_eq!(ev["secondary"]["status"], 200, "{ev}");
        assert!(ev["old"]["latency_ms"].as_f64().is_some(), "{ev}");
        assert!(ev["new"]["latency_ms"].as_f64().is_some(), "{ev}");
        assert!(ev["ts"].is_string() && ev["id"].is_u64(), "{ev}");
    }

    assert_eq!(r.n("/requests_seen"), 6, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/mismatched"), 4, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/matched"), 2, "{:#}", r.stats);
    for p in paths {
        assert_eq!(rig.new_app().hits(p), 1, "{p} replayed to the new service");
        assert_eq!(rig.old.hits(p), 1, "{p} served by the old service");
    }
}

/// A field that differs on every response (a nonce) differs between the old
/// service and its own secondary instance too: it is cancelled as noise and
/// never logged, while a real difference in the same run still is.
#[test]
fn per_response_noise_is_cancelled_with_a_secondary() {
    const N: u64 = 50;
    let mut rig = Rig::start(Some(Flavor::New), &[]);
    let mut requests = vec![("GET", "/random", &b""[..]); N as usize];
    requests.push(("GET", "/users/7", b""));
    let replies = rig.fetch(&requests);
    let nonces: std::collections::BTreeSet<_> = replies[..N as usize]
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["nonce"].to_string())
        .collect();
    assert_eq!(nonces.len(), N as usize, "the nonce is not per response");
    let r = rig.stop();

    r.assert_accounted();
    assert!(
        r.log.iter().all(|e| e["target"] != "/random"),
        "noise logged: {:#?}",
        r.log
    );
    assert_eq!(
        r.wheres(),
        BTreeMap::from([("/users/7".to_owned(), vec!["body:/plan".to_owned()])]),
        "log: {:#?}",
        r.log
    );
    assert_eq!(r.n("/outcomes/noise"), N, "{:#}", r.stats);
    assert!(r.n("/outcomes/noise_differences") >= N, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/mismatched"), 1, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/secondary_errors"), 0, "{:#}", r.stats);
    assert_eq!(rig.secondary.hits("/random"), N);
}

/// A POST has side effects: by default it is not replayed, to the new
/// service nor to the secondary, and it is counted as skipped by method.
#[test]
fn post_is_not_replayed_by_default() {
    let mut rig = Rig::start(Some(Flavor::New), &[]);
    let replies = rig.fetch(&[
        ("POST", "/orders", br#"{"item":1,"qty":2}"#),
        ("GET", "/users/1", b""),
    ]);
    assert_eq!(replies[0].status, 201);
    assert_eq!(replies[1].status, 200);
    let r = rig.stop();

    r.assert_accounted();
    assert_eq!(rig.old.hits("/orders"), 1);
    assert_eq!(rig.new_app().hits("/orders"), 0, "the POST was replayed");
    assert_eq!(rig.secondary.hits("/orders"), 0, "the POST was replayed");
    // The GET on the same connection was.
    assert_eq!(rig.new_app().hits("/users/1"), 1);
    assert_eq!(r.n("/outcomes/skipped/method"), 1, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/matched"), 1, "{:#}", r.stats);
    assert_eq!(r.n("/requests_seen"), 2, "{:#}", r.stats);
    assert!(r.log.is_empty(), "{:#?}", r.log);
}

/// With nothing listening at the new address, every replayable request
/// ends as a replay error (with its own log line) or, once the agent has
/// seen the new service refuse several connections in a row, as skipped
/// `new_down`; clients of the old service are not affected and the agent
/// still exits cleanly.
#[test]
fn new_service_down_counts_replay_errors() {
    const N: usize = 20;
    let mut rig = Rig::start(None, &[]);
    let targets: Vec<String> = (0..N).map(|i| format!("/users/{i}")).collect();
    let mut requests: Vec<(&str, &str, &[u8])> = targets
        .iter()
        .map(|t| ("GET", t.as_str(), &b""[..]))
        .collect();
    requests.push(("POST", "/orders", b"{}"));
    let replies = rig.fetch(&requests);
    assert!(replies[..N].iter().all(|r| r.status == 200), "{replies:?}");
    assert_eq!(replies[N].status, 201);
    // `stop` asserts the agent exits with success.
    let r = rig.stop();

    r.assert_accounted();
    assert_eq!(r.n("/requests_seen"), N as u64 + 1, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/skipped/method"), 1, "{:#}", r.stats);
    let errors = r.n("/outcomes/replay_errors");
    let down = r.n("/outcomes/skipped/new_down");
    assert_eq!(errors + down, N as u64, "{:#}", r.stats);
    assert!(errors > 0, "{:#}", r.stats);
    // The agent stops replaying only after 5 refused connections in a row.
    assert!(down == 0 || errors >= 5, "{:#}", r.stats);
    assert_eq!(r.n("/outcomes/replayed"), errors, "{:#}", r.stats);

    let events = r.events("replay_error");
    assert_eq!(events.len() as u64, errors, "log: {:#?}", r.log);
    assert_eq!(r.log.len(), events.len(), "log: {:#?}", r.log);
    let logged: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert_eq!(logged.len(), events.len(), "a request logged twice");
    assert!(logged.iter().all(|t| targets.iter().any(|s| s == t)));
    for e in events {
        let msg = e["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {e}"));
        assert!(!msg.is_empty(), "{e}");
        assert_eq!(e["method"], "GET", "{e}");
        assert_eq!(e["old"]["status"], 200, "{e}");
        assert!(e["new"]["status"].is_null(), "{e}");
    }
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// When the new service comes back after being down, replays resume by
/// themselves (the agent probes it), and differences are reported again.
#[test]
fn replays_resume_when_the_new_service_comes_back() {
    let mut rig = Rig::start(None, &[]);
    let down: Vec<String> = (0..20).map(|i| format!("/users/{i}")).collect();
    let requests: Vec<(&str, &str, &[u8])> =
        down.iter().map(|t| ("GET", t.as_str(), &b""[..])).collect();
    rig.fetch(&requests);
    thread::sleep(Duration::from_millis(300));
    rig.new = Some(App::start(
        &rig.pair.server,
        NEW.parse().unwrap(),
        Flavor::New,
    ));
    // One request at a time until one is replayed: the agent's probe.
    let mut probes = 0;
    while rig.new_app().hits("/") == 0 {
        assert!(
            probes < 40,
            "no replay within 12 s of the new service starting"
        );
        rig.fetch(&[("GET", "/users/100", b"")]);
        probes += 1;
        thread::sleep(Duration::from_millis(300));
    }
    let up: Vec<String> = (0..10).map(|i| format!("/users/{}", 200 + i)).collect();
    let mut requests: Vec<(&str, &str, &[u8])> =
        up.iter().map(|t| ("GET", t.as_str(), &b""[..])).collect();
    requests.push(("GET", "/users/7", b""));
    rig.fetch(&requests);
    let r = rig.stop();

    r.assert_accounted();
    assert_eq!(r.n("/requests_seen"), 20 + probes + 11, "{:#}", r.stats);
    // Everything after the new service answered was replayed and compared.
    for t in &up {
        assert_eq!(rig.new_app().hits(t), 1, "{t} not replayed: {:#}", r.stats);
    }
    assert_eq!(
        r.wheres(),
        BTreeMap::from([("/users/7".to_owned(), vec!["body:/plan".to_owned()])]),
        "log: {:#?}",
        r.log
    );
    // The probe that got through was compared too.
    let probes_replayed = rig.new_app().hits("/users/100");
    assert_eq!(
        r.n("/outcomes/matched"),
        10 + probes_replayed,
        "{:#}",
        r.stats
    );
    assert_eq!(r.n("/outcomes/mismatched"), 1, "{:#}", r.stats);
    assert!(
        r.log
            .iter()
            .filter(|e| e["kind"] == "replay_error")
            .all(|e| down.iter().any(|d| e["target"] == d.as_str())),
        "replay errors after the new service came back: {:#?}",
        r.log
    );
}

/// The sample service itself (no agent): each flavor answers as the other
/// tests assume, so a failure there is the agent's, not the fixture's.
#[test]
fn sample_service_answers_as_documented() {
    require_root();
    let ns = parallelrun_tests::netns::Netns::new("pra");
    let old = App::start(&ns, "127.0.0.1:0".parse().unwrap(), Flavor::Old);
    let new = App::start(&ns, "127.0.0.1:0".parse().unwrap(), Flavor::New);
    let requests: &[(&str, &str, &[u8])] = &[
        ("GET", "/users/7", b""),
        ("GET", "/status", b""),
        ("GET", "/version", b""),
        ("GET", "/gzip", b""),
        ("GET", "/random", b""),
        ("GET", "/same/x", b""),
        ("GET", "/chunked", b""),
        ("GET", "/big", b""),
        ("POST", "/orders", b"{}"),
        ("GET", "/orders", b""),
    ];
    let owned: Vec<_> = requests
        .iter()
        .map(|(m, p, b)| ((*m).to_owned(), (*p).to_owned(), b.to_vec()))
        .collect();
    let (o, n) = (old.addr, new.addr);
    let (o, n) = ns.run(move || {
        let reqs: Vec<(&str, &str, &[u8])> = owned
            .iter()
            .map(|(m, p, b)| (m.as_str(), p.as_str(), b.as_slice()))
            .collect();
        (fetch(o, &reqs), fetch(n, &reqs))
    });
    let body = |r: &Reply| serde_json::from_slice::<Value>(&r.body).unwrap();
    let gunzip = |r: &Reply| {
        assert_eq!(r.headers["content-encoding"], "gzip");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut out)
            .unwrap();
        serde_json::from_slice::<Value>(&out).unwrap()
    };
    assert_eq!(body(&o[0])["plan"], "basic");
    assert_eq!(body(&n[0])["plan"], "premium");
    assert_eq!((o[1].status, n[1].status), (200, 500));
    assert_eq!(o[2].headers["x-version"], "1");
    assert_eq!(n[2].headers["x-version"], "2");
    assert_eq!(o[2].body, n[2].body);
    assert_eq!(gunzip(&o[3]), json!({"items": [1, 2, 3]}));
    assert_eq!(gunzip(&n[3]), json!({"items": [1, 2, 4]}));
    assert_eq!(body(&o[4])["value"], 42);
    assert_ne!(body(&o[4])["nonce"], body(&n[4])["nonce"]);
    assert_eq!(o[5].body, n[5].body);
    assert_ne!(o[5].headers["x-request-id"], n[5].headers["x-request-id"]);
    assert!(o[5].headers.contains_key("date"));
    assert_eq!(o[6].headers["transfer-encoding"], "chunked");
    assert_eq!(o[6].body, parallelrun_tests::app::chunked_body());
    assert_eq!(o[6].body, n[6].body);
    assert_eq!(o[7].body.len(), MIB);
    assert_eq!(o[7].body, n[7].body);
    assert_eq!((o[8].status, o[9].status), (201, 404));
    assert_eq!(old.hits("/orders"), 2);
    assert_eq!(old.hits("/"), requests.len() as u64);
    assert_eq!(
        parallelrun_tests::app::http_date(std::time::UNIX_EPOCH + Duration::from_secs(784_111_777)),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
}
