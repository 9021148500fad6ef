//! One measured run: a condition, a body size and a load, with the agent's
//! cost and the counts that tell how complete its view was.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::{
    bpf::{self, EmptyProg, RunStats},
    load::{self, LoadResult},
    pcap::{PcapCounts, Tcpdump},
    profile::{self, Profile},
    sys::{self, ForeignCpu, Proc},
    topo::{OLD_IP, SERVICE_PORT, Topology},
};

/// Kernel ring buffer the agent is started with (its default, named so the
/// memory target can add it).
pub const RING_BYTES: u64 = 32 << 20;

/// Fraction of connections the sampled conditions capture (`--sample`).
pub const SAMPLE: f64 = 0.1;

/// The completeness rate (1 KiB) at which C+ is measured beside A and C.
pub const SUMMARY_RATE: u32 = 10000;

/// How often C+ has the agent rewrite its summary file (`--summary-every`),
/// in seconds: more often than the default 5 s, so a run of a few seconds
/// writes it several times over.
pub const SUMMARY_EVERY_SECS: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cond {
    /// No agent.
    A,
    /// `parallelrun record --discard`: capture only.
    B,
    /// `parallelrun run`: capture, reassembly, replay, diff.
    C,
    /// nginx reverse proxy in the path with `mirror` to the new service.
    D,
    /// B with `--sample 0.1`: the kernel captures a tenth of the connections.
    Bs,
    /// C with `--sample 0.1`.
    Cs,
    /// C with `--summary FILE --summary-every 1`: per-endpoint results kept
    /// and the summary file rewritten every second. Not in [`Cond::ALL`]:
    /// measured only in the completeness phase at [`SUMMARY_RATE`].
    Cr,
    /// C+ replaying to the new service's port whose every answer differs
    /// (one header more): a mismatch event per request. Measured beside
    /// C*N only, like C+.
    Cd,
    /// C* with `--nats URL`: every mismatch event and the summary (every
    /// second) published to NATS JetStream.
    Cn,
}

impl Cond {
    /// Every condition of the saturation and latency rounds, in the order a
    /// round alternates them (C+ is measured only at [`SUMMARY_RATE`]).
    pub const ALL: [Cond; 6] = [Cond::A, Cond::B, Cond::C, Cond::D, Cond::Bs, Cond::Cs];

    pub fn label(self) -> &'static str {
        match self {
            Cond::A => "A no agent",
            Cond::B => "B capture only",
            Cond::C => "C full pipeline",
            Cond::D => "D nginx mirror",
            Cond::Bs => "B' capture only, --sample 0.1",
            Cond::Cs => "C' full pipeline, --sample 0.1",
            Cond::Cr => "C+ full pipeline with --summary",
            Cond::Cd => "C* C+, every response differing",
            Cond::Cn => "C*N C*, published to NATS",
        }
    }

    /// Whether the agent runs (and which command: `record` or `run`).
    pub fn has_agent(self) -> bool {
        !matches!(self, Cond::A | Cond::D)
    }

    pub fn sampled(self) -> bool {
        matches!(self, Cond::Bs | Cond::Cs)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Load {
    /// Closed loop (wrk).
    Saturation,
    /// Open loop at this many requests/s (oha).
    Rate(u32),
    /// Open loop at this many requests/s over h2c (oha), to the services'
    /// HTTP/2 port: the agent watches that port and replays there.
    H2Rate(u32),
}

impl Load {
    pub fn h2(self) -> bool {
        matches!(self, Load::H2Rate(_))
    }
}

/// The agent's side of a run (B, C and their variants).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentRun {
    /// User + system CPU seconds from the load's start until the agent was
    /// idle again.
    pub cpu_s: f64,
    /// CPU seconds per 1000 requests sent = cores per 1000 requests/s.
    pub cpu_per_1k: Option<f64>,
    /// `run` only: CPU seconds per 1000 requests compared = cores per 1000
    /// compared requests/s (what a comparison costs, whatever was shed).
    pub cpu_per_1k_compared: Option<f64>,
    /// `run` only: compared / sent.
    pub compared_fraction: Option<f64>,
    /// Connections the kernel left out by sampling (`sampled_out`; None
    /// when the agent has no such counter).
    pub sampled_out: Option<u64>,
    /// Scheduling policy of each agent thread, read while it ran
    /// (`/proc/PID/task/*/stat` field 41; 5 = SCHED_IDLE).
    pub thread_policies: Vec<u64>,
    /// VmHWM at the end of the run (startup included).
    pub peak_rss_bytes: u64,
    /// Of the resident set at the end: the BPF map mappings (the ring
    /// buffer's data pages are mapped twice, so a full 32 MiB ring shows as
    /// 64 MiB) and the agent's anonymous memory (heap).
    pub ring_map_rss_bytes: u64,
    /// The classifier's run-time statistics over the same window.
    pub prog_run_time_ns: u64,
    pub prog_run_cnt: u64,
    pub ns_per_run: Option<f64>,
    /// Run time over records emitted: every run (pure ACKs too) charged to
    /// the packets the agent records, an upper bound per payload packet.
    pub ns_per_record: Option<f64>,
    pub packets_matched: u64,
    pub records: u64,
    pub payload_bytes: u64,
    pub ringbuf_full_drops: u64,
    /// `run` only: requests_seen.
    pub captured: Option<u64>,
    /// `run` only: matched + mismatched + noise.
    pub compared: Option<u64>,
    pub mismatched: Option<u64>,
    pub skipped: Option<u64>,
    pub lost: Option<u64>,
    pub lost_ring_buffer_drop: Option<u64>,
    pub replay_errors: Option<u64>,
    /// `record` only: records read from the ring.
    pub agent_records: Option<u64>,
    /// C+ only: bytes of the summary file the agent left at its exit (known
    /// to parse as JSON).
    pub summary_bytes: Option<u64>,
    /// C*N only: messages published to NATS, and dropped from the agent's
    /// bounded buffer.
    pub nats_published: Option<u64>,
    pub nats_dropped: Option<u64>,
    pub stats: Value,
}

