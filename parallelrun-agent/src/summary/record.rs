//! [`Results`]: the per-endpoint state a running agent keeps, bounded, and
//! snapshotted into a [`Summary`].

use crate::model::{Difference, Request};

use super::{Rules, Source, Summary};

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
    /// Every old ↔ new difference found (before noise cancellation).
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
    // TODO(helper)
}

impl Results {
    /// `redact_headers`: header names whose values examples redact (the
    /// mismatch log's list).
    pub fn new(rules: Rules, source: Source, redact_headers: Vec<String>) -> Self {
        let _ = (rules, source, redact_headers);
        todo!()
    }

    pub fn rules(&self) -> &Rules {
        todo!()
    }

    /// A request seen that could not be paired; `cause` is a
    /// [`crate::model::LossCause::name`].
    pub fn lost(&mut self, endpoint: &str, cause: &str) {
        let _ = (endpoint, cause);
        todo!()
    }

    /// A paired request not replayed; `reason` is a
    /// [`crate::metrics::SkipReason::name`].
    pub fn skipped(&mut self, endpoint: &str, reason: &str) {
        let _ = (endpoint, reason);
        todo!()
    }

    /// A replay that got no response from the new service.
    pub fn replay_error(&mut self, endpoint: &str) {
        let _ = endpoint;
        todo!()
    }

    /// A compared request.
    pub fn compared(&mut self, endpoint: &str, c: Compared<'_>) {
        let _ = (endpoint, c);
        todo!()
    }

    /// Endpoint learning made `from` part of `into`: `from`'s results move
    /// there.
    pub fn fold(&mut self, from: &str, into: &str) {
        let _ = (from, into);
        todo!()
    }

    /// The summary as of now; `finished` marks the one written at the end.
    pub fn snapshot(&self, finished: bool) -> Summary {
        let _ = finished;
        todo!()
    }
}
