//! A fleet's [`Summary`] rebuilt from Prometheus: the per-endpoint series
//! of every agent it scrapes ([`crate::metrics::endpoints`]), summed, give
//! the summary one agent watching all their traffic would have written.
//!
//! Data flows one way: [`queries`] (PromQL instant queries, all at one
//! evaluation time) → [`api::Client`] (Prometheus's HTTP API) → the
//! answers, [`Answers`] → [`summary`] (pure: checked and converted).
//!
//! # What is exact and what is not
//!
//! - Counts are exact: `endpoint_requests_total` by `outcome`,
//!   `endpoint_skipped_total` by `reason` and `endpoint_lost_total` by
//!   `cause`, summed over the agents per endpoint; `seen` and `compared`
//!   are derived from the outcomes as an agent derives them.
//! - The rules come from each agent's `rules_info`: the agents must agree
//!   on them (as summaries must to merge), else [`FleetError::RulesDiffer`].
//! - Latencies are approximate: Prometheus holds bucket counts
//!   ([`crate::metrics::LATENCY_BUCKETS`]), not the agents' histograms. The
//!   values of a bucket `(lo, hi]` are spread evenly over it (at most
//!   [`SPREAD`] points), those above the highest finite bound are put at
//!   that bound, so quantiles are those Prometheus's `histogram_quantile`
//!   interpolates. The regression rule and the verdict's latency rule read
//!   these quantiles: a regression as large as the buckets are wide (e.g.
//!   50 ms against 1 ms) is found as from the agents' own histograms, one
//!   within a bucket may not be.
//! - Not in Prometheus, so empty: difference locations, examples. Each
//!   agent scraped is one source, named by its `instance` label.
//! - Counters count since each agent started: an agent that restarted
//!   counts from zero, and one no longer scraped drops out (Prometheus
//!   marks its series stale). Ask while the agents run.
//!
//! # Bounds
//!
//! Each answer is read up to [`api::MAX_ANSWER`] bytes; the endpoints are
//! bounded by the agents (`--max-endpoints`), and those beyond the rules'
//! bound in the sum of several agents are folded into
//! [`OTHER`](super::OTHER) as a merge folds them.

pub mod api;

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::{
    Counts, EndpointSummary, Latency, RegressionRule, Rules, Source, Summary,
    merge::{self, rules_difference},
};

/// Points a bucket's values are spread over at most.
pub const SPREAD: u64 = 32;
/// The metric names, as the agents' registry prefixes them.
const RULES_INFO: &str = "parallelrun_rules_info";
const REQUESTS: &str = "parallelrun_endpoint_requests_total";
const SKIPPED: &str = "parallelrun_endpoint_skipped_total";
const LOST: &str = "parallelrun_endpoint_lost_total";
const LATENCY_BUCKET: &str = "parallelrun_endpoint_latency_seconds_bucket";

/// Why a fleet's summary cannot be had from Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "--prometheus {0:?} is not a Prometheus URL: give http://HOST:PORT (and a path prefix if it has one); https is not supported, reach it through a port-forward"
    )]
    BadUrl(String),
    #[error(
        "--prometheus-selector {0:?} is not a label matcher: give it in braces, e.g. '{{job=\"parallelrun\"}}'"
    )]
    BadSelector(String),
    #[error(
        "cannot reach Prometheus at {url}: {why}; check --prometheus and that Prometheus is up"
    )]
    Unreachable { url: String, why: String },
    #[error("Prometheus at {url} answered {status} to {query}: {body}")]
    Status {
        url: String,
        status: u16,
        query: String,
        body: String,
    },
    #[error("Prometheus refused {query}: {error}")]
    Refused { query: String, error: String },
    #[error(
        "the answer to {query} is larger than {limit} bytes: narrow the fleet with --prometheus-selector"
    )]
    TooLarge { query: String, limit: usize },
    #[error("the answer to {query} is not Prometheus's API JSON: {why}")]
    BadAnswer { query: String, why: String },
    #[error(
        "no parallelrun agent in Prometheus ({0} has no series): check that it scrapes the agents' --metrics address, that they run with --summary or --metrics, and that --prometheus-selector matches them"
    )]
    NoAgents(String),
    #[error(
        "agent {instance} groups results by other rules than {first}: {what}; run every agent of the fleet with the same --endpoint patterns and bounds"
    )]
    RulesDiffer {
        instance: String,
        first: String,
        what: String,
    },
    #[error(
        "a series of {metric} has {what}: read the fleet with a parallelrun as new as its agents"
    )]
    BadSeries { metric: &'static str, what: String },
}

/// A label matcher naming the fleet's series, e.g. `{job="parallelrun"}`;
/// empty: every agent Prometheus scrapes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(String);

impl Selector {
    /// `s` when it is empty or in braces (Prometheus checks the rest).
    pub fn parse(s: &str) -> Result<Self, FleetError> {
        let s = s.trim();
        if s.is_empty() || (s.starts_with('{') && s.ends_with('}')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(FleetError::BadSelector(s.to_owned()))
        }
    }

    fn of(&self, metric: &str) -> String {
        format!("{metric}{}", self.0)
    }
}

