//! JSON Pointer patterns and the structural JSON diff (see the
//! [module docs](super#json)).

use std::{collections::BTreeSet, fmt, str::FromStr};

use serde_json::{Number, Value};

use super::{DiffConfig, Sink};
use crate::model::Difference;

/// A JSON Pointer (RFC 6901) with wildcards, naming paths not to compare.
///
/// Segments are separated by `/` and use the pointer escapes (`~0` for `~`,
/// `~1` for `/`). A segment `*` matches any one segment (an object key or an
/// array index); `**` as the last segment matches any number of segments,
/// none included. `""` is the whole document. Examples: `/items/*/id`,
/// `/meta/**`, `/a~1b` (the key `a/b`). A key literally named `*` can only be
/// matched by a wildcard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointerPattern {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Any,
    Rest,
}

/// Why a string is not a [`PointerPattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerPatternError {
    /// A non-empty pattern must start with `/`.
    #[error("JSON pointer pattern {0:?} does not start with '/'")]
    NoLeadingSlash(String),
    /// `~` followed by anything but `0` or `1`.
    #[error("JSON pointer pattern {0:?} has an invalid '~' escape (only ~0 and ~1)")]
    BadEscape(String),
    /// `**` somewhere other than the last segment.
    #[error("JSON pointer pattern {0:?} has '**' before its last segment")]
    RestNotLast(String),
}

impl FromStr for PointerPattern {
    type Err = PointerPatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let raw = split_pointer(s).ok_or_else(|| {
            if s.starts_with('/') {
                PointerPatternError::BadEscape(s.to_owned())
            } else {
                PointerPatternError::NoLeadingSlash(s.to_owned())
            }
        })?;
        let last = raw.len().saturating_sub(1);
        let mut segments = Vec::with_capacity(raw.len());
        for (i, seg) in raw.into_iter().enumerate() {
            segments.push(match seg.as_str() {
                "*" => Segment::Any,
                "**" if i == last => Segment::Rest,
                "**" => return Err(PointerPatternError::RestNotLast(s.to_owned())),
                _ => Segment::Key(seg),
            });
        }
        Ok(Self {
            source: s.to_owned(),
            segments,
        })
    }
}

impl fmt::Display for PointerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PointerPattern {
    /// Whether the JSON Pointer `pointer` (escaped, as in a
    /// [`Difference`] location after `body:`) is matched. An invalid
    /// pointer matches nothing.
    pub fn matches(&self, pointer: &str) -> bool {
        split_pointer(pointer).is_some_and(|segs| self.matches_segments(&segs))
    }

    /// Whether the path of unescaped `segments` is matched.
    fn matches_segments<S: AsRef<str>>(&self, segments: &[S]) -> bool {
        for (i, pattern) in self.segments.iter().enumerate() {
            match pattern {
                Segment::Rest => return true,
                Segment::Any if i < segments.len() => {}
                Segment::Key(k) if segments.get(i).is_some_and(|s| s.as_ref() == k) => {}
                Segment::Any | Segment::Key(_) => return false,
            }
        }
        segments.len() == self.segments.len()
    }
}

/// The unescaped segments of a JSON Pointer; `None` if it is not one.
fn split_pointer(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    pointer
        .strip_prefix('/')?
        .split('/')
        .map(unescape)
        .collect()
}

fn unescape(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `segments` as a JSON Pointer.
fn pointer(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(&s.replace('~', "~0").replace('/', "~1"));
    }
    out
}

/// Reports the structural differences between two JSON documents.
pub(super) fn compare(cfg: &DiffConfig, old: &Value, new: &Value, sink: &mut Sink) {
    Walker {
        cfg,
        sink,
        path: Vec::new(),
    }
    .node(old, new);
}

struct Walker<'a> {
    cfg: &'a DiffConfig,
    sink: &'a mut Sink,
    /// Unescaped segments of the current node.
    path: Vec<String>,
}

