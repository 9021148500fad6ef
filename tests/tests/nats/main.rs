//! Fleet results on NATS JetStream, end to end: agents publish their
//! mismatch events and summaries to a real `nats-server -js` started by
//! the test; `parallelrun verdict --nats` and `report --nats` read the
//! fleet back.
//!
//! Topology, per test: a client namespace and a server namespace joined by
//! a veth pair. In the server namespace: three replicas of the old service
//! on the veth address (ports 8081–8083), the new version on
//! `127.0.0.1:9090`, a secondary on `127.0.0.1:9091` and nats-server on
//! `127.0.0.1:4222`; every agent attaches to the server's veth end (their
//! TCX programs coexist) and reaches NATS over that namespace's loopback.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

mod dedup;
mod fleet;
mod outage;

use std::{net::SocketAddr, path::PathBuf, process::Output};

use parallelrun_tests::{
    agent::{self, Agent},
    app::{App, Flavor},
    client,
    nats::NatsServer,
    netns::{Family, Pair},
    require_root,
};
use serde_json::Value;
use tempfile::TempDir;

pub const NEW: &str = "127.0.0.1:9090";
pub const SECONDARY: &str = "127.0.0.1:9091";
pub const NATS_PORT: u16 = 4222;
/// Ports of the three old replicas.
pub const REPLICAS: [u16; 3] = [8081, 8082, 8083];

/// One test's services. Fields drop in order: NATS and the services stop,
/// then the namespaces go; agents are the tests' locals, stopped first.
pub struct Rig {
    pub nats: NatsServer,
    pub replicas: Vec<App>,
    pub new: App,
    pub secondary: App,
    pub dir: TempDir,
    pub pair: Pair,
}

impl Rig {
    pub fn start() -> Self {
        require_root();
        let pair = Pair::new(Family::V4);
        let replicas = REPLICAS
            .iter()
            .map(|p| {
                App::start(
                    &pair.server,
                    SocketAddr::new(pair.server_ip, *p),
                    Flavor::Old,
                )
            })
            .collect();
        let new = App::start(&pair.server, NEW.parse().unwrap(), Flavor::New);
        let secondary = App::start(&pair.server, SECONDARY.parse().unwrap(), Flavor::Old);
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("jetstream");
        std::fs::create_dir_all(&store).unwrap();
        let nats = NatsServer::start(&pair.server, NATS_PORT, &store);
        Self {
            nats,
            replicas,
            new,
            secondary,
            dir,
            pair,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `parallelrun run` on the server's veth end watching `old` (`:PORT`
    /// each), replaying to the new service and the secondary; `name` names
    /// its files (`NAME.stats.json`, `NAME.summary.json`, `NAME.jsonl`).
    pub fn run(&self, name: &str, old: &[u16], extra: &[&str]) -> Agent {
        let log = self.path(&format!("{name}.jsonl"));
        let stats = self.path(&format!("{name}.stats.json"));
        let summary = self.path(&format!("{name}.summary.json"));
        let olds: Vec<String> = old.iter().map(|p| format!(":{p}")).collect();
        let mut args = vec!["run", "--iface", &self.pair.server_if];
        for o in &olds {
            args.extend(["--old", o.as_str()]);
        }
        args.extend([
            "--new",
            NEW,
            "--secondary",
            SECONDARY,
            "--log",
            log.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
            "--summary-every",
            "1",
        ]);
        if !extra.contains(&"--metrics") {
            args.push("--no-metrics");
        }
        args.extend_from_slice(extra);
        Agent::start(&self.pair.server, &args)
    }

    /// One keep-alive connection from the client namespace to replica `i`
    /// sending `paths`; every request must be answered.
    pub fn traffic(&self, i: usize, paths: &[String]) {
        let addr = self.replicas[i].addr;
        let want = paths.len();
        let paths = paths.to_vec();
        let n = self.pair.client.run(move || {
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            client::keep_alive(addr, &refs).body_lens.len()
        });
        assert_eq!(n, want, "replica {i}: responses missing");
    }

    /// `parallelrun ARGS` inside the server namespace (where NATS is).
    pub fn parallelrun(&self, args: &[&str]) -> Output {
        self.pair
            .server
            .command(agent::binary())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("parallelrun {args:?}: {e}"))
    }
}

/// SIGTERM; the agent must exit cleanly with every request accounted for.
/// Returns its `--stats-json`.
pub fn stop(mut agent: Agent, rig: &Rig, name: &str) -> agent::Stats {
    agent.stop();
    let stderr = agent.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the agent panicked:\n{stderr}"
    );
    let stats = agent::Stats::read(&rig.path(&format!("{name}.stats.json")));
    stats.assert_accounted();
    stats
}

/// `numbered("/users/", from, n)`: `/users/FROM` … `/users/FROM+n-1`.
pub fn numbered(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("{prefix}{i}")).collect()
}

/// `n` times `path`.
pub fn repeat(path: &str, n: usize) -> Vec<String> {
    vec![path.to_owned(); n]
}

/// Stdout as JSON.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Lines of a mismatch log.
pub fn log_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

/// The run's `--stats-json` NATS counters.
pub fn nats_stats(stats: &agent::Stats) -> Value {
    stats.0["nats"].clone()
}
