//! Noise cancellation when the secondary is the slow one.
//!
//! `/random` answers a per-response nonce: old and new always differ there,
//! and so do old and its own secondary instance, so every such difference
//! is noise. Here the secondary answers `/random` late (a busier host), so
//! with a small `--max-in-flight` its connections are the bottleneck. A
//! request must then get capacity on both targets or on neither: never be
//! compared against the new service alone, which would report the nonce as
//! a (false) mismatch. When the secondary does fail (a timeout), the
//! mismatch must say so (`noise_unchecked`), and such a request must not
//! teach the per-endpoint noise statistics anything.
//!
//! Topology, per test (as in `replay.rs`): a client namespace and a server
//! namespace joined by a veth pair. In the server namespace: the old service
//! on the veth address (`:8080`), the new one (with its deliberate
//! differences, see [`Flavor::New`]) on `127.0.0.1:9090`, the slow
//! secondary (an old instance) on `127.0.0.1:9091`; replays cross that
//! namespace's `lo` and are never captured. Capture and live runs attach to
//! the server's veth end; offline replays run in the server namespace.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use parallelrun_sandbox::Proc;
use parallelrun_tests::{
    agent::{self, Agent, Stats},
    app::{App, Flavor},
    client, faults,
    netns::{Family, Pair},
    require_root,
};
use serde_json::Value;
use tempfile::TempDir;

const NEW: &str = "127.0.0.1:9090";
const SECONDARY: &str = "127.0.0.1:9091";
/// The agent's metrics, inside the server namespace (live runs that poll).
const METRICS: &str = "127.0.0.1:9464";
/// The endpoint with a per-response random field.
const RANDOM: &str = "/random";
/// How late the secondary answers [`RANDOM`] when it is merely slow.
const SLOW: Duration = Duration::from_millis(50);

/// One test's services. Fields drop in order: the services stop, then the
/// namespaces go. Agents are the tests' locals, declared after the rig, so
/// they are stopped first.
struct Rig {
    old: App,
    new: App,
    secondary: App,
    dir: TempDir,
    pair: Pair,
}

