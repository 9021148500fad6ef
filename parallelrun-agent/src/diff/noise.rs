//! Noise cancellation: telling differences that a new version introduced
//! from differences that any two responses would have (timestamps, random
//! ids, ordering of unordered data).
//!
//! Both approaches need a *secondary*: a second instance of the old version
//! that gets the same request. Differences old ↔ secondary are noise, since
//! the code is the same.
//!
//! - [`cancel`], per request, as Diferencia does it: a difference old ↔ new
//!   that also shows old ↔ secondary is noise.
//! - [`EndpointNoise`], per endpoint over time, as Twitter's Diffy does it:
//!   it counts how often each field differs old ↔ new (*raw*) and old ↔
//!   secondary (*noise*) and reports a field only when raw differences are
//!   clearly more frequent than noise. This also catches fields that happen
//!   to agree between old and secondary on one request but are random.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::{endpoint::generalise_location, model::Difference};

/// Splits `raw` (old ↔ new differences of one request) into those to report
/// and those that are noise, given `noise` (old ↔ secondary differences of
/// the same request). A raw difference is noise when a noise difference has
/// the same location, is at a JSON prefix of it (`body:/items` covers
/// `body:/items/3/id`), or is at `body` (covering every body difference);
/// gRPC message locations alike (`grpc[1]:/2` covers `grpc[1]:/2/3`).
/// Both outputs keep `raw`'s order.
///
/// Linear in the number of differences (times the JSON depth): a response
/// with thousands of differences on both sides (a long array whose every
/// element carries a timestamp) is decided as fast as a small one.
pub fn cancel(raw: Vec<Difference>, noise: &[Difference]) -> (Vec<Difference>, Vec<Difference>) {
    if noise.is_empty() {
        return (raw, Vec::new());
    }
    let noise: HashSet<&str> = noise.iter().map(|n| n.location.as_str()).collect();
    raw.into_iter().partition(|d| !covered(&noise, &d.location))
}

/// Whether a noise difference at one of `noise` makes one at `raw` noise:
/// the same location, `body` for any body location, or a JSON pointer
/// prefix (ending where one of `raw`'s segments ends). gRPC message
/// locations alike: `grpc[1]` covers `grpc[1]:/2/3`, as do `grpc[1]:/2` and
/// (a repeated field's occurrences) `grpc[1]:/2/3[0]` by `grpc[1]:/2/3`.
fn covered(noise: &HashSet<&str>, raw: &str) -> bool {
    if noise.contains(raw) {
        return true;
    }
    let Some((root, _)) = raw.split_once(':') else {
        return false;
    };
    let grpc = root == "grpc" || root.starts_with("grpc[");
    if root != "body" && !grpc {
        return false;
    }
    if noise.contains(root) {
        return true;
    }
    // `body:/a/b/c` is covered by `body:`, `body:/a` and `body:/a/b`.
    let path_start = root.len() + 1;
    raw.match_indices(|c| c == '/' || (grpc && c == '['))
        .filter(|(i, _)| *i >= path_start)
        .any(|(i, _)| raw.get(..i).is_some_and(|prefix| noise.contains(prefix)))
}

/// The thresholds and memory bounds of [`EndpointNoise`].
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseThresholds {
    /// A field is reported only if `|raw − noise| / (raw + noise)` exceeds
    /// this (Diffy's relative threshold, 20% by default).
    pub relative: f64,
    /// A field is reported only if `|raw − noise| / requests` exceeds this
    /// (Diffy's absolute threshold, 0.03% by default).
    pub absolute: f64,
    /// Until an endpoint has seen this many requests nothing is noise on it
    /// (20 by default).
    pub min_requests: u64,
    /// Endpoints tracked at most; requests to further ones are counted only
    /// (1024 by default).
    pub max_endpoints: usize,
    /// Fields tracked at most per endpoint; further ones are counted only
    /// (256 by default).
    pub max_fields: usize,
}

impl Default for NoiseThresholds {
    fn default() -> Self {
        Self {
            relative: 0.20,
            absolute: 0.0003,
            min_requests: 20,
            max_endpoints: 1024,
            max_fields: 256,
        }
    }
}

/// How often one field differed on one endpoint.
#[derive(Clone, Copy, Debug, Default)]
struct FieldCounts {
    raw: u64,
    noise: u64,
}

#[derive(Debug, Default)]
struct Endpoint {
    requests: u64,
    fields: HashMap<String, FieldCounts>,
}

