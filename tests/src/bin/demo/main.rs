//! `parallelrun-demo` (run by `cargo xtask demo`): parallelrun end to end on
//! this machine, with nothing to prepare.
//!
//! It makes two network namespaces joined by a veth pair. In the server one:
//! the sample service's OLD version on the veth address (`:8080`), its NEW
//! version (with deliberate differences, see [`parallelrun_tests::app`]) on
//! `127.0.0.1:9090` and a SECONDARY old instance on `127.0.0.1:9091`, and the
//! agent attached to the veth. Keep-alive clients in the other namespace use
//! the old service for `--duration` seconds while `parallelrun tail` shows
//! the mismatch log live. At the end come the agent's summary, the
//! per-endpoint report (`parallelrun report`, also written as an HTML page
//! that stays after the demo) and a verdict: were the deliberate
//! differences reported, the noise suppressed, the POST left alone? The
//! exit status says whether the verdict is right.
//!
//! Everything it makes (namespaces, veths, services, child processes, the
//! temporary directory) is owned by a value that removes it on drop, and
//! SIGINT, SIGTERM and SIGHUP only set a flag, so an interrupted demo also
//! stops its children and cleans up before it exits. The work runs in a
//! child process in its own process group, so that a Ctrl-C reaches the
//! demo alone and not the commands and children it runs (see [`supervise`]).
//!
//! Its parts: [`supervise`] (the worker process, signals, cleanup checks),
//! [`traffic`] (the clients), [`verdict`] (what the agent's log, counters and
//! summary say) and [`output`] (the terminal, and `parallelrun tail`).

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

mod output;
mod supervise;
mod traffic;
mod verdict;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use clap::Parser;
use parallelrun_sandbox::{is_gone, signal};
use parallelrun_tests::{
    agent::Agent,
    app::{App, Flavor},
    netns::{Family, Pair},
};

use crate::{
    output::{Ui, indent, item, stopped_early, wrap_command},
    supervise::Made,
    traffic::{CLIENTS, Traffic},
    verdict::{
        Check, Hits, agent_summary, agent_warnings, read_log, read_stats, report_check, verdict,
    },
};

/// Where the new version and the secondary listen, inside the server
/// namespace: replays cross its `lo`, which the agent does not watch.
const NEW: &str = "127.0.0.1:9090";
const SECONDARY: &str = "127.0.0.1:9091";
const OLD_PORT: u16 = 8080;
/// The traffic stops this long before the agent does, so that every request
/// sent is complete when the agent detaches.
const QUIET_END: Duration = Duration::from_secs(1);
/// Seconds between progress lines.
const PROGRESS_EVERY: u64 = 5;

/// The new version's deliberate differences: target, and the `where`s the
/// agent must report for it.
const EXPECTED: [(&str, &[&str]); 4] = [
    ("/users/7", &["body:/plan"]),
    ("/status", &["status", "body"]),
    ("/version", &["header:x-version"]),
    ("/gzip", &["body:/items/2"]),
];
/// A per-response nonce: differs between any two responses, also between
/// the old service and its secondary, so it must be cancelled as noise.
const NOISE: &str = "/random";
/// Has side effects: must never be replayed.
const POST: &str = "/orders";

#[derive(Parser)]
#[command(
    name = "parallelrun-demo",
    about = "parallelrun end to end, in throwaway network namespaces: a sample service, \
             a new version with deliberate differences, live traffic, the mismatch log \
             and a verdict. Needs root (`cargo xtask demo` builds and runs it)."
)]
struct Args {
    /// Seconds to run the agent (traffic stops a second earlier).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(3..=3600))]
    duration: u64,
    /// The `parallelrun` binary [default: $PARALLELRUN_BIN, else
    /// target/debug/parallelrun of this workspace].
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// Where to write the HTML report (kept after the demo) [default:
    /// target/parallelrun-demo-report.html of this workspace].
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Internal: be the process that does the work (see `supervise`).
    #[arg(long, hide = true)]
    worker: bool,
}

