//! The outcome counters of a run: every request seen ends in exactly one of
//! them ([`AccountingSnapshot::accounted`]).

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use serde::Serialize;

use crate::{metrics::SkipReason, model::LossCause};

/// Outcome counters of one run. Requests seen = the sum of all of them.
#[derive(Debug, Default)]
pub struct Accounting {
    pub captured: AtomicU64,
    pub replayed: AtomicU64,
    pub matched: AtomicU64,
    pub mismatched: AtomicU64,
    pub noise: AtomicU64,
    pub skipped: [AtomicU64; SkipReason::ALL.len()],
    pub lost: [AtomicU64; LossCause::ALL.len()],
    pub replay_errors: AtomicU64,
    /// Differences suppressed as noise (several per request possible).
    pub noise_differences: AtomicU64,
    /// Replays to the secondary that failed (the request is still compared,
    /// without noise cancellation).
    pub secondary_errors: AtomicU64,
    /// Mismatched requests compared without noise cancellation because the
    /// secondary gave no response (part of `mismatched`, not an outcome of
    /// their own).
    pub noise_unchecked: AtomicU64,
    /// Events that could not be written to the mismatch log.
    pub log_errors: AtomicU64,
}

/// A point-in-time copy of [`Accounting`], for summaries and JSON.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct AccountingSnapshot {
    pub captured: u64,
    pub replayed: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub noise: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub lost: BTreeMap<&'static str, u64>,
    pub replay_errors: u64,
    pub noise_differences: u64,
    pub secondary_errors: u64,
    pub noise_unchecked: u64,
    pub log_errors: u64,
}

impl AccountingSnapshot {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// Requests with an outcome.
    pub fn accounted(&self) -> u64 {
        self.matched
            + self.mismatched
            + self.noise
            + self.skipped_total()
            + self.lost_total()
            + self.replay_errors
    }
}

impl Accounting {
    pub fn snapshot(&self) -> AccountingSnapshot {
        AccountingSnapshot {
            captured: self.captured.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            matched: self.matched.load(Relaxed),
            mismatched: self.mismatched.load(Relaxed),
            noise: self.noise.load(Relaxed),
            skipped: SkipReason::ALL
                .iter()
                .map(|r| (r.name(), self.skipped[*r as usize].load(Relaxed)))
                .collect(),
            lost: LossCause::ALL
                .iter()
                .map(|c| (c.name(), self.lost[*c as usize].load(Relaxed)))
                .collect(),
            replay_errors: self.replay_errors.load(Relaxed),
            noise_differences: self.noise_differences.load(Relaxed),
            secondary_errors: self.secondary_errors.load(Relaxed),
            noise_unchecked: self.noise_unchecked.load(Relaxed),
            log_errors: self.log_errors.load(Relaxed),
        }
    }
}
