//! `cargo xtask bench --profile`: where the time goes, sampled by `perf`.
//!
//! During a run (the bench picks B and C at each body size's fixed rate),
//! `perf record -a -g` samples every CPU. The summary says, as shares of
//! all CPU time and as CPU microseconds per request sent:
//! - who used the CPU: the old service, the new service, the load
//!   generator (by the network namespace each process lives in), the agent
//!   (by pid), anything else;
//! - the TC program, wherever it ran (it runs in softirq context inside
//!   whichever process sent or received the packet, so it is found by its
//!   symbol in the call chains, not by pid): its own instructions and each
//!   helper it calls;
//! - the agent's busiest functions.
//!
//! perf needs `kernel.perf_event_paranoid` ≤ 1 or root (the bench is root)
//! and, to name the JIT-compiled program, `net.core.bpf_jit_kallsyms=1`,
//! which the profile sets for its duration.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::sys::{self, Proc};

/// Sampling frequency per CPU. Odd, so it does not beat with timer ticks.
const FREQ_HZ: u32 = 999;
/// Rows kept of each table.
const TOP: usize = 12;
/// The TC program's symbol as kallsyms names it: `bpf_prog_<tag>_<name>`.
const PROG_SYMBOL: &str = "bpf_prog_.*_parallelrun";

/// `perf record` of the whole machine, started before the load and
/// stopped (SIGINT, so it writes its data) when the load is done.
pub struct Recording {
    perf: Proc,
    data: PathBuf,
    jit_kallsyms: Option<String>,
    /// Who is who, read once before the load and once while it runs (the
    /// load generator starts after `start`).
    parties: HashMap<i32, &'static str>,
    later: Option<std::thread::JoinHandle<HashMap<i32, &'static str>>>,
}

/// How long into the load the second look at the processes is taken.
const SECOND_LOOK: Duration = Duration::from_secs(2);

