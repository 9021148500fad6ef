//! The `parallelrun` binary as a child process inside a namespace.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

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
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts `parallelrun ARGS` in `ns` and waits until it reports that it
    /// is attached (panics with its output if it exits first).
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        let mut cmd = ns.command(binary().to_str().unwrap());
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe. If the test dies, the agent
        // gets SIGTERM instead of outliving it. (The signal follows the
        // *thread* that started the agent: start it from the test's thread.)
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn agent");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains(" attached") {
                    let _ = ready_tx.send(());
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut agent = Self { child, stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return agent;
            }
            if let Some(st) = agent.child.try_wait().unwrap() {
                thread::sleep(Duration::from_millis(100));
                panic!("agent exited ({st}) before attaching:\n{}", agent.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not attach within 30 s:\n{}",
                agent.stderr()
            );
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `signal` and waits (up to 30 s) for the agent to exit.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                thread::sleep(Duration::from_millis(100));
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within 30 s of signal {signal}:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the agent must exit cleanly.
    pub fn stop(&mut self) {
        let st = self.stop_with(libc::SIGTERM);
        assert!(st.success(), "agent failed ({st}):\n{}", self.stderr());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The final counters written by `record --stats-json`.
pub fn stats(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading stats {}: {e}", path.display()));
    serde_json::from_str(&text).expect("stats JSON")
}

/// A counter from the stats JSON, e.g. `counter(&s, "kernel", "ringbuf_full_drops")`.
pub fn counter(stats: &serde_json::Value, group: &str, name: &str) -> u64 {
    stats[group][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {group}.{name} in {stats}"))
}
