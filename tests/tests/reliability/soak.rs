//! Soak.

use std::{
    thread,
    time::{Duration, Instant},
};

use parallelrun_tests::{
    app::{App, Flavor},
    faults,
};

use crate::fixture::{Env, NEW, SECONDARY};

/// Steady traffic for `SOAK_SECS` seconds (default 1800): a mix of JSON,
/// chunked, gzip, 1 MiB and mismatching responses on keep-alive and short
/// connections. Prints the agent's RSS at the start and the end (and every
/// minute); memory must not grow without bound (end RSS under 2x the RSS
/// after the first minute + 64 MiB) and the accounting must hold. See the
/// module docs for the command.
#[test]
#[ignore = "soak: long-running, run by hand"]
fn soak() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let _new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::New);
    let _secondary = App::start(&env.pair.server, SECONDARY.parse().unwrap(), Flavor::Old);
    let run = env.run(
        "soak",
        old.addr,
        &[
            "--secondary",
            SECONDARY,
            "--log-max-size",
            "10MiB",
            "--log-keep",
            "2",
        ],
    );
    let pid = run.pid();
    let start_rss = faults::rss_mib(pid);
    eprintln!("soak: {secs} s; agent RSS at start {start_rss} MiB");
    let addr = old.addr;
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            env.pair.client.spawn(move || {
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    let paths: Vec<String> = (0..50)
                        .map(|i| match i % 10 {
                            0 => "/chunked".to_owned(),
                            1 => "/gzip".to_owned(),
                            2 => "/users/7".to_owned(),
                            3 => "/random".to_owned(),
                            4 if i == 4 && w == 0 => "/big".to_owned(),
                            _ => format!("/users/{}", n + i),
                        })
                        .collect();
                    n += faults::timed_gets(addr, &paths).0.len() as u64;
                    n += u64::from(faults::get_once(addr, "/same/x").0 == 200);
                    thread::sleep(Duration::from_millis(20));
                }
                n
            })
        })
        .collect();
    let mut after_first_minute = None;
    while Instant::now() < stop_at {
        thread::sleep(Duration::from_secs(60).min(stop_at - Instant::now()));
        let rss = faults::rss_mib(pid);
        after_first_minute.get_or_insert(rss);
        eprintln!("soak: agent RSS {rss} MiB");
    }
    let sent: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let end_rss = faults::rss_mib(pid);
    let peak = faults::peak_rss_mib(pid);
    let d = run.stop();
    eprintln!(
        "soak: {sent} requests; agent RSS start {start_rss} MiB, end {end_rss} MiB, \
         peak {peak} MiB; {}",
        d.stats.0["outcomes"]
    );
    d.stats.assert_accounted();
    let base = after_first_minute.unwrap_or(start_rss);
    assert!(
        end_rss < 2 * base + 64,
        "RSS grew from {base} MiB to {end_rss} MiB"
    );
    assert_eq!(old.hits("/"), sent);
}