impl Rig {
    /// The old service, the new version and a secondary that answers
    /// [`RANDOM`] [`SLOW`]ly.
    fn start() -> Self {
        require_root();
        let pair = Pair::new(Family::V4);
        let old = App::start(
            &pair.server,
            SocketAddr::new(pair.server_ip, 8080),
            Flavor::Old,
        );
        let new = App::start(&pair.server, NEW.parse().unwrap(), Flavor::New);
        let secondary = App::start(&pair.server, SECONDARY.parse().unwrap(), Flavor::Old);
        secondary.set_delay(RANDOM, SLOW);
        Self {
            old,
            new,
            secondary,
            dir: tempfile::tempdir().unwrap(),
            pair,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `parallelrun run` on the server's veth, replaying to the new service
    /// and the secondary; `name` names its log and stats files.
    fn run(&self, name: &str, extra: &[&str]) -> Agent {
        let log = self.path(&format!("{name}.jsonl"));
        let stats = self.path(&format!("{name}.stats.json"));
        let old = self.old.addr.to_string();
        let mut args = vec![
            "run",
            "--iface",
            &self.pair.server_if,
            "--old",
            &old,
            "--new",
            NEW,
            "--secondary",
            SECONDARY,
            "--log",
            log.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Agent::start(&self.pair.server, &args)
    }

    /// `conns` keep-alive connections in parallel from the client namespace
    /// to the old service, each sending `paths(conn)` in turn; checks that
    /// every production request was answered.
    fn clients(&self, conns: usize, paths: impl Fn(usize) -> Vec<String>) {
        let addr = self.old.addr;
        let handles: Vec<_> = (0..conns)
            .map(|c| {
                let paths = paths(c);
                self.pair.client.spawn(move || {
                    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                    let lens = client::keep_alive(addr, &refs).body_lens;
                    assert_eq!(lens.len(), paths.len(), "connection {c}: responses missing");
                    assert!(lens.iter().all(|&l| l > 0), "connection {c}: empty bodies");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
    }
}

/// What a finished run (live or offline) left behind.
struct Results {
    stats: Stats,
    log: Vec<Value>,
}

impl Results {
    fn read(log: &Path, stats: &Path, stderr: &str) -> Self {
        assert!(
            !stderr.contains("panicked"),
            "the agent panicked:\n{stderr}"
        );
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let log = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
            .collect();
        Self {
            stats: Stats::read(stats),
            log,
        }
    }

    fn n(&self, p: &str) -> u64 {
        self.stats.n(p)
    }

    /// Log events about `target`.
    fn about(&self, target: &str) -> Vec<&Value> {
        self.log.iter().filter(|e| e["target"] == target).collect()
    }
}

/// A stopped live agent's results (it must exit 0 on SIGTERM).
fn stop(mut agent: Agent, rig: &Rig, name: &str) -> Results {
    agent.stop();
    Results::read(
        &rig.path(&format!("{name}.jsonl")),
        &rig.path(&format!("{name}.stats.json")),
        &agent.stderr(),
    )
}

/// The sum of the counters `names` (without labels) in one read of the
/// agent's metrics, served in `rig`'s server namespace; `None` while they
/// cannot be read.
fn metrics_sum(rig: &Rig, names: &[&str]) -> Option<u64> {
    let text = rig
        .pair
        .server
        .run(|| faults::http_get_text(METRICS.parse().unwrap(), "/metrics"))
        .ok()?;
    let sum = names
        .iter()
        .map(|name| {
            let prefix = format!("parallelrun_{name} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no metric {prefix}in:\n{text}")) as u64
        })
        .sum();
    Some(sum)
}

/// Every difference listed in `ev` is at `where_`.
fn only_difference(ev: &Value, where_: &str) -> bool {
    ev["differences"]
        .as_array()
        .is_some_and(|d| !d.is_empty() && d.iter().all(|d| d["where"] == where_))
}

/// Records a small capture of traffic to the slow endpoint (and a few
/// others), then replays it 20 times against the same services with
/// `--max-in-flight 2`: the secondary's two connections saturate (it is the
/// bottleneck) and offline replay waits for capacity on both targets. Every
/// run gives the same result: each request seen and replayed once, to the
/// new service and to the secondary alike; every `/random` is noise, never
/// a mismatch, never unchecked; the one real difference (`/users/7`) is
/// reported; nothing skipped or lost; every request accounted.
#[test]
fn offline_replays_with_a_saturated_secondary_report_no_false_mismatch() {
    const CONNS: usize = 4;
    const PER_CONN: usize = 30;
    const RUNS: usize = 20;
    const MAX: u64 = 2;
    let total = (CONNS * PER_CONN) as u64;
    let rig = Rig::start();
    // The paths of connection `c`: every third a /random, /users/7 (the
    // deliberate difference) once, other users elsewhere.
    let paths = |c: usize| -> Vec<String> {
        (0..PER_CONN)
            .map(|i| match (c, i % 3) {
                (_, 0) => RANDOM.to_owned(),
                (0, _) if i == 1 => "/users/7".to_owned(),
                _ => format!("/users/{}", 1000 + c * 100 + i),
            })
            .collect()
    };
    let randoms = (0..CONNS)
        .flat_map(paths)
        .filter(|p| p.as_str() == RANDOM)
        .count() as u64;

    // The capture.
    let pcap = rig.path("capture.pcap");
    let record_stats = rig.path("record.stats.json");
    let old = rig.old.addr.to_string();
    let mut recorder = Agent::start(
        &rig.pair.server,
        &[
            "record",
            "--iface",
            &rig.pair.server_if,
            "--old",
            &old,
            "--pcap",
            pcap.to_str().unwrap(),
            "--stats-json",
            record_stats.to_str().unwrap(),
        ],
    );
    rig.clients(CONNS, paths);
    // The responses passed the egress hook before the clients read them,
    // and the recorder drains its ring buffer when it stops.
    recorder.stop();
    let recorded = agent::stats(&record_stats);
    assert_eq!(
        agent::counter(&recorded, "kernel", "ringbuf_full_drops"),
        0,
        "the capture itself lost records: {recorded:#}"
    );
    assert_eq!(rig.old.hits("/"), total);
    assert_eq!(rig.new.hits("/") + rig.secondary.hits("/"), 0);

    let started = Instant::now();
    for run in 0..RUNS {
        let (new_before, secondary_before) = (rig.new.hits("/"), rig.secondary.hits("/"));
        let randoms_before = rig.secondary.hits(RANDOM);
        let r = replay(&rig, &pcap, run, MAX);
        let ctx = || format!("run {run}: {:#}\nlog: {:#?}", r.stats.0, r.log);

        r.stats.assert_accounted();
        assert_eq!(r.n("/requests_seen"), total, "{}", ctx());
        assert_eq!(r.n("/outcomes/replayed"), total, "{}", ctx());
        // Offline replay waits for capacity: nothing skipped, nothing lost.
        assert_eq!(r.stats.sum("/outcomes/skipped"), 0, "{}", ctx());
        assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{}", ctx());
        assert_eq!(r.n("/outcomes/replay_errors"), 0, "{}", ctx());
        assert_eq!(r.n("/outcomes/secondary_errors"), 0, "{}", ctx());
        // No false mismatch: every /random is noise, checked against the
        // secondary.
        assert_eq!(r.n("/outcomes/noise"), randoms, "{}", ctx());
        assert_eq!(r.n("/outcomes/noise_unchecked"), 0, "{}", ctx());
        assert!(r.about(RANDOM).is_empty(), "{}", ctx());
        // The real difference is still reported, once, checked for noise.
        assert_eq!(r.n("/outcomes/mismatched"), 1, "{}", ctx());
        assert_eq!(r.n("/outcomes/matched"), total - randoms - 1, "{}", ctx());
        assert_eq!(r.log.len(), 1, "{}", ctx());
        let ev = &r.log[0];
        assert_eq!(ev["kind"], "mismatch", "{ev:#}");
        assert_eq!(ev["target"], "/users/7", "{ev:#}");
        assert!(only_difference(ev, "body:/plan"), "{ev:#}");
        assert!(ev.get("noise_unchecked").is_none(), "{ev:#}");
        assert_eq!(ev["secondary"]["status"], 200, "{ev:#}");
        // Each request reached both targets once.
        assert_eq!(rig.new.hits("/") - new_before, total, "{}", ctx());
        assert_eq!(
            rig.secondary.hits("/") - secondary_before,
            total,
            "{}",
            ctx()
        );
        assert_eq!(rig.secondary.hits(RANDOM) - randoms_before, randoms);
    }
    let took = started.elapsed();
    eprintln!(
        "{RUNS} offline replays of {total} requests ({randoms} slow on the secondary) in \
         {took:?}; peak in flight: new {}, secondary {}",
        rig.new.peak_in_flight(),
        rig.secondary.peak_in_flight()
    );
    // The secondary was the bottleneck: both its replay connections busy at
    // once, never more.
    assert_eq!(
        rig.secondary.peak_in_flight(),
        MAX,
        "secondary never saturated"
    );
    assert!(rig.new.peak_in_flight() <= MAX);
}

/// `parallelrun replay` of `pcap` in the server namespace, to the rig's
/// new service and secondary with `--max-in-flight max`; waits (bounded)
/// for it to finish, which it must do with success.
fn replay(rig: &Rig, pcap: &Path, run: usize, max: u64) -> Results {
    let log = rig.path(&format!("replay{run}.jsonl"));
    let stats = rig.path(&format!("replay{run}.stats.json"));
    let stderr_path = rig.path(&format!("replay{run}.stderr"));
    let mut cmd = rig.pair.server.command(agent::binary());
    cmd.args(["replay", "--pcap"])
        .arg(pcap)
        .args(["--old", &rig.old.addr.to_string(), "--new", NEW])
        .args([
            "--secondary",
            SECONDARY,
            "--max-in-flight",
            &max.to_string(),
        ])
        .arg("--log")
        .arg(&log)
        .arg("--stats-json")
        .arg(&stats)
        .arg("--no-metrics")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap());
    let mut proc = Proc::spawn("replay", &mut cmd)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_grace(Duration::ZERO);
    let status = proc.wait(Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    match status {
        Ok(st) if st.success() => {}
        Ok(st) => panic!("replay run {run} failed ({st}):\n{stderr}"),
        Err(e) => panic!("replay run {run}: {e}:\n{stderr}"),
    }
    Results::read(&log, &stats, &stderr)
}

/// Live, under load: six clients send `/random` as fast as the old
/// service answers, on keep-alive connections of 200 requests, for 3 s
/// (at most 12 000 requests): far beyond what two replays in flight to a
/// secondary that takes 50 ms each can follow. What gets capacity on both
/// targets is replayed to both and cancelled as noise; what cannot is
/// skipped as `overload`, never compared without the secondary: no
/// mismatch at all, nothing unchecked, every request accounted, both
/// targets received exactly the replayed requests, and the secondary's two
/// connections were busy at once (saturated), never more.
#[test]
fn live_load_with_a_saturated_secondary_reports_no_false_mismatch() {
    const CONNS: usize = 6;
    const PER_CONN: usize = 200;
    const MAX_ROUNDS: usize = 10;
    const LOAD_FOR: Duration = Duration::from_secs(3);
    const MAX: u64 = 2;
    let rig = Rig::start();
    let agent = rig.run(
        "load",
        &[
            "--max-in-flight",
            &MAX.to_string(),
            "--max-queue",
            "8",
            "--no-metrics",
        ],
    );
    let started = Instant::now();
    let mut total = 0;
    for _ in 0..MAX_ROUNDS {
        rig.clients(CONNS, |_| vec![RANDOM.to_owned(); PER_CONN]);
        total += (CONNS * PER_CONN) as u64;
        if started.elapsed() >= LOAD_FOR {
            break;
        }
    }
    let took = started.elapsed();
    assert_eq!(rig.old.hits(RANDOM), total);
    // The responses passed the agent's hook before the clients read them;
    // it drains its ring and the replays in flight when it stops.
    let r = stop(agent, &rig, "load");

    let replayed = r.n("/outcomes/replayed");
    eprintln!(
        "{total} requests in {took:?}: {replayed} replayed; peak in flight: new {}, secondary {}; \
         outcomes {}",
        rig.new.peak_in_flight(),
        rig.secondary.peak_in_flight(),
        r.stats.0["outcomes"]
    );
    let ctx = || format!("{:#}\nlog: {:#?}", r.stats.0, r.log);
    r.stats.assert_accounted();
    assert_eq!(r.n("/kernel/ringbuf_full_drops"), 0, "{}", ctx());
    assert_eq!(r.n("/requests_seen"), total, "{}", ctx());
    // No false mismatch, nothing compared without the secondary.
    assert!(r.log.is_empty(), "{}", ctx());
    assert_eq!(r.n("/outcomes/mismatched"), 0, "{}", ctx());
    assert_eq!(r.n("/outcomes/noise_unchecked"), 0, "{}", ctx());
    assert_eq!(r.n("/outcomes/secondary_errors"), 0, "{}", ctx());
    assert_eq!(r.n("/outcomes/replay_errors"), 0, "{}", ctx());
    // Every replayed request was compared with the secondary's answer and
    // its nonce cancelled as noise.
    assert!(replayed > 0, "{}", ctx());
    assert_eq!(r.n("/outcomes/noise"), replayed, "{}", ctx());
    assert_eq!(r.n("/outcomes/matched"), 0, "{}", ctx());
    // What could not get capacity was skipped as overload, and only that.
    assert!(
        replayed < total,
        "the load never exceeded capacity: {}",
        ctx()
    );
    assert_eq!(
        r.n("/outcomes/skipped/overload"),
        total - replayed,
        "{}",
        ctx()
    );
    assert_eq!(r.stats.sum("/outcomes/skipped"), total - replayed);
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{}", ctx());
    // Capacity on both targets or on neither.
    assert_eq!(rig.new.hits(RANDOM), replayed, "{}", ctx());
    assert_eq!(rig.secondary.hits(RANDOM), replayed, "{}", ctx());
    assert_eq!(
        rig.secondary.peak_in_flight(),
        MAX,
        "secondary never saturated"
    );
    assert!(rig.new.peak_in_flight() <= MAX);
    assert!(rig.new.peak_connections() <= MAX);
    assert!(rig.secondary.peak_connections() <= MAX);
}

/// Live, with a secondary that sometimes answers later than `--timeout`:
/// 1. it times out on the first 8 `/random`: nothing is known about the
///    endpoint yet, so each is a mismatch on the nonce whose event says
///    `"noise_unchecked": "secondary timeout"`, counted in
///    `outcomes.noise_unchecked`;
/// 2. it answers the next 25 in time: each is noise, and the endpoint's
///    statistics learn that the nonce differs between old instances;
/// 3. it times out on the last 40: the statistics, learnt from the answered
///    requests only, cancel the nonce: noise, not mismatches. (Had the
///    failed requests been learnt from, as "no noise seen", the nonce would
///    soon have been reported as a real difference.)
///
/// The mismatches are exactly the events with `noise_unchecked`; every
/// count adds up.
#[test]
fn live_unchecked_comparisons_are_flagged_and_teach_no_noise() {
    const MAX: &str = "4";
    const TIMEOUT: &str = "0.5";
    const LATE: Duration = Duration::from_secs(2);
    const UNCHECKED: u64 = 8;
    const ANSWERED: u64 = 25;
    const LEARNT: u64 = 40;
    let total = UNCHECKED + ANSWERED + LEARNT;
    let rig = Rig::start();
    let agent = rig.run(
        "unchecked",
        &[
            "--max-in-flight",
            MAX,
            "--timeout",
            TIMEOUT,
            "--metrics",
            METRICS,
        ],
    );
    let send = |n: u64| rig.clients(1, |_| vec![RANDOM.to_owned(); n as usize]);
    let judged = || metrics_sum(&rig, &["matched_total", "mismatched_total", "noise_total"]);
    let bound = Duration::from_secs(30);

    // 1. Before any answer from the secondary.
    rig.secondary.set_delay(RANDOM, LATE);
    send(UNCHECKED);
    faults::wait_until(bound, "the first requests to be judged", || {
        judged() == Some(UNCHECKED)
    });
    assert_eq!(
        metrics_sum(&rig, &["noise_unchecked_total"]).unwrap(),
        UNCHECKED
    );
    // 2. The secondary answers in time again.
    rig.secondary.set_delay(RANDOM, SLOW);
    send(ANSWERED);
    faults::wait_until(bound, "the answered requests to be judged", || {
        judged() == Some(UNCHECKED + ANSWERED)
    });
    // 3. Late again, after the endpoint's statistics have learnt.
    rig.secondary.set_delay(RANDOM, LATE);
    send(LEARNT);
    faults::wait_until(bound, "the last requests to be judged", || {
        judged() == Some(total)
    });
    let r = stop(agent, &rig, "unchecked");

    let ctx = || format!("{:#}\nlog: {:#?}", r.stats.0, r.log);
    r.stats.assert_accounted();
    assert_eq!(r.n("/kernel/ringbuf_full_drops"), 0, "{}", ctx());
    assert_eq!(r.n("/requests_seen"), total, "{}", ctx());
    assert_eq!(r.n("/outcomes/replayed"), total, "{}", ctx());
    assert_eq!(r.n("/outcomes/replay_errors"), 0, "{}", ctx());
    assert_eq!(r.stats.sum("/outcomes/skipped"), 0, "{}", ctx());
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{}", ctx());
    // Every late answer was a failed replay to the secondary.
    assert_eq!(
        r.n("/outcomes/secondary_errors"),
        UNCHECKED + LEARNT,
        "{}",
        ctx()
    );
    // Only the comparisons made before anything was learnt are unchecked
    // mismatches; the rest are noise.
    assert_eq!(r.n("/outcomes/mismatched"), UNCHECKED, "{}", ctx());
    assert_eq!(r.n("/outcomes/noise_unchecked"), UNCHECKED, "{}", ctx());
    assert_eq!(r.n("/outcomes/noise"), ANSWERED + LEARNT, "{}", ctx());
    assert_eq!(r.n("/outcomes/matched"), 0, "{}", ctx());
    // The mismatches are exactly the events flagged unchecked, each on the
    // nonce, with no secondary answer to show.
    let mismatches: Vec<&Value> = r.log.iter().filter(|e| e["kind"] == "mismatch").collect();
    assert_eq!(mismatches.len(), r.log.len(), "{}", ctx());
    assert_eq!(mismatches.len() as u64, UNCHECKED, "{}", ctx());
    for ev in mismatches {
        assert_eq!(ev["noise_unchecked"], "secondary timeout", "{ev:#}");
        assert_eq!(ev["target"], RANDOM, "{ev:#}");
        assert!(only_difference(ev, "body:/nonce"), "{ev:#}");
        assert!(ev["secondary"].is_null(), "{ev:#}");
        assert_eq!(ev["new"]["status"], 200, "{ev:#}");
    }
    // Both targets got every request.
    assert_eq!(rig.new.hits(RANDOM), total, "{}", ctx());
    assert_eq!(rig.secondary.hits(RANDOM), total, "{}", ctx());
}

/// The slow instance itself (no agent): answers under the delayed prefix
/// come late, others at once; concurrent requests are counted while they
/// wait; a delay set back to zero is gone. So a failure above is the
/// agent's, not the fixture's.
#[test]
fn slow_instance_answers_late_and_counts_in_flight() {
    const DELAY: Duration = Duration::from_millis(300);
    require_root();
    let ns = parallelrun_tests::netns::Netns::new("prn");
    let app = App::start(&ns, "127.0.0.1:0".parse().unwrap(), Flavor::Old);
    app.set_delay(RANDOM, DELAY);
    let addr = app.addr;
    let timed = move |paths: &'static [&'static str]| {
        let started = Instant::now();
        let lens = client::keep_alive(addr, paths).body_lens;
        assert!(lens.iter().all(|&l| l > 0), "{paths:?}: {lens:?}");
        started.elapsed()
    };
    let fast = ns.run(move || timed(&["/users/1", "/same/x"]));
    assert!(fast < DELAY, "undelayed paths took {fast:?}");
    // Three connections at once, each waiting on the delayed path.
    let handles: Vec<_> = (0..3).map(|_| ns.spawn(move || timed(&[RANDOM]))).collect();
    for h in handles {
        let took = h.join().unwrap();
        assert!(took >= DELAY, "a delayed answer took {took:?}");
    }
    assert_eq!(app.peak_in_flight(), 3);
    assert_eq!((app.hits(RANDOM), app.answered(RANDOM)), (3, 3));
    assert_eq!(app.answered("/"), 5);
    app.set_delay(RANDOM, Duration::ZERO);
    let again = ns.run(move || timed(&[RANDOM]));
    assert!(again < DELAY, "the delay was not lifted: {again:?}");
}
