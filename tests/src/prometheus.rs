//! A real Prometheus server (Debian's `prometheus` package, installed by
//! `cargo xtask setup`) started by a test inside one of its namespaces,
//! scraping given targets every second with the shipped rules loaded, and
//! its HTTP API queried from that namespace. `promtool` checks and tests
//! the shipped rules.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use parallelrun_sandbox::Proc;
use serde_json::Value;

use crate::{faults, netns::Netns};

/// The shipped recording and alerting rules.
pub fn rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus/parallelrun.rules.yml")
}

/// `promtool ARGS`, run here.
pub fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian's prometheus package): run `cargo xtask setup`")
}

/// A Prometheus server; stopped on drop.
pub struct Prometheus {
    pub addr: SocketAddr,
    log: PathBuf,
    _proc: Proc,
}

impl Prometheus {
    /// Starts Prometheus in `ns` on `addr`, its files in `dir`, scraping
    /// `targets` (`(HOST:PORT in ns, node)`: job `parallelrun`, the node as
    /// label `node`) every second and evaluating the shipped rules every
    /// second.
    pub fn start(ns: &Netns, addr: SocketAddr, dir: &Path, targets: &[(&str, &str)]) -> Self {
        let config = dir.join("prometheus.yml");
        let statics: String = targets
            .iter()
            .map(|(t, node)| {
                format!("      - targets: ['{t}']\n        labels: {{node: '{node}'}}\n")
            })
            .collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: parallelrun\n    static_configs:\n{statics}",
                rules().display(),
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let mut cmd = ns.command("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let proc = Proc::spawn("prometheus", &mut cmd)
            .unwrap_or_else(|e| panic!("{e}: run `cargo xtask setup`"))
            .with_grace(Duration::from_secs(2));
        Self {
            addr,
            log,
            _proc: proc,
        }
    }

    /// `http://ADDR`, as `--prometheus` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The result vector of an instant query, asked from `ns`; `None` while
    /// Prometheus cannot answer.
    pub fn query(&self, ns: &Netns, promql: &str) -> Option<Vec<Value>> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let addr = self.addr;
        let text = ns.run(move || faults::http_get_text(addr, &path)).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        let v: Value = serde_json::from_str(body).ok()?;
        (v["status"] == "success")
            .then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of an instant query, `None` while it has none.
    pub fn scalar(&self, ns: &Netns, promql: &str) -> Option<f64> {
        let result = self.query(ns, promql)?;
        let [one] = result.as_slice() else {
            return None;
        };
        one["value"][1].as_str()?.parse().ok()
    }

    /// Waits (30 s at most, panicking with Prometheus's log) until the
    /// single value of `promql` is `want`.
    pub fn wait_for(&self, ns: &Netns, promql: &str, want: f64) {
        let started = Instant::now();
        while self.scalar(ns, promql) != Some(want) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{promql} never became {want} (last {:?}):\n{}",
                self.scalar(ns, promql),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `%XX` for every byte but unreserved ones (a PromQL query in a URL).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