/// The tcpdump comparison of a run.
#[derive(Clone, Debug, Serialize)]
pub struct TcpdumpRun {
    pub tcpdump: PcapCounts,
    /// The empty TC program attached beside the agent's: the floor of
    /// `bpf_stats` (timestamps and dispatch) per run.
    pub empty_prog_ns_per_run: Option<f64>,
    pub empty_prog_runs: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub size: &'static str,
    pub phase: &'static str,
    pub round: u32,
    pub cond: Cond,
    pub load: LoadResult,
    /// Requests the old service served during the run (its stub_status):
    /// what was sent to production, in-flight ones at wrk's stop included.
    pub sent: u64,
    /// Requests the new service served (replays in C, mirrors in D).
    pub new_served: u64,
    pub agent: Option<AgentRun>,
    pub tcpdump: Option<TcpdumpRun>,
    /// CPU seconds used meanwhile by processes outside the bench's
    /// namespaces (other work on the machine that competed).
    pub foreign_cpu_s: f64,
    /// Seconds waited before the run for other processes to go quiet, and
    /// whether they did.
    pub quiet_wait_s: f64,
    pub quiet: bool,
    /// IRQ work interrupts on the machine during the run (ring-buffer
    /// wakeups from the TC program raise them).
    pub irq_work_interrupts: u64,
    /// What perf saw during the load, when the spec asked for it.
    pub profile: Option<Profile>,
}

pub struct Ctx<'a> {
    pub topo: &'a mut Topology,
    pub agent_bin: &'a Path,
    pub oha_bin: &'a Path,
    /// What is left of the time all runs together may wait for quiet.
    pub quiet_budget: Duration,
}

pub struct Spec {
    pub size: &'static str,
    pub phase: &'static str,
    pub round: u32,
    pub cond: Cond,
    pub load: Load,
    pub seconds: u64,
    pub with_tcpdump: bool,
    /// Sample every CPU with perf while the load runs (see `profile`).
    pub profile: bool,
}

struct Agent {
    proc: Proc,
    stats_path: PathBuf,
    err_path: PathBuf,
    /// C+: the summary file the agent must leave.
    summary_path: Option<PathBuf>,
    cond: Cond,
}

