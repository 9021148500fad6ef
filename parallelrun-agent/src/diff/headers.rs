//! Header comparison (see the [module docs](super#headers)).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{DiffConfig, Sink};
use crate::model::{Difference, Header};

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

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters; ASCII case-insensitive.
pub(super) fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests;
