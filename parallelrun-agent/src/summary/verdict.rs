//! The cutover verdict: is the new version ready to take over?
//!
//! The endpoints in scope are those matching [`VerdictRules::scope`], or,
//! when it is empty, every endpoint with a compared request. Each is judged:
//!
//! - fewer than `min_compared` compared requests: not judged, and the
//!   verdict lacks data (a non-blocking `min_compared` reason);
//! - mismatched / compared above `max_mismatch_rate`: blocking;
//! - with `max_latency_ratio`, and both the new and the secondary histograms
//!   holding `rules.regression.min_samples` values: p50 or p99 of new /
//!   secondary above it *and* new at least `rules.regression.min_delta_ms`
//!   above the secondary (so that sub-millisecond jitter on a fast endpoint
//!   is no regression), blocking; without secondary data, a non-blocking
//!   reason says latency was not judged.
//!
//! Any blocking reason: [`Decision::NotReady`]; else any endpoint lacking
//! data, or none in scope: [`Decision::NotEnoughData`]; else
//! [`Decision::Ready`]. Reasons list the blocking ones first.

use serde::Serialize;

use crate::endpoint::Pattern;

use super::{EndpointSummary, Summary};

/// The rules a verdict applies.
#[derive(Clone, Debug, PartialEq)]
pub struct VerdictRules {
    /// Highest mismatched / compared allowed per endpoint.
    pub max_mismatch_rate: f64,
    /// Highest new / secondary latency allowed per endpoint, at p50 and p99
    /// (only where a secondary answered); `None`: latency is not judged.
    pub max_latency_ratio: Option<f64>,
    /// Compared requests each endpoint in scope needs before it is judged.
    pub min_compared: u64,
    /// Endpoint patterns in scope (as `--endpoint`, parsed by the caller so
    /// that it reports a bad one); empty: every endpoint with a compared
    /// request.
    pub scope: Vec<Pattern>,
}

/// What the verdict decided; the exit code of `parallelrun verdict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Exit 0.
    Ready,
    /// Exit 1.
    NotReady,
    /// Exit 2.
    NotEnoughData,
}

impl Decision {
    /// The exit code of `parallelrun verdict`.
    pub fn exit_code(self) -> u8 {
        match self {
            Decision::Ready => 0,
            Decision::NotReady => 1,
            Decision::NotEnoughData => 2,
        }
    }
}

/// A verdict and why.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub decision: Decision,
    /// Each endpoint that broke a rule or lacks data, and each rule not
    /// applied.
    pub reasons: Vec<Reason>,
}

/// One reason of a verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    /// The endpoint, or `None` for the whole run.
    pub endpoint: Option<String>,
    /// `max_mismatch_rate`, `max_latency_ratio` or `min_compared`.
    pub rule: &'static str,
    /// Whether it stops a cutover (`false`: information, such as a rule
    /// that could not be applied).
    pub blocking: bool,
    /// For people: `12 of 900 compared mismatched (1.33 % > 1 %)`.
    pub detail: String,
}

/// Judges `summary` by `rules`.
pub fn decide(summary: &Summary, rules: &VerdictRules) -> Verdict {
    let mut reasons = Vec::new();
    let mut lacking = false;
    let in_scope: Vec<&EndpointSummary> = if rules.scope.is_empty() {
        summary
            .endpoints
            .iter()
            .filter(|e| e.counts.compared > 0)
            .collect()
    } else {
        for p in &rules.scope {
            if !summary
                .endpoints
                .iter()
                .any(|e| p.matches_endpoint(&e.endpoint))
            {
                lacking = true;
                reasons.push(Reason {
                    endpoint: None,
                    rule: "min_compared",
                    blocking: false,
                    detail: format!("no endpoint matches the scope pattern {p}"),
                });
            }
        }
        summary
            .endpoints
            .iter()
            .filter(|e| rules.scope.iter().any(|p| p.matches_endpoint(&e.endpoint)))
            .collect()
    };
    if in_scope.is_empty() {
        lacking = true;
        reasons.push(Reason {
            endpoint: None,
            rule: "min_compared",
            blocking: false,
            detail: "no endpoint in scope has a compared request".to_owned(),
        });
    }
    let min_samples = summary.rules.regression.min_samples.max(1);
    for e in in_scope {
        let reason = |rule, blocking, detail| Reason {
            endpoint: Some(e.endpoint.clone()),
            rule,
            blocking,
            detail,
        };
        let c = &e.counts;
        if c.compared < rules.min_compared.max(1) {
            lacking = true;
            reasons.push(reason(
                "min_compared",
                false,
                format!(
                    "{} compared, {} needed to judge it",
                    c.compared,
                    rules.min_compared.max(1)
                ),
            ));
            continue;
        }
        let rate = c.mismatched as f64 / c.compared as f64;
        if rate > rules.max_mismatch_rate {
            reasons.push(reason(
                "max_mismatch_rate",
                true,
                format!(
                    "{} of {} compared mismatched ({:.2} % > {:.2} %)",
                    c.mismatched,
                    c.compared,
                    rate * 100.0,
                    rules.max_mismatch_rate * 100.0
                ),
            ));
        }
        let Some(max_ratio) = rules.max_latency_ratio else {
            continue;
        };
        let (new, secondary) = (&e.latency.new, &e.latency.secondary);
        if secondary.count() == 0 {
            reasons.push(reason(
                "max_latency_ratio",
                false,
                "latency not judged: no secondary".to_owned(),
            ));
            continue;
        }
        if new.count() < min_samples || secondary.count() < min_samples {
            reasons.push(reason(
                "max_latency_ratio",
                false,
                format!(
                    "latency not judged: {} new and {} secondary latencies, {min_samples} \
                     needed of each",
                    new.count(),
                    secondary.count()
                ),
            ));
            continue;
        }
        for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
            let (Some(n), Some(s)) = (new.quantile_ms(q), secondary.quantile_ms(q)) else {
                continue;
            };
            let ratio = n / s.max(0.001);
            if ratio > max_ratio && n - s >= summary.rules.regression.min_delta_ms {
                reasons.push(reason(
                    "max_latency_ratio",
                    true,
                    format!(
                        "{name} latency {n:.3} ms new vs {s:.3} ms secondary \
                         ({ratio:.2} × > {max_ratio:.2} ×)"
                    ),
                ));
            }
        }
    }
    // Stable: blocking first, otherwise in endpoint order.
    reasons.sort_by_key(|r| !r.blocking);
    let decision = if reasons.iter().any(|r| r.blocking) {
        Decision::NotReady
    } else if lacking {
        Decision::NotEnoughData
    } else {
        Decision::Ready
    };
    Verdict { decision, reasons }
}

#[cfg(test)]
mod tests;