impl Agent {
    fn start(ctx: &Ctx, cond: Cond, h2: bool) -> Result<Self> {
        let dir = &ctx.topo.dir;
        let stats_path = dir.join("agent-stats.json");
        let err_path = dir.join("agent.err");
        let _ = fs::remove_file(&stats_path);
        // A summary left by an earlier run must not pass for this one's.
        let summary_path =
            matches!(cond, Cond::Cr | Cond::Cd | Cond::Cn).then(|| dir.join("summary.json"));
        if let Some(p) = &summary_path {
            let _ = fs::remove_file(p);
        }
        let (old, new) = if h2 {
            (ctx.topo.old_h2_addr(), ctx.topo.new_h2_addr())
        } else if matches!(cond, Cond::Cd | Cond::Cn) {
            (ctx.topo.old_addr(), ctx.topo.new_differing_addr())
        } else {
            (ctx.topo.old_addr(), ctx.topo.new_addr())
        };
        let old = old.to_string();
        let mut cmd = ctx.topo.old.command(ctx.agent_bin);
        // The agent runs with its default CPU priority (idle).
        match cond {
            Cond::B | Cond::Bs => {
                cmd.args(["record", "--discard"]);
            }
            Cond::C | Cond::Cs | Cond::Cr | Cond::Cd | Cond::Cn => {
                cmd.args(["run", "--no-metrics", "--new"])
                    .arg(new.to_string())
                    .arg("--log")
                    .arg(dir.join("mismatches.jsonl"));
            }
            _ => bail!("no agent in condition {cond:?}"),
        }
        if cond.sampled() {
            cmd.args(["--sample", &SAMPLE.to_string()]);
        }
        if cond == Cond::Cn {
            cmd.args(["--nats", &ctx.topo.nats_url(), "--node", "bench"]);
        }
        if let Some(p) = &summary_path {
            cmd.arg("--summary")
                .arg(p)
                .args(["--summary-every", &SUMMARY_EVERY_SECS.to_string()]);
        }
        cmd.args(["--iface", &ctx.topo.old_if, "--old", &old])
            .args(["--ring-size", &format!("{}MiB", RING_BYTES >> 20)])
            .arg("--stats-json")
            .arg(&stats_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_path)?);
        let mut proc = sys::spawn("parallelrun", &mut cmd)?;
        sys::wait_for_text(&mut proc, &err_path, " attached", Duration::from_secs(30))?;
        Ok(Self {
            proc,
            stats_path,
            err_path,
            summary_path,
            cond,
        })
    }

    /// Stops the agent: its final counters and, in C+, the size of the
    /// summary file it left (which must parse as JSON, or the run fails).
    fn stop(mut self) -> Result<(Value, Option<u64>)> {
        let st = self.proc.stop(libc::SIGTERM, Duration::from_secs(30))?;
        let log = || fs::read_to_string(&self.err_path).unwrap_or_default();
        if !st.success() {
            bail!("the agent failed ({st}):\n{}", log());
        }
        let text = fs::read_to_string(&self.stats_path)
            .with_context(|| format!("the agent wrote no stats:\n{}", log()))?;
        let stats: Value = serde_json::from_str(&text)?;
        if self.cond == Cond::Cn && stats["nats"]["published"].as_u64().unwrap_or(0) == 0 {
            bail!(
                "condition {}: the agent published nothing to NATS, so the run cannot measure \
                 what publishing costs; agent log:\n{}",
                self.cond.label(),
                log()
            );
        }
        let summary_bytes = match &self.summary_path {
            Some(p) => Some(check_summary(p).with_context(|| {
                format!(
                    "condition {}: the agent ran with --summary {} but did not do its work, so \
                     the run cannot measure what the summary costs; agent log:\n{}",
                    self.cond.label(),
                    p.display(),
                    log()
                )
            })?),
            None => None,
        };
        Ok((stats, summary_bytes))
    }
}

/// The size of the summary file at `path`, once it is known to exist and to
/// parse as JSON.
fn check_summary(path: &Path) -> Result<u64> {
    let text =
        fs::read_to_string(path).with_context(|| format!("no summary file {}", path.display()))?;
    serde_json::from_str::<Value>(&text)
        .with_context(|| format!("the summary file {} is not JSON", path.display()))?;
    Ok(text.len() as u64)
}

/// Reads of a stub_status counter; each read is itself one request.
struct Served {
    first: u64,
    last: u64,
    reads: u64,
}

impl Served {
    fn new(v: u64) -> Self {
        Self {
            first: v,
            last: v,
            reads: 1,
        }
    }

    fn update(&mut self, v: u64) {
        self.last = v;
        self.reads += 1;
    }

    fn served(&self) -> u64 {
        (self.last - self.first).saturating_sub(self.reads - 1)
    }
}

/// Other processes may use this much CPU (cores) before a run starts.
const QUIET_CORES: f64 = 0.15;
const QUIET_WAIT: Duration = Duration::from_secs(30);

