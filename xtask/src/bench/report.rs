//! Tables, targets and the JSON of a live run.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::{
    bpf::KernelFloor,
    measure::{Cond, Load, RING_BYTES, Run, SAMPLE, SUMMARY_EVERY_SECS, SUMMARY_RATE},
    sys::SCHED_IDLE,
};

pub struct Report {
    pub markdown: String,
    pub json: Value,
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn load_label(l: Load) -> String {
    match l {
        Load::Saturation => "saturation".to_owned(),
        Load::Rate(r) => format!("{r} req/s"),
        Load::H2Rate(r) => format!("{r} req/s h2c"),
    }
}

fn size_label(s: &str) -> &'static str {
    match s {
        "1k" => "1 KiB",
        "64k" => "64 KiB",
        "1m" => "1 MiB",
        _ => "?",
    }
}

fn load_of(r: &Run) -> Load {
    match r.load.target_rate {
        None => Load::Saturation,
        Some(q) if r.phase == "h2c" => Load::H2Rate(q),
        Some(q) => Load::Rate(q),
    }
}

/// A progress line for one run.
pub fn one_line(r: &Run) -> String {
    let mut s = format!(
        "{} {} {} r{} {}: {:.0} req/s",
        size_label(r.size),
        r.phase,
        load_label(load_of(r)),
        r.round,
        r.cond.label(),
        r.load.rps
    );
    if let (Some(p50), Some(p99)) = (r.load.p50_ms, r.load.p99_ms) {
        let _ = write!(s, ", p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
    let _ = write!(s, ", sent {}", r.sent);
    if let Some(a) = &r.agent {
        if let Some(c) = a.captured {
            let _ = write!(s, ", captured {c}, compared {}", a.compared.unwrap_or(0));
        }
        let _ = write!(
            s,
            ", records {}, drops {}, agent {:.2} CPU-s",
            a.records, a.ringbuf_full_drops, a.cpu_s
        );
    }
    if r.cond == Cond::D {
        let _ = write!(s, ", mirrored {}", r.new_served);
    }
    if r.foreign_cpu_s > 0.5 {
        let _ = write!(s, " (other processes: {:.1} CPU-s)", r.foreign_cpu_s);
    }
    s
}

fn f(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.decimals$}"))
}

fn n(v: Option<u64>) -> String {
    v.map_or_else(|| "–".to_owned(), |x| x.to_string())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

#[derive(Serialize)]
struct OverheadRow {
    size: &'static str,
    cond: Cond,
    saturation_rps: Option<f64>,
    saturation_ratio: Option<f64>,
    rate: Option<u32>,
    achieved_rps: Option<f64>,
    p50_ms: Option<f64>,
    p50_ratio: Option<f64>,
    p99_ms: Option<f64>,
    p99_ratio: Option<f64>,
    /// Most CPU other processes used during one of the row's runs, in cores.
    others_max_cores: f64,
}

#[derive(Serialize)]
struct FixedRateRow {
    rate: u32,
    cond: Cond,
    achieved_rps: Option<f64>,
    p50_ms: Option<f64>,
    p50_ratio: Option<f64>,
    p99_ms: Option<f64>,
    p99_ratio: Option<f64>,
    others_max_cores: f64,
}

#[derive(Serialize)]
struct CostRow {
    size: &'static str,
    phase: &'static str,
    load: String,
    cond: Cond,
    runs: usize,
    sent: u64,
    captured: Option<u64>,
    compared: Option<u64>,
    compared_pct: Option<f64>,
    /// Lowest compared / sent over the runs.
    worst_compared_pct: Option<f64>,
    /// Agent CPU seconds per 1000 requests compared (median over the runs).
    cpu_per_1k_compared: Option<f64>,
    /// Records the kernel emitted (summed).
    records: Option<u64>,
    /// Connections the kernel left out by sampling (summed).
    sampled_out: Option<u64>,
    /// Runs whose agent threads were all SCHED_IDLE.
    idle_runs: usize,
    mismatched: Option<u64>,
    skipped: Option<u64>,
    lost: Option<u64>,
    /// Of `lost`: requests lost to ring-buffer drops.
    lost_ring: Option<u64>,
    /// Records the kernel could not write because the ring was full.
    ringbuf_drops: Option<u64>,
    new_served: u64,
    cpu_per_1k: Option<f64>,
    peak_rss_mib: Option<f64>,
    /// Of the resident set: the ring buffer's mapping (counted twice).
    ring_map_mib: Option<f64>,
    /// IRQ work interrupts on the machine per record the kernel emitted.
    irq_work_per_record: Option<f64>,
    ns_per_run: Option<f64>,
    ns_per_record: Option<f64>,
    foreign_cpu_s: f64,
}

#[derive(Serialize)]
struct TcpdumpRow {
    size: &'static str,
    tcpdump_packets: u64,
    /// tcpdump's "packets received by filter" (what its socket got, written
    /// or not).
    tcpdump_received: Option<u64>,
    kernel_packets_matched: u64,
    tcpdump_record_worthy: u64,
    kernel_records: u64,
    ringbuf_drops: u64,
    agent_records: Option<u64>,
    tcpdump_payload_bytes: u64,
    kernel_payload_bytes: u64,
    tcpdump_dropped: Option<u64>,
    agent_ns_per_run: Option<f64>,
    empty_prog_ns_per_run: Option<f64>,
    verdict: String,
}

#[derive(Serialize)]
struct Target {
    target: String,
    measured: String,
    /// None when not measured in this run.
    met: Option<bool>,
}

fn sizes(runs: &[Run]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for r in runs {
        if !v.contains(&r.size) {
            v.push(r.size);
        }
    }
    v
}

fn select<'a>(runs: &'a [Run], size: &str, phase: &str, cond: Cond) -> Vec<&'a Run> {
    runs.iter()
        .filter(|r| r.size == size && r.phase == phase && r.cond == cond)
        .collect()
}

