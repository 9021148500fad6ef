//! `parallelrun-demo` (what `cargo xtask demo` runs), as a new user would run
//! it but without a terminal: it must report the sample service's deliberate
//! differences, suppress its noise and leave its POST alone, say so, and exit
//! with success; and whether it ends by itself, by SIGTERM, by a Ctrl-C to
//! its process group or even by SIGKILL, it must leave nothing behind: no
//! namespace, no veth, no TCX link, no process, no temporary directory.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{
    io::Read,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use parallelrun_tests::{agent, require_root};

/// `PARALLELRUN_DEMO_BIN` (set by `cargo xtask test`), else the binary cargo
/// built for these tests (target/debug/parallelrun-demo).
fn demo_bin() -> PathBuf {
    std::env::var_os("PARALLELRUN_DEMO_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_parallelrun-demo")),
        PathBuf::from,
    )
}

/// A running demo; its stdout and stderr are collected as it prints.
struct Demo {
    child: Child,
    out: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Demo {
    /// Starts `parallelrun-demo --duration SECS`, in its own process group
    /// when `own_group` (as a shell does for a foreground job).
    fn start(secs: u64, own_group: bool) -> Self {
        require_root();
        let bin = demo_bin();
        assert!(bin.is_file(), "demo binary {} not found", bin.display());
        let mut cmd = Command::new(&bin);
        cmd.args(["--duration", &secs.to_string(), "--agent"])
            .arg(agent::binary())
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if own_group {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().expect("spawn the demo");
        let out = Arc::new(Mutex::new(String::new()));
        let readers = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .into_iter()
        .map(|mut pipe| {
            let out = Arc::clone(&out);
            thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        })
        .collect();
        Self {
            child,
            out,
            readers,
        }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the output contains `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(needle) {
            if let Some(st) = self.child.try_wait().unwrap() {
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "the demo exited ({st}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not print {needle:?} within {timeout:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig` to the demo, or to its whole process group (a Ctrl-C).
    fn signal(&self, sig: i32, group: bool) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our child, or on the group it leads.
        let r = unsafe { libc::kill(if group { -pid } else { pid }, sig) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the demo to exit (killing it after `timeout`) and its output
    /// to end, and returns its status and everything it printed.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the demo did not exit within {timeout:?}:\n{}",
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        // Its output ends when every process writing it (the worker, the
        // tail) has exited.
        while !self.readers.iter().all(|r| r.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "the demo's output did not end within {timeout:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
        (status, self.output())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one demo made, from what it printed and, while it ran, from /proc.
#[derive(Debug, Default)]
struct Made {
    namespaces: Vec<String>,
    veths: Vec<String>,
    /// The temporary directory holding the mismatch log.
    dir: PathBuf,
    /// The agent's TCX link ids.
    links: Vec<u32>,
}

impl Made {
    /// Names from the header, then the agent's links (the header is printed
    /// once the agent is attached).
    fn find(output: &str) -> Self {
        let net = output
            .lines()
            .find(|l| l.trim_start().starts_with("network") && l.contains("namespaces"))
            .unwrap_or_else(|| panic!("no network line in:\n{output}"));
        let words: Vec<&str> = net
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let named = |prefixes: [&str; 2]| -> Vec<String> {
            words
                .iter()
                .filter(|w| {
                    prefixes.iter().any(|p| {
                        w.strip_prefix(p)
                            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                    })
                })
                .map(|w| (*w).to_owned())
                .collect()
        };
        let namespaces = named(["prs", "prc"]);
        let veths = named(["vs", "vc"]);
        assert_eq!(namespaces.len(), 2, "namespaces in {net:?}");
        assert_eq!(veths.len(), 2, "veths in {net:?}");
        let log = output
            .split_whitespace()
            .find_map(|w| w.strip_suffix("mismatches.jsonl):"))
            .unwrap_or_else(|| panic!("no mismatch log path in:\n{output}"));
        let dir = PathBuf::from(log.trim_end_matches('/'));
        assert!(dir.is_dir(), "{} is not a directory", dir.display());

        let server_if = veths.iter().find(|v| v.starts_with("vs")).unwrap();
        let agents = processes_mentioning(server_if);
        assert_eq!(
            agents.len(),
            1,
            "agent processes for {server_if}: {agents:?}"
        );
        let links = tcx_links(agents[0]);
        assert_eq!(
            links.len(),
            2,
            "the agent should hold an ingress and an egress TCX link: {links:?}"
        );
        Self {
            namespaces,
            veths,
            dir,
            links,
        }
    }

    /// Nothing of it is left.
    fn assert_gone(&self) {
        let netns = stdout(Command::new("ip").args(["netns", "list"]));
        for n in &self.namespaces {
            assert!(
                !netns.split_whitespace().any(|w| w == n),
                "namespace {n} left behind:\n{netns}"
            );
        }
        let links = stdout(Command::new("ip").args(["-o", "link", "show"]));
        let tc = stdout(Command::new("bpftool").args(["net", "show"]));
        for v in &self.veths {
            assert!(
                !links.contains(v.as_str()),
                "veth {v} left behind:\n{links}"
            );
            assert!(!tc.contains(v.as_str()), "program left on {v}:\n{tc}");
        }
        for id in &self.links {
            // A link being freed can answer EAGAIN for a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Command::new("bpftool")
                .args(["link", "show", "id", &id.to_string()])
                .output()
                .expect("run bpftool")
                .status
                .success()
            {
                assert!(Instant::now() < deadline, "TCX link {id} left behind");
                thread::sleep(Duration::from_millis(100));
            }
        }
        let dir = self.dir.to_str().unwrap();
        for needle in self.veths.iter().map(String::as_str).chain([dir]) {
            let left = processes_mentioning(needle);
            assert!(
                left.is_empty(),
                "processes mentioning {needle} left behind: {left:?}"
            );
        }
        assert!(!self.dir.exists(), "{} left behind", self.dir.display());
    }
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes (other than this one) with an argument containing `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for pid in parallelrun_sandbox::pids() {
        if pid == me {
            continue;
        }
        // Gone meanwhile, or a zombie (empty command line): not running.
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(needle))
        {
            found.push(pid);
        }
    }
    found
}

/// Ids of the TCX links that process `pid` holds open.
fn tcx_links(pid: i32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        if field("link_type:").as_deref() == Some("tcx")
            && let Some(id) = field("link_id:").and_then(|v| v.parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids
}

/// Starts a demo and returns it with what it made, once the live part began.
fn start_live(secs: u64, own_group: bool) -> (Demo, Made) {
    let mut demo = Demo::start(secs, own_group);
    demo.wait_for("Live mismatch log", Duration::from_secs(60));
    let made = Made::find(&demo.output());
    (demo, made)
}

/// A whole run: the verdict is right and printed, the live log and the
/// agent's summary are shown, and nothing is left afterwards.
#[test]
fn demo_reports_what_changed_and_leaves_nothing_behind() {
    let (demo, made) = start_live(5, false);
    let (status, out) = demo.finish(Duration::from_secs(90));
    assert!(status.success(), "demo failed ({status}):\n{out}");

    // The live tail showed the log as it was written.
    assert!(
        out.contains(r#"body:/plan: "basic" → "premium""#),
        "tail output missing:\n{out}"
    );
    assert!(out.contains("mismatch GET /status 200 → 500"), "{out}");
    // The agent's own summary.
    assert!(
        out.lines()
            .any(|l| l.starts_with("parallelrun: ") && l.contains("requests seen")),
        "no agent summary:\n{out}"
    );
    // The verdict, line by line.
    let verdict = out
        .split("Demo verdict:")
        .nth(1)
        .unwrap_or_else(|| panic!("no verdict:\n{out}"));
    assert!(!verdict.contains('✗'), "a check failed:\n{out}");
    assert!(
        verdict.contains("✓ deliberate differences reported"),
        "{out}"
    );
    for (target, wheres) in [
        ("/users/7", "body:/plan"),
        ("/status", "status + body"),
        ("/version", "header:x-version"),
        ("/gzip", "body:/items/2"),
    ] {
        assert!(
            verdict.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&target) && l.contains(wheres) && l.ends_with("replayed")
            }),
            "{target} not reported at {wheres}:\n{out}"
        );
    }
    let noise = verdict
        .lines()
        .find_map(|l| l.trim().strip_prefix("✓ noise suppressed: "))
        .unwrap_or_else(|| panic!("no noise line:\n{out}"));
    let suppressed: u64 = noise
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("noise count in {noise:?}"));
    assert!(suppressed > 0, "{out}");
    assert!(verdict.contains("✓ POST replayed: no"), "{out}");
    assert!(verdict.contains("✓ nothing else reported"), "{out}");
    assert!(verdict.contains("✓ per-endpoint report:"), "{out}");
    assert!(verdict.contains("Demo passed"), "{out}");
    // The per-endpoint report, ranked: the table, and the HTML page kept.
    let report = out
        .split("Per-endpoint report")
        .nth(1)
        .unwrap_or_else(|| panic!("no per-endpoint report:\n{out}"));
    for endpoint in [
        "GET /users/{id}",
        "GET /status",
        "GET /version",
        "GET /gzip",
    ] {
        assert!(
            report.contains(endpoint),
            "{endpoint} not in the report:\n{out}"
        );
    }
    let html = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("HTML"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no HTML report path:\n{out}"));
    let page = std::fs::read_to_string(html).unwrap_or_else(|e| panic!("{html}: {e}"));
    assert!(page.contains("id=\"mismatch-chart\""), "{html}");
    // Not a terminal: no colour.
    assert!(
        !out.contains('\x1b'),
        "ANSI escapes in piped output:\n{out}"
    );

    made.assert_gone();
}

/// SIGTERM to the demo alone: it stops its traffic and the agent (which
/// prints its summary), gives no verdict, exits 128 + 15, and removes all.
#[test]
fn sigterm_stops_the_demo_and_it_cleans_up() {
    let (mut demo, made) = start_live(60, false);
    demo.wait_for("mismatch GET", Duration::from_secs(20));
    let t = Instant::now();
    demo.signal(libc::SIGTERM, false);
    let (status, out) = demo.finish(Duration::from_secs(45));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}:\n{out}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?} to stop",
        t.elapsed()
    );
    assert!(out.contains("Interrupted (SIGTERM)"), "{out}");
    assert!(!out.contains("Demo verdict"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("parallelrun: ") && l.contains("requests seen")),
        "the agent did not stop cleanly:\n{out}"
    );
    assert!(out.contains("Removed everything"), "{out}");
    made.assert_gone();
}

/// Ctrl-C in a terminal: SIGINT to the whole foreground process group (the
/// demo and the agent). Same result, exit status 128 + 2.
#[test]
fn ctrl_c_to_the_process_group_cleans_up() {
    let (mut demo, made) = start_live(60, true);
    demo.wait_for("mismatch GET", Duration::from_secs(20));
    demo.signal(libc::SIGINT, true);
    let (status, out) = demo.finish(Duration::from_secs(45));
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status}:\n{out}");
    assert!(status.signal().is_none(), "killed by a signal: {status}");
    assert!(out.contains("Interrupted (SIGINT"), "{out}");
    assert!(out.contains("Removed everything"), "{out}");
    made.assert_gone();
}

/// SIGKILL to the demo: its worker process (in its own process group) gets
/// SIGTERM from the kernel when its parent dies, and cleans up all the same.
#[test]
fn sigkill_of_the_demo_still_cleans_up() {
    let (mut demo, made) = start_live(60, false);
    demo.wait_for("mismatch GET", Duration::from_secs(20));
    demo.signal(libc::SIGKILL, false);
    let (status, out) = demo.finish(Duration::from_secs(45));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}:\n{out}");
    assert!(out.contains("Interrupted (SIGTERM)"), "{out}");
    assert!(out.contains("Removed everything"), "{out}");
    made.assert_gone();
}