/// The instant queries [`summary`] needs, in [`Answers`]' order.
pub fn queries(selector: &Selector) -> [String; 5] {
    [
        selector.of(RULES_INFO),
        format!("sum by (endpoint, outcome) ({})", selector.of(REQUESTS)),
        format!("sum by (endpoint, reason) ({})", selector.of(SKIPPED)),
        format!("sum by (endpoint, cause) ({})", selector.of(LOST)),
        format!(
            "sum by (endpoint, side, le) ({})",
            selector.of(LATENCY_BUCKET)
        ),
    ]
}

/// One series of an instant vector: `{"metric": {...}, "value": [t, "v"]}`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Sample {
    pub metric: BTreeMap<String, String>,
    pub value: (f64, String),
}

/// The answers to [`queries`], in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answers {
    pub rules: Vec<Sample>,
    pub requests: Vec<Sample>,
    pub skipped: Vec<Sample>,
    pub lost: Vec<Sample>,
    pub buckets: Vec<Sample>,
}

/// Asks `client` the [`queries`] at `time` (Unix seconds) and converts the
/// answers.
pub async fn read(
    client: &api::Client,
    selector: &Selector,
    time: f64,
) -> Result<Summary, FleetError> {
    let [rules, requests, skipped, lost, buckets] = queries(selector);
    let rules_answer = client.query(&rules, time).await?;
    if rules_answer.is_empty() {
        return Err(FleetError::NoAgents(rules));
    }
    summary(Answers {
        rules: rules_answer,
        requests: client.query(&requests, time).await?,
        skipped: client.query(&skipped, time).await?,
        lost: client.query(&lost, time).await?,
        buckets: client.query(&buckets, time).await?,
    })
}

/// The fleet's summary from the answers (see the [module docs](self)).
pub fn summary(answers: Answers) -> Result<Summary, FleetError> {
    let (rules, sources) = rules(&answers.rules)?;
    let mut endpoints = BTreeMap::new();
    add_outcomes(&mut endpoints, &answers.requests)?;
    add_by(&mut endpoints, SKIPPED, "reason", &answers.skipped, |c| {
        &mut c.skipped_by
    })?;
    add_by(&mut endpoints, LOST, "cause", &answers.lost, |c| {
        &mut c.lost_by
    })?;
    add_latencies(&mut endpoints, &answers.buckets)?;
    Ok(merge::summary(rules, sources, endpoints))
}

type Endpoints = BTreeMap<String, EndpointSummary>;

/// Each endpoint's outcomes, and `seen` and `compared` derived from them.
fn add_outcomes(endpoints: &mut Endpoints, samples: &[Sample]) -> Result<(), FleetError> {
    for s in samples {
        let n = count(REQUESTS, s)?;
        let c = &mut entry(endpoints, label(REQUESTS, s, "endpoint")?).counts;
        let field = match label(REQUESTS, s, "outcome")? {
            "matched" => &mut c.matched,
            "mismatched" => &mut c.mismatched,
            "noise" => &mut c.noise,
            "skipped" => &mut c.skipped,
            "lost" => &mut c.lost,
            "replay_error" => &mut c.replay_errors,
            other => {
                return Err(FleetError::BadSeries {
                    metric: REQUESTS,
                    what: format!("an unknown outcome {other:?}"),
                });
            }
        };
        *field = field.saturating_add(n);
    }
    for e in endpoints.values_mut() {
        let c = &mut e.counts;
        c.compared = c
            .matched
            .saturating_add(c.mismatched)
            .saturating_add(c.noise);
        c.seen = [c.skipped, c.lost, c.replay_errors]
            .into_iter()
            .fold(c.compared, u64::saturating_add);
    }
    Ok(())
}

/// Each endpoint's counts by `label` (a reason, a cause) into `map`.
fn add_by(
    endpoints: &mut Endpoints,
    metric: &'static str,
    by: &str,
    samples: &[Sample],
    map: fn(&mut Counts) -> &mut BTreeMap<String, u64>,
) -> Result<(), FleetError> {
    for s in samples {
        let n = count(metric, s)?;
        if n == 0 {
            continue;
        }
        let counts = &mut entry(endpoints, label(metric, s, "endpoint")?).counts;
        let v = map(counts)
            .entry(label(metric, s, by)?.to_owned())
            .or_default();
        *v = v.saturating_add(n);
    }
    Ok(())
}

/// Each endpoint's latency histograms, from their cumulative buckets.
fn add_latencies(endpoints: &mut Endpoints, samples: &[Sample]) -> Result<(), FleetError> {
    let mut buckets: BTreeMap<(&str, &str), Vec<(f64, u64)>> = BTreeMap::new();
    for s in samples {
        let le = match label(LATENCY_BUCKET, s, "le")? {
            "+Inf" => f64::INFINITY,
            v => v
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| FleetError::BadSeries {
                    metric: LATENCY_BUCKET,
                    what: format!("a bucket bound le={v:?}"),
                })?,
        };
        let key = (
            label(LATENCY_BUCKET, s, "endpoint")?,
            label(LATENCY_BUCKET, s, "side")?,
        );
        buckets
            .entry(key)
            .or_default()
            .push((le, count(LATENCY_BUCKET, s)?));
    }
    for ((name, side), mut cumulative) in buckets {
        let latency = &mut entry(endpoints, name).latency;
        let into = match side {
            "old" => &mut latency.old,
            "new" => &mut latency.new,
            "secondary" => &mut latency.secondary,
            other => {
                return Err(FleetError::BadSeries {
                    metric: LATENCY_BUCKET,
                    what: format!("an unknown side {other:?}"),
                });
            }
        };
        cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
        *into = from_buckets(&cumulative);
    }
    Ok(())
}

