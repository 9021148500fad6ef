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
    pub(super) fn matches_segments<S: AsRef<str>>(&self, segments: &[S]) -> bool {
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

/// Reports the structural differences between two JSON documents, located
/// at `root` (`body`, or a gRPC message's `grpc`/`grpc[i]`): `root` for
/// the whole document, `root:/json/pointer` below it.
pub(super) fn compare(cfg: &DiffConfig, root: &str, old: &Value, new: &Value, sink: &mut Sink) {
    Walker {
        cfg,
        sink,
        root,
        path: Vec::new(),
    }
    .node(old, new);
}

struct Walker<'a> {
    cfg: &'a DiffConfig,
    sink: &'a mut Sink,
    root: &'a str,
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
        let (cfg, root, path) = (self.cfg, self.root, &self.path);
        self.sink.report(|| Difference {
            location: if path.is_empty() {
                root.to_owned()
            } else {
                format!("{root}:{}", pointer(path))
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
mod tests;
