//! Processes, network namespaces and /proc readers for the live bench.
//!
//! Everything the bench creates is owned by a guard that removes it in
//! `Drop` (the namespace and process guards are `parallelrun-sandbox`'s,
//! shared with the tests and the demo), so an error, a panic or Ctrl-C
//! (turned into an error at the next check) leaves nothing behind. Children
//! run in their own process group (a terminal's Ctrl-C reaches only xtask,
//! which then stops them in order) and get SIGTERM if xtask dies first.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
pub use parallelrun_sandbox::{
    Netns, Proc,
    signal::{check, sleep},
};

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).ok();
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Spawns a child of the bench: in its own process group, with SIGTERM as
/// its parent-death signal. Call from the main thread: the death signal
/// follows the thread that forked.
pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc> {
    Ok(Proc::spawn_own_group(name, cmd)?)
}

/// Whether the bench that left something named after `pid` is gone.
fn left_by_gone_run(pid: u32) -> bool {
    pid != std::process::id() && i32::try_from(pid).is_ok_and(parallelrun_sandbox::is_gone)
}

/// Removes namespaces that an earlier bench (`prefix` + its pid) left behind
/// when it was killed outright, with the processes still in them.
pub fn remove_stale_namespaces(prefix: &str) {
    let list = parallelrun_sandbox::run(Command::new("ip").args(["netns", "list"]))
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = rest
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !left_by_gone_run(pid) {
            continue;
        }
        eprintln!("bench: removing namespace {name} left by an earlier run (pid {pid} is gone)");
        drop(Netns::adopt(name));
    }
}

/// Removes `TMPDIR/<prefix>-<pid>` directories whose bench is gone.
pub fn remove_stale_dirs(prefix: &str) {
    let Ok(dir) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if left_by_gone_run(pid) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// One HTTP/1.0 GET in namespace `ns`; the whole response.
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> Result<String> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n");
    ns.run_in(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(req.as_bytes())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
}

/// Waits (10 s at most) until something in `ns` accepts connections on
/// `addr`.
pub fn wait_listening(ns: &Netns, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = ns.run_in(move || {
            anyhow::Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
        })?;
        if up {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on {addr} after 10 s");
        }
        sleep(Duration::from_millis(50))?;
    }
}

/// nginx's stub_status `requests` counter at `addr` in `ns`.
pub fn nginx_requests(ns: &Netns, addr: SocketAddr) -> Result<u64> {
    let text = http_get(ns, addr, "/")?;
    // "server accepts handled requests\n 34 34 159499 \n"
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("server accepts"));
    lines
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected stub_status answer from {addr}: {text:?}"))
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Fields of /proc/PID/stat after the command name.
fn stat_fields(pid: i32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .skip(1) // state
            .map(|f| f.parse::<i64>().map(|v| v as u64).unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds (user + system, all threads) a process used so far.
pub fn cpu_seconds(pid: i32) -> Result<f64> {
    let f = stat_fields(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // utime and stime are fields 14 and 15; `f` starts at field 4.
    Ok((f[10] + f[11]) as f64 / clock_ticks_per_sec())
}

/// Peak resident set (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: i32) -> Result<u64> {
    Ok(parallelrun_sandbox::status_kib(pid, "VmHWM")? * 1024)
}

/// IRQ work interrupts so far, all CPUs (`IWI` in /proc/interrupts): what a
/// BPF ring buffer's wakeups raise.
pub fn irq_work_interrupts() -> u64 {
    fs::read_to_string("/proc/interrupts")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let rest = l.trim_start().strip_prefix("IWI:")?;
                Some(
                    rest.split_whitespace()
                        .map_while(|w| w.parse::<u64>().ok())
                        .sum(),
                )
            })
        })
        .unwrap_or(0)
}

/// Resident bytes of a process's BPF map mappings (/proc/PID/smaps): the
/// ring buffer, whose data pages are mapped twice and so count twice.
pub fn bpf_map_rss(pid: i32) -> u64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return 0;
    };
    let mut in_map = false;
    let mut total = 0;
    for l in text.lines() {
        let mut words = l.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_map = l.ends_with("anon_inode:bpf-map");
        } else if in_map && first == "Rss:" {
            total += words
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024;
        }
    }
    total
}

/// CPU seconds used by user-space processes outside the bench's namespaces
/// (kernel threads and xtask itself excluded): other work on this machine
/// that competes with the measurement.
pub struct ForeignCpu {
    ours: HashSet<u64>,
    start: HashMap<i32, f64>,
}

