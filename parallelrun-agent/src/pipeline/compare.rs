//! Deciding one replayed exchange: matched, noise or mismatched, from the
//! old response, the new one and, with a secondary, the secondary's.
//!
//! 1. The old ↔ new differences are found by [`diff::compare_with_target`]
//!    (the target names a gRPC method's message types), every one
//!    up to [`DiffConfig::max_differences`] (a memory bound, far above the
//!    [`MAX_LISTED`] an event lists). None: **matched**.
//! 2. With a secondary answer, the differences also found old ↔ secondary
//!    are noise ([`noise::cancel`]), and the per-endpoint statistics
//!    ([`EndpointNoise`]) learn from the request. They learn from no other
//!    request: one whose secondary failed says nothing about which fields
//!    old and secondary disagree on.
//! 3. With a secondary configured, the fields that the statistics found to
//!    be noise on the endpoint are noise too.
//! 4. **noise** when every difference was noise: every one found, so a
//!    comparison that reached the bound ([`Comparison::omitted`]) is never
//!    noise. Otherwise **mismatched**: the event lists the first
//!    [`MAX_LISTED`] differences that are not noise and counts the rest as
//!    omitted. When the secondary is configured but gave no response, the
//!    mismatch says so ([`Mismatch::noise_unchecked`]): its differences
//!    were not checked against a second instance of the old version.
//!
//! [`Comparison::omitted`]: crate::diff::Comparison::omitted

use std::sync::Mutex;

use crate::{
    diff::{
        self, DiffConfig,
        noise::{self, EndpointNoise},
    },
    model::{Difference, Exchange, Response},
    report::log::MAX_LISTED,
};

/// What the secondary contributed to one comparison.
#[derive(Clone, Copy, Debug)]
pub(super) enum Secondary<'a> {
    /// No secondary is configured.
    None,
    /// The secondary's response to the same request.
    Answered(&'a Response),
    /// The replay to the secondary failed; the [`ReplayError::kind`].
    ///
    /// [`ReplayError::kind`]: crate::replay::ReplayError::kind
    Failed(&'static str),
}

/// The outcome of one comparison.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Matched,
    /// Every difference was noise; `suppressed` of them.
    Noise {
        suppressed: usize,
    },
    Mismatched(Mismatch),
}

/// A mismatch as its event reports it.
#[derive(Debug, PartialEq)]
pub(super) struct Mismatch {
    /// The differences that are not noise, at most [`MAX_LISTED`].
    pub listed: Vec<Difference>,
    /// Differences not listed: beyond [`MAX_LISTED`], or beyond
    /// [`DiffConfig::max_differences`] (not checked for noise).
    pub omitted: usize,
    /// Differences found to be noise.
    pub suppressed: usize,
    /// The secondary is configured but gave no response (the
    /// [`ReplayError::kind`] of its failure): noise was not checked.
    ///
    /// [`ReplayError::kind`]: crate::replay::ReplayError::kind
    pub noise_unchecked: Option<&'static str>,
    /// The bodies were compared by digest
    /// ([`Comparison::body_by_digest`](crate::diff::Comparison::body_by_digest)).
    pub body_by_digest: bool,
}

/// Compares `new` (and the `secondary`'s answer) with `ex`'s old response,
/// `endpoint` being its [`crate::endpoint`] (see the [module docs](self) for
/// the rules). Also returns the old ↔ new differences found that the
/// verdict does not list (the noise, and those beyond [`MAX_LISTED`]): with
/// a mismatch's `listed` they are every difference found, which the
/// per-endpoint results count. They are moved out of the comparison, not
/// copied.
pub(super) fn judge(
    cfg: &DiffConfig,
    endpoints: &Mutex<EndpointNoise>,
    endpoint: &str,
    ex: &Exchange,
    new: &Response,
    secondary: Secondary<'_>,
) -> (Verdict, Vec<Difference>) {
    let target = &ex.request.target;
    let raw = diff::compare_with_target(cfg, target, &ex.response, new);
    if raw.is_match() {
        return (Verdict::Matched, Vec::new());
    }
    let (noise_diffs, noise_unchecked) = match secondary {
        Secondary::None => (Vec::new(), None),
        Secondary::Answered(s) => (
            diff::compare_with_target(cfg, target, &ex.response, s).differences,
            None,
        ),
        Secondary::Failed(kind) => (Vec::new(), Some(kind)),
    };
    // Without a secondary there are no statistics to learn or consult.
    let endpoint = match secondary {
        Secondary::None => None,
        Secondary::Answered(_) | Secondary::Failed(_) => Some(endpoint),
    };
    if let (Secondary::Answered(_), Some(endpoint)) = (secondary, endpoint)
        && let Ok(mut stats) = endpoints.lock()
    {
        stats.observe(endpoint, &raw.differences, &noise_diffs);
    }
    let (mut reported, mut unlisted) = noise::cancel(raw.differences, &noise_diffs);
    if let Some(endpoint) = endpoint
        && !reported.is_empty()
        && let Ok(stats) = endpoints.lock()
    {
        let (noisy, kept) = reported
            .into_iter()
            .partition(|d| stats.is_noise(endpoint, d));
        reported = kept;
        unlisted.extend::<Vec<Difference>>(noisy);
    }
    let suppressed = unlisted.len();
    if reported.is_empty() && raw.omitted == 0 {
        return (Verdict::Noise { suppressed }, unlisted);
    }
    let omitted = reported.len().saturating_sub(MAX_LISTED) + raw.omitted;
    unlisted.extend(reported.split_off(reported.len().min(MAX_LISTED)));
    let m = Mismatch {
        listed: reported,
        omitted,
        suppressed,
        noise_unchecked,
        body_by_digest: raw.body_by_digest,
    };
    (Verdict::Mismatched(m), unlisted)
}

#[cfg(test)]
mod tests;
