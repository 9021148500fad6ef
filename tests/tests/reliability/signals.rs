//! Signals: SIGTERM is a clean stop, also with replays in flight.

use std::{
    thread,
    time::{Duration, Instant},
};

use parallelrun_tests::{
    agent::attached,
    app::{App, Flavor},
    faults::{self, FaultServer, Reply},
};

use crate::fixture::{Env, NEW, assert_user};

/// SIGTERM is a clean stop: the agent finishes what it captured, prints its
/// final summary on stderr, exits 0, and its TC programs are gone from the
/// interface (the TCX links die with it; nothing is left behind).
#[test]
fn sigterm_detaches_cleanly_with_a_final_summary() {
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let _new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::Old);
    assert_eq!(attached(&env.pair.server, &env.pair.server_if), [0, 0]);
    let run = env.run("term", old.addr, &[]);
    assert_eq!(
        attached(&env.pair.server, &env.pair.server_if),
        [1, 1],
        "not attached on ingress and egress"
    );
    let addr = old.addr;
    let replies = env.client(move || {
        let paths: Vec<String> = (0..10).map(|i| format!("/users/{i}")).collect();
        faults::timed_gets(addr, &paths).1
    });
    for (i, r) in replies.iter().enumerate() {
        assert_user(r, i as u64);
    }
    let d = run.stop();

    assert_eq!(
        attached(&env.pair.server, &env.pair.server_if),
        [0, 0],
        "programs left attached after SIGTERM"
    );
    assert!(
        d.stderr.contains("SIGTERM"),
        "no stop reason:\n{}",
        d.stderr
    );
    assert!(
        d.stderr.contains("parallelrun: 10 requests seen in") && d.stderr.contains("10 matched"),
        "no final summary on stderr:\n{}",
        d.stderr
    );
    assert!(d.stderr.contains("mismatch log:"), "{}", d.stderr);
    d.stats.assert_accounted();
    assert_eq!(d.stats.n("/requests_seen"), 10);
    assert_eq!(d.stats.n("/outcomes/matched"), 10);
}

/// SIGTERM while replays are still waiting on a slow new service: the stop
/// is bounded (`--timeout` + 1 s of draining), the replays that did not
/// finish are counted as replay errors, and the agent still exits 0 with
/// every request accounted for.
#[test]
fn sigterm_with_replays_in_flight_stops_in_bounded_time() {
    const N: u64 = 16;
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let _stuck = FaultServer::start(&env.pair.server, NEW.parse().unwrap(), |_| {
        Reply::After(Duration::from_secs(30), Box::new(Reply::Reset))
    });
    let run = env.run(
        "inflight",
        old.addr,
        &[
            "--timeout",
            "2",
            "--max-in-flight",
            "4",
            "--max-queue",
            "64",
        ],
    );
    let addr = old.addr;
    let replies = env.client(move || {
        let paths: Vec<String> = (0..N).map(|i| format!("/users/{i}")).collect();
        faults::timed_gets(addr, &paths).1
    });
    for (i, r) in replies.iter().enumerate() {
        assert_user(r, i as u64);
    }
    thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    let d = run.stop();
    let took = stopping.elapsed();

    eprintln!(
        "stopped in {took:?} with replays in flight; {}",
        d.stats.0["outcomes"]
    );
    // --timeout 2 + 1 s of draining, and a margin for a loaded machine;
    // far less than the 30 s the new service would hold the replays.
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    d.stats.assert_accounted();
    assert_eq!(d.stats.n("/requests_seen"), N, "{:#}", d.stats.0);
    assert_eq!(d.stats.n("/outcomes/replay_errors"), N, "{:#}", d.stats.0);
}
