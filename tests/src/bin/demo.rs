//! `parallelrun-demo` (run by `cargo xtask demo`): parallelrun end to end on
//! this machine, with nothing to prepare.
//!
//! It makes two network namespaces joined by a veth pair. In the server one:
//! the sample service's OLD version on the veth address (`:8080`), its NEW
//! version (with deliberate differences, see [`parallelrun_tests::app`]) on
//! `127.0.0.1:9090` and a SECONDARY old instance on `127.0.0.1:9091`, and the
//! agent attached to the veth. Keep-alive clients in the other namespace use
//! the old service for `--duration` seconds while `parallelrun tail` shows
//! the mismatch log live. At the end come the agent's summary and a verdict:
//! were the deliberate differences reported, the noise suppressed, the POST
//! left alone? The exit status says whether the verdict is right.
//!
//! Everything it makes (namespaces, veths, services, child processes, the
//! temporary directory) is owned by a value that removes it on drop, and
//! SIGINT, SIGTERM and SIGHUP only set a flag, so an interrupted demo also
//! stops its children and cleans up before it exits. The work runs in a
//! child process in its own process group, so that a Ctrl-C reaches the
//! demo alone and not the commands and children it runs (see [`supervise`]).

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{
    fmt::Display,
    io::{self, IsTerminal as _, Write as _},
    net::SocketAddr,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use parallelrun_tests::{
    agent::Agent,
    app::{App, Flavor},
    netns::{Family, Netns, Pair},
};
use serde_json::Value;

/// Where the new version and the secondary listen, inside the server
/// namespace: replays cross its `lo`, which the agent does not watch.
const NEW: &str = "127.0.0.1:9090";
const SECONDARY: &str = "127.0.0.1:9091";
const OLD_PORT: u16 = 8080;
/// Keep-alive clients driving traffic at the old service.
const CLIENTS: usize = 4;
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
    /// Internal: be the process that does the work (see `supervise`).
    #[arg(long, hide = true)]
    worker: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.worker {
        return worker(&args);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
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
    supervise(args.duration, &agent)
}

/// Runs the demo as a child (`--worker`) in its own process group and
/// passes it the signals this process gets.
///
/// A Ctrl-C goes to the terminal's whole foreground process group. Were the
/// demo in it, so would be its children: an `ip netns add` killed half-way
/// leaves a namespace no guard knows of, and an agent killed before it
/// attached looks like a failure. In its own group the worker alone gets the
/// signal (from here) and stops in order: traffic, agent (which prints its
/// summary), tail, services, namespaces. If this process dies, even by
/// SIGKILL, the worker gets SIGTERM (PR_SET_PDEATHSIG) and cleans up too.
fn supervise(duration: u64, agent: &Path) -> ExitCode {
    install_signal_handlers();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("parallelrun-demo: cannot find its own executable: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cmd = Command::new(exe);
    cmd.args(["--worker", "--duration", &duration.to_string(), "--agent"])
        .arg(agent)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("parallelrun-demo: cannot start the demo: {e}");
            return ExitCode::from(2);
        }
    };
    loop {
        let sig = SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        match child.try_wait() {
            Ok(Some(st)) => {
                let code = st.code().or_else(|| st.signal().map(|s| 128 + s));
                return ExitCode::from(code.unwrap_or(2) as u8);
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                eprintln!("parallelrun-demo: waiting for the demo: {e}");
                return ExitCode::from(2);
            }
        }
    }
}

/// The demo itself (`--worker`, started by [`supervise`]).
fn worker(args: &Args) -> ExitCode {
    let ui = Ui::new();
    let Some(agent) = args.agent.clone() else {
        eprintln!("parallelrun-demo: --worker needs --agent");
        return ExitCode::from(2);
    };
    // The helpers start the agent from PARALLELRUN_BIN.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("PARALLELRUN_BIN", &agent) };
    install_signal_handlers();
    // Not the terminal's foreground group: write to it even with `stty tostop`.
    // SAFETY: plain signal(2); children inherit the ignored disposition.
    unsafe { libc::signal(libc::SIGTTOU, libc::SIG_IGN) };
    install_panic_hook();

    let mut made = Made::default();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(args, &agent, &ui, &mut made)));
    // Everything `run` made has been dropped by now, on every path.
    let left: Vec<&String> = made
        .namespaces
        .iter()
        .filter(|n| Path::new("/run/netns").join(n).exists())
        .collect();
    if !left.is_empty() {
        for n in &left {
            eprintln!(
                "parallelrun-demo: could not remove the network namespace {n}: \
                 remove it with `ip netns del {n}`"
            );
        }
        return ExitCode::from(2);
    }
    let cleaned = "Removed everything the demo made: namespaces, veths, services, agent, \
                   temporary files.";
    let code = match (outcome, interrupted()) {
        (Ok(Outcome::Passed), _) => 0,
        (Ok(Outcome::Failed), _) => 1,
        (Ok(Outcome::Interrupted(sig)), _) | (Err(_), Some(sig)) => 128 + sig as u8,
        (Err(_), None) => {
            eprintln!("parallelrun-demo: stopped by the error above. {cleaned}");
            return ExitCode::from(2);
        }
    };
    println!("{}", ui.dim(cleaned));
    ExitCode::from(code)
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