fn med(rs: &[&Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    median(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
}

/// Sum of a count every run has; None when one lacks it.
fn sum(rs: &[&Run], f: impl Fn(&Run) -> Option<u64>) -> Option<u64> {
    if rs.is_empty() {
        return None;
    }
    rs.iter().map(|r| f(r)).sum()
}

fn overhead_rows(runs: &[Run]) -> Vec<OverheadRow> {
    let mut rows = Vec::new();
    for size in sizes(runs) {
        let sat_a = med(&select(runs, size, "saturation", Cond::A), |r| {
            Some(r.load.rps)
        });
        let lat_a = select(runs, size, "latency", Cond::A);
        let p50_a = med(&lat_a, |r| r.load.p50_ms);
        let p99_a = med(&lat_a, |r| r.load.p99_ms);
        for cond in Cond::ALL {
            let sat = select(runs, size, "saturation", cond);
            let lat = select(runs, size, "latency", cond);
            if sat.is_empty() && lat.is_empty() {
                continue;
            }
            let rps = med(&sat, |r| Some(r.load.rps));
            let p50 = med(&lat, |r| r.load.p50_ms);
            let p99 = med(&lat, |r| r.load.p99_ms);
            rows.push(OverheadRow {
                size,
                cond,
                saturation_rps: rps,
                saturation_ratio: ratio(rps, sat_a),
                rate: lat.first().and_then(|r| r.load.target_rate),
                achieved_rps: med(&lat, |r| Some(r.load.rps)),
                p50_ms: p50,
                p50_ratio: ratio(p50, p50_a),
                p99_ms: p99,
                p99_ratio: ratio(p99, p99_a),
                others_max_cores: sat
                    .iter()
                    .chain(&lat)
                    .map(|r| others(r))
                    .fold(0.0, f64::max),
            });
        }
    }
    rows
}

/// Cores other processes used during a run.
fn others(r: &Run) -> f64 {
    r.foreign_cpu_s / r.load.seconds.max(0.1)
}

/// A and C at the completeness rates (1 KiB), and C+ where it ran.
fn fixed_rate_rows(runs: &[Run]) -> Vec<FixedRateRow> {
    let mut rates: Vec<u32> = Vec::new();
    for r in runs.iter().filter(|r| r.phase == "completeness") {
        if let Some(q) = r.load.target_rate
            && !rates.contains(&q)
        {
            rates.push(q);
        }
    }
    let mut rows = Vec::new();
    for rate in rates {
        let of = |cond: Cond| -> Vec<&Run> {
            runs.iter()
                .filter(|r| {
                    r.phase == "completeness" && r.cond == cond && r.load.target_rate == Some(rate)
                })
                .collect()
        };
        let a = of(Cond::A);
        let (p50_a, p99_a) = (med(&a, |r| r.load.p50_ms), med(&a, |r| r.load.p99_ms));
        for cond in [Cond::A, Cond::C, Cond::Cr, Cond::Cd, Cond::Cn] {
            let rs = of(cond);
            if rs.is_empty() {
                continue;
            }
            let (p50, p99) = (med(&rs, |r| r.load.p50_ms), med(&rs, |r| r.load.p99_ms));
            rows.push(FixedRateRow {
                rate,
                cond,
                achieved_rps: med(&rs, |r| Some(r.load.rps)),
                p50_ms: p50,
                p50_ratio: ratio(p50, p50_a),
                p99_ms: p99,
                p99_ratio: ratio(p99, p99_a),
                others_max_cores: rs.iter().map(|r| others(r)).fold(0.0, f64::max),
            });
        }
    }
    rows
}

fn cost_rows(runs: &[Run]) -> Vec<CostRow> {
    let mut rows = Vec::new();
    for size in sizes(runs) {
        for phase in ["saturation", "latency", "completeness", "h2c"] {
            for cond in [
                Cond::B,
                Cond::C,
                Cond::Cr,
                Cond::Cd,
                Cond::Cn,
                Cond::D,
                Cond::Bs,
                Cond::Cs,
            ] {
                // One row per load (completeness runs have several rates).
                let all = select(runs, size, phase, cond);
                let mut loads: Vec<Load> = Vec::new();
                for r in &all {
                    if !loads.contains(&load_of(r)) {
                        loads.push(load_of(r));
                    }
                }
                for l in loads {
                    let rs: Vec<&Run> = all.iter().copied().filter(|r| load_of(r) == l).collect();
                    let a = |g: fn(&super::measure::AgentRun) -> Option<u64>| {
                        sum(&rs, |r| r.agent.as_ref().and_then(g))
                    };
                    let sent: u64 = rs.iter().map(|r| r.sent).sum();
                    let compared = a(|a| a.compared);
                    let pct = |c: u64, s: u64| (s > 0).then(|| 100.0 * c as f64 / s as f64);
                    let worst = rs
                        .iter()
                        .filter_map(|r| {
                            let c = r.agent.as_ref()?.compared?;
                            pct(c, r.sent)
                        })
                        .reduce(f64::min);
                    let has_agent = cond.has_agent();
                    rows.push(CostRow {
                        size,
                        phase,
                        load: load_label(l),
                        cond,
                        runs: rs.len(),
                        sent,
                        captured: a(|a| a.captured),
                        compared,
                        compared_pct: compared.and_then(|c| pct(c, sent)),
                        worst_compared_pct: worst,
                        cpu_per_1k_compared: med(&rs, |r| r.agent.as_ref()?.cpu_per_1k_compared),
                        records: if has_agent {
                            a(|a| Some(a.records))
                        } else {
                            None
                        },
                        sampled_out: a(|a| a.sampled_out),
                        idle_runs: rs
                            .iter()
                            .filter_map(|r| r.agent.as_ref())
                            .filter(|a| {
                                !a.thread_policies.is_empty()
                                    && a.thread_policies.iter().all(|&p| p == SCHED_IDLE)
                            })
                            .count(),
                        mismatched: a(|a| a.mismatched),
                        skipped: a(|a| a.skipped),
                        lost: a(|a| a.lost),
                        lost_ring: a(|a| a.lost_ring_buffer_drop),
                        ringbuf_drops: if has_agent {
                            a(|a| Some(a.ringbuf_full_drops))
                        } else {
                            None
                        },
                        new_served: rs.iter().map(|r| r.new_served).sum(),
                        cpu_per_1k: med(&rs, |r| r.agent.as_ref()?.cpu_per_1k),
                        peak_rss_mib: rs
                            .iter()
                            .filter_map(|r| r.agent.as_ref())
                            .map(|a| a.peak_rss_bytes as f64 / (1 << 20) as f64)
                            .reduce(f64::max),
                        ring_map_mib: rs
                            .iter()
                            .filter_map(|r| r.agent.as_ref())
                            .map(|a| a.ring_map_rss_bytes as f64 / (1 << 20) as f64)
                            .reduce(f64::max),
                        irq_work_per_record: med(&rs, |r| {
                            let a = r.agent.as_ref()?;
                            (a.records > 0).then(|| r.irq_work_interrupts as f64 / a.records as f64)
                        }),
                        ns_per_run: med(&rs, |r| r.agent.as_ref()?.ns_per_run),
                        ns_per_record: med(&rs, |r| r.agent.as_ref()?.ns_per_record),
                        foreign_cpu_s: rs.iter().map(|r| r.foreign_cpu_s).sum(),
                    });
                }
            }
        }
    }
    rows
}

fn tcpdump_rows(runs: &[Run]) -> Vec<TcpdumpRow> {
    runs.iter()
        .filter_map(|r| {
            let t = r.tcpdump.as_ref()?;
            let a = r.agent.as_ref()?;
            let p = &t.tcpdump;
            let mut diffs = Vec::new();
            if p.packets != a.packets_matched {
                diffs.push(format!("packets {} vs {}", p.packets, a.packets_matched));
            }
            if p.record_worthy != a.records + a.ringbuf_full_drops {
                diffs.push(format!(
                    "records {} vs {}+{} dropped",
                    p.record_worthy, a.records, a.ringbuf_full_drops
                ));
            }
            if a.agent_records.is_some_and(|n| n != a.records) {
                diffs.push("agent read fewer records than the kernel wrote".to_owned());
            }
            if p.payload_bytes != a.payload_bytes {
                diffs.push(format!("bytes {} vs {}", p.payload_bytes, a.payload_bytes));
            }
            if p.dropped_by_kernel.unwrap_or(0) > 0 {
                diffs.push("tcpdump itself dropped packets".to_owned());
            }
            Some(TcpdumpRow {
                size: r.size,
                tcpdump_packets: p.packets,
                tcpdump_received: p.received_by_filter,
                kernel_packets_matched: a.packets_matched,
                tcpdump_record_worthy: p.record_worthy,
                kernel_records: a.records,
                ringbuf_drops: a.ringbuf_full_drops,
                agent_records: a.agent_records,
                tcpdump_payload_bytes: p.payload_bytes,
                kernel_payload_bytes: a.payload_bytes,
                tcpdump_dropped: p.dropped_by_kernel,
                agent_ns_per_run: a.ns_per_run,
                empty_prog_ns_per_run: t.empty_prog_ns_per_run,
                verdict: if diffs.is_empty() {
                    "identical".to_owned()
                } else {
                    diffs.join("; ")
                },
            })
        })
        .collect()
}

/// Finds the cost row of a size, phase, condition and load.
fn cost_row<'a>(
    cost: &'a [CostRow],
    size: &str,
    phase: &str,
    cond: Cond,
    load: Option<Load>,
) -> Option<&'a CostRow> {
    cost.iter().find(|r| {
        r.size == size
            && r.phase == phase
            && r.cond == cond
            && load.is_none_or(|l| r.load == load_label(l))
    })
}

