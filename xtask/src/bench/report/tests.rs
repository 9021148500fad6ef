use super::*;
use crate::bench::{load::LoadResult, measure::AgentRun};

/// A run at half of A's saturation (the latency phase), at 1000 req/s.
fn run(size: &'static str, cond: Cond, sent: u64, agent: Option<AgentRun>) -> Run {
    Run {
        size,
        phase: "latency",
        round: 1,
        cond,
        load: LoadResult {
            tool: "oha",
            target_rate: Some(1000),
            seconds: 4.0,
            responses: sent,
            rps: 1000.0,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            ..LoadResult::default()
        },
        sent,
        new_served: 0,
        agent,
        tcpdump: None,
        foreign_cpu_s: 0.0,
        quiet_wait_s: 0.0,
        quiet: true,
        irq_work_interrupts: 0,
        profile: None,
    }
}

fn run_agent(compared: u64, sent: u64, records: u64, cpu_s: f64) -> AgentRun {
    AgentRun {
        cpu_s,
        cpu_per_1k_compared: (compared > 0).then(|| cpu_s / (compared as f64 / 1000.0)),
        captured: Some(sent),
        compared: Some(compared),
        records,
        thread_policies: vec![SCHED_IDLE; 3],
        ..AgentRun::default()
    }
}

fn status(runs: &[Run], prefix: &str) -> Option<bool> {
    let rep = build(json!({}), runs, &[]);
    let t = rep.json["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["target"].as_str().is_some_and(|s| s.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no target {prefix}"))
        .clone();
    t["met"].as_bool()
}

const CPU_1M: &str = "1 MiB: agent ≤ 0.1 core per 1k compared";

#[test]
fn a_cost_target_is_met_only_where_the_run_compared_what_it_was_sent() {
    // Cheap per request, but it compared only 99 %: shedding is not a saving.
    let shed = [
        run("1m", Cond::A, 1000, None),
        run("1m", Cond::C, 1000, Some(run_agent(990, 1000, 5000, 0.05))),
    ];
    assert_eq!(status(&shed, CPU_1M), Some(false));
    let whole = [
        run("1m", Cond::A, 1000, None),
        run("1m", Cond::C, 1000, Some(run_agent(1000, 1000, 5000, 0.05))),
    ];
    assert_eq!(status(&whole, CPU_1M), Some(true));
    // 0.2 CPU-s for 1000 compared = 0.2 core per 1k req/s: over the target.
    let costly = [
        run("1m", Cond::A, 1000, None),
        run("1m", Cond::C, 1000, Some(run_agent(1000, 1000, 5000, 0.2))),
    ];
    assert_eq!(status(&costly, CPU_1M), Some(false));
}

#[test]
fn sampling_targets_compare_records_per_request_with_b_and_compared_with_sent() {
    let runs = [
        run("1k", Cond::A, 1000, None),
        run("1k", Cond::B, 1000, Some(run_agent(0, 1000, 4000, 0.1))),
        // 11 % of B's records per request; 8.5 % of requests compared.
        run("1k", Cond::Bs, 2000, Some(run_agent(0, 2000, 880, 0.01))),
        run("1k", Cond::Cs, 1000, Some(run_agent(85, 1000, 440, 0.01))),
    ];
    assert_eq!(
        status(&runs, "1 KiB: kernel records with --sample"),
        Some(true)
    );
    assert_eq!(status(&runs, "1 KiB: compared with --sample"), Some(true));
    let off = [
        run("1k", Cond::A, 1000, None),
        run("1k", Cond::B, 1000, Some(run_agent(0, 1000, 4000, 0.1))),
        run("1k", Cond::Bs, 1000, Some(run_agent(0, 1000, 4000, 0.1))),
        run("1k", Cond::Cs, 1000, Some(run_agent(1000, 1000, 4000, 0.1))),
    ];
    assert_eq!(
        status(&off, "1 KiB: kernel records with --sample"),
        Some(false)
    );
    assert_eq!(status(&off, "1 KiB: compared with --sample"), Some(false));
    // Without the sampled conditions the targets are not measured.
    assert_eq!(status(&runs[..2], "1 KiB: compared with --sample"), None);
}

const SUMMARY_CPU: &str = "1 KiB at 10000 req/s: agent CPU per 1k compared with --summary";