/// Names of what was made, so `main` can check they are gone.
#[derive(Default)]
struct Made {
    namespaces: Vec<String>,
}

fn run(args: &Args, agent_bin: &Path, ui: &Ui, made: &mut Made) -> Outcome {
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
    if let Some(sig) = interrupted() {
        return stopped_early(ui, sig);
    }
    let dir = tempfile::Builder::new()
        .prefix("parallelrun-demo.")
        .tempdir()
        .expect("cannot create a temporary directory");
    let log = dir.path().join("mismatches.jsonl");
    let stats = dir.path().join("stats.json");

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

    if let Some(sig) = interrupted() {
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

    let mut tail =
        TailChild::start(agent_bin, &log, ui.color).expect("cannot start parallelrun tail");
    let started = Instant::now();
    let traffic = Traffic::start(&pair.client, old_addr, started + traffic_for);

    // Live: until the traffic is done or a signal comes.
    let mut next_progress = PROGRESS_EVERY;
    while !traffic.finished() && interrupted().is_none() {
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
    while !exited(agent.pid()) && interrupted().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let agent_status = agent.stop_with(libc::SIGTERM);
    // Let tail print the last lines (it polls every 200 ms), then stop it.
    thread::sleep(Duration::from_millis(800));
    tail.stop();
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

    if let Some(sig) = interrupted() {
        return stopped_early(ui, sig);
    }

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
    println!("{}", ui.bold("Demo verdict:"));
    for c in &checks {
        let mark = if c.ok { ui.green("✓") } else { ui.red("✗") };
        println!("  {mark} {}", c.text);
        for d in &c.details {
            println!("      {d}");
        }
    }
    let ok = checks.iter().all(|c| c.ok);
    if ok {
        println!(
            "{}",
            ui.green(ui.bold("Demo passed: parallelrun found what changed, and only that."))
        );
        println!("Try it on your own service:");
        println!(
            "  cargo xtask run -- run --iface IFACE --old IP:PORT --new IP:PORT --secondary IP:PORT"
        );
        println!("  parallelrun tail    # in another terminal: the mismatch log, live");
    } else {
        println!(
            "{}",
            ui.red(
                ui.bold("Demo FAILED: the agent did not report what it should have (see ✗ above).")
            )
        );
    }
    if ok { Outcome::Passed } else { Outcome::Failed }
}

fn stopped_early(ui: &Ui, sig: i32) -> Outcome {
    println!(
        "{}",
        ui.yellow(format!(
            "Interrupted ({}): stopped early, no verdict. Cleaning up.",
            signal_name(sig)
        ))
    );
    Outcome::Interrupted(sig)
}

fn item(ui: &Ui, what: &str, text: impl Display) {
    println!("  {} {text}", ui.bold(format!("{what:<10}")));
}

/// `program args…` as lines of at most `width` characters (when words
/// allow), continued with ` \`.
fn wrap_command(program: &str, args: &[&str], width: usize) -> Vec<String> {
    // Flags stay with their values.
    let mut words: Vec<String> = vec![program.to_owned()];
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if a.starts_with("--") && i + 1 < args.len() && !args[i + 1].starts_with("--") {
            words.push(format!("{a} {}", args[i + 1]));
            i += 2;
        } else {
            words.push(a.to_owned());
            i += 1;
        }
    }
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for w in words {
        if !cur.is_empty() && cur.len() + 1 + w.len() + 2 > width {
            lines.push(format!("{cur} \\"));
            cur = format!("    {w}");
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(&w);
        }
    }
    lines.push(cur);
    lines
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The summary the agent prints on exit: from its `parallelrun: N requests
/// seen` line on, without log lines.
fn agent_summary(stderr: &str) -> Vec<&str> {
    let lines: Vec<&str> = stderr.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with("parallelrun: ")) else {
        return Vec::new();
    };
    lines[start..]
        .iter()
        .filter(|l| l.starts_with("parallelrun: ") || l.starts_with("  "))
        .copied()
        .collect()
}

/// The agent's warning and error log lines.
fn agent_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.starts_with("error:"))
        .collect()
}

