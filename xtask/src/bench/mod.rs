//! `cargo xtask bench`: what parallelrun costs production, how complete its
//! view is, and what it costs itself, side by side with no agent and with
//! the conventional alternative (an nginx proxy that mirrors).
//!
//! Two parts:
//! - **live** (root): namespaces, an old and a new nginx, wrk/oha load, and
//!   six conditions alternated in one run — A no agent, B `record
//!   --discard` (capture only), C `run` (full pipeline), D nginx `mirror` in
//!   the path, B' and C' (B and C with `--sample 0.1`, kernel connection
//!   sampling) — reported as ratios to A, with completeness (sent /
//!   captured / compared, drops), agent CPU per compared request and
//!   memory, kernel ns per record against dispatch + memcpy measured in the
//!   same run, and a tcpdump cross-check. Then, with 1 KiB bodies, the
//!   completeness phase at fixed rates: A and C alternated at 5000 req/s,
//!   and A, C and C+ (C with `--summary FILE --summary-every 1`, the
//!   per-endpoint results kept and written) at 10000 req/s, which tells
//!   what the summary costs the agent side by side with C; C* (C+ replaying
//!   to a port of the new service whose every answer differs: a mismatch
//!   event per request) and C*N (C* publishing to a nats-server with
//!   JetStream), which tell what NATS publishing costs; and A and C over
//!   h2c at 5000 req/s (nginx's HTTP/2 port, oha `--http-version 2`): how
//!   complete the HTTP/2 path is and what a comparison costs beside
//!   HTTP/1's. Markdown on stdout, JSON under `target/bench/`.
//!
//! The agent runs at its default CPU priority (idle); the new service
//! stands in for another machine and runs under SCHED_IDLE, so that on the
//! shared cores C measures what the agent costs production and nothing
//! else.
//! - **offline**: the capture-side pipeline's throughput on one core from a
//!   pcap (`cargo bench -p parallelrun-agent --bench pipeline`).

mod bpf;
mod load;
mod measure;
mod pcap;
mod profile;
mod report;
mod sys;
mod topo;

use std::{
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use serde_json::json;

use self::measure::{Cond, Ctx, Load, Run, SUMMARY_RATE, Spec};
use crate::util;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A ~3 minute smoke run: 1 KiB bodies only, 4 s per measurement.
    #[arg(long)]
    pub quick: bool,
    /// Only the offline pipeline bench (one core, from a pcap; no root).
    #[arg(long, conflicts_with = "live_only")]
    pub offline_only: bool,
    /// Only the live bench.
    #[arg(long)]
    pub live_only: bool,
    /// Times each condition is measured (interleaved A B C D B' C' A B ...;
    /// at the 1 KiB completeness rates A C, and A C C+ at 10000 req/s);
    /// tables show the median. Default 2 (with --quick, 1 at the
    /// completeness rates).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub rounds: Option<u32>,
    /// Leave out the `--sample 0.1` conditions (B', C'), for an agent
    /// without kernel connection sampling; their targets read "not
    /// measured". Without this flag such an agent makes the bench fail.
    #[arg(long)]
    pub without_sampling: bool,
    /// After the measurements, profile B and C (and B' unless
    /// --without-sampling) at each body size's fixed rate with `perf
    /// record -a -g`: who used the CPU, what the TC program spends its time
    /// on, the agent's busiest functions. About 1 minute more per size.
    #[arg(long)]
    pub profile: bool,
    /// Only the 1 KiB completeness rates (A and C, and C+ at 10000 req/s),
    /// for the targets measured there; no saturation, latency, kernel or
    /// tcpdump phase.
    #[arg(long, conflicts_with_all = ["offline_only", "profile"])]
    pub completeness_only: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if !args.offline_only {
        live(args)?;
    }
    if !args.live_only {
        offline()?;
    }
    Ok(())
}

/// The rate of the h2c phase: the 5,000 req/s.
const H2C_RATE: u32 = 5000;

/// Seconds of fixed-rate load each profiled run samples.
const PROFILE_SECS: u64 = 10;

/// `cargo bench -p parallelrun-agent --bench pipeline` (prints its table).
fn offline() -> Result<()> {
    eprintln!("bench: offline pipeline throughput (one core, from a pcap)");
    util::status(util::cargo().args([
        "bench",
        "--package",
        "parallelrun-agent",
        "--bench",
        "pipeline",
    ]))
}

