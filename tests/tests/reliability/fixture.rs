//! What every reliability test stands on: its own namespaces (a [`Pair`]) and
//! scratch directory, the agent run and what it left, and the clients of the
//! old service. Tests that load the machine take their turn alone.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
    thread,
    time::Duration,
};

use parallelrun_tests::{
    agent::{Agent, Stats},
    client, faults,
    netns::{Family, Pair},
    require_root,
};
use serde_json::Value;
use tempfile::TempDir;

pub(crate) const MIB: usize = 1 << 20;
pub(crate) const NEW: &str = "127.0.0.1:9090";
pub(crate) const SECONDARY: &str = "127.0.0.1:9091";

/// Tests that load the machine (floods, latency measurements) run alone:
/// they hold this lock exclusively, every other test holds it shared, so
/// that one test's load is never measured as another's slowdown.
static LOAD: RwLock<()> = RwLock::new(());

/// What a test holds of [`LOAD`] while it runs.
#[allow(dead_code, reason = "held for its Drop only")]
enum Turn {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

/// A test's namespaces and scratch directory. Services and agents are the
/// test's locals, declared after it, so they stop before the namespaces go.
pub(crate) struct Env {
    pub(crate) dir: TempDir,
    pub(crate) pair: Pair,
    _turn: Turn,
}

impl Env {
    /// For a test that may run alongside others.
    pub(crate) fn new() -> Self {
        let turn = Turn::Shared(LOAD.read().unwrap_or_else(|e| e.into_inner()));
        Self::with(turn)
    }

    /// For a test that loads the machine or measures latency: it runs alone.
    pub(crate) fn alone() -> Self {
        let turn = Turn::Alone(LOAD.write().unwrap_or_else(|e| e.into_inner()));
        Self::with(turn)
    }

    fn with(turn: Turn) -> Self {
        require_root();
        Self {
            dir: tempfile::tempdir().unwrap(),
            pair: Pair::new(Family::V4),
            _turn: turn,
        }
    }

    /// The old service's address: the server's veth address, `:port`.
    pub(crate) fn old_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.pair.server_ip, port)
    }

    /// `parallelrun run` on the server's veth for `old`, replaying to
    /// [`NEW`], metrics off, plus `extra`. `name` keeps the files of
    /// several runs in one test apart.
    pub(crate) fn run(&self, name: &str, old: SocketAddr, extra: &[&str]) -> Run {
        let log = self.dir.path().join(format!("{name}.jsonl"));
        let stats = self.dir.path().join(format!("{name}.stats.json"));
        let old = old.to_string();
        let mut args = vec![
            "run",
            "--iface",
            &self.pair.server_if,
            "--old",
            &old,
            "--new",
            NEW,
            "--stats-json",
            stats.to_str().unwrap(),
        ];
        if !extra.contains(&"--log") {
            args.extend(["--log", log.to_str().unwrap()]);
        }
        if !extra.iter().any(|a| a.starts_with("--metrics")) {
            args.push("--no-metrics");
        }
        args.extend_from_slice(extra);
        Run {
            agent: Agent::start(&self.pair.server, &args),
            log,
            stats,
        }
    }

    /// `f` in the client namespace.
    pub(crate) fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.pair.client.run(f)
    }
}

/// A running agent and where it writes.
pub(crate) struct Run {
    pub(crate) agent: Agent,
    log: PathBuf,
    stats: PathBuf,
}

/// What a stopped agent left.
pub(crate) struct Done {
    pub(crate) stats: Stats,
    pub(crate) log: Vec<Value>,
    pub(crate) log_text: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn pid(&self) -> i32 {
        self.agent.pid()
    }

    /// Lets the last segments arrive, stops the agent with SIGTERM (it
    /// must exit 0, without a panic) and reads what it wrote.
    pub(crate) fn stop(mut self) -> Done {
        thread::sleep(Duration::from_millis(300));
        self.agent.stop();
        self.done()
    }

    pub(crate) fn done(&self) -> Done {
        let stderr = self.agent.stderr();
        assert!(!stderr.contains("panicked"), "agent panicked:\n{stderr}");
        let log_text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let log = log_text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
            .collect();
        Done {
            stats: Stats::read(&self.stats),
            log,
            log_text,
            stderr,
        }
    }
}

impl Done {
    pub(crate) fn events(&self, kind: &str) -> Vec<&Value> {
        self.log.iter().filter(|e| e["kind"] == kind).collect()
    }
}

/// One GET on an open connection; the parsed response.
pub(crate) fn get_on(s: &mut TcpStream, buf: &mut Vec<u8>, path: &str) -> client::Parsed {
    let req = format!("GET {path} HTTP/1.1\r\nHost: old.test\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    client::read_response(s, buf, "GET", path)
}

/// The old service's answer to `/users/n`, checked.
pub(crate) fn assert_user(parsed: &client::Parsed, n: u64) {
    assert_eq!(parsed.0, 200, "/users/{n}: status");
    let v: Value = serde_json::from_slice(&parsed.2).expect("JSON body");
    assert_eq!(v["id"], n, "/users/{n}: wrong body {v}");
    assert_eq!(
        v["plan"], "basic",
        "/users/{n}: production saw the new version"
    );
}

/// `threads` client threads each sending `per_thread` GETs of `/users/N`
/// on one keep-alive connection, `pace` apart; every response is checked,
/// and the latencies are returned.
pub(crate) fn timed_load(
    env: &Env,
    old: SocketAddr,
    threads: usize,
    per_thread: usize,
    pace: Duration,
) -> Vec<Duration> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            env.pair.client.spawn(move || {
                let ids: Vec<u64> = (0..per_thread as u64)
                    .map(|i| t as u64 * 10_000 + i)
                    .collect();
                let paths: Vec<String> = ids.iter().map(|i| format!("/users/{i}")).collect();
                let (times, replies) = faults::timed_gets_paced(old, &paths, pace);
                for (r, id) in replies.iter().zip(&ids) {
                    assert_user(r, *id);
                }
                times
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}
