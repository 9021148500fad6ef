//! NATS stopped in the middle of a run: the agent keeps comparing, buffers
//! within its bound, counts what it drops, and publishes the rest when
//! NATS returns; nothing is stored twice.

use std::{collections::BTreeSet, thread, time::Duration};

use parallelrun_tests::app::fetch;

use super::{NEW, REPLICAS, Rig, json, log_lines, nats_stats, numbered, repeat, stop};

const BUFFER: u64 = 20;
const METRICS: &str = "127.0.0.1:9464";

#[test]
fn nats_away_mid_run_buffers_drops_counted_and_publishes_the_rest_once() {
    let mut rig = Rig::start();
    let url = rig.nats.url();
    let buffer = BUFFER.to_string();
    let agent = rig.agent(
        "node",
        &[REPLICAS[0]],
        &[
            "--nats",
            &url,
            "--node",
            "edge-1",
            "--nats-buffer",
            &buffer,
            "--metrics",
            METRICS,
        ],
    );
    // Before: 10 mismatches, published at once.
    rig.traffic(0, &repeat("/status", 10));
    let published_before = wait_for(|| {
        let c = parallelrun_tests::nats::contents(&rig.pair.server, &url, "PARALLELRUN");
        (c.count("parallelrun.mismatch.") == 10).then_some(())
    });
    assert!(
        published_before.is_some(),
        "the first events never reached NATS"
    );

    // NATS dies; 100 more mismatches and 50 matches arrive meanwhile, far
    // over the buffer's 20 messages.
    rig.nats.kill();
    rig.traffic(
        0,
        &[repeat("/status", 100), numbered("/users/", 100, 50)].concat(),
    );
    thread::sleep(Duration::from_secs(2));
    // Meanwhile, Prometheus sees the buffer full (at its bound) and drops.
    let during = scrape(&rig);
    assert_eq!(
        metric(&during, "parallelrun_nats_buffered"),
        BUFFER,
        "{during}"
    );
    assert!(
        metric(&during, "parallelrun_nats_dropped_total") > 0,
        "{during}"
    );
    // NATS comes back on the same port and store; later traffic too.
    rig.nats.restart(&rig.pair.server);
    rig.traffic(0, &repeat("/status", 5));
    thread::sleep(Duration::from_secs(3));
    let after = scrape(&rig);
    assert_eq!(metric(&after, "parallelrun_nats_buffered"), 0, "{after}");
    let log = agent.stderr();
    assert!(log.contains("NATS went away"), "{log}");
    assert!(log.contains("publishing to NATS again"), "{log}");
    let stats = stop(agent, &rig, "node");

    // The agent compared everything it was sent, NATS or not.
    let sent = 10 + 100 + 50 + 5;
    assert_eq!(stats.n("/requests_seen"), sent);
    let compared =
        stats.n("/outcomes/matched") + stats.n("/outcomes/mismatched") + stats.n("/outcomes/noise");
    assert_eq!(compared, sent);
    assert_eq!(log_lines(&rig.path("node.jsonl")), 115);

    let n = nats_stats(&stats);
    eprintln!("NATS counters after the outage: {n}");
    let (published, dropped) = (
        n["published"].as_u64().unwrap(),
        n["dropped"].as_u64().unwrap(),
    );
    assert!(n["max_buffered"].as_u64().unwrap() <= BUFFER, "{n}");
    assert!(dropped > 0, "the buffer never overflowed: {n}");
    assert!(n["errors"].as_u64().unwrap() > 0, "{n}");
    assert_eq!(n["buffered"], 0, "{n}");

    // The stream holds each published result once: as many as were
    // acknowledged (events waiting together share a message), no id
    // twice, and every event not dropped.
    let c = parallelrun_tests::nats::contents(&rig.pair.server, &url, "PARALLELRUN");
    let stored: u64 = c.by_subject.values().sum();
    assert_eq!(stored, published, "{c:?} {n}");
    let ids: BTreeSet<&String> = c.ids.iter().collect();
    assert_eq!(ids.len(), c.ids.len(), "an id stored twice: {c:?}");
    assert!(c.ids.iter().all(|id| id.starts_with("edge-1:")), "{c:?}");
    let events = c.count("parallelrun.mismatch.default.edge-1");
    assert!((10 + 5..115).contains(&events), "{events} events: {n}");
    // The final summary made it: a fleet of one reads the whole run.
    let out = rig.parallelrun(&["report", "--json", "--nats", &url]);
    assert!(out.status.success(), "{out:?}");
    let fleet = json(&out);
    assert_eq!(fleet["totals"]["seen"], sent, "{fleet:#}");
    assert_eq!(fleet["sources"][0]["finished"], true, "{fleet:#}");
}

/// NATS unreachable from the start: the run starts, compares everything,
/// counts every message as dropped and exits cleanly; a malformed URL is
/// a flag error.
#[test]
fn nats_unreachable_at_start_the_run_goes_on_and_counts_every_drop() {
    let rig = Rig::start();
    // Nothing listens on this port.
    let url = "nats://127.0.0.1:4299";
    let agent = rig.agent(
        "lonely",
        &[REPLICAS[1]],
        &["--nats", url, "--nats-buffer", "5"],
    );
    rig.traffic(
        1,
        &[repeat("/status", 8), numbered("/users/", 1, 12)].concat(),
    );
    // The first attempt gives up after 2 s.
    thread::sleep(Duration::from_secs(3));
    let log = agent.stderr();
    assert!(log.contains("cannot publish to NATS"), "{log}");
    let stats = stop(agent, &rig, "lonely");
    assert_eq!(
        stats.n("/outcomes/matched") + stats.n("/outcomes/mismatched"),
        20
    );
    let n = nats_stats(&stats);
    assert_eq!(n["published"], 0, "{n}");
    // 8 events and at least the final summary, none published.
    assert!(n["dropped"].as_u64().unwrap() >= 9, "{n}");
    assert!(n["max_buffered"].as_u64().unwrap() <= 5, "{n}");

    let out = rig.parallelrun(&[
        "run",
        "--iface",
        "lo",
        "--old",
        ":1",
        "--new",
        NEW,
        "--nats",
        "nats://host:port",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--nats") && err.contains("nats://127.0.0.1:4222"),
        "{err}"
    );
}

/// The agent's `/metrics` page.
fn scrape(rig: &Rig) -> String {
    let addr = METRICS.parse().unwrap();
    let replies = rig
        .pair
        .server
        .run(move || fetch(addr, &[("GET", "/metrics", b"")]));
    String::from_utf8_lossy(&replies[0].body).into_owned()
}

/// The value of the unlabelled series `name` on a metrics page.
fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {page}"))
}

/// Polls `f` every 100 ms for up to 10 s.
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..100 {
        if let Some(v) = f() {
            return Some(v);
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}