/// Whether the child `pid` has exited, without reaping it (its owner does).
fn exited(pid: i32) -> bool {
    // SAFETY: zeroed siginfo_t is valid; waitid with WNOWAIT only looks.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r != 0 || info.si_pid() != 0
    }
}

// ---------------------------------------------------------------------------
// Signals

/// The signal that asked the demo to stop, 0 while none did.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP only set [`SIGNAL`]: the demo then
/// stops its traffic and children and removes what it made.
fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(
                libc::sigaction(sig, &sa, std::ptr::null_mut()),
                0,
                "sigaction: {}",
                io::Error::last_os_error()
            );
        }
    }
}

fn interrupted() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT, Ctrl-C".to_owned(),
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        s => format!("signal {s}"),
    }
}

/// Failures in the helpers are panics: say what failed plainly. Unwinding
/// then drops, and so removes, everything made so far. (Never `eprintln!`
/// here: a panic in the hook, e.g. with the terminal gone, would abort
/// without cleaning up.)
fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let text = match interrupted() {
            // A command or child that died of the same signal: no error.
            Some(sig) => format!(
                "\nparallelrun-demo: interrupted ({}) while: {msg}\n",
                signal_name(sig)
            ),
            None => {
                let at = info
                    .location()
                    .map(|l| format!(" [{}:{}]", l.file(), l.line()))
                    .unwrap_or_default();
                format!("\nparallelrun-demo: error: {msg}{at}\n")
            }
        };
        let _ = io::stderr().write_all(text.as_bytes());
    }));
}

// ---------------------------------------------------------------------------
// `parallelrun tail`

/// `parallelrun tail --from-start LOG`, printing to the demo's stdout; it
/// gets SIGTERM if the demo dies.
struct TailChild {
    child: Child,
}

impl TailChild {
    fn start(bin: &Path, log: &Path, color: bool) -> io::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(["tail", "--from-start", "--color"])
            .arg(if color { "always" } else { "never" })
            .arg(log)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Self {
            child: cmd.spawn()?,
        })
    }

    /// SIGTERM, then SIGKILL if it has not exited within 3 s.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TailChild {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Traffic

#[derive(Default)]
struct TrafficStats {
    sent: AtomicU64,
    posts: AtomicU64,
    /// Requests without a complete response, and the last error.
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What the clients did, once they stopped.
struct TrafficReport {
    sent: u64,
    errors: u64,
    last_error: Option<String>,
}

/// Keep-alive clients in the client namespace. Stopped (and joined) on drop.
struct Traffic {
    stop: Arc<AtomicBool>,
    stats: Arc<TrafficStats>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(ns: &Netns, server: SocketAddr, until: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(TrafficStats::default());
        let threads = (0..CLIENTS)
            .map(|id| {
                let stop = Arc::clone(&stop);
                let stats = Arc::clone(&stats);
                ns.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    rt.block_on(client(id, server, until, &stop, &stats));
                })
            })
            .collect();
        Self {
            stop,
            stats,
            threads,
        }
    }

    fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    fn stop(mut self) -> TrafficReport {
        self.join();
        TrafficReport {
            sent: self.stats.sent.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
            last_error: self.stats.last_error.lock().unwrap().clone(),
        }
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.join();
    }
}

/// The first requests of each client: together they make every case of the
/// verdict happen within the first second, however short the run.
const FIRST: [[&str; 2]; CLIENTS] = [
    ["/users/7", "/random"],
    ["/status", "POST"],
    ["/version", "/random"],
    ["/gzip", "POST"],
];

/// A request of the mix: mostly ordinary reads, some noise, a few endpoints
/// that changed, a few large bodies, and orders.
fn random_request() -> String {
    match rand::random_range(0..100u32) {
        0..30 => format!("/users/{}", rand::random_range(1..=12u32)),
        30..46 => NOISE.to_owned(),
        46..56 => format!("/same/{:x}", rand::random::<u16>()),
        56..63 => "/chunked".to_owned(),
        63..66 => "/big".to_owned(),
        66..73 => "/gzip".to_owned(),
        73..80 => "/status".to_owned(),
        80..87 => "/version".to_owned(),
        _ => "POST".to_owned(),
    }
}

