//! HTTP/2 and gRPC, end to end, with real components in test-made
//! namespaces: nghttpd, h2load and nghttp; a grpcio server (old, new,
//! secondary flavors) and client for `tests/grpc/users.proto`; tcpdump as
//! the witness and tshark as the independent reader of each stream.
//!
//! Topology, per test: a client namespace and a server namespace joined
//! by a veth pair ([`Pair`]). The old service listens on the server's veth
//! address; other versions on the server namespace's loopback.
//!
//! `infra`: the components alone, without the agent, so that a failure in
//! the agent's tests is never the rig's. `h2c`: plain HTTP/2 (nghttpd,
//! h2load) captured, replayed and compared, and cross-checked with tshark.
//! `grpc`: gRPC calls compared message by message. `joined`: connections
//! that began before the agent did.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

mod grpc;
mod h2c;
mod infra;
mod joined;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use parallelrun_tests::{
    agent::{self, Agent, Stats},
    netns::{Family, Pair},
    require_root,
    tcpdump::Tcpdump,
};
use serde_json::Value;
use tempfile::TempDir;

/// One test's namespaces and scratch directory. Fields drop in order: the
/// directory goes, then the namespaces (with whatever still runs in them);
/// services are the tests' locals and stop first.
pub struct Rig {
    pub dir: TempDir,
    pub pair: Pair,
}

impl Rig {
    pub fn start() -> Self {
        Self::start_with(Family::V4)
    }

    pub fn start_with(family: Family) -> Self {
        require_root();
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            pair: Pair::new(family),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// tcpdump on the server's veth end, writing `NAME.pcap`.
    pub fn tcpdump(&self, name: &str) -> Tcpdump {
        Tcpdump::start(
            &self.pair.server,
            &self.pair.server_if,
            &self.path(&format!("{name}.pcap")),
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// What a stopped live agent left behind: its final counters, its
/// mismatch log and its summary.
pub struct Results {
    pub stats: Stats,
    pub log: Vec<Value>,
    pub summary: Value,
}

impl Results {
    pub fn n(&self, p: &str) -> u64 {
        self.stats.n(p)
    }

    /// Everything, for a failed assertion's message.
    pub fn context(&self) -> String {
        format!(
            "stats: {:#}\nlog: {:#?}\nsummary totals: {:#}",
            self.stats.0, self.log, self.summary["totals"]
        )
    }

    /// The endpoint `name` of the summary (e.g. `POST /shadow.users.v1.Users/Get`).
    pub fn endpoint(&self, name: &str) -> &Value {
        self.summary["endpoints"]
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["endpoint"] == name))
            .unwrap_or_else(|| panic!("no endpoint {name:?} in {:#}", self.summary))
    }
}

/// The difference locations of an endpoint of a summary, by `where`.
pub fn locations(endpoint: &Value) -> Vec<&Value> {
    endpoint["differences"]
        .as_array()
        .map(|d| d.iter().collect())
        .unwrap_or_default()
}

impl Rig {
    /// `parallelrun run` on the server's veth end, in the server namespace,
    /// replaying what goes to `old` to `new` and `secondary`; `name` names
    /// its log, stats and summary files. No metrics.
    pub fn run(&self, name: &str, old: &str, new: &str, secondary: &str, extra: &[&str]) -> Agent {
        let log = self.path(&format!("{name}.jsonl"));
        let stats = self.path(&format!("{name}.stats.json"));
        let summary = self.path(&format!("{name}.summary.json"));
        let mut args = vec![
            "run",
            "--iface",
            &self.pair.server_if,
            "--old",
            old,
            "--new",
            new,
            "--secondary",
            secondary,
            "--log",
            log.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
            "--no-metrics",
            // An equal of the services on a busy test host: nothing shed.
            "--priority",
            "normal",
        ];
        args.extend_from_slice(extra);
        Agent::start(&self.pair.server, &args)
    }

    /// Stops a live agent started by [`Rig::run`] with SIGTERM (it drains
    /// its ring buffer and the replays in flight, and must exit 0) and
    /// reads its results: every request seen has exactly one outcome, and
    /// the agent did not panic.
    pub fn stop(&self, mut agent: Agent, name: &str) -> Results {
        agent.stop();
        let stderr = agent.stderr();
        assert!(
            !stderr.contains("panicked"),
            "the agent panicked:\n{stderr}"
        );
        let stats = Stats::read(&self.path(&format!("{name}.stats.json")));
        stats.assert_accounted();
        let text = std::fs::read_to_string(self.path(&format!("{name}.jsonl"))).unwrap_or_default();
        let log = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
            .collect();
        let path = self.path(&format!("{name}.summary.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("summary {}: {e}", path.display()));
        let summary = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("summary {}: {e}", path.display()));
        Results {
            stats,
            log,
            summary,
        }
    }

    /// `parallelrun exchanges --pcap PCAP --old OLD --out NAME.jsonl`, run
    /// here (it must succeed); the exchanges and lost requests it wrote.
    pub fn exchanges(&self, pcap: &Path, old: &str, name: &str) -> Vec<Value> {
        let out_path = self.path(&format!("{name}.jsonl"));
        let out = Command::new(agent::binary())
            .args(["exchanges", "--pcap"])
            .arg(pcap)
            .args(["--old", old, "--out"])
            .arg(&out_path)
            .output()
            .expect("run parallelrun exchanges");
        assert!(
            out.status.success(),
            "parallelrun exchanges failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&out_path)
            .expect("exchanges output")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
            .collect()
    }
}