/// h2c at the rate: every request compared with zero drops, the
/// p99 of C over A's (alternated in the same run) and the agent's CPU per
/// 1000 compared requests beside HTTP/1's C at the same rate.
fn h2c_target(runs: &[Run], cost: &[CostRow]) -> Target {
    let rate = runs
        .iter()
        .find(|r| r.phase == "h2c")
        .and_then(|r| r.load.target_rate)
        .unwrap_or(5000);
    let what = format!(
        "1 KiB over h2c at {rate} req/s: 100 % compared, zero drops (agent CPU per 1k compared \
         beside HTTP/1's)"
    );
    let Some(h2) = cost_row(cost, "1k", "h2c", Cond::C, Some(Load::H2Rate(rate))) else {
        return not_measured(what);
    };
    let of = |cond: Cond| -> Vec<&Run> {
        runs.iter()
            .filter(|r| r.phase == "h2c" && r.cond == cond)
            .collect()
    };
    let p99 = ratio(
        med(&of(Cond::C), |r| r.load.p99_ms),
        med(&of(Cond::A), |r| r.load.p99_ms),
    );
    let http1 = cost_row(cost, "1k", "completeness", Cond::C, Some(Load::Rate(rate)))
        .and_then(|r| r.cpu_per_1k_compared);
    let drops = h2.ringbuf_drops.unwrap_or(0) + h2.lost_ring.unwrap_or(0);
    let cpu = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.3}"));
    Target {
        target: what,
        measured: format!(
            "{} of {} sent compared over {} runs, {drops} ring-buffer drops and losses; agent \
             CPU s per 1k compared {} (HTTP/1 {}); p99 C/A {}",
            n(h2.compared),
            h2.sent,
            h2.runs,
            cpu(h2.cpu_per_1k_compared),
            cpu(http1),
            p99.map_or("—".to_owned(), |v| format!("×{v:.2}")),
        ),
        met: Some(h2.compared == Some(h2.sent) && h2.sent > 0 && drops == 0),
    }
}