/// One client: connections of 5 to 20 requests each, 0.3 to 1.2 s apart,
/// until `until` or `stop`.
async fn client(
    id: usize,
    server: SocketAddr,
    until: Instant,
    stop: &AtomicBool,
    stats: &TrafficStats,
) {
    let done = || stop.load(Ordering::Relaxed) || SIGNAL.load(Ordering::Relaxed) != 0;
    let over = || done() || Instant::now() >= until;
    let mut first = FIRST[id % CLIENTS].iter().map(|s| (*s).to_owned());
    let fail = |e: String| {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        *stats.last_error.lock().unwrap() = Some(e);
    };
    while !over() {
        let stream = match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(server),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                fail(format!("connect {server}: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(_) => {
                fail(format!("connect {server}: timed out"));
                continue;
            }
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            fail("HTTP handshake failed".to_owned());
            continue;
        };
        let conn = tokio::spawn(conn);
        let requests = rand::random_range(5..=20u32);
        for _ in 0..requests {
            if over() {
                break;
            }
            let what = first.next().unwrap_or_else(random_request);
            let (method, path, body) = if what == "POST" {
                let order = format!(
                    r#"{{"item":{},"qty":{}}}"#,
                    rand::random_range(1..100u32),
                    rand::random_range(1..5u32)
                );
                (Method::POST, POST.to_owned(), Bytes::from(order))
            } else {
                (Method::GET, what, Bytes::new())
            };
            let is_post = method == Method::POST;
            let mut req = Request::builder()
                .method(method)
                .uri(&path)
                .header("host", "shop.example")
                .header("user-agent", format!("parallelrun-demo-client/{id}"));
            if is_post {
                req = req.header("content-type", "application/json");
            }
            let req = req.body(Full::new(body)).expect("valid request");
            stats.sent.fetch_add(1, Ordering::Relaxed);
            if is_post {
                stats.posts.fetch_add(1, Ordering::Relaxed);
            }
            let answered = tokio::time::timeout(Duration::from_secs(20), async {
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                resp.into_body()
                    .collect()
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .await;
            match answered {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    fail(format!("{path}: {e}"));
                    break;
                }
                Err(_) => {
                    fail(format!("{path}: no response within 20 s"));
                    break;
                }
            }
            // Think time, cut short when it is time to stop.
            let pause = Instant::now() + Duration::from_millis(rand::random_range(300..1200));
            while Instant::now() < pause && !over() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        drop(sender);
        let _ = conn.await;
    }
}

// ---------------------------------------------------------------------------
// Verdict

struct Check {
    ok: bool,
    text: String,
    /// Lines shown under it.
    details: Vec<String>,
}

impl Check {
    fn new(ok: bool, text: impl Into<String>) -> Self {
        Self {
            ok,
            text: text.into(),
            details: Vec::new(),
        }
    }

    fn fail(text: impl Into<String>) -> Self {
        Self::new(false, text)
    }
}

/// The three services, to count what reached each.
struct Hits<'a> {
    old: &'a App,
    new: &'a App,
    secondary: &'a App,
}

fn read_log(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the mismatch log {}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad log line {l:?}: {e}")))
        .collect()
}

fn read_stats(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the agent's stats {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("bad stats JSON: {e}"))
}

fn counter(stats: &Value, pointer: &str) -> u64 {
    stats.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

fn wheres(event: &Value) -> Vec<String> {
    event["differences"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .filter_map(|d| d["where"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn target(event: &Value) -> &str {
    event["target"].as_str().unwrap_or_default()
}

/// What the log, the agent's counters and the services' hit counts say,
/// as checks of what the sample service's differences call for.
fn verdict(
    log: &Result<Vec<Value>, String>,
    stats: Result<&Value, &String>,
    hits: &Hits<'_>,
    traffic: &TrafficReport,
) -> Vec<Check> {
    let (log, stats) = match (log, stats) {
        (Ok(log), Ok(stats)) => (log, stats),
        (Err(e), _) | (_, Err(e)) => return vec![Check::fail(e.clone())],
    };
    let mut checks = vec![deliberate(log, hits)];

    // Noise: the nonce of /random differs on the secondary too, so those
    // requests are counted as noise and never logged.
    let noise = counter(stats, "/outcomes/noise");
    let random_replayed = hits.new.hits(NOISE);
    let random_logged = log.iter().filter(|e| target(e) == NOISE).count();
    checks.push(if random_replayed > 0 && noise > 0 && random_logged == 0 {
        Check::new(
            true,
            format!(
                "noise suppressed: {noise} (the {random_replayed} {NOISE} responses differ on \
                 the secondary too; none logged)"
            ),
        )
    } else {
        Check::fail(format!(
            "noise suppressed: {noise}, but {random_replayed} {NOISE} replayed and \
             {random_logged} logged as mismatches"
        ))
    });

    // The POST reached the old service only.
    let posts = hits.old.hits(POST);
    let replayed = hits.new.hits(POST) + hits.secondary.hits(POST);
    checks.push(match (posts, replayed) {
        (0, _) => Check::fail(format!("POST replayed: ? (no POST {POST} was sent)")),
        (_, 0) => Check::new(
            true,
            format!(
                "POST replayed: no (the new service and the secondary got none of the \
                 {posts} POST {POST})"
            ),
        ),
        _ => Check::fail(format!(
            "POST replayed: YES ({replayed} of the {posts} POST {POST} reached the new service \
             or the secondary)"
        )),
    });

    // Nothing else: no other mismatch, no replay error, and the agent
    // accounted for every request the old service served.
    let others: Vec<String> = log
        .iter()
        .filter(|e| e["kind"] != "mismatch" || !EXPECTED.iter().any(|(t, _)| *t == target(e)))
        .map(|e| {
            let what = e["error"]
                .as_str()
                .map_or_else(|| wheres(e).join(", "), str::to_owned);
            format!(
                "{} {}: {what}",
                e["kind"].as_str().unwrap_or("?"),
                target(e)
            )
        })
        .collect();
    let served = hits.old.hits("/");
    let seen = counter(stats, "/requests_seen");
    let unaccounted = stats["unaccounted"].as_i64().unwrap_or(0);
    if others.is_empty() && seen == served && unaccounted == 0 {
        checks.push(Check::new(
            true,
            format!(
                "nothing else reported ({} matched), and all {served} requests the old \
                 service served were seen",
                counter(stats, "/outcomes/matched")
            ),
        ));
    } else {
        let mut c = Check::fail("something else went wrong:");
        if !others.is_empty() {
            c.details
                .push(format!("{} unexpected log events:", others.len()));
            c.details
                .extend(others.iter().take(5).map(|o| format!("  {o}")));
        }
        if seen != served {
            c.details.push(format!(
                "the agent saw {seen} requests; the old service served {served}"
            ));
        }
        if unaccounted != 0 {
            c.details
                .push(format!("{unaccounted} requests without an outcome"));
        }
        checks.push(c);
    }
    if traffic.errors > 0 {
        checks.push(Check::fail(format!(
            "{} of the {} client requests failed (last: {})",
            traffic.errors,
            traffic.sent,
            traffic.last_error.as_deref().unwrap_or("?")
        )));
    }
    checks
}

/// Each deliberate difference: every request to it that was replayed is
/// reported, at exactly its places.
fn deliberate(log: &[Value], hits: &Hits<'_>) -> Check {
    let mut details = Vec::new();
    let mut ok = true;
    for (t, expected) in EXPECTED {
        let replayed = hits.new.hits(t);
        let events: Vec<&Value> = log
            .iter()
            .filter(|e| e["kind"] == "mismatch" && target(e) == t)
            .collect();
        let mut want: Vec<&str> = expected.to_vec();
        want.sort_unstable();
        let elsewhere = events
            .iter()
            .filter(|e| {
                let mut w = wheres(e);
                w.sort();
                w != want
            })
            .count();
        let good = replayed > 0 && events.len() as u64 == replayed && elsewhere == 0;
        ok &= good;
        let mut line = format!(
            "{t:<10} {:<18} {} of {replayed} replayed",
            expected.join(" + "),
            events.len()
        );
        if elsewhere > 0 {
            line.push_str(&format!(", {elsewhere} at other places"));
        }
        if !good {
            line.push_str("  ✗");
        }
        details.push(line);
    }
    let mut c = Check::new(
        ok,
        if ok {
            "deliberate differences reported, each time and at exactly their place:"
        } else {
            "deliberate differences NOT all reported as expected:"
        },
    );
    c.details = details;
    c
}

// ---------------------------------------------------------------------------
// Output

/// ANSI styles, only when stdout is a terminal (and NO_COLOR is not set).
struct Ui {
    color: bool,
}

impl Ui {
    fn new() -> Self {
        Self {
            color: io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, text: impl Display) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn bold(&self, t: impl Display) -> String {
        self.paint("1", t)
    }
    fn dim(&self, t: impl Display) -> String {
        self.paint("2", t)
    }
    fn red(&self, t: impl Display) -> String {
        self.paint("31", t)
    }
    fn green(&self, t: impl Display) -> String {
        self.paint("32", t)
    }
    fn yellow(&self, t: impl Display) -> String {
        self.paint("33", t)
    }
    fn cyan(&self, t: impl Display) -> String {
        self.paint("36", t)
    }
}
