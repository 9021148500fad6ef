//! Per-endpoint results of `run` and `replay`: built from their flags, the
//! summary file rewritten every few seconds and at the end, and the verdict
//! `--until-verdict` stops on.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use parallelrun_agent::{
    endpoint::Endpoints,
    model::timestamp,
    publish::Publisher,
    summary::{
        RegressionRule, Results, Rules, Source, Summary, file,
        verdict::{self, Decision, VerdictRules},
    },
};
use tracing::{info, warn};

use crate::cli::{ResultsArgs, VerdictArgs};

/// The rules the results are grouped and judged by.
pub fn rules(args: &ResultsArgs) -> Rules {
    Rules {
        endpoint_patterns: args.endpoints.iter().map(ToString::to_string).collect(),
        max_endpoints: args.max_endpoints as usize,
        learn_after: args.learn_after as usize,
        max_locations: args.max_locations as usize,
        regression: RegressionRule {
            ratio: args.regression_ratio,
            min_delta_ms: args.regression_min_delta,
            min_samples: args.regression_min_samples,
        },
    }
}

/// The endpoint classifier `args` ask for.
pub fn endpoints(args: &ResultsArgs) -> Endpoints {
    Endpoints::new(
        args.endpoints.clone(),
        args.max_endpoints as usize,
        args.learn_after as usize,
    )
}

/// The verdict rules of `verdict` and `--until-verdict`.
pub fn verdict_rules(args: &VerdictArgs) -> VerdictRules {
    VerdictRules {
        max_mismatch_rate: args.max_mismatch_rate,
        max_latency_ratio: args.max_latency_ratio,
        min_compared: args.min_compared,
        scope: args.endpoint_scope.clone(),
    }
}

/// This host's name (`unknown` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// This run as a summary names it; `host` is the agent's node name
/// (`--node`, else [`hostname`]).
pub fn source(host: String, input: String, new: String, secondary: Option<String>) -> Source {
    let now = timestamp(SystemTime::now());
    Source {
        host,
        input,
        new,
        secondary,
        started: now.clone(),
        updated: now,
        finished: false,
    }
}

/// Where the results go while the run goes on.
pub struct Output {
    results: Arc<Mutex<Results>>,
    path: Option<PathBuf>,
    every: Duration,
    last: Instant,
    until: Option<VerdictRules>,
    write_errors: u64,
    /// Where summaries are also published (`--nats`).
    publish: Option<Publisher>,
}

impl Output {
    /// `None` when nothing needs per-endpoint results: no summary file, no
    /// verdict to stop on, no metrics and no NATS.
    pub fn new(
        args: &ResultsArgs,
        metrics: bool,
        publish: Option<Publisher>,
        results: Results,
    ) -> Option<Self> {
        if args.summary.is_none() && !args.until_verdict && !metrics && publish.is_none() {
            return None;
        }
        Some(Self {
            results: Arc::new(Mutex::new(results)),
            path: args.summary.clone(),
            every: args.summary_every,
            last: Instant::now(),
            until: args.until_verdict.then(|| verdict_rules(&args.verdict)),
            write_errors: 0,
            publish,
        })
    }

    pub fn results(&self) -> Arc<Mutex<Results>> {
        Arc::clone(&self.results)
    }

    fn snapshot(&self, finished: bool) -> Option<Summary> {
        self.results.lock().ok().map(|r| r.snapshot(finished))
    }

    /// About once a second: rewrites the summary when due; with
    /// `--until-verdict`, the verdict once it is decided.
    pub fn tick(&mut self) -> Option<Decision> {
        let due = self.last.elapsed() >= self.every;
        if !due && self.until.is_none() {
            return None;
        }
        let summary = self.snapshot(false)?;
        if due {
            self.last = Instant::now();
            if let Some(p) = &self.publish {
                p.summary(&summary);
            }
            if let Some(path) = &self.path
                && let Err(e) = file::write(path, &summary)
            {
                self.write_errors += 1;
                // One warning a minute at the default interval.
                if self.write_errors % 12 == 1 {
                    warn!("cannot write the summary ({e}); the run goes on");
                }
            }
        }
        let rules = self.until.as_ref()?;
        let v = verdict::decide(&summary, rules);
        (v.decision != Decision::NotEnoughData).then(|| {
            info!(decision = ?v.decision, "verdict decided: stopping (--until-verdict)");
            v.decision
        })
    }

    /// At the end, before [`Output::finish`]: publishes the final summary
    /// (`finished`) when `--nats` asks for it.
    pub fn publish_final(&self) {
        if let Some((p, summary)) = self.publish.as_ref().zip(self.snapshot(true)) {
            p.summary(&summary);
        }
    }

    /// At the end: the final summary (`finished`), and the verdict when
    /// `--until-verdict` asked for one.
    pub fn finish(&mut self) -> anyhow::Result<Option<Decision>> {
        let Some(summary) = self.snapshot(true) else {
            anyhow::bail!("the per-endpoint results were lost (a replay task panicked)");
        };
        if let Some(path) = &self.path {
            file::write(path, &summary)
                .with_context(|| "writing the summary; the counters above are complete")?;
            eprintln!(
                "  summary:      {} (parallelrun report {})",
                path.display(),
                path.display()
            );
        }
        Ok(self.until.as_ref().map(|rules| {
            let v = verdict::decide(&summary, rules);
            for r in &v.reasons {
                eprintln!("  verdict: {}", r.detail);
            }
            v.decision
        }))
    }
}