/// Per-endpoint difference statistics deciding which fields are noise
/// (Diffy's rule, see [`is_noise`](Self::is_noise)). Fields are locations
/// with JSON array indices replaced by `*` (`body:/items/*/id`), so each
/// array's elements share statistics.
#[derive(Debug)]
pub struct EndpointNoise {
    thresholds: NoiseThresholds,
    endpoints: HashMap<String, Endpoint>,
    untracked_requests: u64,
    untracked_fields: u64,
}

impl EndpointNoise {
    /// No statistics yet.
    pub fn new(thresholds: NoiseThresholds) -> Self {
        Self {
            thresholds,
            endpoints: HashMap::new(),
            untracked_requests: 0,
            untracked_fields: 0,
        }
    }

    /// The thresholds in use.
    pub fn thresholds(&self) -> &NoiseThresholds {
        &self.thresholds
    }

    /// Counts one request to `endpoint` (see [`crate::endpoint`]): its old ↔
    /// new differences `raw` and old ↔ secondary differences `noise`. Each
    /// field counts once per request however many array elements differ.
    pub fn observe(&mut self, endpoint: &str, raw: &[Difference], noise: &[Difference]) {
        let max_fields = self.thresholds.max_fields;
        if !self.endpoints.contains_key(endpoint) {
            if self.endpoints.len() >= self.thresholds.max_endpoints {
                self.untracked_requests += 1;
                return;
            }
            self.endpoints
                .insert(endpoint.to_owned(), Endpoint::default());
        }
        let Some(stats) = self.endpoints.get_mut(endpoint) else {
            return;
        };
        stats.requests += 1;
        for (diffs, is_raw) in [(raw, true), (noise, false)] {
            let fields: BTreeSet<String> = diffs
                .iter()
                .map(|d| generalise_location(&d.location))
                .collect();
            for f in fields {
                if !stats.fields.contains_key(&f) && stats.fields.len() >= max_fields {
                    self.untracked_fields += 1;
                    continue;
                }
                let counts = stats.fields.entry(f).or_default();
                if is_raw {
                    counts.raw += 1;
                } else {
                    counts.noise += 1;
                }
            }
        }
    }

    /// Whether `d` (an old ↔ new difference on `endpoint`) is noise.
    ///
    /// Diffy's rule: a field is reported only if `raw > noise`, and
    /// `|raw − noise| / (raw + noise) >` [`relative`](NoiseThresholds::relative),
    /// and `|raw − noise| / requests >` [`absolute`](NoiseThresholds::absolute).
    /// A field never seen as noise, on an endpoint with fewer than
    /// [`min_requests`](NoiseThresholds::min_requests) requests, or not
    /// tracked, is always reported.
    pub fn is_noise(&self, endpoint: &str, d: &Difference) -> bool {
        let Some(stats) = self.endpoints.get(endpoint) else {
            return false;
        };
        if stats.requests < self.thresholds.min_requests {
            return false;
        }
        let Some(c) = stats.fields.get(&generalise_location(&d.location)) else {
            return false;
        };
        if c.noise == 0 {
            return false;
        }
        // Counts stay far below 2^53, so f64 is exact.
        let (raw, noise, total) = (c.raw as f64, c.noise as f64, stats.requests as f64);
        let delta = (raw - noise).abs();
        let reported = c.raw > c.noise
            && delta / (raw + noise) > self.thresholds.relative
            && delta / total > self.thresholds.absolute;
        !reported
    }

    /// Splits `diffs` (old ↔ new differences on `endpoint`) into those to
    /// report and the noise, by [`is_noise`](Self::is_noise), keeping order.
    pub fn split(
        &self,
        endpoint: &str,
        diffs: Vec<Difference>,
    ) -> (Vec<Difference>, Vec<Difference>) {
        diffs.into_iter().partition(|d| !self.is_noise(endpoint, d))
    }

    /// Requests counted on `endpoint` (0 if not tracked).
    pub fn requests(&self, endpoint: &str) -> u64 {
        self.endpoints.get(endpoint).map_or(0, |e| e.requests)
    }

    /// Endpoints tracked.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Requests not counted because [`max_endpoints`](NoiseThresholds::max_endpoints)
    /// was reached before their endpoint was seen.
    pub fn untracked_requests(&self) -> u64 {
        self.untracked_requests
    }

    /// Field observations not counted because the endpoint had
    /// [`max_fields`](NoiseThresholds::max_fields) fields already.
    pub fn untracked_fields(&self) -> u64 {
        self.untracked_fields
    }
}

#[cfg(test)]
mod tests;
