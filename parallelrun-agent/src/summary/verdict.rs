//! The cutover verdict: is the new version ready to take over?

use serde::Serialize;

use super::Summary;

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
    /// Endpoint patterns in scope (as `--endpoint`); empty: every endpoint
    /// with a compared request.
    pub scope: Vec<String>,
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
    let _ = (summary, rules);
    todo!()
}
