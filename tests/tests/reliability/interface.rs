//! The interface disappears.

use std::{
    thread,
    time::{Duration, Instant},
};

use parallelrun_sandbox::is_gone;
use parallelrun_tests::{
    agent::Agent,
    app::{App, Flavor},
    faults,
};

use crate::fixture::{Env, NEW};

/// Deleting the interface the agent is attached to stops it within a few
/// seconds with a clear message and a non-zero exit; the summary and the
/// final counters of what it saw until then are still written.
#[test]
fn interface_removed_while_attached_stops_the_agent() {
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let _new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::Old);
    let mut run = env.run("gone", old.addr, &[]);
    let addr = old.addr;
    env.client(move || faults::timed_gets(addr, &["/users/1".into(), "/users/2".into()]));
    thread::sleep(Duration::from_millis(300));
    env.pair.server.ip(&["link", "del", &env.pair.server_if]);
    let deleted = Instant::now();
    // Signal 0: nothing is sent, only the exit is awaited.
    let status = run.agent.stop_with(0);
    let took = deleted.elapsed();
    let d = run.done();

    assert!(!status.success(), "agent exited 0:\n{}", d.stderr);
    assert!(took < Duration::from_secs(5), "took {took:?} to notice");
    assert!(
        d.stderr.contains("was removed"),
        "no clear message:\n{}",
        d.stderr
    );
    d.stats.assert_accounted();
    assert_eq!(d.stats.n("/requests_seen"), 2, "{:#}", d.stats.0);
}

/// `record` and `exchanges` attach like `run`: when their interface is
/// deleted they must stop too (with the same message and a non-zero exit)
/// rather than run on, capturing nothing, until someone notices.
#[test]
fn interface_removed_stops_record_and_exchanges_too() {
    for command in ["record", "exchanges"] {
        let env = Env::new();
        let out = env.dir.path().join("out");
        let out = out.to_str().unwrap();
        let args: &[&str] = match command {
            "record" => &["record", "--discard"],
            _ => &["exchanges", "--out", out],
        };
        let mut args = args.to_vec();
        args.extend(["--iface", &env.pair.server_if, "--old", ":8080"]);
        let mut agent = Agent::start(&env.pair.server, &args);
        env.pair.server.ip(&["link", "del", &env.pair.server_if]);
        let deleted = Instant::now();
        while !is_gone(agent.pid()) && deleted.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(50));
        }
        let gone = is_gone(agent.pid());
        let status = agent.stop_with(libc::SIGTERM);
        let stderr = agent.stderr();
        assert!(
            gone,
            "{command} still running 5 s after its interface was removed:\n{stderr}"
        );
        assert!(!status.success(), "{command} exited 0:\n{stderr}");
        assert!(stderr.contains("was removed"), "{command}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{command}:\n{stderr}");
    }
}
