//! Fleet results, end to end: agents on several "nodes", each watching one
//! replica of the old service, publish to a real `nats-server -js` and are
//! scraped by a real Prometheus, both started by the tests; `parallelrun
//! verdict` and `report`, reading the fleet from NATS or from Prometheus,
//! must say what one agent watching every replica says from its summary
//! file ([`verdict`]). NATS going away mid-run ([`outage`]) and JetStream's
//! deduplication ([`dedup`]) have modules of their own.
//!
//! Topology, per test ([`Rig`]): a client namespace and a server namespace
//! joined by a veth pair. In the server namespace: three replicas of the
//! old service on the veth address ([`REPLICAS`]), the new version (with
//! its deliberate differences) on [`NEW`], a secondary on [`SECONDARY`] and
//! nats-server on `127.0.0.1:`[`NATS_PORT`] (it starts in milliseconds, so
//! every rig has one); Prometheus, when a test needs it, on [`PROMETHEUS`].
//! Every agent attaches to the server's veth end (their TCX programs
//! coexist) and reaches NATS, its metrics and the services over that
//! namespace's `lo`, where replays are never captured. Offline commands
//! (`verdict`, `report`) run in that namespace too ([`Rig::parallelrun`]).

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

mod dedup;
mod outage;
mod verdict;

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
pub const PROMETHEUS: &str = "127.0.0.1:9099";
pub const NATS_PORT: u16 = 4222;
/// The old service's replicas' ports.
pub const REPLICAS: [u16; 3] = [8081, 8082, 8083];

/// The metrics address of node `i`'s agent.
pub fn node_metrics(i: usize) -> String {
    format!("127.0.0.1:{}", 9461 + i)
}

/// One test's services. Fields drop in order: NATS and the services stop,
/// then the namespaces go; agents and Prometheus are the tests' locals,
/// stopped first.
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
            .map(|&port| {
                App::start(
                    &pair.server,
                    SocketAddr::new(pair.server_ip, port),
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
    /// each), replaying to the new service and the secondary, with `extra`
    /// flags (`--no-metrics` unless they say `--metrics`); `name` names its
    /// files (`NAME.stats.json`, `NAME.summary.json`, `NAME.jsonl`).
    pub fn agent(&self, name: &str, old: &[u16], extra: &[&str]) -> Agent {
        let olds: Vec<String> = old.iter().map(|p| format!(":{p}")).collect();
        let flags = agent::run_flags(self.dir.path(), name, NEW, SECONDARY, extra);
        let mut args = vec!["run", "--iface", &self.pair.server_if];
        for o in &olds {
            args.extend(["--old", o.as_str()]);
        }
        args.extend(flags.iter().map(String::as_str));
        Agent::start(&self.pair.server, &args)
    }

    /// `conns` keep-alive connections in parallel from the client namespace
    /// to each replica, connection `c` of replica `r` sending `paths(r, c)`;
    /// checks that every production request was answered.
    pub fn clients(&self, conns: usize, paths: impl Fn(usize, usize) -> Vec<String>) {
        let handles: Vec<_> = self
            .replicas
            .iter()
            .enumerate()
            .flat_map(|(r, app)| (0..conns).map(move |c| (r, c, app.addr)))
            .map(|(r, c, server)| {
                let paths = paths(r, c);
                self.pair.client.spawn(move || {
                    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                    let n = client::keep_alive(server, &refs).body_lens.len();
                    assert_eq!(
                        n,
                        paths.len(),
                        "replica {r}, connection {c}: responses missing"
                    );
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
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

    /// `parallelrun ARGS` inside the server namespace (where NATS and
    /// Prometheus listen).
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
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
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
