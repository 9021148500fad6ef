//! Which captured requests are replayed: the [`Policy`] (methods, gRPC
//! methods, paths, sampling, rate) and the [`Breaker`] that pauses replays
//! while the new service refuses connections.

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use rand::{Rng as _, SeedableRng as _, rngs::SmallRng};
use tracing::warn;

use crate::{glob::glob, grpc, metrics::SkipReason, model::Request};

/// Which captured requests are replayed.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Methods replayed (uppercase). Default GET, HEAD, OPTIONS: methods
    /// without side effects. Anything else must be asked for.
    pub methods: Vec<String>,
    /// gRPC calls (requests with a `content-type` of `application/grpc`,
    /// all POST) are replayed only when their path, `/package.Service/Method`,
    /// matches one of these globs ([`crate::glob`]: `*` matches any run of
    /// characters, `/` included, `?` one character). None by default: like POST, a call may have effects
    /// the new service must not repeat. [`Policy::methods`] does not apply
    /// to them.
    pub grpc_methods: Vec<String>,
    /// When non-empty, only targets whose path starts with one of these.
    pub path_prefixes: Vec<String>,
    /// Targets whose path starts with one of these are never replayed.
    pub exclude_prefixes: Vec<String>,
    /// Fraction of requests replayed, in (0, 1].
    pub sample: f64,
    /// Seed of the sampling: `None` (the default) seeds it from the OS, so
    /// each run samples other requests; a fixed seed samples the same ones
    /// from the same input (tests).
    pub sample_seed: Option<u64>,
    /// At most this many replays per second.
    pub rate: Option<NonZeroU32>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            methods: DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect(),
            grpc_methods: Vec::new(),
            path_prefixes: Vec::new(),
            exclude_prefixes: Vec::new(),
            sample: 1.0,
            sample_seed: None,
            rate: None,
        }
    }
}

/// Methods replayed unless told otherwise.
pub const DEFAULT_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

impl Policy {
    /// Why `ex` is not replayed, if it is not. Sampling and rate limiting
    /// are the pipeline's (they have state).
    pub(super) fn filter(&self, req: &Request) -> Option<SkipReason> {
        let target = req.target.as_str();
        let path = target.split(['?', '#']).next().unwrap_or(target);
        let allowed = if grpc::is_grpc(&req.headers) {
            self.grpc_methods.iter().any(|g| glob(g, path))
        } else {
            self.methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&req.method))
        };
        if !allowed {
            return Some(SkipReason::Method);
        }
        if self
            .exclude_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
            || (!self.path_prefixes.is_empty()
                && !self
                    .path_prefixes
                    .iter()
                    .any(|p| path.starts_with(p.as_str())))
        {
            return Some(SkipReason::Filter);
        }
        None
    }
}

/// Chooses the requests [`Policy::sample`] replays: each independently,
/// with that probability.
#[derive(Debug)]
pub(super) struct Sampler {
    fraction: f64,
    rng: SmallRng,
}

impl Sampler {
    pub(super) fn new(policy: &Policy) -> Self {
        Self {
            fraction: policy.sample,
            rng: match policy.sample_seed {
                Some(seed) => SmallRng::seed_from_u64(seed),
                None => SmallRng::from_os_rng(),
            },
        }
    }

    /// Whether the next request is sampled.
    pub(super) fn sampled(&mut self) -> bool {
        self.fraction >= 1.0 || self.rng.random::<f64>() < self.fraction
    }
}

/// Stops replaying to a new service that refuses connections, so that a
/// service that is down is not hammered and requests are skipped (counted as
/// `new_down`) instead of piling up errors. After [`Breaker::TRIP_AFTER`]
/// connection failures in a row, replays pause; one probe request goes
/// through every [`Breaker::PROBE_EVERY`]; its success closes the breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    failures: AtomicU64,
    /// Wall-clock ns before which requests are skipped (0 = closed).
    open_until_ns: AtomicU64,
}

impl Breaker {
    pub const TRIP_AFTER: u64 = 5;
    pub const PROBE_EVERY: Duration = Duration::from_secs(1);

    /// Whether a request may be replayed now. While open, lets one probe
    /// through per [`Breaker::PROBE_EVERY`].
    pub fn allow(&self, now_ns: u64) -> bool {
        let until = self.open_until_ns.load(Relaxed);
        if until == 0 {
            return true;
        }
        if now_ns < until {
            return false;
        }
        // Time for a probe: only one caller wins the swap.
        let next = now_ns.saturating_add(Self::PROBE_EVERY.as_nanos() as u64);
        self.open_until_ns
            .compare_exchange(until, next, Relaxed, Relaxed)
            .is_ok()
    }

    /// Records a replay's result; `connect_failed` for refused or timed-out
    /// connections (the service is down, not merely wrong).
    pub fn record(&self, connect_failed: bool, now_ns: u64) {
        if !connect_failed {
            self.failures.store(0, Relaxed);
            self.open_until_ns.store(0, Relaxed);
            return;
        }
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n >= Self::TRIP_AFTER && self.open_until_ns.load(Relaxed) == 0 {
            let until = now_ns.saturating_add(Self::PROBE_EVERY.as_nanos() as u64);
            self.open_until_ns.store(until, Relaxed);
            warn!(
                failures = n,
                "the new service refuses connections: pausing replays (skipped requests are \
                 counted as new_down) and probing every second"
            );
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until_ns.load(Relaxed) != 0
    }
}

#[cfg(test)]
mod tests;