impl Args {
    fn html(&self) -> PathBuf {
        self.html.clone().unwrap_or_else(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
            workspace
                .parent()
                .unwrap_or(workspace)
                .join("target/parallelrun-demo-report.html")
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.worker {
        return supervise::worker(&args);
    }
    if !parallelrun_sandbox::is_root() {
        eprintln!(
            "parallelrun-demo needs root: it creates network namespaces and attaches an eBPF \
             program. Run it with `cargo xtask demo` (which uses sudo when needed) or as root."
        );
        return ExitCode::from(2);
    }
    let agent = args.agent.clone().unwrap_or_else(|| {
        std::env::var_os("PARALLELRUN_BIN").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/parallelrun"),
            PathBuf::from,
        )
    });
    if !agent.is_file() {
        eprintln!(
            "parallelrun-demo: the agent binary {} does not exist: build it with \
             `cargo build -p parallelrun-agent`, or run `cargo xtask demo`, which does",
            agent.display()
        );
        return ExitCode::from(2);
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!(
            "parallelrun-demo: the `ip` command (iproute2) is missing; `cargo xtask setup` \
             installs it"
        );
        return ExitCode::from(2);
    }
    supervise::supervise(args.duration, &agent)
}

/// How the demo ended.
enum Outcome {
    /// The verdict is what the sample service's differences call for.
    Passed,
    /// It is not (or the agent failed).
    Failed,
    /// Stopped early by this signal: no verdict.
    Interrupted(i32),
}

pub(crate) fn run(args: &Args, agent_bin: &Path, ui: &Ui, made: &mut Made) -> Outcome {
    let secs = args.duration;
    println!(
        "{}",
        ui.bold(format!(
            "parallelrun demo: {secs} s of live traffic, shadowed to a new version"
        ))
    );
    println!(
        "{}",
        ui.dim("Everything below runs in throwaway network namespaces and is removed at the end.")
    );
    println!();

    // Locals drop in reverse order: the children and the traffic stop
    // first, then the services, then the files, then the namespaces.
    let pair = Pair::new(Family::V4);
    made.namespaces = vec![pair.server.name.clone(), pair.client.name.clone()];
    item(
        ui,
        "network",
        format!(
            "namespaces {} (services), {} (clients); veth {} ↔ {}",
            pair.server.name, pair.client.name, pair.server_if, pair.client_if
        ),
    );
    if let Some(sig) = signal::received() {
        return stopped_early(ui, sig);
    }
    let dir = tempfile::Builder::new()
        .prefix("parallelrun-demo.")
        .tempdir()
        .expect("cannot create a temporary directory");
    let log = dir.path().join("mismatches.jsonl");
    let stats = dir.path().join("stats.json");
    let summary_file = dir.path().join("summary.json");

    let old_addr = SocketAddr::new(pair.server_ip, OLD_PORT);
    let old = App::start(&pair.server, old_addr, Flavor::Old);
    let new = App::start(&pair.server, NEW.parse().unwrap(), Flavor::New);
    let secondary = App::start(&pair.server, SECONDARY.parse().unwrap(), Flavor::Old);
    item(
        ui,
        "OLD",
        format!("{old_addr:<16} version 1 of a sample service: what clients use (\"production\")"),
    );
    let differing: Vec<&str> = EXPECTED.iter().map(|(t, _)| *t).collect();
    item(
        ui,
        "NEW",
        format!(
            "{NEW:<16} version 2, to validate: changed {}",
            differing.join(", ")
        ),
    );
    item(
        ui,
        "SECONDARY",
        format!("{SECONDARY:<16} another version 1: what differs there too is noise"),
    );

    if let Some(sig) = signal::received() {
        return stopped_early(ui, sig);
    }

    let old_arg = old_addr.to_string();
    let duration_arg = secs.to_string();
    let agent_args = [
        "run",
        "--iface",
        &pair.server_if,
        "--old",
        &old_arg,
        "--new",
        NEW,
        "--secondary",
        SECONDARY,
        "--log",
        log.to_str().expect("UTF-8 temporary path"),
        "--stats-json",
        stats.to_str().expect("UTF-8 temporary path"),
        "--summary",
        summary_file.to_str().expect("UTF-8 temporary path"),
        // `/same/…` takes random keys: one endpoint (too few of them in a
        // short demo for the agent to learn it by itself).
        "--endpoint",
        "GET /same/{key}",
        "--no-metrics",
        "--duration",
        &duration_arg,
    ];
    let mut agent = Agent::start(&pair.server, &agent_args);
    item(
        ui,
        "agent",
        format!(
            "attached to {} in {} (TC eBPF, observes only), as:",
            pair.server_if, pair.server.name
        ),
    );
    for line in wrap_command("parallelrun", &agent_args, 76) {
        println!("             {}", ui.cyan(line));
    }
    let traffic_for = Duration::from_secs(secs).saturating_sub(QUIET_END);
    item(
        ui,
        "traffic",
        format!(
            "{CLIENTS} keep-alive clients from {} for {} s: /users/N (JSON), {NOISE}, /same/…,",
            pair.client_ip,
            traffic_for.as_secs()
        ),
    );
    println!(
        "             /gzip, /chunked (50 kB), /big (1 MiB), /status, /version; and POST {POST}"
    );
    println!("             (a POST has side effects: the agent must not replay it)");
    println!();
    println!(
        "{}",
        ui.bold(format!(
            "Live mismatch log (parallelrun tail --from-start {}):",
            log.display()
        ))
    );
    let rule = ui.dim("─".repeat(78));
    println!("{rule}");

    let mut tail = output::tail(agent_bin, &log, ui.color).expect("cannot start parallelrun tail");
    let started = Instant::now();
    let traffic = Traffic::start(&pair.client, old_addr, started + traffic_for);

    // Live: until the traffic is done or a signal comes.
    let mut next_progress = PROGRESS_EVERY;
    while !traffic.finished() && signal::received().is_none() {
        thread::sleep(Duration::from_millis(100));
        let elapsed = started.elapsed().as_secs();
        if elapsed >= next_progress && elapsed < traffic_for.as_secs() {
            next_progress += PROGRESS_EVERY;
            println!(
                "{}",
                ui.dim(format!(
                    "  · {elapsed} s of {}: {} requests sent, {} of them POST",
                    traffic_for.as_secs(),
                    traffic.stats.sent.load(Ordering::Relaxed),
                    traffic.stats.posts.load(Ordering::Relaxed),
                ))
            );
        }
    }
    let traffic_stats = traffic.stop();

    // The agent stops by itself at the end of --duration (or now, when
    // interrupted), then prints its summary.
    let deadline = started + Duration::from_secs(secs + 30);
    while !is_gone(agent.pid()) && signal::received().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let agent_status = agent.stop_with(libc::SIGTERM);
    // Let tail print the last lines (it polls every 200 ms), then stop it.
    thread::sleep(Duration::from_millis(800));
    let _ = tail.stop(libc::SIGTERM, Duration::from_secs(3));
    println!("{rule}");
    println!();

    let stderr = agent.stderr();
    println!(
        "{}",
        ui.bold("Agent summary (parallelrun prints it on exit):")
    );
    let summary = agent_summary(&stderr);
    if summary.is_empty() {
        println!("  (none: the agent exited with {agent_status})");
        println!("{}", indent(&stderr));
    }
    for line in &summary {
        println!("{line}");
    }
    let warnings = agent_warnings(&stderr);
    if !warnings.is_empty() {
        println!("{}", ui.yellow("The agent also warned:"));
        for w in warnings {
            println!("  {w}");
        }
    }
    println!();

    if let Some(sig) = signal::received() {
        return stopped_early(ui, sig);
    }

    let html = args.html();
    let report = output::report(agent_bin, &summary_file, &html, ui.color);
    println!(
        "{}",
        ui.bold(format!(
            "Per-endpoint report (parallelrun report {}):",
            summary_file.display()
        ))
    );
    match &report {
        Ok(r) => {
            print!("{}", r.table);
            println!();
            item(
                ui,
                "HTML",
                format!(
                    "{} (charts, top differing fields, copy-as-curl; fetches nothing)",
                    html.display()
                ),
            );
        }
        Err(e) => println!("  (none: {e})"),
    }
    println!();

    let mut checks = Vec::new();
    if !agent_status.success() {
        checks.push(Check::fail(format!("the agent failed: {agent_status}")));
    }
    checks.extend(verdict(
        &read_log(&log),
        read_stats(&stats).as_ref(),
        &Hits {
            old: &old,
            new: &new,
            secondary: &secondary,
        },
        &traffic_stats,
    ));
    checks.push(report_check(report.as_ref().map(|r| &r.json)));
    if output::checks(ui, &checks) {
        Outcome::Passed
    } else {
        Outcome::Failed
    }
}