fn not_measured(target: String) -> Target {
    Target {
        target,
        measured: "not measured".to_owned(),
        met: None,
    }
}

/// "99.95 % compared (worst run 99.90 %)" for a C row.
fn compared_text(r: Option<&CostRow>) -> String {
    match r {
        Some(r) => format!(
            "{} % compared (worst run {} %)",
            f(r.compared_pct, 2),
            f(r.worst_compared_pct, 2)
        ),
        None => "compared: not measured".to_owned(),
    }
}

/// The runs of `rs` from the rounds `other` has runs in too.
fn same_rounds<'a>(rs: &[&'a Run], other: &[&Run]) -> Vec<&'a Run> {
    rs.iter()
        .copied()
        .filter(|r| other.iter().any(|o| o.round == r.round))
        .collect()
}

/// What the per-endpoint summary costs the agent: C+ over C (see
/// [`paired_cost_target`]).
fn summary_cost_target(runs: &[Run]) -> Target {
    paired_cost_target(
        runs,
        (Cond::C, Cond::Cr),
        format!(
            "1 KiB at {SUMMARY_RATE} req/s: agent CPU per 1k compared with --summary ≤ 1.10 × \
             without (C+/C, medians over the rounds in which both compared ≥ 99 %)"
        ),
        &format!("with --summary (every {SUMMARY_EVERY_SECS} s)"),
    )
}

/// What publishing to NATS costs the agent when every request makes a
/// mismatch event: C*N over C* (see [`paired_cost_target`]).
fn nats_cost_target(runs: &[Run]) -> Target {
    paired_cost_target(
        runs,
        (Cond::Cd, Cond::Cn),
        format!(
            "1 KiB at {SUMMARY_RATE} req/s, every response differing: agent CPU per 1k compared \
             with NATS publishing ≤ 1.10 × without (C*N/C*, medians over the rounds in which both \
             compared ≥ 99 %)"
        ),
        "with NATS publishing (an event per request, the summary every second)",
    )
}

