//! The mismatch log cannot be written.

use std::{thread, time::Duration};

use parallelrun_tests::{
    app::{App, Flavor},
    faults,
};

use crate::fixture::{Env, NEW};

/// A log on a full disk (`/dev/full`: every write fails with ENOSPC) costs
/// the log lines, nothing else: the agent keeps capturing, replaying and
/// counting, counts each lost line in `log_errors`, warns once, and stops
/// cleanly.
#[test]
fn full_disk_for_the_log_loses_only_log_lines() {
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let _new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::New);
    let run = env.run("full", old.addr, &["--log", "/dev/full"]);
    let addr = old.addr;
    // Two rounds: the agent goes on after the first failures.
    for round in 0..2 {
        let replies = env.client(move || {
            let paths: Vec<String> = (0..5)
                .flat_map(|i| [format!("/users/{}", 100 * round + i), "/users/7".into()])
                .chain(["/status".into(), "/version".into()])
                .collect();
            faults::timed_gets(addr, &paths).1
        });
        assert_eq!(replies.len(), 12);
        thread::sleep(Duration::from_millis(500));
    }
    let d = run.stop();

    d.stats.assert_accounted();
    let s = &d.stats;
    assert_eq!(s.n("/requests_seen"), 24, "{:#}", s.0);
    assert_eq!(s.n("/outcomes/matched"), 10, "{:#}", s.0);
    // /users/7 x5, /status, /version per round.
    assert_eq!(s.n("/outcomes/mismatched"), 14, "{:#}", s.0);
    assert_eq!(s.n("/outcomes/log_errors"), 14, "{:#}", s.0);
    assert!(
        d.stderr.contains("cannot write the mismatch log"),
        "no warning:\n{}",
        d.stderr
    );
    assert_eq!(
        d.stderr.matches("cannot write the mismatch log").count(),
        1,
        "the warning is not rate-limited:\n{}",
        d.stderr
    );
    assert!(
        d.stderr.contains("14 events could not be written"),
        "{}",
        d.stderr
    );
}