pub fn run(ctx: &mut Ctx, spec: &Spec) -> Result<Run> {
    sys::check()?;
    ctx.topo.check_servers()?;
    let (quiet_wait_s, quiet) = sys::wait_quiet(
        &ctx.topo.namespace_inodes(),
        QUIET_CORES,
        QUIET_WAIT.min(ctx.quiet_budget),
    )?;
    ctx.quiet_budget = ctx
        .quiet_budget
        .saturating_sub(Duration::from_secs_f64(quiet_wait_s));
    let has_agent = spec.cond.has_agent();
    // Statistics are on only while an agent runs (B and C).
    let stats_on = has_agent.then(bpf::enable_stats).transpose()?;
    let agent = if has_agent {
        Some(Agent::start(ctx, spec.cond, spec.load.h2())?)
    } else {
        None
    };
    let empty = if spec.with_tcpdump {
        Some(EmptyProg::attach(&ctx.topo.old, &ctx.topo.old_if)?)
    } else {
        None
    };
    let tcpdump = if spec.with_tcpdump {
        let filter = format!(
            "tcp and ((src host {OLD_IP} and src port {SERVICE_PORT}) or (dst host {OLD_IP} and dst port {SERVICE_PORT}))"
        );
        Some(Tcpdump::start(
            &ctx.topo.old,
            &ctx.topo.old_if,
            &filter,
            &ctx.topo.dir.path,
        )?)
    } else {
        None
    };
    sys::sleep(Duration::from_millis(300))?;

    let pid = agent.as_ref().map(|a| a.proc.pid());
    let policies = pid.map(sys::thread_policies).unwrap_or_default();
    let mut old = Served::new(ctx.topo.old_requests()?);
    let mut new = Served::new(ctx.topo.new_requests()?);
    let cpu0 = pid.map(sys::cpu_seconds).transpose()?;
    let prog0 = pid.map(bpf::process_prog_stats).transpose()?;
    let empty0 = empty.as_ref().map(EmptyProg::stats).transpose()?;
    let foreign = ForeignCpu::start(ctx.topo.namespace_inodes());
    let iwi0 = sys::irq_work_interrupts();

    let addr = if spec.cond == Cond::D {
        ctx.topo.proxy_addr()
    } else if spec.load.h2() {
        ctx.topo.old_h2_addr()
    } else {
        ctx.topo.old_addr()
    };
    let recording = if spec.profile {
        let label: String = format!("{}-{}", spec.size, spec.cond.label())
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let namespaces = vec![
            (ctx.topo.old.inode()?, "old service (its namespace)"),
            (ctx.topo.new.inode()?, "new service (its namespace)"),
            (ctx.topo.client.inode()?, "load generator (its namespace)"),
        ];
        Some(profile::Recording::start(
            &ctx.topo.dir.path,
            &label,
            namespaces,
            pid,
        )?)
    } else {
        None
    };
    let load = match spec.load {
        Load::Saturation => load::wrk(
            &ctx.topo.client,
            &ctx.topo.dir,
            addr,
            spec.size,
            spec.seconds,
        )?,
        Load::Rate(r) | Load::H2Rate(r) => load::oha(
            &ctx.topo.client,
            &ctx.topo.dir,
            ctx.oha_bin,
            addr,
            spec.size,
            r,
            spec.seconds,
            spec.load.h2(),
        )?,
    };

    let profile = match recording {
        Some(rec) => Some(rec.finish(pid, load.responses)?),
        None => None,
    };

    // Until the agent and the new service are idle again: replays finish,
    // the ring is drained.
    let settle_end = Instant::now() + Duration::from_secs(10);
    let mut stable = 0;
    let mut last = (new.last, cpu0.unwrap_or(0.0));
    while stable < 2 && Instant::now() < settle_end {
        sys::sleep(Duration::from_millis(200))?;
        new.update(ctx.topo.new_requests()?);
        let now = (
            new.last,
            pid.map(sys::cpu_seconds).transpose()?.unwrap_or(0.0),
        );
        // The read itself adds one request to the counter.
        if now.0 == last.0 + 1 && now.1 == last.1 {
            stable += 1;
        } else {
            stable = 0;
        }
        last = now;
    }
    old.update(ctx.topo.old_requests()?);
    let foreign_cpu_s = foreign.seconds();
    let irq_work_interrupts = sys::irq_work_interrupts().saturating_sub(iwi0);
    let sent = old.served();

    let tcpdump = match tcpdump {
        Some(t) => Some(t.finish()?),
        None => None,
    };
    let empty_stats = match (&empty, empty0) {
        (Some(e), Some(s0)) => Some(e.stats()?.since(s0)),
        _ => None,
    };
    drop(empty);

    let agent_run = match (agent, pid) {
        (Some(agent), Some(pid)) => {
            let cpu_s = sys::cpu_seconds(pid)? - cpu0.unwrap_or(0.0);
            let peak_rss_bytes = sys::peak_rss(pid)?;
            let ring_map_rss_bytes = sys::bpf_map_rss(pid);
            let prog = bpf::process_prog_stats(pid)?.since(prog0.unwrap_or_default());
            let (stats, summary_bytes) = agent.stop()?;
            let mut a = agent_run(stats, cpu_s, peak_rss_bytes, prog, sent);
            a.ring_map_rss_bytes = ring_map_rss_bytes;
            a.summary_bytes = summary_bytes;
            a.thread_policies = policies.into_iter().map(|(_, p)| p).collect();
            if spec.cond.sampled() && a.sampled_out.is_none() {
                bail!(
                    "the agent took --sample {SAMPLE} but reports no kernel `sampled_out` \
                     counter: it samples requests after capture, not connections in the kernel, \
                     so condition {} would not measure kernel sampling. Build an agent with \
                     kernel connection sampling, or pass --without-sampling",
                    spec.cond.label()
                );
            }
            Some(a)
        }
        _ => None,
    };
    drop(stats_on);

    Ok(Run {
        size: spec.size,
        phase: spec.phase,
        round: spec.round,
        cond: spec.cond,
        load,
        sent,
        new_served: new.served(),
        agent: agent_run,
        tcpdump: tcpdump.map(|t| TcpdumpRun {
            tcpdump: t,
            empty_prog_ns_per_run: empty_stats.and_then(RunStats::ns_per_run),
            empty_prog_runs: empty_stats.map_or(0, |s| s.run_cnt),
        }),
        foreign_cpu_s,
        quiet_wait_s,
        quiet,
        irq_work_interrupts,
        profile,
    })
}

