//! Header comparison (see the [module docs](super#headers)).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{DiffConfig, Sink};
use crate::{
    glob::{glob_ignore_ascii_case, is_pattern},
    model::{Difference, Header},
};

/// Reports each header name whose joined values differ; names in `skip`
/// (lowercase) are not compared either.
pub(super) fn compare(
    cfg: &DiffConfig,
    skip: &[&str],
    old: &[Header],
    new: &[Header],
    sink: &mut Sink,
) {
    if same_in_order(cfg, skip, old, new) {
        return;
    }
    let (old, new) = (by_name(cfg, skip, old), by_name(cfg, skip, new));
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let (a, b) = (old.get(name), new.get(name));
        if a != b {
            sink.report(|| Difference {
                location: format!("header:{name}"),
                old: value(cfg, a),
                new: value(cfg, b),
            });
        }
    }
}

/// Whether the compared headers of both sides are the same fields in the
/// same order (names ASCII case-insensitively, values byte for byte). Then
/// every name's joined values are equal too and there is nothing to
/// report: the common case (most replays match) is decided without
/// building [`by_name`]'s maps.
fn same_in_order(cfg: &DiffConfig, skip: &[&str], old: &[Header], new: &[Header]) -> bool {
    let compared = |h: &&Header| {
        !cfg.ignores_header(&h.name) && !skip.iter().any(|s| s.eq_ignore_ascii_case(&h.name))
    };
    let mut new = new.iter().filter(compared);
    for a in old.iter().filter(compared) {
        match new.next() {
            Some(b) if a.name.eq_ignore_ascii_case(&b.name) && a.value == b.value => {}
            _ => return false,
        }
    }
    new.next().is_none()
}

/// The compared headers by lowercase name, each name's values as compared
/// ([`joined`]).
fn by_name(cfg: &DiffConfig, skip: &[&str], headers: &[Header]) -> BTreeMap<String, Vec<u8>> {
    let mut map: BTreeMap<String, Vec<&[u8]>> = BTreeMap::new();
    for h in headers {
        let name = h.name.to_ascii_lowercase();
        if !cfg.ignores_header(&name) && !skip.contains(&name.as_str()) {
            map.entry(name).or_default().push(&h.value);
        }
    }
    map.into_iter()
        .map(|(name, values)| {
            let v = joined(&name, &values);
            (name, v)
        })
        .collect()
}

/// All values of header `name` as compared: joined with `", "`; for
/// `set-cookie` the sorted cookie names instead.
fn joined(name: &str, values: &[&[u8]]) -> Vec<u8> {
    if name == "set-cookie" {
        let mut names: Vec<&[u8]> = values.iter().map(|v| cookie_name(v)).collect();
        names.sort_unstable();
        names.join(&b", "[..])
    } else {
        values.join(&b", "[..])
    }
}

/// The name a `Set-Cookie` value sets: the text before `=` (or `;`),
/// trimmed.
fn cookie_name(value: &[u8]) -> &[u8] {
    let end = value
        .iter()
        .position(|&b| b == b'=' || b == b';')
        .unwrap_or(value.len());
    value[..end].trim_ascii()
}

fn value(cfg: &DiffConfig, v: Option<&Vec<u8>>) -> Value {
    match v {
        Some(bytes) => cfg.bounded_str(&String::from_utf8_lossy(bytes)),
        None => Value::Null,
    }
}

/// Header names not compared ([`DiffConfig::ignore_headers`]): patterns
/// with `*` and `?` wildcards ([`crate::glob`]), matched ASCII
/// case-insensitively.
///
/// Every header of every compared response is looked up here, on both
/// sides, against some forty patterns by default. So names without a
/// wildcard are kept sorted by length and a name is compared only with
/// the few of its own length; only the patterns with a wildcard (one by
/// default, `x-b3-*`) are globbed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderPatterns {
    /// Lowercase names without a wildcard, sorted by length.
    exact: Vec<Box<str>>,
    /// Lowercase patterns with a wildcard.
    globs: Vec<Box<str>>,
}

impl HeaderPatterns {
    /// Adds `pattern` (lowercased).
    pub fn push(&mut self, pattern: &str) {
        let pattern = pattern.to_ascii_lowercase().into_boxed_str();
        if is_pattern(&pattern) {
            self.globs.push(pattern);
        } else {
            let at = self.exact.partition_point(|e| e.len() <= pattern.len());
            self.exact.insert(at, pattern);
        }
    }

    /// Whether header `name` matches one of the patterns.
    pub fn matches(&self, name: &str) -> bool {
        let from = self.exact.partition_point(|e| e.len() < name.len());
        self.exact[from..]
            .iter()
            .take_while(|e| e.len() == name.len())
            .any(|e| e.eq_ignore_ascii_case(name))
            || self.globs.iter().any(|g| glob_ignore_ascii_case(g, name))
    }
}

impl<S: AsRef<str>> Extend<S> for HeaderPatterns {
    fn extend<I: IntoIterator<Item = S>>(&mut self, patterns: I) {
        for p in patterns {
            self.push(p.as_ref());
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for HeaderPatterns {
    fn from_iter<I: IntoIterator<Item = S>>(patterns: I) -> Self {
        let mut set = Self::default();
        set.extend(patterns);
        set
    }
}

#[cfg(test)]
mod tests;