/// Durations and repetitions of a live run.
#[derive(Debug, serde::Serialize)]
struct Plan {
    sizes: Vec<&'static str>,
    /// The per-size phases (saturation, latency, profile, tcpdump) run;
    /// false with `--completeness-only`.
    size_phases: bool,
    /// Conditions alternated in each round of the saturation and latency
    /// phases.
    conds: Vec<Cond>,
    rounds: u32,
    saturation_secs: u64,
    latency_secs: u64,
    /// Fixed rates for the completeness targets (1 KiB, condition C).
    completeness_rates: Vec<u32>,
    /// The completeness rate at which C+ (`--summary`) is measured too.
    summary_rate: u32,
    completeness_rounds: u32,
    completeness_secs: u64,
    /// The h2c rate (1 KiB, A and C alternated, as many rounds and seconds
    /// as the completeness rates).
    h2c_rate: u32,
    tcpdump_secs: u64,
    warmup_secs: u64,
}

impl Plan {
    fn new(args: &BenchArgs) -> Self {
        let conds = Cond::ALL
            .into_iter()
            .filter(|c| !(args.without_sampling && c.sampled()))
            .collect();
        if args.quick {
            Self {
                sizes: vec!["1k"],
                size_phases: !args.completeness_only,
                conds,
                rounds: args.rounds.unwrap_or(2),
                saturation_secs: 4,
                latency_secs: 4,
                completeness_rates: vec![5000, 10000],
                summary_rate: SUMMARY_RATE,
                completeness_rounds: args.rounds.unwrap_or(1),
                completeness_secs: 4,
                h2c_rate: H2C_RATE,
                tcpdump_secs: 4,
                warmup_secs: 2,
            }
        } else {
            let rounds = args.rounds.unwrap_or(2);
            Self {
                sizes: if args.completeness_only {
                    vec!["1k"]
                } else {
                    topo::SIZES.iter().map(|(n, _)| *n).collect()
                },
                size_phases: !args.completeness_only,
                conds,
                rounds,
                saturation_secs: 8,
                latency_secs: 8,
                completeness_rates: vec![5000, 10000],
                summary_rate: SUMMARY_RATE,
                completeness_rounds: rounds,
                completeness_secs: 6,
                h2c_rate: H2C_RATE,
                tcpdump_secs: 6,
                warmup_secs: 2,
            }
        }
    }

    /// The conditions alternated at a completeness rate: A (the latency
    /// baseline) and C, and at the summary rate C+, C* and C*N.
    fn completeness_conds(&self, rate: u32) -> Vec<Cond> {
        let mut v = vec![Cond::A, Cond::C];
        if rate == self.summary_rate {
            v.extend([Cond::Cr, Cond::Cd, Cond::Cn]);
        }
        v
    }

    fn total_runs(&self) -> usize {
        let per_size = 2 * self.conds.len() * self.rounds as usize + 1;
        let completeness = if self.sizes.contains(&"1k") {
            let per_round: usize = self
                .completeness_rates
                .iter()
                .map(|&r| self.completeness_conds(r).len())
                .sum();
            (per_round + 2) * self.completeness_rounds as usize
        } else {
            0
        };
        let sized = if self.size_phases {
            self.sizes.len()
        } else {
            0
        };
        sized * per_size + completeness
    }
}

