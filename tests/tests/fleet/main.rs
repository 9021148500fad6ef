//! Fleet results: agents on several nodes, each watching one replica of the
//! old service, scraped by a real Prometheus; `parallelrun verdict` and
//! `report --prometheus` read the fleet from it and must say what one agent
//! watching every replica says from its summary file.
//!
//! Topology, per test: a client namespace and a server namespace joined by
//! a veth pair. In the server namespace: three replicas of the old service
//! on the veth address ([`REPLICAS`]), the new version (with its deliberate
//! differences) on `127.0.0.1:9090` and a secondary on `127.0.0.1:9091`;
//! one agent per replica (the "nodes", metrics on [`node_metrics`]), a
//! reference agent watching all three replicas, all attached to the same
//! interface; Prometheus on `127.0.0.1:9099`. Replays cross that
//! namespace's `lo` and are never captured.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

mod verdict;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Output},
};

use parallelrun_tests::{
    agent::{self, Agent},
    app::{App, Flavor},
    client,
    netns::{Family, Netns, Pair},
    require_root,
};
use tempfile::TempDir;

pub const NEW: &str = "127.0.0.1:9090";
pub const SECONDARY: &str = "127.0.0.1:9091";
pub const PROMETHEUS: &str = "127.0.0.1:9099";
/// The old service's replicas' ports.
pub const REPLICAS: [u16; 3] = [8081, 8082, 8083];

/// The metrics address of node `i`'s agent.
pub fn node_metrics(i: usize) -> String {
    format!("127.0.0.1:{}", 9461 + i)
}

/// One test's services. Fields drop in order: the services stop, then the
/// namespaces go; agents and Prometheus are the tests' locals, stopped
/// first.
pub struct Fleet {
    pub replicas: Vec<App>,
    pub new: App,
    pub secondary: App,
    pub dir: TempDir,
    pub pair: Pair,
}

impl Fleet {
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
        Self {
            replicas,
            new,
            secondary,
            dir: tempfile::tempdir().unwrap(),
            pair,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `parallelrun run` on the server's veth end watching `old` (`:PORT`
    /// each), replaying to the new service and the secondary, with
    /// `--summary NAME.summary.json` and `extra` flags.
    pub fn agent(&self, name: &str, old: &[u16], extra: &[&str]) -> Agent {
        let summary = self.path(&format!("{name}.summary.json"));
        let log = self.path(&format!("{name}.jsonl"));
        let old: Vec<String> = old.iter().map(|p| format!(":{p}")).collect();
        let mut args = vec![
            "run",
            "--iface",
            &self.pair.server_if,
            "--new",
            NEW,
            "--secondary",
            SECONDARY,
            "--log",
            log.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
            "--summary-every",
            "1",
        ];
        for o in &old {
            args.extend(["--old", o.as_str()]);
        }
        args.extend_from_slice(extra);
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
}

/// `parallelrun ARGS` (offline commands), run here.
pub fn parallelrun(args: &[&str]) -> Output {
    Command::new(agent::binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("parallelrun {args:?}: {e}"))
}

/// `parallelrun ARGS` run in `ns` (where Prometheus listens).
pub fn parallelrun_in(ns: &Netns, args: &[&str]) -> Output {
    ns.command(agent::binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("parallelrun {args:?}: {e}"))
}

/// `numbered("/users/", from, n)`: `/users/FROM` … `/users/FROM+n-1`.
pub fn numbered(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("{prefix}{i}")).collect()
}