/// The median CPU per 1k compared of `with` over `base`, both at
/// [`SUMMARY_RATE`] (1 KiB, completeness phase), over the rounds in which
/// both ran and both compared ≥ 99 % of what they were sent: a run that
/// shed did other work than its pair (its fixed costs spread over fewer
/// comparisons), so its round is left out, and the target is judged only
/// when at least one round is left.
fn paired_cost_target(runs: &[Run], (base, with): (Cond, Cond), what: String, on: &str) -> Target {
    let at = |cond: Cond| -> Vec<&Run> {
        runs.iter()
            .filter(|r| {
                r.size == "1k"
                    && r.phase == "completeness"
                    && r.cond == cond
                    && r.load.target_rate == Some(SUMMARY_RATE)
            })
            .collect()
    };
    let (c_all, cr_all) = (at(base), at(with));
    let pct = |r: &Run| match r.agent.as_ref().and_then(|a| a.compared) {
        Some(n) if r.sent > 0 => 100.0 * n as f64 / r.sent as f64,
        _ => 0.0,
    };
    let complete = |rs: &[&Run], other: &[&Run]| -> Vec<u32> {
        rs.iter()
            .filter(|r| pct(r) >= 99.0)
            .filter(|r| other.iter().any(|o| o.round == r.round && pct(o) >= 99.0))
            .map(|r| r.round)
            .collect()
    };
    let mut rounds = complete(&c_all, &cr_all);
    rounds.sort_unstable();
    rounds.dedup();
    let paired: Vec<u32> = {
        let mut p: Vec<u32> = same_rounds(&c_all, &cr_all)
            .iter()
            .map(|r| r.round)
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    if paired.is_empty() {
        return not_measured(what);
    }
    let (c, cr): (Vec<&Run>, Vec<&Run>) = (
        c_all
            .iter()
            .copied()
            .filter(|r| rounds.contains(&r.round))
            .collect(),
        cr_all
            .iter()
            .copied()
            .filter(|r| rounds.contains(&r.round))
            .collect(),
    );
    let cpu = |rs: &[&Run]| med(rs, |r| r.agent.as_ref()?.cpu_per_1k_compared);
    let left_out = paired.len() - rounds.len();
    match (ratio(cpu(&cr), cpu(&c)), cpu(&c), cpu(&cr)) {
        (Some(v), Some(off), Some(cpu_on)) => Target {
            target: what,
            measured: format!(
                "×{v:.3}: {cpu_on:.4} CPU-s per 1k compared {on} vs {off:.4} without, medians \
                 over {} round(s){}",
                rounds.len(),
                if left_out > 0 {
                    format!(" ({left_out} left out: one of the pair compared < 99 %)")
                } else {
                    String::new()
                }
            ),
            met: Some(v <= 1.10),
        },
        _ => Target {
            target: what,
            measured: format!(
                "{} paired round(s), none with both compared ≥ 99 %: too few compared to judge",
                paired.len()
            ),
            met: Some(false),
        },
    }
}

/// The targets ("Shadowing must not take from production").
fn targets(
    over: &[OverheadRow],
    fixed: &[FixedRateRow],
    cost: &[CostRow],
    dump: &[TcpdumpRow],
    floors: &[KernelFloor],
    runs: &[Run],
) -> Vec<Target> {
    let mut t = Vec::new();
    let all_sizes = sizes(runs);
    let over_row = |size: &str, cond: Cond| over.iter().find(|r| r.size == size && r.cond == cond);

    // Production latency with the full pipeline at half of A's saturation.
    for &size in &all_sizes {
        let s = size_label(size);
        let limit = if size == "1m" { 1.5 } else { 1.2 };
        let row = over_row(size, Cond::C);
        let what = format!(
            "{s}: p99 C/A ≤ {limit} at half of A's saturation ({} req/s)",
            n(row.and_then(|r| r.rate).map(u64::from))
        );
        t.push(match row.and_then(|r| r.p99_ratio) {
            Some(v) => Target {
                target: what,
                measured: format!(
                    "×{v:.2}; {}",
                    compared_text(cost_row(cost, size, "latency", Cond::C, None))
                ),
                met: Some(v <= limit),
            },
            None => not_measured(what),
        });
    }
    // Production latency and completeness at the completeness rates.
    for (rate, min_pct) in [(5000u32, 100.0), (10000, 99.9)] {
        let what = if min_pct >= 100.0 {
            format!("1 KiB at {rate} req/s: p99 C/A ≤ 1.1 with 100 % compared, zero drops")
        } else {
            format!("1 KiB at {rate} req/s: p99 C/A ≤ 1.1 with ≥ {min_pct} % compared")
        };
        let p99 = fixed
            .iter()
            .find(|r| r.cond == Cond::C && r.rate == rate)
            .and_then(|r| r.p99_ratio);
        let row = cost_row(cost, "1k", "completeness", Cond::C, Some(Load::Rate(rate)));
        t.push(match (p99, row) {
            (Some(v), Some(r)) => {
                let drops = r.ringbuf_drops.unwrap_or(0) + r.lost_ring.unwrap_or(0);
                let worst = r.worst_compared_pct.unwrap_or(0.0);
                let complete = if min_pct >= 100.0 {
                    r.compared == Some(r.sent) && drops == 0
                } else {
                    worst >= min_pct
                };
                Target {
                    target: what,
                    measured: format!(
                        "×{v:.2}; {} of {} sent compared over {} runs (worst run {worst:.3} %), \
                         {drops} ring-buffer drops and losses",
                        n(r.compared),
                        r.sent,
                        r.runs
                    ),
                    met: Some(v <= 1.1 && complete),
                }
            }
            _ => not_measured(what),
        });
    }
    // h2c at its rate: complete, and what a comparison costs beside HTTP/1's.
    t.push(h2c_target(runs, cost));
    // Capture-only throughput.
    for &size in &all_sizes {
        let limit = if size == "1m" { 0.90 } else { 0.97 };
        let what = format!(
            "{}: throughput B/A ≥ {limit:.2} at saturation",
            size_label(size)
        );
        t.push(
            match over_row(size, Cond::B).and_then(|r| r.saturation_ratio) {
                Some(v) => Target {
                    target: what,
                    measured: format!("{v:.3}"),
                    met: Some(v >= limit),
                },
                None => not_measured(what),
            },
        );
    }
    // Kernel cost per record against dispatch + one copy, both measured in
    // this run.
    for &size in &all_sizes {
        let what = format!(
            "{}: kernel ns per record ≤ 2 × (empty-program floor + memcpy of the mean payload)",
            size_label(size)
        );
        let measured = cost_row(cost, size, "latency", Cond::B, None).and_then(|r| r.ns_per_record);
        let empty = dump
            .iter()
            .find(|d| d.size == size)
            .and_then(|d| d.empty_prog_ns_per_run);
        let floor = floors.iter().find(|x| x.size == size);
        t.push(match (measured, empty, floor) {
            (Some(m), Some(e), Some(fl)) => {
                let limit = 2.0 * (e + fl.memcpy_ns);
                Target {
                    target: what,
                    measured: format!(
                        "{m:.0} ns (B at half of A's saturation); limit 2 × ({e:.0} + {:.0}) = \
                         {limit:.0} ns for {:.0} bytes",
                        fl.memcpy_ns, fl.mean_payload_bytes
                    ),
                    met: Some(m <= limit),
                }
            }
            _ => not_measured(what),
        });
    }
    // Kernel connection sampling.
    let pct_of = |x: u64, of: u64| (of > 0).then(|| 100.0 * x as f64 / of as f64);
    let expect = 100.0 * SAMPLE;
    let near = |v: f64| (v - expect).abs() <= 3.0;
    for &size in &all_sizes {
        let s = size_label(size);
        let per_request = |cond: Cond| {
            let r = cost_row(cost, size, "latency", cond, None)?;
            Some(r.records? as f64 / r.sent.max(1) as f64)
        };
        let what = format!(
            "{s}: kernel records with --sample {SAMPLE} ≈ {expect:.0} % of B's (± 3 points, per request sent)"
        );
        t.push(match (per_request(Cond::Bs), per_request(Cond::B)) {
            (Some(bs), Some(b)) if b > 0.0 => {
                let v = 100.0 * bs / b;
                Target {
                    target: what,
                    measured: format!("{v:.1} %"),
                    met: Some(near(v)),
                }
            }
            _ => not_measured(what),
        });
        let what = format!("{s}: throughput B'/A ≥ 0.99 at saturation (--sample {SAMPLE})");
        t.push(
            match over_row(size, Cond::Bs).and_then(|r| r.saturation_ratio) {
                Some(v) => Target {
                    target: what,
                    measured: format!("{v:.3}"),
                    met: Some(v >= 0.99),
                },
                None => not_measured(what),
            },
        );
        let what = format!(
            "{s}: compared with --sample {SAMPLE} ≈ {expect:.0} % of requests (± 3 points)"
        );
        let row = cost_row(cost, size, "latency", Cond::Cs, None);
        t.push(match row.and_then(|r| pct_of(r.compared?, r.sent)) {
            Some(v) => Target {
                target: what,
                measured: format!("{v:.1} %"),
                met: Some(near(v)),
            },
            None => not_measured(what),
        });
    }
    // What keeping and writing the per-endpoint summary costs the agent.
    t.push(summary_cost_target(runs));
    t.push(nats_cost_target(runs));
    // Agent memory.
    let ring = (RING_BYTES >> 20) as f64;
    for &size in &all_sizes {
        let base = if size == "1m" { 160.0 } else { 96.0 };
        let limit = base + ring;
        let what = format!(
            "{}: agent peak RSS ≤ {base:.0} MiB + ring ({ring:.0} MiB) = {limit:.0} MiB",
            size_label(size)
        );
        let peak = runs
            .iter()
            .filter(|r| r.size == size)
            .filter_map(|r| r.agent.as_ref())
            .map(|a| a.peak_rss_bytes as f64 / (1 << 20) as f64)
            .reduce(f64::max);
        t.push(match peak {
            Some(p) => Target {
                target: what,
                measured: format!("{p:.1} MiB (max over the size's agent runs)"),
                met: Some(p <= limit),
            },
            None => not_measured(what),
        });
    }
    // Agent CPU per compared request at 1 MiB, judged only where the run
    // compared what it was sent.
    let what = "1 MiB: agent ≤ 0.1 core per 1k compared req/s (C at half of A's saturation, \
                judged only with ≥ 99.9 % compared)"
        .to_owned();
    t.push(match cost_row(cost, "1m", "latency", Cond::C, None) {
        Some(r) => match r.cpu_per_1k_compared {
            Some(v) => {
                let complete = r.worst_compared_pct.is_some_and(|w| w >= 99.9);
                Target {
                    target: what,
                    measured: format!(
                        "{v:.3}; {}{}",
                        compared_text(Some(r)),
                        if complete {
                            ""
                        } else {
                            ": too few compared to judge"
                        }
                    ),
                    met: Some(complete && v <= 0.1),
                }
            }
            None => not_measured(what),
        },
        None => not_measured(what),
    });
    t
}

pub fn build(meta: Value, runs: &[Run], floors: &[KernelFloor]) -> Report {
    let over = overhead_rows(runs);
    let cost = cost_rows(runs);
    let dump = tcpdump_rows(runs);
    let fixed = fixed_rate_rows(runs);
    let tg = targets(&over, &fixed, &cost, &dump, floors, runs);
    let mut md = String::new();
    let rounds = meta["plan"]["rounds"].as_u64().unwrap_or(0);
    let _ = writeln!(
        md,
        "## Live bench ({}, kernel {}, {} CPUs, {})\n",
        meta["started"].as_str().unwrap_or(""),
        meta["host"]["kernel"].as_str().unwrap_or("?"),
        meta["host"]["cpus"],
        meta["host"]["git"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        md,
        "Conditions alternated A B C D B' C', each measured {rounds} times; medians. \
         A: no agent. B: `parallelrun record --discard`. C: `parallelrun run` (replay to the new service, diff). \
         D: nginx reverse proxy in the path with `mirror` to the new service. \
         B', C': B and C with `--sample {SAMPLE}` (the kernel captures that fraction of the connections). \
         C+: C with `--summary FILE --summary-every {SUMMARY_EVERY_SECS}` (per-endpoint results kept, the summary \
         file rewritten every {SUMMARY_EVERY_SECS} s), measured only with 1 KiB bodies at {SUMMARY_RATE} req/s, \
         alternated there with A and C. \
         C*: C+ replaying to a port of the new service whose every answer has one header more (a mismatch \
         event per request); C*N: C* with `--nats URL` (every event and the summary published to a \
         nats-server with JetStream, which runs under SCHED_IDLE like the new service); both alternated \
         there too. \
         The agent runs at its default CPU priority (idle, SCHED_IDLE); the new service stands in for \
         another machine and runs under SCHED_IDLE in every condition, so C measures what the agent \
         costs production. Saturation: `wrk -t2 -c32`, closed loop. Latency: `oha -q RATE --latency-correction`, \
         open loop at about half of A's saturation throughput.\n"
    );
    let _ = writeln!(md, "### Production overhead (ratios to A)\n");
    let _ = writeln!(
        md,
        "| body | condition | saturation req/s | ×A | fixed rate req/s | achieved | p50 ms | ×A | p99 ms | ×A | others (cores, max) |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &over {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
            size_label(r.size),
            r.cond.label(),
            f(r.saturation_rps, 0),
            f(r.saturation_ratio, 3),
            n(r.rate.map(u64::from)),
            f(r.achieved_rps, 0),
            f(r.p50_ms, 3),
            f(r.p50_ratio, 2),
            f(r.p99_ms, 3),
            f(r.p99_ratio, 2),
            r.others_max_cores,
        );
    }
    if !fixed.is_empty() {
        let _ = writeln!(
            md,
            "\n### Latency at the completeness rates (1 KiB, open loop, A and C alternated, \
             C+ too at {SUMMARY_RATE} req/s)\n"
        );
        let _ = writeln!(
            md,
            "| rate req/s | condition | achieved | p50 ms | ×A | p99 ms | ×A | others (cores, max) |"
        );
        let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|");
        for r in &fixed {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                r.rate,
                r.cond.label(),
                f(r.achieved_rps, 0),
                f(r.p50_ms, 3),
                f(r.p50_ratio, 2),
                f(r.p99_ms, 3),
                f(r.p99_ratio, 2),
                r.others_max_cores,
            );
        }
    }
    let _ = writeln!(md, "\n### Completeness and cost\n");
    let _ = writeln!(
        md,
        "Counts are summed over the runs of a row. sent: requests the old service served (its \
         stub_status). captured: requests the agent saw on the wire (`requests_seen`). compared: \
         matched + mismatched + noise; %: compared / sent. CPU s/1k compared: agent user+system \
         seconds per 1000 requests compared (what a comparison costs; beside the compared fraction, \
         since a run that sheds looks cheap per request sent). skipped: not replayed by policy or overload. lost: requests \
         lost by any cause (in parentheses: to ring-buffer drops). ring drops: records the kernel \
         could not write because the ring buffer was full. new served: replays (C) or mirrors (D) the new service answered. CPU: agent \
         user+system seconds per 1000 requests = cores per 1k req/s. RSS: agent VmHWM (max); ring \
         map: the part of the resident set that is the ring buffer's mapping (its data pages are \
         mapped twice, so a full 32 MiB ring counts 64 MiB). IRQ work/record: machine-wide IRQ work \
         interrupts (what ring-buffer wakeups raise) per record emitted. \
         ns/run: the TC program's run_time_ns / run_cnt (bpf_stats); ns/record: run time over the \
         records it emitted (pure-ACK runs charged to them).\n"
    );
    let _ = writeln!(
        md,
        "| body | load | condition | sent | captured | compared | % | CPU s/1k compared | skipped | lost (ring) | ring drops | new served | CPU s/1k req | RSS MiB | ring map MiB | records | sampled out | agent idle | ns/run | ns/record | IRQ work/record |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &cost {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            size_label(r.size),
            r.load,
            r.cond.label(),
            r.sent,
            n(r.captured),
            n(r.compared),
            f(r.compared_pct, 3),
            f(r.cpu_per_1k_compared, 3),
            n(r.skipped),
            match (r.lost, r.lost_ring) {
                (Some(l), Some(k)) => format!("{l} ({k})"),
                (l, _) => n(l),
            },
            n(r.ringbuf_drops),
            r.new_served,
            f(r.cpu_per_1k, 3),
            f(r.peak_rss_mib, 1),
            f(r.ring_map_mib, 1),
            n(r.records),
            n(r.sampled_out),
            if r.cond.has_agent() {
                format!("{}/{}", r.idle_runs, r.runs)
            } else {
                "–".to_owned()
            },
            f(r.ns_per_run, 0),
            f(r.ns_per_record, 0),
            f(r.irq_work_per_record, 2),
        );
    }
    let _ = writeln!(
        md,
        "\n### Capture vs tcpdump (B at saturation, same interface, same run)\n"
    );
    let _ = writeln!(
        md,
        "tcpdump `-i OLD_IF` with the TC program's own selection (TCP to or from the old service), \
         headers only. packets: every such segment (pure ACKs too) as tcpdump's socket received it \
         (\"received by filter\") and as it wrote it, vs the kernel's `packets_matched`. \
         records: segments with payload or SYN/FIN/RST vs the kernel's `records_emitted` (+ drops) \
         and the records the agent read. bytes: TCP payload bytes vs `bytes_emitted`. An empty TC \
         program (return TCX_NEXT) is attached beside the agent's for the floor of bpf_stats.\n"
    );
    let _ = writeln!(
        md,
        "| body | tcpdump received | tcpdump written | kernel matched | tcpdump records | kernel records | drops | agent read | tcpdump bytes | kernel bytes | tcpdump dropped | agent ns/run | empty ns/run | verdict |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in &dump {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            size_label(r.size),
            n(r.tcpdump_received),
            r.tcpdump_packets,
            r.kernel_packets_matched,
            r.tcpdump_record_worthy,
            r.kernel_records,
            r.ringbuf_drops,
            n(r.agent_records),
            r.tcpdump_payload_bytes,
            r.kernel_payload_bytes,
            n(r.tcpdump_dropped),
            f(r.agent_ns_per_run, 0),
            f(r.empty_prog_ns_per_run, 0),
            r.verdict,
        );
    }
    if !floors.is_empty() {
        let _ = writeln!(
            md,
            "\n### Kernel cost reference (same run)\n\n\
             The TC program's unavoidable work per record: dispatch (the empty program's ns per run, \
             from the tcpdump run) and one copy of the payload into the ring (a user-space memcpy of \
             the mean payload B captured at a fixed rate, median of {} repetitions).\n",
            super::bpf::MEMCPY_REPS
        );
        let _ = writeln!(
            md,
            "| body | mean payload bytes | memcpy ns | empty ns/run | 2 × (floor + memcpy) | B ns/record |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        for fl in floors {
            let empty = dump
                .iter()
                .find(|d| d.size == fl.size)
                .and_then(|d| d.empty_prog_ns_per_run);
            let b = cost
                .iter()
                .find(|r| r.size == fl.size && r.phase == "latency" && r.cond == Cond::B)
                .and_then(|r| r.ns_per_record);
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {} | {} | {} |",
                size_label(fl.size),
                fl.mean_payload_bytes,
                fl.memcpy_ns,
                f(empty, 0),
                f(empty.map(|e| 2.0 * (e + fl.memcpy_ns)), 0),
                f(b, 0),
            );
        }
    }
    let _ = writeln!(md, "\n### Targets\n");
    let _ = writeln!(md, "| target | measured | status |");
    let _ = writeln!(md, "|---|---|---|");
    for t in &tg {
        let status = match t.met {
            Some(true) => "met",
            Some(false) => "**open**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {} | {} | {status} |", t.target, t.measured);
    }
    let met = tg.iter().filter(|t| t.met == Some(true)).count();
    let open = tg.iter().filter(|t| t.met == Some(false)).count();
    let unmeasured = tg.iter().filter(|t| t.met.is_none()).count();
    let _ = writeln!(
        md,
        "\n{met} met, {open} open, {unmeasured} not measured in this run."
    );
    let foreign: f64 = runs.iter().map(|r| r.foreign_cpu_s).sum();
    let secs: f64 = runs.iter().map(|r| r.load.seconds).sum();
    if secs > 0.0 {
        let _ = writeln!(
            md,
            "\nOther processes on the machine (outside the bench's namespaces) used {foreign:.1} CPU-s \
             during {secs:.0} s of load ({:.1}% of one core on average); each run waited for them to \
             use < 0.15 core first ({} of {} runs started without that quiet).",
            100.0 * foreign / secs,
            runs.iter().filter(|r| !r.quiet).count(),
            runs.len()
        );
    }
    let json = json!({
        "meta": meta,
        "overhead": over,
        "cost": cost,
        "tcpdump": dump,
        "fixed_rate_latency": fixed,
        "kernel_floors": floors,
        "targets": tg,
        "runs": runs,
    });
    Report { markdown: md, json }
}

#[cfg(test)]
mod tests;
