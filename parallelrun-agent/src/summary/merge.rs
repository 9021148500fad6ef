//! Several summaries into one: exactly the totals one agent seeing all
//! their traffic would have written.
//!
//! This module also holds the arithmetic every summary is made with — the
//! addition of [`Counts`], of [`Latencies`], of [`Location`]s and of whole
//! [`EndpointSummary`]s, the bounds, and the [`regression`] rule — so that
//! [`Results`](super::Results) (recording, folding, snapshotting) and
//! [`merge`] cannot disagree.
//!
//! # Rules
//!
//! - Summaries merge only when their [`Rules`] are equal ([`MergeError::Rules`]
//!   names the first field that differs).
//! - Counts, latencies, `other_locations` and each location's `raw`, `noise`
//!   and `reported` add up.
//! - "First" means lowest id (ids increase in the order requests were seen):
//!   a location keeps the [`MAX_EXAMPLE_IDS`] lowest ids and the example
//!   values of the lowest one; an endpoint keeps the [`MAX_EXAMPLES`]
//!   examples of lowest id. This makes merging order-independent.
//! - More than `max_endpoints` endpoints (besides [`OTHER`]): those with the
//!   fewest `seen` (ties: the greater name) are folded into [`OTHER`].
//! - More than `max_locations` locations in an endpoint: those with the
//!   fewest `reported` (then `raw`, then the greater name) are dropped and
//!   their `reported` added to `other_locations`.
//! - Sources are concatenated; totals and regressions are recomputed.
//!
//! Counts and latencies merge exactly. Locations and examples do too as long
//! as no bound was reached: past `max_endpoints` or `max_locations`, which
//! names are kept apart depends on what each agent saw first, so the merged
//! `other` and `other_locations` may differ from one agent's (their sums do
//! not).

use std::{
    cmp::Ordering,
    collections::{BTreeMap, btree_map::Entry},
    path::PathBuf,
};

use super::{
    Counts, EndpointSummary, Example, FORMAT, Latencies, Latency, Location, OTHER, Regression,
    RegressionRule, Rules, Source, Summary, VERSION,
};

/// Examples an endpoint keeps at most.
pub const MAX_EXAMPLES: usize = 3;
/// Example ids a location keeps at most.
pub const MAX_EXAMPLE_IDS: usize = 3;

/// Why summaries cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(
        "{path} was grouped by other rules than {first}: {what}; merge only summaries of runs with the same --endpoint patterns and bounds"
    )]
    Rules {
        path: PathBuf,
        first: PathBuf,
        what: String,
    },
    #[error("no summary to merge")]
    Empty,
}

/// Merges `summaries` (each with the path it was read from, for errors).
pub fn merge(summaries: Vec<(PathBuf, Summary)>) -> Result<Summary, MergeError> {
    let mut iter = summaries.into_iter();
    let (first_path, first) = iter.next().ok_or(MergeError::Empty)?;
    let rules = first.rules;
    let mut sources = first.sources;
    let mut endpoints = BTreeMap::new();
    add_endpoints(&mut endpoints, first.endpoints, rules.max_locations);
    for (path, s) in iter {
        if let Some(what) = rules_difference(&rules, &s.rules) {
            return Err(MergeError::Rules {
                path,
                first: first_path,
                what,
            });
        }
        sources.extend(s.sources);
        add_endpoints(&mut endpoints, s.endpoints, rules.max_locations);
    }
    Ok(summary(rules, sources, endpoints))
}

/// The summary of `endpoints` ([`finish`]ed) seen by `sources` under
/// `rules`.
pub(crate) fn summary(
    rules: Rules,
    sources: Vec<Source>,
    endpoints: BTreeMap<String, EndpointSummary>,
) -> Summary {
    let (endpoints, totals) = finish(endpoints, &rules);
    Summary {
        format: FORMAT.to_owned(),
        version: VERSION,
        rules,
        sources,
        totals,
        endpoints,
    }
}

fn add_endpoints(
    into: &mut BTreeMap<String, EndpointSummary>,
    from: Vec<EndpointSummary>,
    max_locations: usize,
) {
    for e in from {
        match into.entry(e.endpoint.clone()) {
            Entry::Vacant(v) => {
                let mut e = e;
                e.bound_locations(max_locations);
                v.insert(e);
            }
            Entry::Occupied(mut o) => o.get_mut().absorb(e, max_locations),
        }
    }
}

