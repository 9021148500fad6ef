//! Processes, network namespaces and /proc readers for the live bench.
//!
//! Everything the bench creates is owned by a guard that removes it in
//! `Drop`, so an error, a panic or Ctrl-C (turned into an error at the next
//! check) leaves nothing behind. Children run in their own process group (a
//! terminal's Ctrl-C reaches only xtask, which then stops them in order) and
//! get SIGTERM if xtask dies first.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT, SIGTERM and SIGHUP into a flag that [`check`] reports, so
/// the bench unwinds through its guards instead of dying with namespaces,
/// servers and an agent left behind.
pub fn install_interrupt_handler() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

/// Fails once an interrupt arrived.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: cleaning up");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) on an interrupt.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

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

/// A child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` in its own process group, with SIGTERM as its parent-death
    /// signal. Call from the main thread: the death signal follows the thread
    /// that forked.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; it only sets a flag of the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the process to exit by itself, up to `limit`; kills it and
    /// fails on timeout or interrupt.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.exited() {
                return Ok(st);
            }
            if let Err(e) = check() {
                self.kill();
                return Err(e);
            }
            if Instant::now() >= end {
                self.kill();
                bail!("{} did not finish within {limit:?}", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and waits up to `limit` for the exit; SIGKILL after that.
    pub fn stop(&mut self, sig: i32, limit: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.exited() {
            return Ok(st);
        }
        self.signal(sig);
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(st) = self.exited() {
                return Ok(st);
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        bail!(
            "{} did not exit within {limit:?} of signal {sig}",
            self.name
        )
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.stop(libc::SIGTERM, Duration::from_secs(3));
        }
    }
}

/// A network namespace, deleted on drop with its interfaces (and so both
/// ends of every veth pair that has an end in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args)).map(drop)
    }

    /// A command run inside the namespace (`ip netns exec`, which execs it
    /// in place: the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        run(self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]))
        .map(drop)
    }

    /// Runs `f` on a thread that entered this namespace (sockets it opens and
    /// interface indexes it resolves are the namespace's).
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = fs::File::open(&path).with_context(|| format!("open {path}"))?;
            // SAFETY: a valid namespace fd; setns affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow!("a thread in namespace panicked"))?
    }

    /// The namespace's inode, as `/proc/PID/ns/net` links name it.
    pub fn inode(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        Ok(fs::metadata(format!("/run/netns/{}", self.name))?.ino())
    }

    fn pids(&self) -> Vec<i32> {
        run(Command::new("ip").args(["netns", "pids", &self.name]))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Every process in here was started by this bench (their guards have
        // stopped them already; this catches nginx workers and the like).
        for pid in self.pids() {
            // SAFETY: kill(2); the pid lives in our own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes namespaces that an earlier bench (`prefix` + its pid) left behind
/// when it was killed outright, with the processes still in them.
pub fn remove_stale_namespaces(prefix: &str) {
    let list = run(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = rest
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("bench: removing namespace {name} left by an earlier run (pid {pid} is gone)");
        drop(Netns {
            name: name.to_owned(),
        });
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
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
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
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))
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
        let Ok(dir) = fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(link) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            let ino = link
                .to_string_lossy()
                .trim_start_matches("net:[")
                .trim_end_matches(']')
                .parse::<u64>()
                .unwrap_or(0);
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