impl Walker<'_> {
    fn ignored(&self) -> bool {
        self.cfg
            .ignore_pointers
            .iter()
            .any(|p| p.matches_segments(&self.path))
    }

    /// Compares two nodes present on both sides.
    fn node(&mut self, old: &Value, new: &Value) {
        if self.ignored() {
            return;
        }
        match (old, new) {
            (Value::Object(a), Value::Object(b)) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    self.path.push(key.clone());
                    match (a.get(key), b.get(key)) {
                        (Some(x), Some(y)) => self.node(x, y),
                        // Absent and null are the same (see the module docs).
                        (Some(Value::Null), None) | (None, Some(Value::Null)) | (None, None) => {}
                        (x, y) => self.one_sided(x, y),
                    }
                    self.path.pop();
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for i in 0..a.len().max(b.len()) {
                    self.path.push(i.to_string());
                    match (a.get(i), b.get(i)) {
                        (Some(x), Some(y)) => self.node(x, y),
                        (x, y) => self.one_sided(x, y),
                    }
                    self.path.pop();
                }
            }
            _ if scalar_eq(old, new) => {}
            _ => self.report(old, new),
        }
    }

    /// A node present on one side only.
    fn one_sided(&mut self, old: Option<&Value>, new: Option<&Value>) {
        if !self.ignored() {
            self.report(old.unwrap_or(&Value::Null), new.unwrap_or(&Value::Null));
        }
    }

    fn report(&mut self, old: &Value, new: &Value) {
        let (cfg, path) = (self.cfg, &self.path);
        self.sink.report(|| Difference {
            location: if path.is_empty() {
                "body".to_owned()
            } else {
                format!("body:{}", pointer(path))
            },
            old: cfg.bounded_json(old),
            new: cfg.bounded_json(new),
        });
    }
}

/// Equality of two values that are not both objects or both arrays, with
/// numbers compared by value.
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        _ => a == b,
    }
}

