//! A slow, then resetting, then healthy new service.

use std::{thread, time::Duration};

use parallelrun_tests::{
    app::{App, Flavor},
    faults::{self, FaultServer, Reply, response},
};

use crate::fixture::{Env, NEW, timed_load};

/// The new service answers after 2 s, then resets every connection, then
/// is down (refuses connections), then recovers. Meanwhile the old
/// service's clients see no slowdown beyond noise (p99 under 2x the
/// no-agent baseline + 50 ms); the agent counts timeouts, resets and
/// refusals as replay errors, the excess as overload, and once its breaker
/// opens skips as `new_down`; its memory stays bounded; and once the new
/// service is healthy again the breaker's probe gets through and replays
/// match again.
#[test]
fn slow_and_resetting_new_service_never_slows_production() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 150;
    // About 400 requests/s in all, for about 1.5 s per phase.
    const PACE: Duration = Duration::from_millis(10);
    let env = Env::alone();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let p99 = |mut t: Vec<Duration>| faults::percentile(&mut t, 99.0);
    let load = || timed_load(&env, old.addr, THREADS, PER_THREAD, PACE);

    let baseline = p99(load());
    let bound = baseline * 2 + Duration::from_millis(50);

    let user_json = |target: &str| {
        let n: u64 = target
            .strip_prefix("/users/")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        serde_json::to_vec(&serde_json::json!({
            "id": n, "name": format!("user {n}"), "plan": "basic", "tags": ["a", "b"],
        }))
        .unwrap()
    };
    let slow = FaultServer::start(&env.pair.server, NEW.parse().unwrap(), move |req| {
        let body = user_json(req.map_or("", |r| r.target.as_str()));
        let ok = response(200, &[("Content-Type", b"application/json")], &body);
        Reply::After(Duration::from_secs(2), Box::new(Reply::Bytes(ok)))
    });
    let run = env.run(
        "slow",
        old.addr,
        &[
            "--max-in-flight",
            "4",
            "--max-queue",
            "16",
            "--timeout",
            "1",
        ],
    );
    let with_slow = p99(load());
    // The replays in flight reach their 1 s timeout.
    thread::sleep(Duration::from_millis(1500));
    assert!(slow.hits("/") > 0, "nothing replayed to the slow service");
    drop(slow);

    let resetting = FaultServer::start(&env.pair.server, NEW.parse().unwrap(), |_| Reply::Reset);
    let with_resets = p99(load());
    thread::sleep(Duration::from_millis(300));
    assert!(
        resetting.accepted() > 0,
        "nothing replayed to the resetting service"
    );
    drop(resetting);

    // Down: connections refused; after 5 in a row the breaker pauses
    // replays (skipped as new_down) and probes once a second.
    let with_down = p99(load());

    // Healthy again: the probe gets through, replays resume and match.
    let healthy = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::Old);
    let addr = old.addr;
    faults::wait_until(
        Duration::from_secs(15),
        "a replay to the healthy service",
        || {
            env.client(move || faults::get_once(addr, "/users/1"));
            thread::sleep(Duration::from_millis(200));
            healthy.hits("/") > 0
        },
    );
    // Paced, so that a burst cannot overflow the small replay queue of this run.
    let after = timed_load(&env, old.addr, 1, 20, Duration::from_millis(20));
    let peak = faults::peak_rss_mib(run.pid());
    let d = run.stop();

    eprintln!(
        "p99 latency of the old service: baseline {baseline:?}, new slow {with_slow:?}, \
         new resetting {with_resets:?}, new down {with_down:?}, after recovery {:?}; \
         agent peak RSS {peak} MiB; {}",
        after.iter().max().unwrap(),
        d.stats.0["outcomes"]
    );
    assert!(
        with_slow <= bound,
        "slow new service: p99 {with_slow:?} > {bound:?}"
    );
    assert!(
        with_resets <= bound,
        "resetting new service: p99 {with_resets:?} > {bound:?}"
    );
    assert!(
        with_down <= bound,
        "new service down: p99 {with_down:?} > {bound:?}"
    );
    assert!(peak < 200, "agent peak RSS {peak} MiB");
    d.stats.assert_accounted();
    let s = &d.stats;
    assert!(s.n("/outcomes/replay_errors") > 0, "{:#}", s.0);
    assert!(s.n("/outcomes/skipped/overload") > 0, "{:#}", s.0);
    assert!(s.n("/outcomes/skipped/new_down") > 0, "{:#}", s.0);
    assert!(
        s.n("/outcomes/matched") >= 20,
        "replays did not match again after recovery: {:#}",
        s.0
    );
    let errors: Vec<&str> = d
        .events("replay_error")
        .iter()
        .filter_map(|e| e["error"].as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("timeout")),
        "no timeout among {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("closed") || e.contains("reset")),
        "no reset among {errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("cannot connect")),
        "no refused connection among {errors:?}"
    );
    assert_eq!(d.stats.n("/outcomes/mismatched"), 0, "{:#?}", d.log);
}
