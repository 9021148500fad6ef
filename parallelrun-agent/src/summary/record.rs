//! [`Results`]: the per-endpoint state a running agent keeps, bounded, and
//! snapshotted into a [`Summary`].
//!
//! # Invariants
//!
//! Each recorded request adds 1 to `seen` and to exactly one outcome
//! (`compared` also counting matched, mismatched and noise), so the
//! invariants of the [summary](super) hold at every snapshot. Per compared
//! request, each difference location (generalised by
//! [`crate::endpoint::generalise_location`], cut at [`MAX_LOCATION_LEN`]) is
//! counted once: in `raw` always, in `reported` when a reported difference
//! of a mismatched request is there, else in `noise` (noise and mismatched
//! requests).
//!
//! # Bounds
//!
//! - At most `rules.max_endpoints` names besides [`OTHER`]; a further name
//!   is recorded as [`OTHER`] (the classifier already keeps to that bound).
//! - At most `rules.max_locations` locations per endpoint: a request's
//!   reported difference at a further location is counted in
//!   `other_locations`; its raw and noise counts are not kept.
//! - A location keeps the [`MAX_EXAMPLE_IDS`]
//!   lowest ids and the old and new values of the lowest one, cut at
//!   [`MAX_VALUE`] bytes per string, and `[redacted]` for the headers in
//!   `redact_headers`.
//! - An endpoint keeps the [`MAX_EXAMPLES`](super::merge::MAX_EXAMPLES)
//!   mismatched requests of lowest id: secret query values, and the values
//!   of `redact_headers` and of [`ALWAYS_REDACTED`], redacted; header values
//!   cut at [`MAX_HEADER_VALUE`], the target at [`MAX_TARGET`], a UTF-8 body
//!   at [`MAX_BODY`] bytes (a non-UTF-8 body is not kept).
//!
//! "Lowest id" rather than "first recorded" because comparisons end out of
//! order; it is also what makes [`merge`](super::merge) order-independent.

use std::{collections::BTreeMap, time::SystemTime};

use serde_json::Value;

use crate::{
    endpoint::generalise_location,
    model::timestamp,
    model::{Difference, Request},
    redact::{REDACTED, cut_string, cut_value, redact_query},
};

use super::{
    EndpointSummary, Example, FORMAT, Location, OTHER, Rules, Source, Summary, VERSION,
    merge::{MAX_EXAMPLE_IDS, finish, keep_lowest},
};

/// Bytes kept of each string in a location's example values.
pub const MAX_VALUE: usize = 200;
/// Bytes kept of a location's name.
pub const MAX_LOCATION_LEN: usize = 200;
/// Bytes kept of an example's body.
pub const MAX_BODY: usize = 4096;
/// Bytes kept of an example's target.
pub const MAX_TARGET: usize = 4096;
/// Bytes kept of each of an example's header values.
pub const MAX_HEADER_VALUE: usize = 1024;
/// Headers whose values examples always redact, whatever `redact_headers`
/// says.
pub const ALWAYS_REDACTED: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// How one compared request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    Matched,
    Noise,
    Mismatched,
}

/// One compared request, as [`Results::compared`] records it.
#[derive(Clone, Copy, Debug)]
pub struct Compared<'a> {
    /// The exchange id (as in the mismatch log).
    pub id: u64,
    pub judged: Judged,
    /// Old ↔ new differences found (before noise cancellation); those in
    /// `reported` may be left out here: they count as raw all the same.
    pub raw: &'a [Difference],
    /// The ones reported (not noise); empty unless `Mismatched`.
    pub reported: &'a [Difference],
    /// The request, kept as an example when mismatched.
    pub request: &'a Request,
    pub old_ns: u64,
    pub new_ns: u64,
    /// The secondary's latency, when it answered.
    pub secondary_ns: Option<u64>,
}

