//! CPU priority: production first. A live agent runs every one of its
//! threads under SCHED_IDLE unless told `--priority normal`, so that the
//! old service always preempts it (README "Performance" has the numbers).

use parallelrun_tests::{
    app::{App, Flavor},
    faults,
};

use crate::fixture::{Env, NEW, assert_user};

/// `SCHED_IDLE` in `/proc/*/stat`'s `policy` field.
const SCHED_IDLE: u64 = 5;

/// Field 41 (`policy`) of a `/proc/.../stat` file, counted from the last
/// `)` (the command name may hold spaces).
fn policy(stat_path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(41 - 3)?.parse().ok()
}

/// Every thread of process `pid` with its policy.
fn thread_policies(pid: i32) -> Vec<(String, u64)> {
    let dir = format!("/proc/{pid}/task");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| {
            let tid = e.ok()?.file_name().into_string().ok()?;
            Some((tid.clone(), policy(&format!("{dir}/{tid}/stat"))?))
        })
        .collect()
}

/// Runs the agent with `extra`, has it compare a few requests (so the
/// runtime's threads have all been at work), and returns the policies of
/// its threads and its stderr.
fn agent_threads(name: &str, extra: &[&str]) -> (Vec<(String, u64)>, String) {
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let _new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::Old);
    let run = env.run(name, old.addr, extra);
    let addr = old.addr;
    let replies = env.client(move || {
        let paths: Vec<String> = (0..5).map(|i| format!("/users/{i}")).collect();
        faults::timed_gets(addr, &paths).1
    });
    for (i, r) in replies.iter().enumerate() {
        assert_user(r, i as u64);
    }
    // Let the replays finish before looking.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let threads = thread_policies(run.pid());
    let d = run.stop();
    d.stats.assert_accounted();
    assert_eq!(d.stats.n("/outcomes/matched"), 5, "{}", d.stderr);
    (threads, d.stderr)
}

/// By default every thread of a running agent (main thread, runtime
/// workers, blocking pool) is SCHED_IDLE, and the agent says so.
#[test]
fn agent_threads_are_sched_idle_by_default() {
    let (threads, stderr) = agent_threads("idle", &[]);
    // The main thread and the runtime's two workers at least.
    assert!(threads.len() >= 3, "{threads:?}");
    assert!(
        threads.iter().all(|(_, p)| *p == SCHED_IDLE),
        "threads not SCHED_IDLE (tid, policy): {threads:?}"
    );
    assert!(
        stderr.contains("CPU priority: idle (SCHED_IDLE on every thread)"),
        "no priority line:\n{stderr}"
    );
}

/// With `--priority normal` the agent keeps the scheduling it was started
/// with: its parent's (this test thread's), on every thread.
#[test]
fn priority_normal_keeps_the_policy_it_was_started_with() {
    let started_with = policy("/proc/thread-self/stat").expect("own policy");
    let (threads, stderr) = agent_threads("normal", &["--priority", "normal"]);
    assert!(threads.len() >= 3, "{threads:?}");
    assert!(
        threads.iter().all(|(_, p)| *p == started_with),
        "threads not at policy {started_with} (tid, policy): {threads:?}"
    );
    assert!(
        stderr.contains("CPU priority: normal"),
        "no priority line:\n{stderr}"
    );
}