/// The endpoint `name`, made empty if it is new.
fn entry<'a>(endpoints: &'a mut Endpoints, name: &str) -> &'a mut EndpointSummary {
    endpoints
        .entry(name.to_owned())
        .or_insert_with(|| EndpointSummary::empty(name))
}

/// The rules every agent reports (equal, else an error) and one source per
/// agent.
fn rules(samples: &[Sample]) -> Result<(Rules, Vec<Source>), FleetError> {
    let mut first: Option<(Rules, String)> = None;
    let mut sources = Vec::with_capacity(samples.len());
    for s in samples {
        let instance = s.metric.get("instance").cloned().unwrap_or_default();
        let r = parse_rules(&s.metric)?;
        match &first {
            None => first = Some((r, instance.clone())),
            Some((rules, at)) => {
                if let Some(what) = rules_difference(rules, &r) {
                    return Err(FleetError::RulesDiffer {
                        instance,
                        first: at.clone(),
                        what,
                    });
                }
            }
        }
        sources.push(Source {
            host: instance,
            input: "prometheus".to_owned(),
            new: String::new(),
            secondary: None,
            started: String::new(),
            updated: String::new(),
            finished: false,
        });
    }
    let (rules, _) = first.ok_or_else(|| FleetError::NoAgents(RULES_INFO.to_owned()))?;
    Ok((rules, sources))
}

/// [`Rules`] from the labels [`crate::metrics::endpoints::rules_labels`]
/// writes.
pub fn parse_rules(labels: &BTreeMap<String, String>) -> Result<Rules, FleetError> {
    fn get<T: std::str::FromStr>(
        labels: &BTreeMap<String, String>,
        name: &str,
    ) -> Result<T, FleetError> {
        let v = labels.get(name).ok_or_else(|| FleetError::BadSeries {
            metric: RULES_INFO,
            what: format!("no label {name}"),
        })?;
        v.parse().map_err(|_| FleetError::BadSeries {
            metric: RULES_INFO,
            what: format!("{name}={v:?}"),
        })
    }
    let patterns: String = get(labels, "endpoint_patterns")?;
    let endpoint_patterns = patterns
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            percent_decode_str(p)
                .decode_utf8()
                .map(|p| p.into_owned())
                .map_err(|_| FleetError::BadSeries {
                    metric: RULES_INFO,
                    what: format!("endpoint_patterns={patterns:?}"),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Rules {
        endpoint_patterns,
        max_endpoints: get(labels, "max_endpoints")?,
        learn_after: get(labels, "learn_after")?,
        max_locations: get(labels, "max_locations")?,
        regression: RegressionRule {
            ratio: get(labels, "regression_ratio")?,
            min_delta_ms: get(labels, "regression_min_delta_ms")?,
            min_samples: get(labels, "regression_min_samples")?,
        },
    })
}

/// A histogram holding cumulative bucket counts `(le, count)` (sorted by
/// `le`), each bucket's values spread evenly over it, those of `+Inf` at
/// the highest finite bound.
pub fn from_buckets(cumulative: &[(f64, u64)]) -> Latency {
    let mut latency = Latency::new();
    let (mut lo, mut below) = (0.0_f64, 0_u64);
    for &(le, total) in cumulative {
        let n = total.saturating_sub(below);
        below = below.max(total);
        if n == 0 {
            lo = if le.is_finite() { le } else { lo };
            continue;
        }
        if !le.is_finite() {
            latency.record_us_n((lo * 1e6) as u64, n);
            continue;
        }
        let points = n.min(SPREAD);
        for i in 0..points {
            let at = lo + (le - lo) * (i as f64 + 0.5) / points as f64;
            let share = n / points + u64::from(i < n % points);
            latency.record_us_n((at * 1e6) as u64, share);
        }
        lo = le;
    }
    latency
}

fn label<'a>(metric: &'static str, s: &'a Sample, name: &str) -> Result<&'a str, FleetError> {
    s.metric
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| FleetError::BadSeries {
            metric,
            what: format!("no label {name} (was it aggregated away?)"),
        })
}

/// A sample's value as a count: a finite, non-negative number (a sum of
/// counters), rounded.
fn count(metric: &'static str, s: &Sample) -> Result<u64, FleetError> {
    let v = &s.value.1;
    v.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v.round() as u64)
        .ok_or_else(|| FleetError::BadSeries {
            metric,
            what: format!("the value {v:?}, not a count"),
        })
}

#[cfg(test)]
mod tests;
