//! Per-endpoint results, end to end: live runs in namespaces against real
//! services write summaries; `parallelrun report` and `parallelrun verdict`
//! read them; a real Prometheus server scrapes the agent; headless Chromium
//! opens the HTML report.
//!
//! Topology, per test (as in `noise.rs`): a client namespace and a server
//! namespace joined by a veth pair. In the server namespace: the old
//! service on the veth address (`:8080`), the new version (with its
//! deliberate differences, see [`Flavor::New`]) on `127.0.0.1:9090` and a
//! secondary (an old instance) on `127.0.0.1:9091`; replays cross that
//! namespace's `lo` and are never captured. Agents attach to the server's
//! veth end.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

mod endpoints;
mod html;
mod merge;
mod prometheus;
mod verdict;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use parallelrun_tests::{
    agent::{self, Agent},
    app::{App, Flavor},
    client,
    netns::{Family, Netns, Pair},
    require_root,
};
use serde_json::Value;
use tempfile::TempDir;

pub const NEW: &str = "127.0.0.1:9090";
pub const SECONDARY: &str = "127.0.0.1:9091";

/// One test's services. Fields drop in order: the services stop, then the
/// namespaces go; agents are the tests' locals, stopped first.
pub struct Rig {
    pub old: App,
    pub new: App,
    pub secondary: App,
    pub dir: TempDir,
    pub pair: Pair,
}

impl Rig {
    pub fn start() -> Self {
        require_root();
        let pair = Pair::new(Family::V4);
        let old = App::start(
            &pair.server,
            SocketAddr::new(pair.server_ip, 8080),
            Flavor::Old,
        );
        let new = App::start(&pair.server, NEW.parse().unwrap(), Flavor::New);
        let secondary = App::start(&pair.server, SECONDARY.parse().unwrap(), Flavor::Old);
        Self {
            old,
            new,
            secondary,
            dir: tempfile::tempdir().unwrap(),
            pair,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The summary file of run `name`.
    pub fn summary_path(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.summary.json"))
    }

    /// `parallelrun run --summary` on `iface` in the server namespace,
    /// replaying to the new service and the secondary; `name` names its
    /// files. Metrics off unless `extra` says otherwise.
    pub fn run_on(&self, iface: &str, name: &str, extra: &[&str]) -> Agent {
        let old = format!(":{}", self.old.addr.port());
        let flags = agent::run_flags(self.dir.path(), name, NEW, SECONDARY, extra);
        let mut args = vec!["run", "--iface", iface, "--old", &old];
        args.extend(flags.iter().map(String::as_str));
        Agent::start(&self.pair.server, &args)
    }

    /// [`Rig::run_on`] the server's veth end.
    pub fn run(&self, name: &str, extra: &[&str]) -> Agent {
        self.run_on(&self.pair.server_if, name, extra)
    }

    /// `conns` keep-alive connections in parallel from `ns` to `server`,
    /// each sending `paths(conn)` in turn; checks that every production
    /// request was answered.
    pub fn clients_from(
        ns: &Netns,
        server: SocketAddr,
        conns: usize,
        paths: impl Fn(usize) -> Vec<String>,
    ) {
        let handles: Vec<_> = (0..conns)
            .map(|c| {
                let paths = paths(c);
                ns.spawn(move || {
                    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                    let n = client::keep_alive(server, &refs).body_lens.len();
                    assert_eq!(n, paths.len(), "connection {c}: responses missing");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
    }

    /// [`Rig::clients_from`] the client namespace to the old service.
    pub fn clients(&self, conns: usize, paths: impl Fn(usize) -> Vec<String>) {
        Self::clients_from(&self.pair.client, self.old.addr, conns, paths);
    }
}

/// Stops a live agent (it must exit 0 on SIGTERM) and returns its final
/// summary, checked: every request seen has an outcome, in the run's
/// counters and added up over endpoints.
pub fn stop(mut agent: Agent, rig: &Rig, name: &str) -> Value {
    agent.stop();
    let stderr = agent.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the agent panicked:\n{stderr}"
    );
    let stats = agent::Stats::read(&rig.path(&format!("{name}.stats.json")));
    stats.assert_accounted();
    let summary = read_summary(&rig.summary_path(name));
    assert_eq!(summary["sources"][0]["finished"], true, "{summary:#}");
    let t = &summary["totals"];
    assert_eq!(t["seen"], stats.n("/requests_seen"), "{summary:#}");
    for (field, p) in [
        ("matched", "/outcomes/matched"),
        ("mismatched", "/outcomes/mismatched"),
        ("noise", "/outcomes/noise"),
        ("replay_errors", "/outcomes/replay_errors"),
    ] {
        assert_eq!(t[field], stats.n(p), "{field}: {summary:#}");
    }
    assert_eq!(t["skipped"], stats.sum("/outcomes/skipped"), "{summary:#}");
    assert_eq!(t["lost"], stats.sum("/outcomes/lost"), "{summary:#}");
    summary
}

/// A summary file, as JSON.
pub fn read_summary(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("summary {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("summary {}: {e}", path.display()))
}

/// The endpoint `name` of a summary.
pub fn endpoint<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["endpoint"] == name))
        .unwrap_or_else(|| panic!("no endpoint {name:?} in {summary:#}"))
}

/// The endpoints' names.
pub fn names(summary: &Value) -> Vec<String> {
    summary["endpoints"]
        .as_array()
        .map(|eps| {
            eps.iter()
                .map(|e| e["endpoint"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The difference at `location` of an endpoint.
pub fn location<'a>(endpoint: &'a Value, location: &str) -> &'a Value {
    endpoint["differences"]
        .as_array()
        .and_then(|d| d.iter().find(|l| l["where"] == location))
        .unwrap_or_else(|| panic!("no difference at {location:?} in {endpoint:#}"))
}

/// `parallelrun ARGS` (offline commands), run here.
pub fn parallelrun(args: &[&str]) -> Output {
    Command::new(agent::binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("parallelrun {args:?}: {e}"))
}

/// `numbered("/users/", from, n)`: `/users/FROM` … `/users/FROM+n-1`.
pub fn numbered(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("{prefix}{i}")).collect()
}