impl Recording {
    /// Starts perf. `namespaces` name the processes in each namespace (by
    /// inode); `agent_pid` is the agent's, if one runs.
    pub fn start(
        dir: &Path,
        label: &str,
        namespaces: Vec<(u64, &'static str)>,
        agent_pid: Option<i32>,
    ) -> Result<Self> {
        let parties_now = parties(&namespaces, agent_pid);
        let later = std::thread::spawn(move || {
            std::thread::sleep(SECOND_LOOK);
            parties(&namespaces, agent_pid)
        });
        let jit_kallsyms = set_sysctl("/proc/sys/net/core/bpf_jit_kallsyms", "1")?;
        let data = dir.join(format!("perf-{label}.data"));
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-a", "-g", "-F", &FREQ_HZ.to_string(), "-o"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(data.with_extension("err"))?);
        let perf = sys::spawn("perf record", &mut cmd)?;
        // perf opens its events within milliseconds; give it that before the
        // load starts so the first samples are not lost.
        sys::sleep(Duration::from_millis(300))?;
        Ok(Self {
            perf,
            data,
            jit_kallsyms,
            parties: parties_now,
            later: Some(later),
        })
    }

    /// Stops perf and summarises what it saw. `agent_pid` is the agent's,
    /// if one ran; `requests` are the requests sent during the recording,
    /// for the per-request figures.
    pub fn finish(mut self, agent_pid: Option<i32>, requests: u64) -> Result<Profile> {
        let st = self.perf.stop(libc::SIGINT, Duration::from_secs(60))?;
        let mut parties = std::mem::take(&mut self.parties);
        if let Some(later) = self.later.take() {
            parties.extend(later.join().unwrap_or_default());
        }
        // The idle task (pid 0, "swapper") is every CPU's idle time.
        parties.insert(0, "idle (no task ran)");
        if let Some(old) = self.jit_kallsyms.take() {
            let _ = fs::write("/proc/sys/net/core/bpf_jit_kallsyms", old);
        }
        // perf exits with the signal's status after writing its data.
        if !self.data.exists() {
            bail!(
                "perf record wrote nothing ({st}):\n{}",
                fs::read_to_string(self.data.with_extension("err")).unwrap_or_default()
            );
        }
        let secs = recorded_seconds(&self.data)?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let per_request_us = |share: f64| {
            (requests > 0).then(|| share / 100.0 * cpus * secs * 1e6 / requests as f64)
        };

        let by_pid = report(&self.data, &["--sort", "pid"], &[])?;
        let mut who: HashMap<&'static str, f64> = HashMap::new();
        for (share, fields) in &by_pid {
            let pid = fields
                .first()
                .and_then(|f| f.trim().split(':').next())
                .and_then(|p| p.trim().parse::<i32>().ok());
            let party = pid
                .and_then(|p| parties.get(&p).copied())
                .unwrap_or("other (kernel threads, the rest of the machine)");
            *who.entry(party).or_default() += share;
        }
        let mut parties_rows: Vec<Share> = who
            .into_iter()
            .map(|(name, share)| Share::new(name.to_owned(), share, per_request_us(share)))
            .collect();
        sort(&mut parties_rows);

        // Samples whose call chain passes through the program: its own
        // instructions and the helpers and kernel functions it called.
        let prog = report(
            &self.data,
            &["--sort", "sym", "--parent", PROG_SYMBOL, "--exclude-other"],
            &[],
        )?;
        let mut program: Vec<Share> = prog
            .iter()
            .map(|(share, f)| {
                let sym = f.first().map_or("", |s| s.trim());
                let sym = sym.trim_start_matches("[k] ");
                let name = if sym.starts_with("bpf_prog_") {
                    "(the program's own instructions)".to_owned()
                } else {
                    sym.to_owned()
                };
                Share::new(name, *share, per_request_us(*share))
            })
            .collect();
        let program_total: f64 = program.iter().map(|s| s.percent).sum();
        merge_same_names(&mut program);
        sort(&mut program);
        program.truncate(TOP);

        let mut agent = Vec::new();
        if let Some(pid) = agent_pid {
            let rows = report(
                &self.data,
                &["--sort", "dso,sym"],
                &["--pid", &pid.to_string()],
            )?;
            agent = rows
                .iter()
                .map(|(share, f)| {
                    let dso = f.first().map_or("", |s| s.trim());
                    let sym = f.get(1).map_or("", |s| s.trim());
                    Share::new(format!("{sym} ({dso})"), *share, per_request_us(*share))
                })
                .collect();
            sort(&mut agent);
            agent.truncate(TOP);
        }
        let _ = fs::remove_file(&self.data);
        Ok(Profile {
            seconds: secs,
            cpus,
            requests,
            parties: parties_rows,
            program_percent: program_total,
            program_us_per_request: per_request_us(program_total),
            program,
            agent,
        })
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(old) = self.jit_kallsyms.take() {
            let _ = fs::write("/proc/sys/net/core/bpf_jit_kallsyms", old);
        }
    }
}

/// What one profiled run showed.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub seconds: f64,
    pub cpus: f64,
    pub requests: u64,
    /// Who used the CPU (self time of their processes).
    pub parties: Vec<Share>,
    /// The TC program and what it calls, wherever it ran.
    pub program_percent: f64,
    pub program_us_per_request: Option<f64>,
    pub program: Vec<Share>,
    /// The agent's busiest functions (all its threads).
    pub agent: Vec<Share>,
}

/// A share of all CPU time (every CPU, the whole recording).
#[derive(Clone, Debug, Serialize)]
pub struct Share {
    pub name: String,
    pub percent: f64,
    /// CPU microseconds per request sent.
    pub us_per_request: Option<f64>,
}

impl Share {
    fn new(name: String, percent: f64, us_per_request: Option<f64>) -> Self {
        Self {
            name,
            percent,
            us_per_request,
        }
    }
}

impl Profile {
    /// Markdown: three small tables under a heading.
    pub fn markdown(&self, title: &str) -> String {
        let mut out = format!(
            "##### {title}\n\n{:.1} s on {} CPUs, {} requests sent. Shares are of all CPU time; µs are CPU per request sent.\n\n",
            self.seconds, self.cpus, self.requests
        );
        let table = |out: &mut String, head: &str, rows: &[Share]| {
            out.push_str(&format!(
                "| {head} | % of CPU | µs/request |\n|---|---:|---:|\n"
            ));
            for r in rows {
                out.push_str(&format!(
                    "| {} | {:.2} | {} |\n",
                    r.name.replace('|', "\\|"),
                    r.percent,
                    r.us_per_request.map_or("–".into(), |u| format!("{u:.2}"))
                ));
            }
            out.push('\n');
        };
        table(&mut out, "who", &self.parties);
        out.push_str(&format!(
            "TC program, all it calls included: {:.2} % of CPU, {} µs/request.\n\n",
            self.program_percent,
            self.program_us_per_request
                .map_or("–".into(), |u| format!("{u:.2}"))
        ));
        table(&mut out, "in the TC program", &self.program);
        if !self.agent.is_empty() {
            table(&mut out, "agent function", &self.agent);
        }
        out
    }
}