impl ForeignCpu {
    pub fn start(ours: HashSet<u64>) -> Self {
        let mut f = Self {
            ours,
            start: HashMap::new(),
        };
        f.start = f.sample();
        f
    }

    fn sample(&self) -> HashMap<i32, f64> {
        let me = std::process::id() as i32;
        let tck = clock_ticks_per_sec();
        let mut out = HashMap::new();
        for pid in parallelrun_sandbox::pids() {
            if pid == me {
                continue;
            }
            let Some(ino) = parallelrun_sandbox::net_namespace(pid) else {
                continue;
            };
            if self.ours.contains(&ino) {
                continue;
            }
            let Some(f) = stat_fields(pid) else { continue };
            // flags (field 9): PF_KTHREAD.
            if f[5] & 0x0020_0000 != 0 {
                continue;
            }
            out.insert(pid, (f[10] + f[11]) as f64 / tck);
        }
        out
    }

    /// CPU seconds used since `start` (processes started since count whole).
    pub fn seconds(&self) -> f64 {
        self.sample()
            .iter()
            .map(|(pid, now)| (now - self.start.get(pid).copied().unwrap_or(0.0)).max(0.0))
            .sum()
    }
}

/// Waits (up to `limit`) until processes outside the bench's namespaces use
/// less than `cores` over 0.3 s, so a run does not share the machine
/// with someone's build. Returns the seconds waited and whether it is quiet.
pub fn wait_quiet(ours: &HashSet<u64>, cores: f64, limit: Duration) -> Result<(f64, bool)> {
    let start = Instant::now();
    let mut said = false;
    loop {
        let f = ForeignCpu::start(ours.clone());
        sleep(Duration::from_millis(300))?;
        let used = f.seconds() / 0.3;
        if used < cores {
            return Ok((start.elapsed().as_secs_f64(), true));
        }
        if start.elapsed() >= limit {
            eprintln!(
                "bench: other processes still use {used:.2} cores; measuring anyway (flagged)"
            );
            return Ok((start.elapsed().as_secs_f64(), false));
        }
        if !said {
            eprintln!(
                "bench: other processes use {used:.2} cores; waiting up to {limit:?} for quiet"
            );
            said = true;
        }
    }
}

/// Reads a file a child writes to, waiting until it contains `needle`, the
/// child exits (error with the file's text) or `limit` passes.
pub fn wait_for_text(proc: &mut Proc, file: &Path, needle: &str, limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    loop {
        let text = fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if let Some(st) = proc.exited() {
            bail!("{} exited ({st}) before it was ready:\n{text}", proc.name);
        }
        if Instant::now() >= end {
            bail!("{} not ready within {limit:?}:\n{text}", proc.name);
        }
        check()?;
        thread::sleep(Duration::from_millis(25));
    }
}

/// `SCHED_IDLE` in `/proc/*/stat`'s `policy` field.
pub const SCHED_IDLE: u64 = 5;

/// Starts `cmd` under SCHED_IDLE (inherited by everything it forks): for
/// the processes that stand in for other machines (the new service), so
/// that on the bench's shared cores they take no CPU time production wants
/// and condition C measures what the agent costs production, nothing else.
pub fn sched_idle(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Scheduling policy (field 41) of every thread of process `pid`, by tid.
pub fn thread_policies(pid: i32) -> Vec<(i32, u64)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            let rest = stat.get(stat.rfind(')')? + 1..)?;
            // `rest` starts with field 3 (state).
            let policy = rest.split_whitespace().nth(41 - 3)?.parse().ok()?;
            Some((tid, policy))
        })
        .collect()
}

/// Pids of the processes whose network namespace has inode `ns`.
pub fn pids_in_netns(ns: u64) -> Vec<i32> {
    parallelrun_sandbox::pids()
        .into_iter()
        .filter(|&pid| parallelrun_sandbox::net_namespace(pid) == Some(ns))
        .collect()
}

/// Fails unless every thread of process `pid` is SCHED_IDLE.
pub fn check_idle(name: &str, pid: i32) -> Result<()> {
    let threads = thread_policies(pid);
    let other: Vec<String> = threads
        .iter()
        .filter(|(_, p)| *p != SCHED_IDLE)
        .map(|(tid, p)| format!("{tid}: policy {p}"))
        .collect();
    if threads.is_empty() || !other.is_empty() {
        bail!(
            "{name} (pid {pid}) should run under SCHED_IDLE on every thread; not so: {other:?} of {} threads",
            threads.len()
        );
    }
    Ok(())
}