/// The first field in which `b` differs from `a`, said for people.
pub fn rules_difference(a: &Rules, b: &Rules) -> Option<String> {
    let differ = |name: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        Some(format!("{name} is {b:?} there but {a:?} here"))
    };
    if a.endpoint_patterns != b.endpoint_patterns {
        return differ(
            "endpoint_patterns",
            &a.endpoint_patterns,
            &b.endpoint_patterns,
        );
    }
    if a.max_endpoints != b.max_endpoints {
        return differ("max_endpoints", &a.max_endpoints, &b.max_endpoints);
    }
    if a.learn_after != b.learn_after {
        return differ("learn_after", &a.learn_after, &b.learn_after);
    }
    if a.max_locations != b.max_locations {
        return differ("max_locations", &a.max_locations, &b.max_locations);
    }
    let (ra, rb) = (&a.regression, &b.regression);
    if ra.ratio != rb.ratio {
        return differ("regression.ratio", &ra.ratio, &rb.ratio);
    }
    if ra.min_delta_ms != rb.min_delta_ms {
        return differ(
            "regression.min_delta_ms",
            &ra.min_delta_ms,
            &rb.min_delta_ms,
        );
    }
    if ra.min_samples != rb.min_samples {
        return differ("regression.min_samples", &ra.min_samples, &rb.min_samples);
    }
    None
}

impl Counts {
    /// Adds `other`'s counts (saturating: a sum past `u64::MAX` stays there).
    pub fn add(&mut self, other: &Counts) {
        let Counts {
            seen,
            compared,
            matched,
            mismatched,
            noise,
            skipped,
            lost,
            replay_errors,
            skipped_by,
            lost_by,
        } = other;
        for (into, from) in [
            (&mut self.seen, seen),
            (&mut self.compared, compared),
            (&mut self.matched, matched),
            (&mut self.mismatched, mismatched),
            (&mut self.noise, noise),
            (&mut self.skipped, skipped),
            (&mut self.lost, lost),
            (&mut self.replay_errors, replay_errors),
        ] {
            *into = into.saturating_add(*from);
        }
        for (into, from) in [
            (&mut self.skipped_by, skipped_by),
            (&mut self.lost_by, lost_by),
        ] {
            for (k, v) in from {
                let n = into.entry(k.clone()).or_default();
                *n = n.saturating_add(*v);
            }
        }
    }
}

impl Latencies {
    /// Adds `other`'s values to each histogram.
    pub fn add(&mut self, other: &Latencies) {
        self.old.add(&other.old);
        self.new.add(&other.new);
        self.secondary.add(&other.secondary);
    }
}

/// Whether `latency` shows a regression by `rule` (see [`RegressionRule`]):
/// p50 is tried first, then p99; new is compared with the secondary, both
/// needing `min_samples` values.
pub fn regression(rule: &RegressionRule, latency: &Latencies) -> Option<Regression> {
    let (new, secondary) = (&latency.new, &latency.secondary);
    if new.count() < rule.min_samples.max(1) || secondary.count() < rule.min_samples.max(1) {
        return None;
    }
    [("p50", 0.5), ("p99", 0.99)]
        .into_iter()
        .find_map(|(name, q)| {
            let n = new.quantile_ms(q)?;
            let s = secondary.quantile_ms(q)?;
            (n > s * rule.ratio && n - s >= rule.min_delta_ms).then(|| Regression {
                quantile: name.to_owned(),
                new_ms: n,
                secondary_ms: s,
                // Recorded values are ≥ 1 µs, so `s` > 0; guarded anyway so
                // that the ratio stays finite (JSON has no infinity).
                ratio: n / s.max(0.001),
            })
        })
}

/// The order locations are kept and shown in: `reported`, then `raw`,
/// descending, then by name.
pub(crate) fn location_order(a: &Location, b: &Location) -> Ordering {
    b.reported
        .cmp(&a.reported)
        .then(b.raw.cmp(&a.raw))
        .then_with(|| a.location.cmp(&b.location))
}

/// Puts `id` among the (sorted, at most `max`) lowest `ids`; whether it was
/// kept.
pub(crate) fn keep_lowest(ids: &mut Vec<u64>, id: u64, max: usize) -> bool {
    match ids.binary_search(&id) {
        Ok(_) => false,
        Err(at) if at < max => {
            ids.insert(at, id);
            ids.truncate(max);
            true
        }
        Err(_) => false,
    }
}

impl Location {
    /// A location no request has differed at yet.
    pub(crate) fn empty(location: String) -> Self {
        Location {
            location,
            raw: 0,
            noise: 0,
            reported: 0,
            example_ids: Vec::new(),
            example_old: serde_json::Value::Null,
            example_new: serde_json::Value::Null,
        }
    }

