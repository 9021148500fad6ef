//! `parallelrun report` and `parallelrun verdict`: summaries read (files,
//! and with `--nats` the latest summary of each node in a JetStream
//! stream), checked and merged, then rendered or judged.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use parallelrun_agent::{
    private_file,
    publish::fleet,
    report::{html, table},
    summary::{
        Summary, file, merge, prometheus,
        verdict::{self, Decision},
    },
};

use crate::{
    cli::{FleetArgs, PrometheusArgs, ReportArgs, VerdictCmdArgs},
    results::verdict_rules,
};

/// `verdict`'s exit code when the summaries or flags cannot be used.
pub const VERDICT_ERROR: u8 = 3;

/// Reads, checks and merges `files` and the fleet's latest summaries on
/// NATS, or reads the fleet from Prometheus.
fn load(files: &[PathBuf], prom: &PrometheusArgs, nats: &FleetArgs) -> anyhow::Result<Summary> {
    if let Some(url) = &prom.prometheus {
        return from_prometheus(url, prom.prometheus_selector.as_deref().unwrap_or_default());
    }
    if prom.prometheus_selector.is_some() {
        anyhow::bail!(
            "--prometheus-selector picks agents in Prometheus: give --prometheus URL too"
        );
    }
    let mut read = Vec::with_capacity(files.len());
    for path in files {
        read.push((path.clone(), file::read(path)?));
    }
    if let Some(url) = &nats.url {
        read.extend(block_on(
            "read from NATS",
            fleet::latest_summaries(url, &nats.nats_stream, nats.nats_service.as_deref()),
        )??);
    }
    Ok(merge::merge(read)?)
}

/// The fleet's summary as Prometheus has it now.
fn from_prometheus(url: &str, selector: &str) -> anyhow::Result<Summary> {
    let client = prometheus::api::Client::new(url)?;
    let selector = prometheus::Selector::parse(selector)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs_f64();
    Ok(block_on(
        "query Prometheus",
        prometheus::read(&client, &selector, now),
    )??)
}

/// Runs `work` on a runtime of this thread: the only async work of these
/// commands (reading a fleet) gets a runtime for itself alone.
fn block_on<T>(what: &str, work: impl Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the async runtime to {what}"))?;
    Ok(runtime.block_on(work))
}

/// `parallelrun report`.
pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let summary = load(&args.files, &args.prometheus, &args.nats)?;
    if let Some(path) = &args.html {
        private_file::write(path, html::render(&summary).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report: {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let colour = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    print!("{}", table::render(&summary, colour));
    Ok(())
}

/// `parallelrun verdict`: the decision's exit code (0, 1, 2), or 3 when the
/// summaries cannot be used.
pub fn verdict(args: VerdictCmdArgs) -> ExitCode {
    let summary = match load(&args.files, &args.prometheus, &args.nats) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(VERDICT_ERROR);
        }
    };
    let v = verdict::decide(&summary, &verdict_rules(&args.rules));
    if args.json {
        match serde_json::to_string_pretty(&v) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(VERDICT_ERROR);
            }
        }
    } else {
        let head = match v.decision {
            Decision::Ready => "ready: the new version may take over",
            Decision::NotReady => "not ready",
            Decision::NotEnoughData => "not enough data to decide",
        };
        println!("{head}");
        for r in &v.reasons {
            let who = r.endpoint.as_deref().unwrap_or("run");
            println!("  {who}: {} ({})", r.detail, r.rule);
        }
    }
    ExitCode::from(code(v.decision))
}

/// The exit code of a decision.
pub fn code(d: Decision) -> u8 {
    match d {
        Decision::Ready => 0,
        Decision::NotReady => 1,
        Decision::NotEnoughData => 2,
    }
}