fn live(args: &BenchArgs) -> Result<()> {
    if !util::is_root() {
        return rerun_as_root();
    }
    crate::setup::run()?;
    let oha = crate::setup::bench_tools()?;
    let agent = crate::build(true)?;
    if !args.without_sampling {
        check_sampling(&agent)?;
    }
    check_summary_flag(&agent)?;
    parallelrun_sandbox::signal::install_stop_handlers()?;
    sys::remove_stale_namespaces(topo::NS_PREFIX);
    sys::remove_stale_dirs(topo::TMP_PREFIX);

    let plan = Plan::new(args);
    let started = now_utc();
    let meta = json!({
        "started": started.rfc3339,
        "plan": &plan,
        "host": host_facts(),
        "tools": tool_versions(&oha),
        "agent": agent.display().to_string(),
    });
    let labels: Vec<&str> = plan.conds.iter().map(|c| c.label()).collect();
    eprintln!(
        "bench: live, {} runs ({}); conditions: {}; and {}, {} and {} at 1 KiB, {} req/s",
        plan.total_runs(),
        if args.quick {
            "quick: about 3 minutes"
        } else {
            "about 15 minutes"
        },
        labels.join(", "),
        Cond::Cr.label(),
        Cond::Cd.label(),
        Cond::Cn.label(),
        plan.summary_rate
    );
    let mut runs = Vec::new();
    let mut floors = Vec::new();
    let mut profiles = Vec::new();
    let result = measure_all(
        &plan,
        &agent,
        &oha,
        args.profile,
        &mut runs,
        &mut floors,
        &mut profiles,
    );
    let finished = now_utc();
    let meta = {
        let mut m = meta;
        m["finished"] = json!(finished.rfc3339);
        m["complete"] = json!(result.is_ok());
        if let Err(e) = &result {
            m["error"] = json!(format!("{e:#}"));
        }
        m
    };
    let mut rep = report::build(meta, &runs, &floors);
    if !profiles.is_empty() {
        rep.markdown.push_str(
            "\n#### Where the time goes (perf, all CPUs, during the fixed-rate load)\n\n",
        );
        for (title, p) in &profiles {
            rep.markdown.push_str(&p.markdown(title));
        }
        rep.json["profiles"] = json!(
            profiles
                .iter()
                .map(|(t, p)| json!({ "run": t, "profile": p }))
                .collect::<Vec<_>>()
        );
    }
    let dir = util::target_dir()?.join("bench");
    std::fs::create_dir_all(&dir)?;
    let text = serde_json::to_string_pretty(&rep.json)?;
    if result.is_ok() {
        println!("{}", rep.markdown);
        let stamped = dir.join(format!("live-{}.json", started.compact));
        std::fs::write(&stamped, &text)?;
        std::fs::write(dir.join("latest.json"), &text)?;
        std::fs::write(dir.join("latest.md"), &rep.markdown)?;
        eprintln!(
            "bench: wrote {} (and latest.json, latest.md)",
            stamped.display()
        );
    } else if !runs.is_empty() {
        let partial = dir.join(format!("partial-{}.json", started.compact));
        std::fs::write(&partial, &text)?;
        eprintln!(
            "bench: the {} runs measured so far are in {}",
            runs.len(),
            partial.display()
        );
    }
    result
}