/// Integers exactly, anything else as `f64`: `1 == 1.0 == 1e0`.
fn number_eq(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pattern(s: &str) -> PointerPattern {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn diff_with(cfg: &DiffConfig, old: Value, new: Value) -> Vec<Difference> {
        let mut sink = Sink::new(cfg.max_differences);
        compare(cfg, &old, &new, &mut sink);
        sink.finish().differences
    }

    fn diff(old: Value, new: Value) -> Vec<Difference> {
        diff_with(&DiffConfig::default(), old, new)
    }

    fn d(location: &str, old: Value, new: Value) -> Difference {
        Difference {
            location: location.into(),
            old,
            new,
        }
    }

    #[test]
    fn pattern_parsing() {
        assert_eq!(
            "a/b".parse::<PointerPattern>(),
            Err(PointerPatternError::NoLeadingSlash("a/b".into()))
        );
        assert_eq!(
            "/a~2".parse::<PointerPattern>(),
            Err(PointerPatternError::BadEscape("/a~2".into()))
        );
        assert_eq!(
            "/a/~".parse::<PointerPattern>(),
            Err(PointerPatternError::BadEscape("/a/~".into()))
        );
        assert_eq!(
            "/**/a".parse::<PointerPattern>(),
            Err(PointerPatternError::RestNotLast("/**/a".into()))
        );
        assert_eq!(pattern("/items/*/id").to_string(), "/items/*/id");
    }

    #[test]
    fn pattern_matching() {
        let p = pattern("/items/*/id");
        assert!(p.matches("/items/0/id"));
        assert!(p.matches("/items/key/id"));
        assert!(!p.matches("/items/0"));
        assert!(!p.matches("/items/0/id/x"));
        assert!(!p.matches("/items/0/name"));
        assert!(!p.matches("items/0/id"), "not a pointer");

        let rest = pattern("/meta/**");
        assert!(rest.matches("/meta"));
        assert!(rest.matches("/meta/a/b/c"));
        assert!(!rest.matches("/metadata"));

        let escaped = pattern("/a~1b/c~0d");
        assert!(escaped.matches("/a~1b/c~0d"));
        assert!(!escaped.matches("/a/b/c~0d"));

        assert!(pattern("").matches(""));
        assert!(!pattern("").matches("/a"));
        assert!(pattern("/").matches("/"), "the empty key");
        assert!(pattern("/**").matches(""));
    }

    #[test]
    fn equal_documents_and_key_order() {
        assert!(diff(json!({"a": 1, "b": [1, 2]}), json!({"b": [1, 2], "a": 1})).is_empty());
    }

    #[test]
    fn changed_field_reports_its_pointer_escaped() {
        assert_eq!(
            diff(
                json!({"user": {"a/b": 1, "c~d": "x", "same": true}}),
                json!({"user": {"a/b": 2, "c~d": "y", "same": true}}),
            ),
            vec![
                d("body:/user/a~1b", json!(1), json!(2)),
                d("body:/user/c~0d", json!("x"), json!("y")),
            ]
        );
    }

    #[test]
    fn added_and_removed_keys_have_null_on_the_other_side() {
        assert_eq!(
            diff(json!({"gone": 1, "k": 0}), json!({"k": 0, "new": {"x": 1}})),
            vec![
                d("body:/gone", json!(1), Value::Null),
                d("body:/new", Value::Null, json!({"x": 1})),
            ]
        );
    }

    #[test]
    fn absent_key_equals_null() {
        assert!(diff(json!({"a": null}), json!({})).is_empty());
        assert_eq!(
            diff(json!({"a": null}), json!({"a": 0})),
            vec![d("body:/a", Value::Null, json!(0))]
        );
    }

    #[test]
    fn array_length_change_reports_extra_elements_at_their_index() {
        assert_eq!(
            diff(json!({"items": [1, 2, 3]}), json!({"items": [1, 9]})),
            vec![
                d("body:/items/1", json!(2), json!(9)),
                d("body:/items/2", json!(3), Value::Null),
            ]
        );
        assert_eq!(
            diff(json!([1]), json!([1, null])),
            vec![d("body:/1", Value::Null, Value::Null)],
            "an extra null element is still an extra element"
        );
    }

    #[test]
    fn type_change_is_reported_at_the_node() {
        assert_eq!(
            diff(json!({"a": {"b": 1}}), json!({"a": [1]})),
            vec![d("body:/a", json!({"b": 1}), json!([1]))]
        );
        assert_eq!(
            diff(json!({"n": 1}), json!({"n": "1"})),
            vec![d("body:/n", json!(1), json!("1"))]
        );
        assert_eq!(
            diff(json!([1]), json!({"0": 1})),
            vec![d("body", json!([1]), json!({"0": 1}))],
            "the root is reported at `body`"
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(diff(json!([1, 100, -3]), json!([1.0, 1e2, -3.0])).is_empty());
        assert_eq!(
            diff(json!([u64::MAX]), json!([u64::MAX - 1])),
            vec![d("body:/0", json!(u64::MAX), json!(u64::MAX - 1))]
        );
        assert_eq!(diff(json!(0.5), json!(0.25)).len(), 1);
    }

    #[test]
    fn ignored_pointers_skip_subtrees() {
        let cfg =
            DiffConfig::default().with_ignored_pointers([pattern("/items/*/id"), pattern("/meta")]);
        let got = diff_with(
            &cfg,
            json!({"items": [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}], "meta": {"t": 1}}),
            json!({"items": [{"id": 7, "n": "a"}, {"id": 8, "n": "c"}, {"id": 9}], "meta": 5}),
        );
        assert_eq!(
            got,
            vec![
                d("body:/items/1/n", json!("b"), json!("c")),
                d("body:/items/2", Value::Null, json!({"id": 9})),
            ]
        );
        let extra_ignored = DiffConfig::default().with_ignored_pointers([pattern("/x/*")]);
        assert!(diff_with(&extra_ignored, json!({"x": [1]}), json!({"x": [1, 2, 3]})).is_empty());
        let all = DiffConfig::default().with_ignored_pointers([pattern("")]);
        assert!(diff_with(&all, json!([1]), json!({"a": 2})).is_empty());
    }

    #[test]
    fn long_strings_are_truncated() {
        let cfg = DiffConfig {
            max_value_len: 3,
            ..DiffConfig::default()
        };
        assert_eq!(
            diff_with(&cfg, json!({"s": "abcdef"}), json!({"s": "ab"})),
            vec![d("body:/s", json!("abc…(+3 bytes)"), json!("ab"))]
        );
    }

    #[test]
    fn differences_beyond_the_cap_are_counted() {
        let cfg = DiffConfig {
            max_differences: 2,
            ..DiffConfig::default()
        };
        let mut sink = Sink::new(cfg.max_differences);
        compare(
            &cfg,
            &json!([1, 2, 3, 4, 5]),
            &json!([0, 0, 0, 0, 0]),
            &mut sink,
        );
        let c = sink.finish();
        assert_eq!(c.differences.len(), 2);
        assert_eq!(c.omitted, 3);
        assert_eq!(c.differences[1].location, "body:/1");
    }
}