/// Rows of `perf report --stdio` as (overhead %, other fields).
fn report(data: &Path, sort: &[&str], filter: &[&str]) -> Result<Vec<(f64, Vec<String>)>> {
    let out = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "-g",
            "none",
            "-t",
            "\t",
        ])
        .arg("-i")
        .arg(data)
        .args(sort)
        .args(filter)
        .stderr(Stdio::null())
        .output()
        .context("running perf report")?;
    if !out.status.success() {
        bail!("perf report failed: {}", out.status);
    }
    Ok(parse_report(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_report(text: &str) -> Vec<(f64, Vec<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut fields = l.split('\t');
            let share = fields.next()?.trim().strip_suffix('%')?.parse().ok()?;
            Some((share, fields.map(str::to_owned).collect()))
        })
        .collect()
}

/// The recording's duration, from `perf report --header-only`'s
/// "sample duration" line.
fn recorded_seconds(data: &Path) -> Result<f64> {
    let out = Command::new("perf")
        .args(["report", "--header-only", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .context("running perf report --header-only")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let ms = l.split("sample duration :").nth(1)?.trim();
            ms.strip_suffix("ms")?.trim().parse::<f64>().ok()
        })
        .map(|ms| ms / 1e3)
        .context("perf's header has no sample duration")
}

fn sort(rows: &mut [Share]) {
    rows.sort_by(|a, b| b.percent.total_cmp(&a.percent));
}

fn merge_same_names(rows: &mut Vec<Share>) {
    let mut merged: Vec<Share> = Vec::with_capacity(rows.len());
    for r in rows.drain(..) {
        match merged.iter_mut().find(|m| m.name == r.name) {
            Some(m) => {
                m.percent += r.percent;
                m.us_per_request = match (m.us_per_request, r.us_per_request) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
            }
            None => merged.push(r),
        }
    }
    *rows = merged;
}

/// Writes `value` to a sysctl file and returns the value it replaced.
fn set_sysctl(path: &str, value: &str) -> Result<Option<String>> {
    let old = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    if old.trim() == value {
        return Ok(None);
    }
    fs::write(path, value).with_context(|| format!("writing {value} to {path}"))?;
    Ok(Some(old.trim().to_owned()))
}

/// Every process on the machine whose network namespace is one of
/// `namespaces` (inode → who), plus `agent_pid`: pid → who.
fn parties(
    namespaces: &[(u64, &'static str)],
    agent_pid: Option<i32>,
) -> HashMap<i32, &'static str> {
    let mut out = HashMap::new();
    for pid in parallelrun_sandbox::pids() {
        let party = if Some(pid) == agent_pid {
            Some("agent")
        } else {
            parallelrun_sandbox::net_namespace(pid)
                .and_then(|ino| namespaces.iter().find(|(i, _)| *i == ino))
                .map(|(_, who)| *who)
        };
        let Some(who) = party else { continue };
        out.insert(pid, who);
        // Threads are sampled under their own tid: name every task.
        if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
                    out.insert(tid, who);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tab_separated_rows_and_skips_comments() {
        let text = "# comment\n\n 4.23%  \t   8001:nginx   \t[k] tcp_ack\n 0.5%\t[k] x\t y\n";
        let rows = parse_report(text);
        assert_eq!(rows.len(), 2);
        assert!((rows[0].0 - 4.23).abs() < 1e-9);
        assert_eq!(rows[0].1[0].trim(), "8001:nginx");
        assert_eq!(rows[1].1.len(), 2);
    }

    #[test]
    fn merges_rows_of_one_name() {
        let mut rows = vec![
            Share::new("a".into(), 1.0, Some(1.0)),
            Share::new("b".into(), 2.0, None),
            Share::new("a".into(), 0.5, Some(0.5)),
        ];
        merge_same_names(&mut rows);
        assert_eq!(rows.len(), 2);
        assert!((rows[0].percent - 1.5).abs() < 1e-9);
        assert_eq!(rows[0].us_per_request, Some(1.5));
    }
}