/// Fails unless the agent has kernel connection sampling (`record
/// --sample`, `run --sample-by`): the `--sample 0.1` conditions need it,
/// and `run --sample` alone would be the per-request sampler, which still
/// captures everything.
fn check_sampling(agent: &Path) -> Result<()> {
    let help =
        |cmd: &str| util::output(Command::new(agent).args([cmd, "--help"])).unwrap_or_default();
    let missing: Vec<String> = [("record", "--sample"), ("run", "--sample-by")]
        .into_iter()
        .filter(|(cmd, flag)| !help(cmd).contains(flag))
        .map(|(cmd, flag)| format!("{cmd} {flag}"))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "{} has no kernel connection sampling (missing: {}): the `--sample 0.1` conditions \
             (B', C') cannot run. Build an agent that has it, or pass --without-sampling to \
             leave them out (their targets then read \"not measured\")",
            agent.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// Fails unless the agent's `run` takes `--summary` (condition C+) and
/// `--nats` (C*N), before
/// the many minutes of the other conditions rather than after them.
fn check_summary_flag(agent: &Path) -> Result<()> {
    let help = util::output(Command::new(agent).args(["run", "--help"])).unwrap_or_default();
    if !help.contains("--summary-every") {
        anyhow::bail!(
            "{} has no `run --summary` / `--summary-every` (per-endpoint results): condition {} \
             cannot run. Build the agent from this workspace",
            agent.display(),
            Cond::Cr.label()
        );
    }
    if !help.contains("--nats") {
        anyhow::bail!(
            "{} has no `run --nats` (fleet results on NATS): condition {} cannot run. Build the \
             agent from this workspace",
            agent.display(),
            Cond::Cn.label()
        );
    }
    Ok(())
}

fn measure_all(
    plan: &Plan,
    agent: &Path,
    oha: &Path,
    with_profiles: bool,
    runs: &mut Vec<Run>,
    floors: &mut Vec<bpf::KernelFloor>,
    profiles: &mut Vec<(String, profile::Profile)>,
) -> Result<()> {
    let mut topo = topo::Topology::create()?;
    let mut ctx = Ctx {
        topo: &mut topo,
        agent_bin: agent,
        oha_bin: oha,
        quiet_budget: Duration::from_secs(if plan.sizes.len() > 1 { 120 } else { 30 }),
    };
    let total = plan.total_runs();
    let one = |ctx: &mut Ctx, spec: Spec, runs: &mut Vec<Run>| -> Result<()> {
        let r = measure::run(ctx, &spec)?;
        eprintln!(
            "bench: [{}/{total}] {}",
            runs.len() + 1,
            report::one_line(&r)
        );
        runs.push(r);
        Ok(())
    };
    for &size in plan.sizes.iter().filter(|_| plan.size_phases) {
        // Warm caches and connections; not recorded.
        measure::run(
            &mut ctx,
            &Spec {
                size,
                phase: "warmup",
                round: 0,
                cond: Cond::A,
                load: Load::Saturation,
                seconds: plan.warmup_secs,
                with_tcpdump: false,
                profile: false,
            },
        )?;
        for round in 1..=plan.rounds {
            for &cond in &plan.conds {
                let spec = Spec {
                    size,
                    phase: "saturation",
                    round,
                    cond,
                    load: Load::Saturation,
                    seconds: plan.saturation_secs,
                    with_tcpdump: false,
                    profile: false,
                };
                one(&mut ctx, spec, runs)?;
            }
        }
        let rate = latency_rate(runs, size);
        for round in 1..=plan.rounds {
            for &cond in &plan.conds {
                let spec = Spec {
                    size,
                    phase: "latency",
                    round,
                    cond,
                    load: Load::Rate(rate),
                    seconds: plan.latency_secs,
                    with_tcpdump: false,
                    profile: false,
                };
                one(&mut ctx, spec, runs)?;
            }
        }
        floors.push(kernel_floor(runs, size));
        if with_profiles {
            let conds = [Cond::B, Cond::C, Cond::Bs];
            for cond in conds.into_iter().filter(|c| plan.conds.contains(c)) {
                let spec = Spec {
                    size,
                    phase: "profile",
                    round: 1,
                    cond,
                    load: Load::Rate(rate),
                    seconds: PROFILE_SECS,
                    with_tcpdump: false,
                    profile: true,
                };
                let r = measure::run(&mut ctx, &spec)?;
                eprintln!("bench: [profile] {}", report::one_line(&r));
                if let Some(p) = r.profile {
                    profiles.push((format!("{size}, {} at {rate} req/s", cond.label()), p));
                }
            }
        }
        // The agent's records against tcpdump's packets, at saturation.
        let spec = Spec {
            size,
            phase: "tcpdump",
            round: 1,
            cond: Cond::B,
            load: Load::Saturation,
            seconds: plan.tcpdump_secs,
            with_tcpdump: true,
            profile: false,
        };
        one(&mut ctx, spec, runs)?;
    }
    if plan.sizes.contains(&"1k") {
        // C at the rates of the completeness targets, each after A at the
        // same rate for the latency baseline; at the summary rate C+ beside
        // C, so that the two are measured side by side, in turn first and
        // second (even rounds swap them: an order effect cancels out).
        for round in 1..=plan.completeness_rounds {
            for &rate in &plan.completeness_rates {
                let mut conds = plan.completeness_conds(rate);
                if round % 2 == 0
                    && let [_, c, cr] = conds.as_mut_slice()
                {
                    std::mem::swap(c, cr);
                }
                for cond in conds {
                    let spec = Spec {
                        size: "1k",
                        phase: "completeness",
                        round,
                        cond,
                        load: Load::Rate(rate),
                        seconds: plan.completeness_secs,
                        with_tcpdump: false,
                        profile: false,
                    };
                    one(&mut ctx, spec, runs)?;
                }
            }
        }
        // The same over h2c: A and C alternated, first in turn.
        for round in 1..=plan.completeness_rounds {
            let mut conds = [Cond::A, Cond::C];
            if round % 2 == 0 {
                conds.reverse();
            }
            for cond in conds {
                let spec = Spec {
                    size: "1k",
                    phase: "h2c",
                    round,
                    cond,
                    load: Load::H2Rate(plan.h2c_rate),
                    seconds: plan.completeness_secs,
                    with_tcpdump: false,
                    profile: false,
                };
                one(&mut ctx, spec, runs)?;
            }
        }
    }
    Ok(())
}

/// The memcpy half of the kernel cost's reference for `size`: the mean
/// payload the TC program captured in this run's B runs at a fixed rate,
/// copied here in user space.
fn kernel_floor(runs: &[Run], size: &'static str) -> bpf::KernelFloor {
    let (bytes, records) = runs
        .iter()
        .filter(|r| r.size == size && r.phase == "latency" && r.cond == Cond::B)
        .filter_map(|r| r.agent.as_ref())
        .fold((0u64, 0u64), |(b, n), a| {
            (b + a.payload_bytes, n + a.records)
        });
    let mean = if records > 0 {
        bytes as f64 / records as f64
    } else {
        0.0
    };
    bpf::KernelFloor {
        size,
        mean_payload_bytes: mean,
        memcpy_ns: bpf::memcpy_ns(mean.round() as usize),
    }
}

/// Half of A's median saturation throughput, rounded to two significant
/// digits.
fn latency_rate(runs: &[Run], size: &str) -> u32 {
    let sat: Vec<f64> = runs
        .iter()
        .filter(|r| r.size == size && r.phase == "saturation" && r.cond == Cond::A)
        .map(|r| r.load.rps)
        .collect();
    let half = report::median(&sat).unwrap_or(2000.0) / 2.0;
    let scale = 10f64.powi((half.max(10.0).log10().floor() as i32) - 1);
    ((half / scale).round() * scale).max(10.0) as u32
}

/// Re-runs this xtask binary as root through `sudo -E` (the live bench
/// creates namespaces and attaches eBPF) and exits with its status.
fn rerun_as_root() -> Result<()> {
    eprintln!(
        "xtask: the live bench creates network namespaces and attaches eBPF programs; re-running through sudo"
    );
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let path = std::env::var("PATH").unwrap_or_default();
    let st = Command::new("sudo")
        .arg("-E")
        .arg("env")
        .arg(format!("PATH={path}"))
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .current_dir(util::workspace_root())
        .status()
        .context("cannot start sudo")?;
    std::process::exit(st.code().unwrap_or(1));
}

fn host_facts() -> serde_json::Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let git = util::output(
        Command::new("git")
            .current_dir(util::workspace_root())
            .args(["describe", "--always", "--dirty"]),
    )
    .map(|s| s.trim().to_owned());
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_at_start": read("/proc/loadavg"),
        "git": git,
    })
}

