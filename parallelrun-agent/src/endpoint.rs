//! Endpoints: request targets grouped into templates, so that results are
//! counted per endpoint (`GET /users/{id}`) and not per URL.
//!
//! TODO(helper): rules, inference, learning, bounds.

use thiserror::Error;

/// A `--endpoint` pattern that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad --endpoint pattern {pattern:?}: {why}")]
pub struct PatternError {
    pub pattern: String,
    pub why: String,
}

/// A `--endpoint 'GET /users/{id}'` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    // TODO(helper)
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let _ = s;
        todo!()
    }

    /// Whether `method` and `target` fall under it.
    pub fn matches(&self, method: &str, target: &str) -> bool {
        let _ = (method, target);
        todo!()
    }

    /// Whether an endpoint name (a template such as `GET /users/{id}`, or a
    /// concrete one) falls under it.
    pub fn matches_endpoint(&self, endpoint: &str) -> bool {
        let _ = endpoint;
        todo!()
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}

/// What [`Endpoints::classify`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Classified<'a> {
    /// The endpoint's name.
    pub endpoint: &'a str,
    /// Endpoints that this request's learning made part of `endpoint`:
    /// their results move there ([`crate::summary::Results::fold`]).
    pub folded: Vec<String>,
}

/// The endpoint classifier of one run: patterns first, then inference, with
/// at most `max_endpoints` names (then [`crate::summary::OTHER`]).
#[derive(Debug)]
pub struct Endpoints {
    // TODO(helper)
}

impl Endpoints {
    /// `learn_after`: distinct values a path position takes (under the same
    /// prefix) before it becomes a parameter.
    pub fn new(patterns: Vec<Pattern>, max_endpoints: usize, learn_after: usize) -> Self {
        let _ = (patterns, max_endpoints, learn_after);
        todo!()
    }

    /// The endpoint of one request.
    pub fn classify(&mut self, method: &str, target: &str) -> Classified<'_> {
        let _ = (method, target);
        todo!()
    }
}

/// A difference location with array indices generalised:
/// `body:/items/3/price` → `body:/items/*/price`.
pub fn generalise_location(location: &str) -> String {
    let _ = location;
    todo!()
}