fn agent_run(stats: Value, cpu_s: f64, peak: u64, prog: RunStats, sent: u64) -> AgentRun {
    let k = |name: &str| stats["kernel"][name].as_u64().unwrap_or(0);
    let o = |name: &str| stats["outcomes"][name].as_u64();
    let sum = |v: &Value| {
        v.as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum::<u64>())
    };
    let records = k("records_emitted");
    let is_run = stats.get("requests_seen").is_some();
    let compared = is_run
        .then(|| Some(o("matched")? + o("mismatched")? + o("noise")?))
        .flatten();
    AgentRun {
        cpu_s,
        cpu_per_1k: (sent > 0).then(|| cpu_s / (sent as f64 / 1000.0)),
        cpu_per_1k_compared: compared
            .filter(|&c| c > 0)
            .map(|c| cpu_s / (c as f64 / 1000.0)),
        compared_fraction: compared
            .filter(|_| sent > 0)
            .map(|c| c as f64 / sent as f64),
        sampled_out: stats["kernel"]["sampled_out"].as_u64(),
        thread_policies: Vec::new(),
        peak_rss_bytes: peak,
        ring_map_rss_bytes: 0,
        prog_run_time_ns: prog.run_time_ns,
        prog_run_cnt: prog.run_cnt,
        ns_per_run: prog.ns_per_run(),
        ns_per_record: (records > 0).then(|| prog.run_time_ns as f64 / records as f64),
        packets_matched: k("packets_matched"),
        records,
        payload_bytes: k("bytes_emitted"),
        ringbuf_full_drops: k("ringbuf_full_drops"),
        captured: stats["requests_seen"].as_u64(),
        compared,
        mismatched: o("mismatched"),
        skipped: sum(&stats["outcomes"]["skipped"]),
        lost: sum(&stats["outcomes"]["lost"]),
        lost_ring_buffer_drop: stats["outcomes"]["lost"]["ring_buffer_drop"].as_u64(),
        replay_errors: o("replay_errors"),
        agent_records: stats["agent"]["records"].as_u64(),
        summary_bytes: None,
        nats_published: stats["nats"]["published"].as_u64(),
        nats_dropped: stats["nats"]["dropped"].as_u64(),
        stats,
    }
}
