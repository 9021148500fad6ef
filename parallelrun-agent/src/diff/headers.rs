//! Header comparison (see the [module docs](super#headers)).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{DiffConfig, Sink};
use crate::model::{Difference, Header};

/// Reports each header name whose joined values differ.
pub(super) fn compare(cfg: &DiffConfig, old: &[Header], new: &[Header], sink: &mut Sink) {
    let (old, new) = (by_name(cfg, old), by_name(cfg, new));
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

/// The compared headers by lowercase name, each name's values as compared
/// ([`joined`]).
fn by_name(cfg: &DiffConfig, headers: &[Header]) -> BTreeMap<String, Vec<u8>> {
    let mut map: BTreeMap<String, Vec<&[u8]>> = BTreeMap::new();
    for h in headers {
        let name = h.name.to_ascii_lowercase();
        if !cfg.ignores_header(&name) {
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
mod tests {
    use serde_json::json;

    use super::super::{compare as compare_responses, tests::response};
    use super::*;

    fn diff(cfg: &DiffConfig, old: &[(&str, &str)], new: &[(&str, &str)]) -> Vec<Difference> {
        compare_responses(cfg, &response(200, old, b""), &response(200, new, b"")).differences
    }

    fn d(location: &str, old: Value, new: Value) -> Difference {
        Difference {
            location: location.into(),
            old,
            new,
        }
    }

    #[test]
    fn added_removed_and_changed_headers() {
        let cfg = DiffConfig::default();
        let got = diff(
            &cfg,
            &[("X-Gone", "1"), ("X-Same", "s"), ("X-Changed", "a")],
            &[("X-Same", "s"), ("X-Changed", "b"), ("X-New", "2")],
        );
        assert_eq!(
            got,
            vec![
                d("header:x-changed", json!("a"), json!("b")),
                d("header:x-gone", json!("1"), Value::Null),
                d("header:x-new", Value::Null, json!("2")),
            ]
        );
    }

    #[test]
    fn names_are_case_insensitive() {
        let cfg = DiffConfig::default();
        assert!(diff(&cfg, &[("Content-Type", "a/b")], &[("content-type", "a/b")]).is_empty());
        assert_eq!(
            diff(&cfg, &[("CONTENT-TYPE", "a/b")], &[("content-Type", "a/c")]),
            vec![d("header:content-type", json!("a/b"), json!("a/c"))]
        );
    }

    #[test]
    fn repeated_headers_compare_as_the_joined_list() {
        let cfg = DiffConfig::default();
        assert!(
            diff(
                &cfg,
                &[("Vary", "a"), ("vary", "b")],
                &[("Vary", "a"), ("Vary", "b")]
            )
            .is_empty()
        );
        assert_eq!(
            diff(&cfg, &[("Vary", "a"), ("Vary", "b")], &[("Vary", "a")]),
            vec![d("header:vary", json!("a, b"), json!("a"))]
        );
    }

    #[test]
    fn default_ignores_per_response_and_framing_headers() {
        let cfg = DiffConfig::default();
        let old = [
            ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("X-Request-Id", "aaa"),
            ("X-B3-TraceId", "1"),
            ("Content-Length", "10"),
            ("Connection", "keep-alive"),
            ("ETag", "\"x\""),
        ];
        let new = [
            ("Date", "Tue, 02 Jan 2024 00:00:00 GMT"),
            ("x-request-id", "bbb"),
            ("x-b3-spanid", "2"),
            ("Transfer-Encoding", "chunked"),
        ];
        assert!(diff(&cfg, &old, &new).is_empty());

        let none = DiffConfig {
            ignore_headers: Vec::new(),
            ..DiffConfig::default()
        };
        assert_eq!(diff(&none, &old, &new).len(), 8);
    }

    #[test]
    fn set_cookie_compares_cookie_names_only() {
        let cfg = DiffConfig::default();
        assert!(
            diff(
                &cfg,
                &[("Set-Cookie", "sid=abc; Path=/"), ("Set-Cookie", "csrf=1")],
                &[
                    ("Set-Cookie", "csrf=2; Secure"),
                    ("Set-Cookie", "sid=xyz; Path=/")
                ],
            )
            .is_empty()
        );
        assert_eq!(
            diff(
                &cfg,
                &[("Set-Cookie", "sid=abc"), ("Set-Cookie", "csrf=1")],
                &[("Set-Cookie", "sid=xyz")],
            ),
            vec![d("header:set-cookie", json!("csrf, sid"), json!("sid"))]
        );
    }

    #[test]
    fn ignored_set_cookie_is_skipped() {
        let cfg = DiffConfig::default().with_ignored_headers(["set-cookie"]);
        assert!(diff(&cfg, &[("Set-Cookie", "a=1")], &[]).is_empty());
    }

    #[test]
    fn header_values_are_truncated() {
        let cfg = DiffConfig {
            max_value_len: 4,
            ..DiffConfig::default()
        };
        assert_eq!(
            diff(&cfg, &[("X-Long", "abcdefgh")], &[]),
            vec![d("header:x-long", json!("abcd…(+4 bytes)"), Value::Null)]
        );
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match("date", "Date"));
        assert!(!glob_match("date", "dates"));
        assert!(glob_match("x-b3-*", "x-b3-traceid"));
        assert!(glob_match("x-b3-*", "x-b3-"));
        assert!(!glob_match("x-b3-*", "x-b3"));
        assert!(glob_match("*-id", "x-request-id"));
        assert!(glob_match("x-*-id", "x-a-b-id"));
        assert!(!glob_match("x-*-id", "x-a-b-ids"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a**b", "ab"));
    }

    #[test]
    fn cookie_names() {
        assert_eq!(cookie_name(b" sid = 1; Path=/"), b"sid");
        assert_eq!(cookie_name(b"flag; Secure"), b"flag");
        assert_eq!(cookie_name(b""), b"");
    }
}