/// A completeness run at 10000 req/s (1 KiB) in `round`; `cpu_s` for
/// `compared` of the 10000 requests sent.
fn at_summary_rate(cond: Cond, round: u32, compared: u64, cpu_s: f64) -> Run {
    let agent = cond
        .has_agent()
        .then(|| run_agent(compared, 10000, 40000, cpu_s));
    let mut r = run("1k", cond, 10000, agent);
    r.phase = "completeness";
    r.round = round;
    r.load.target_rate = Some(SUMMARY_RATE);
    r.load.rps = f64::from(SUMMARY_RATE);
    r
}

fn target(runs: &[Run], prefix: &str) -> Value {
    let rep = build(json!({}), runs, &[]);
    rep.json["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["target"].as_str().is_some_and(|s| s.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no target {prefix}"))
        .clone()
}

#[test]
fn the_summary_cost_target_compares_c_plus_with_c_over_the_same_rounds() {
    // Medians 0.115 (C) and 0.12 (C+) CPU-s per 1k compared: ×1.04.
    let cheap = [
        at_summary_rate(Cond::A, 1, 0, 0.0),
        at_summary_rate(Cond::C, 1, 10000, 1.1),
        at_summary_rate(Cond::Cr, 1, 10000, 1.15),
        at_summary_rate(Cond::A, 2, 0, 0.0),
        at_summary_rate(Cond::C, 2, 10000, 1.2),
        at_summary_rate(Cond::Cr, 2, 10000, 1.25),
    ];
    let t = target(&cheap, SUMMARY_CPU);
    assert_eq!(t["met"].as_bool(), Some(true), "{t}");
    let measured = t["measured"].as_str().expect("measured");
    assert!(measured.starts_with("×1.04"), "{measured}");
    assert!(measured.contains("0.1200 CPU-s per 1k compared with --summary"));
    assert!(measured.contains("vs 0.1150 without"), "{measured}");
    assert!(measured.contains("medians over 2 round(s)"), "{measured}");
    // The summary and C+ show in the fixed-rate and cost tables too.
    let rep = build(json!({}), &cheap, &[]);
    assert!(
        rep.json["fixed_rate_latency"]
            .as_array()
            .expect("fixed")
            .iter()
            .any(|r| r["cond"] == "Cr")
    );
    assert!(
        rep.json["cost"]
            .as_array()
            .expect("cost")
            .iter()
            .any(|r| r["cond"] == "Cr" && r["phase"] == "completeness")
    );

    // 1.5 against 1.1: ×1.36, over the limit.
    let costly = [
        at_summary_rate(Cond::C, 1, 10000, 1.1),
        at_summary_rate(Cond::Cr, 1, 10000, 1.5),
    ];
    assert_eq!(status(&costly, SUMMARY_CPU), Some(false));

    // Cheap, but C+ compared only 98 % of what it was sent.
    let shed = [
        at_summary_rate(Cond::C, 1, 10000, 1.1),
        at_summary_rate(Cond::Cr, 1, 9800, 1.0),
    ];
    let t = target(&shed, SUMMARY_CPU);
    assert_eq!(t["met"].as_bool(), Some(false));
    assert!(
        t["measured"]
            .as_str()
            .is_some_and(|m| m.ends_with("too few compared to judge")),
        "{t}"
    );

    // A costly C round without C+ beside it does not count.
    let unpaired = [
        at_summary_rate(Cond::C, 1, 10000, 1.1),
        at_summary_rate(Cond::Cr, 1, 10000, 1.15),
        at_summary_rate(Cond::C, 2, 10000, 0.5),
    ];
    assert_eq!(status(&unpaired, SUMMARY_CPU), Some(true));

    // Without either condition, or without C+ at that rate: not measured.
    assert_eq!(status(&cheap[..2], SUMMARY_CPU), None);
    let only_cr = [at_summary_rate(Cond::Cr, 1, 10000, 1.15)];
    assert_eq!(status(&only_cr, SUMMARY_CPU), None);
    let mut elsewhere = at_summary_rate(Cond::Cr, 1, 10000, 1.15);
    elsewhere.load.target_rate = Some(5000);
    let other_rate = [at_summary_rate(Cond::C, 1, 10000, 1.1), elsewhere];
    assert_eq!(status(&other_rate, SUMMARY_CPU), None);
}