fn tool_versions(oha: &Path) -> serde_json::Value {
    let first_line = |cmd: &mut Command| {
        cmd.output().ok().map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
    };
    json!({
        "nginx": first_line(Command::new("nginx").arg("-v")),
        "wrk": first_line(Command::new("wrk").arg("-v")),
        "oha": first_line(Command::new(oha).arg("--version")),
        "tcpdump": first_line(Command::new("tcpdump").arg("--version")),
    })
}

struct Stamp {
    rfc3339: String,
    compact: String,
}

fn now_utc() -> Stamp {
    let t = parallelrun_sandbox::utc::UtcTime::of(SystemTime::now());
    let (y, m, d) = (t.year, t.month, t.day);
    let (hh, mm, ss) = (t.hour, t.minute, t.second);
    Stamp {
        rfc3339: format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
        compact: format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_plus_c_star_and_nats_run_only_at_the_summary_rate_and_are_counted_in_the_plan() {
        let args = BenchArgs {
            quick: true,
            offline_only: false,
            live_only: false,
            rounds: Some(2),
            without_sampling: false,
            profile: false,
            completeness_only: false,
        };
        let plan = Plan::new(&args);
        assert!(!plan.conds.contains(&Cond::Cr));
        assert_eq!(plan.completeness_conds(5000), [Cond::A, Cond::C]);
        assert_eq!(
            plan.completeness_conds(SUMMARY_RATE),
            [Cond::A, Cond::C, Cond::Cr, Cond::Cd, Cond::Cn]
        );
        // 1 size × (2 phases × 6 conditions × 2 rounds + tcpdump), then two
        // completeness rounds of A C at 5000 and A C C+ C* C*N at 10000, and
        // two rounds of A C over h2c.
        assert_eq!(plan.total_runs(), 25 + 2 * 7 + 2 * 2);
        let only = Plan::new(&BenchArgs {
            completeness_only: true,
            rounds: Some(7),
            ..args
        });
        assert_eq!(only.total_runs(), 7 * (7 + 2));
    }
}