/// Per-endpoint results of a running agent. Memory is bounded by
/// `rules.max_endpoints` (+ other) × `rules.max_locations` × a few examples.
#[derive(Debug)]
pub struct Results {
    rules: Rules,
    source: Source,
    redact_headers: Vec<String>,
    /// Locations unsorted, `regression` unset: [`finish`] does both.
    endpoints: BTreeMap<String, EndpointSummary>,
}

/// The endpoint `name` is recorded under: itself while there is room,
/// else [`OTHER`].
fn entry<'a>(
    endpoints: &'a mut BTreeMap<String, EndpointSummary>,
    max_endpoints: usize,
    name: &str,
) -> &'a mut EndpointSummary {
    let named = endpoints.len() - usize::from(endpoints.contains_key(OTHER));
    let name = if name == OTHER || named < max_endpoints || endpoints.contains_key(name) {
        name
    } else {
        OTHER
    };
    // Known endpoints (every request but an endpoint's first) allocate
    // nothing.
    if !endpoints.contains_key(name) {
        endpoints.insert(name.to_owned(), EndpointSummary::empty(name));
    }
    endpoints
        .get_mut(name)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

fn is_redacted(name: &str, redact_headers: &[String]) -> bool {
    ALWAYS_REDACTED.iter().any(|h| h.eq_ignore_ascii_case(name))
        || redact_headers.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A difference's location as counted.
fn location_name(location: &str) -> String {
    let mut name = generalise_location(location);
    cut_string(&mut name, MAX_LOCATION_LEN);
    name
}

/// A difference's value as kept for people: redacted when it is a secret
/// header's (a `null`, absent side stays `null`), cut.
fn example_value(location: &str, v: &Value, redact_headers: &[String]) -> Value {
    if let Some(name) = location.strip_prefix("header:")
        && !v.is_null()
        && redact_headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    {
        return Value::String(REDACTED.to_owned());
    }
    let mut v = v.clone();
    cut_value(&mut v, MAX_VALUE);
    v
}

fn example(id: u64, request: &Request, redact_headers: &[String]) -> Example {
    let mut method = request.method.clone();
    cut_string(&mut method, MAX_TARGET);
    let mut target = redact_query(&request.target).unwrap_or_else(|| request.target.clone());
    cut_string(&mut target, MAX_TARGET);
    let headers = request
        .headers
        .iter()
        .map(|h| {
            let mut value = if is_redacted(&h.name, redact_headers) {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(&h.value).into_owned()
            };
            cut_string(&mut value, MAX_HEADER_VALUE);
            let mut name = h.name.to_string();
            cut_string(&mut name, MAX_HEADER_VALUE);
            (name, value)
        })
        .collect();
    let (body, body_omitted) = match std::str::from_utf8(&request.body) {
        Ok(text) => {
            let mut end = text.len().min(MAX_BODY);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (text[..end].to_owned(), (text.len() - end) as u64)
        }
        Err(_) => (String::new(), request.body.len() as u64),
    };
    Example {
        id,
        method,
        target,
        headers,
        body,
        body_omitted,
    }
}

impl Results {
    /// `redact_headers`: header names whose values examples redact (the
    /// mismatch log's list).
    pub fn new(rules: Rules, source: Source, redact_headers: Vec<String>) -> Self {
        Self {
            rules,
            source,
            redact_headers,
            endpoints: BTreeMap::new(),
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    fn endpoint(&mut self, name: &str) -> &mut EndpointSummary {
        entry(&mut self.endpoints, self.rules.max_endpoints, name)
    }

    /// A request seen that could not be paired; `cause` is a
    /// [`crate::model::LossCause::name`].
    pub fn lost(&mut self, endpoint: &str, cause: &str) {
        let c = &mut self.endpoint(endpoint).counts;
        c.seen += 1;
        c.lost += 1;
        *c.lost_by.entry(cause.to_owned()).or_default() += 1;
    }

    /// A paired request not replayed; `reason` is a
    /// [`crate::metrics::SkipReason::name`].
    pub fn skipped(&mut self, endpoint: &str, reason: &str) {
        let c = &mut self.endpoint(endpoint).counts;
        c.seen += 1;
        c.skipped += 1;
        *c.skipped_by.entry(reason.to_owned()).or_default() += 1;
    }

    /// A replay that got no response from the new service.
    pub fn replay_error(&mut self, endpoint: &str) {
        let c = &mut self.endpoint(endpoint).counts;
        c.seen += 1;
        c.replay_errors += 1;
    }

    /// A compared request.
    pub fn compared(&mut self, endpoint: &str, c: Compared<'_>) {
        let max_locations = self.rules.max_locations;
        let redact_headers = &self.redact_headers;
        let e = entry(&mut self.endpoints, self.rules.max_endpoints, endpoint);
        e.counts.seen += 1;
        e.counts.compared += 1;
        match c.judged {
            Judged::Matched => e.counts.matched += 1,
            Judged::Noise => e.counts.noise += 1,
            Judged::Mismatched => e.counts.mismatched += 1,
        }
        e.latency.old.record_ns(c.old_ns);
        e.latency.new.record_ns(c.new_ns);
        if let Some(ns) = c.secondary_ns {
            e.latency.secondary.record_ns(ns);
        }

        // Only a mismatched request reports; its reported locations count
        // as raw too, so that `reported ≤ raw` whatever the caller passes.
        let reported_diffs: &[Difference] = if c.judged == Judged::Mismatched {
            c.reported
        } else {
            &[]
        };
        let mut reported: BTreeMap<String, &Difference> = BTreeMap::new();
        for d in reported_diffs {
            reported.entry(location_name(&d.location)).or_insert(d);
        }
        let mut raw: Vec<String> = c.raw.iter().map(|d| location_name(&d.location)).collect();
        raw.extend(reported.keys().cloned());
        raw.sort_unstable();
        raw.dedup();

        for name in raw {
            let rep = reported.get(&name).copied();
            let at = match e.differences.iter().position(|l| l.location == name) {
                Some(at) => at,
                None if e.differences.len() < max_locations => {
                    e.differences.push(Location::empty(name));
                    e.differences.len() - 1
                }
                None => {
                    if rep.is_some() {
                        e.other_locations += 1;
                    }
                    continue;
                }
            };
            let loc = &mut e.differences[at];
            loc.raw += 1;
            match rep {
                Some(d) => {
                    loc.reported += 1;
                    let lowest = loc.example_ids.first().is_none_or(|&first| c.id < first);
                    if keep_lowest(&mut loc.example_ids, c.id, MAX_EXAMPLE_IDS) && lowest {
                        loc.example_old = example_value(&d.location, &d.old, redact_headers);
                        loc.example_new = example_value(&d.location, &d.new, redact_headers);
                    }
                }
                None if c.judged != Judged::Matched => loc.noise += 1,
                None => {}
            }
        }

        if c.judged == Judged::Mismatched && e.wants_example(c.id) {
            e.keep_example(example(c.id, c.request, redact_headers));
        }
    }

    /// Endpoint learning made `from` part of `into`: `from`'s results move
    /// there.
    pub fn fold(&mut self, from: &str, into: &str) {
        if from == into {
            return;
        }
        let Some(moved) = self.endpoints.remove(from) else {
            return;
        };
        let max_locations = self.rules.max_locations;
        self.endpoint(into).absorb(moved, max_locations);
    }

    /// The summary as of now; `finished` marks the one written at the end.
    pub fn snapshot(&self, finished: bool) -> Summary {
        let (endpoints, totals) = finish(self.endpoints.clone(), &self.rules);
        Summary {
            format: FORMAT.to_owned(),
            version: VERSION,
            rules: self.rules.clone(),
            sources: vec![Source {
                updated: timestamp(SystemTime::now()),
                finished,
                ..self.source.clone()
            }],
            totals,
            endpoints,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
