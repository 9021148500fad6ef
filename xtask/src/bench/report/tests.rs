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