    /// Adds `other` (the same location): counts add, the lowest ids and the
    /// values of the lowest one are kept.
    pub(crate) fn add(&mut self, other: Location) {
        self.raw = self.raw.saturating_add(other.raw);
        self.noise = self.noise.saturating_add(other.noise);
        self.reported = self.reported.saturating_add(other.reported);
        let take_values = match (self.example_ids.first(), other.example_ids.first()) {
            (None, Some(_)) => true,
            (Some(mine), Some(theirs)) => theirs < mine,
            (_, None) => false,
        };
        if take_values {
            self.example_old = other.example_old;
            self.example_new = other.example_new;
        }
        for id in other.example_ids {
            keep_lowest(&mut self.example_ids, id, MAX_EXAMPLE_IDS);
        }
    }
}

impl EndpointSummary {
    /// An endpoint with nothing recorded.
    pub(crate) fn empty(endpoint: &str) -> Self {
        EndpointSummary {
            endpoint: endpoint.to_owned(),
            counts: Counts::default(),
            differences: Vec::new(),
            other_locations: 0,
            latency: Latencies {
                old: Latency::new(),
                new: Latency::new(),
                secondary: Latency::new(),
            },
            regression: None,
            examples: Vec::new(),
        }
    }

    /// Adds `other`'s results (see the [module docs](self)); the name stays
    /// this one's, and `regression` is left to [`finish`].
    pub(crate) fn absorb(&mut self, other: EndpointSummary, max_locations: usize) {
        self.counts.add(&other.counts);
        self.latency.add(&other.latency);
        self.other_locations = self.other_locations.saturating_add(other.other_locations);
        for loc in other.differences {
            match self
                .differences
                .iter_mut()
                .find(|l| l.location == loc.location)
            {
                Some(mine) => mine.add(loc),
                None => self.differences.push(loc),
            }
        }
        self.bound_locations(max_locations);
        for ex in other.examples {
            self.keep_example(ex);
        }
        self.regression = None;
    }

    /// Keeps `ex` among the [`MAX_EXAMPLES`] of lowest id.
    pub(crate) fn keep_example(&mut self, ex: Example) {
        if self.examples.iter().any(|e| e.id == ex.id) {
            return;
        }
        let at = self.examples.partition_point(|e| e.id < ex.id);
        if at < MAX_EXAMPLES {
            self.examples.insert(at, ex);
            self.examples.truncate(MAX_EXAMPLES);
        }
    }

    /// Whether an example of id `id` would be kept.
    pub(crate) fn wants_example(&self, id: u64) -> bool {
        self.examples.len() < MAX_EXAMPLES || self.examples.iter().any(|e| e.id > id)
    }

    /// At most `max` locations: the rest's `reported` go to
    /// `other_locations`.
    pub(crate) fn bound_locations(&mut self, max: usize) {
        if self.differences.len() > max {
            self.differences.sort_by(location_order);
            for dropped in self.differences.drain(max..) {
                self.other_locations = self.other_locations.saturating_add(dropped.reported);
            }
        }
    }
}

/// The endpoints as a summary holds them — bounded by `rules`, sorted by
/// name, locations sorted, examples by id, regressions derived — and their
/// totals. Used by [`merge`] and by [`Results::snapshot`](super::Results).
pub(crate) fn finish(
    mut endpoints: BTreeMap<String, EndpointSummary>,
    rules: &Rules,
) -> (Vec<EndpointSummary>, Counts) {
    let named = endpoints.keys().filter(|k| *k != OTHER).count();
    if named > rules.max_endpoints {
        let mut by_seen: Vec<(u64, String)> = endpoints
            .iter()
            .filter(|(k, _)| *k != OTHER)
            .map(|(k, e)| (e.counts.seen, k.clone()))
            .collect();
        // Most seen first, ties by name: the tail is folded.
        by_seen.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, name) in by_seen.into_iter().skip(rules.max_endpoints) {
            if let Some(e) = endpoints.remove(&name) {
                endpoints
                    .entry(OTHER.to_owned())
                    .or_insert_with(|| EndpointSummary::empty(OTHER))
                    .absorb(e, rules.max_locations);
            }
        }
    }
    let mut totals = Counts::default();
    let endpoints = endpoints
        .into_values()
        .map(|mut e| {
            e.bound_locations(rules.max_locations);
            e.differences.sort_by(location_order);
            for l in &mut e.differences {
                l.example_ids.sort_unstable();
                l.example_ids.dedup();
                l.example_ids.truncate(MAX_EXAMPLE_IDS);
            }
            e.examples.sort_by_key(|x| x.id);
            e.examples.dedup_by_key(|x| x.id);
            e.examples.truncate(MAX_EXAMPLES);
            e.regression = regression(&rules.regression, &e.latency);
            totals.add(&e.counts);
            e
        })
        .collect();
    (endpoints, totals)
}

#[cfg(test)]
mod tests;
