//! The `parallelrun` binary as a child process inside a namespace, what it
//! attached, and the final counters it writes.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use parallelrun_sandbox::Proc;
use serde_json::Value;

use crate::netns::Netns;

/// Path of the agent binary: `PARALLELRUN_BIN` (set by `cargo xtask test`)
/// or the workspace's debug build.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("PARALLELRUN_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/parallelrun"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "agent binary {} not found: run the tests with `cargo xtask test` (it builds it)",
        path.display()
    );
    path
}

/// A running agent. Killed on drop if still running.
pub struct Agent {
    proc: Proc,
    stderr: Arc<Mutex<String>>,
}

/// The `run` flags after `--iface` and `--old` that the results and fleet
/// rigs start their agents with: replays to `new` and `secondary`; the log,
/// stats and summary (rewritten every second) as `NAME.jsonl`,
/// `NAME.stats.json` and `NAME.summary.json` in `dir`; metrics off unless
/// `extra` names `--metrics`; then `extra`.
pub fn run_flags(
    dir: &Path,
    name: &str,
    new: &str,
    secondary: &str,
    extra: &[&str],
) -> Vec<String> {
    let file = |suffix: &str| dir.join(format!("{name}{suffix}")).display().to_string();
    let mut args: Vec<String> = vec![
        "--new".into(),
        new.into(),
        "--secondary".into(),
        secondary.into(),
        "--log".into(),
        file(".jsonl"),
        "--stats-json".into(),
        file(".stats.json"),
        "--summary".into(),
        file(".summary.json"),
        "--summary-every".into(),
        "1".into(),
    ];
    if !extra.contains(&"--metrics") {
        args.push("--no-metrics".into());
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

impl Agent {
    /// Starts `parallelrun ARGS` in `ns` and waits until it reports that it
    /// is attached (panics with its output if it exits first).
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        Self::start_until(ns, args, " attached")
    }

    /// Starts `parallelrun ARGS` in `ns` and waits until a line of its log
    /// contains `ready` (panics with its output if it exits first).
    pub fn start_until(ns: &Netns, args: &[&str], ready: &str) -> Self {
        let mut cmd = ns.command(binary());
        cmd.args(args).env("RUST_LOG", "info");
        Self::spawn_until(cmd, ready)
    }

    /// Starts the agent as `cmd` says (e.g. in a container, which forwards
    /// signals to it) and waits until it reports that it is attached.
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_until(cmd, " attached")
    }

    /// Starts the agent as `cmd` says and waits until a line of its log
    /// contains `ready`.
    fn spawn_until(mut cmd: Command, ready: &str) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // If the test dies, the agent gets SIGTERM instead of outliving it.
        // (The signal follows the *thread* that started the agent: start it
        // from the test's thread.) On drop it is killed at once.
        let mut proc = Proc::spawn("agent", &mut cmd)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_grace(Duration::ZERO);
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let pipe = proc.take_stderr().expect("the agent's stderr is piped");
        let log = stderr.clone();
        let marker = ready.to_owned();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains(&marker) {
                    let _ = ready_tx.send(());
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut agent = Self { proc, stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return agent;
            }
            if let Some(st) = agent.proc.exited() {
                thread::sleep(Duration::from_millis(100));
                panic!("agent exited ({st}) before attaching:\n{}", agent.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not log {ready:?} within 30 s:\n{}",
                agent.stderr()
            );
        }
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Everything the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `signal` (0: none) and waits (up to 30 s) for the agent to exit.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        match self.proc.stop(signal, Duration::from_secs(30)) {
            Ok(st) => {
                // Let the reader thread take the last lines.
                thread::sleep(Duration::from_millis(100));
                st
            }
            Err(_) => panic!(
                "agent did not exit within 30 s of signal {signal}:\n{}",
                self.stderr()
            ),
        }
    }

    /// SIGTERM, and the agent must exit cleanly.
    pub fn stop(&mut self) {
        let st = self.stop_with(libc::SIGTERM);
        assert!(st.success(), "agent failed ({st}):\n{}", self.stderr());
    }
}

/// TCX programs attached to `iface` in `ns`: `[ingress, egress]`.
pub fn attached(ns: &Netns, iface: &str) -> [usize; 2] {
    let iface = iface.to_owned();
    ns.run(move || {
        [TcAttachType::Ingress, TcAttachType::Egress].map(|t| {
            SchedClassifier::query_tcx(&iface, t)
                .expect("query tcx")
                .1
                .len()
        })
    })
}

/// The final counters written by `record --stats-json`.
pub fn stats(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading stats {}: {e}", path.display()));
    serde_json::from_str(&text).expect("stats JSON")
}

/// A counter from the stats JSON, e.g. `counter(&s, "kernel", "ringbuf_full_drops")`.
pub fn counter(stats: &Value, group: &str, name: &str) -> u64 {
    stats[group][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {group}.{name} in {stats}"))
}

/// The counter at JSON pointer `p` of the stats, e.g. `/outcomes/matched`.
pub fn counter_at(stats: &Value, p: &str) -> u64 {
    stats
        .pointer(p)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no counter {p} in the stats: {stats:#}"))
}

/// The sum of the counters in the object at JSON pointer `p` of the stats.
pub fn counter_sum(stats: &Value, p: &str) -> u64 {
    stats
        .pointer(p)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no object {p} in the stats: {stats:#}"))
        .values()
        .map(|v| v.as_u64().expect("numeric counter"))
        .sum()
}

/// The accounting invariant of `run`'s stats: every request seen has
/// exactly one outcome, and the agent reports nothing unaccounted.
pub fn assert_accounted(stats: &Value) {
    let seen = counter_at(stats, "/requests_seen");
    let outcomes = counter_at(stats, "/outcomes/matched")
        + counter_at(stats, "/outcomes/mismatched")
        + counter_at(stats, "/outcomes/noise")
        + counter_sum(stats, "/outcomes/skipped")
        + counter_sum(stats, "/outcomes/lost")
        + counter_at(stats, "/outcomes/replay_errors");
    assert_eq!(
        seen, outcomes,
        "requests seen != sum of outcomes: {stats:#}"
    );
    assert_eq!(
        stats["unaccounted"],
        serde_json::json!(0),
        "unaccounted requests: {stats:#}"
    );
}

/// The `--stats-json` file of `run`, with its counters by JSON pointer.
#[derive(Clone, Debug)]
pub struct Stats(pub Value);

impl Stats {
    pub fn read(path: &Path) -> Self {
        Self(stats(path))
    }

    /// The counter at JSON pointer `p`, e.g. `/outcomes/matched`.
    pub fn n(&self, p: &str) -> u64 {
        counter_at(&self.0, p)
    }

    /// The sum of the counters in the object at `p`.
    pub fn sum(&self, p: &str) -> u64 {
        counter_sum(&self.0, p)
    }

    /// See [`assert_accounted`].
    pub fn assert_accounted(&self) {
        assert_accounted(&self.0);
    }
}
