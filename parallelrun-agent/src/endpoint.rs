//! Endpoints: request targets grouped into templates, so that results are
//! counted per endpoint (`GET /users/{id}`) and not per URL.
//!
//! Without grouping every URL is its own endpoint (`GET /users/1`,
//! `GET /users/2`, …), and a run's summary is a list of single requests.
//! [`Endpoints::classify`] names each request's endpoint by three means, in
//! this order: the user's patterns, inference from the look of a segment,
//! and learning from how many distinct values a path position takes.
//!
//! # Names
//!
//! An endpoint name is the method, one space and the path:
//! `GET /users/{id}/orders`. The path is the request target with its query
//! and fragment dropped ([`target_path`]); an absolute-form target
//! (`http://host/p?q`) is reduced to its path (`/p`, or `/` when it has
//! none); a target that does not start with `/` (`*` for `OPTIONS`, an
//! authority for `CONNECT`) is kept as it is and is neither inferred nor
//! learned. Segments are compared byte for byte (no percent-decoding).
//! [`OTHER`] (`other`) is the name of the overflow; it holds no space, so no
//! request's name is ever equal to it.
//!
//! # Rules, in order
//!
//! 1. **Patterns** (`--endpoint`, [`Pattern`]): the first pattern that
//!    [matches](Pattern::matches) the request names it, with the pattern's
//!    normalised [`Display`](Pattern#impl-Display-for-Pattern) string
//!    (`GET /users/{id}`, `* /health`). A pattern's name is never folded.
//! 2. **Inference**: otherwise each segment that looks like an identifier
//!    becomes `{id}`: a number (all ASCII digits), a UUID (8-4-4-4-12 hex
//!    digits), a long hex string (16 or more hex digits, the meaning of the
//!    diff's `is_long_hex`), or an opaque token (20 or more characters of
//!    `[A-Za-z0-9_-]` holding at least one letter and one digit).
//! 3. **Learning**: the other segments are *literal*, except an empty one
//!    (a trailing or doubled slash) and one written as a placeholder
//!    (`{…}`), which are kept as they are and never learned. A literal
//!    segment at position `i` is counted under its *parent*: the method and
//!    the segments before `i` as generalised so far (`GET /users/{id}` is
//!    the parent of position 2 in `GET /users/7/orders`). When a parent has
//!    seen `learn_after` distinct literals at `i` and a new one arrives, the
//!    position is *learned*: that literal and every later one at `i` under
//!    that parent become `{param}`, and the names handed out before are
//!    folded (below).
//! 4. **Bound**: at most `max_endpoints` names exist at a time, patterns'
//!    and inferred ones together; a request whose name would be a new one
//!    beyond that is counted in [`OTHER`]. The patterns' names take their
//!    places first (as many as fit), so inferred names cannot crowd them
//!    out. Names already handed out keep working, and folding frees names.
//!
//! # Folding
//!
//! When position `i` is learned under parent `P`, every inferred name that
//! starts with `P` and has a literal at `i` stops being reachable: requests
//! that gave it now give the *template* with `{param}` at `i` and the
//! segments after `i` kept (`GET /users/alice/orders` →
//! `GET /users/{param}/orders`). Names whose templates are equal are the
//! same endpoint. [`Classified::folded`] tells the caller which old names
//! its `endpoint` takes over, so their results move there. As a
//! [`Classified`] has one `endpoint`, an old name is reported in the
//! `folded` of the first request that is named with its template (in the
//! usual case, the very request that made the position learned): until
//! then it keeps its results and its place in the bound, and no request is
//! named with it any more.
//!
//! What was learned under a parent that folding makes unreachable is
//! carried to its template: if position `i + 1` was learned under
//! `GET /users/alice`, it is learned under `GET /users/{param}` too (and
//! what that in turn folds is folded). The distinct-literal counts of an
//! unreachable parent are dropped; its template counts afresh.
//!
//! # Memory and time
//!
//! - Learning tracks at most `4 × max_endpoints` parents; when that many
//!   are tracked, a literal under a parent not tracked is kept literal and
//!   not counted (no new parent is learned). Parents that folding makes
//!   unreachable are forgotten, which frees their places.
//! - A parent counts at most `learn_after` distinct values, each as a
//!   64-bit hash (two values whose hashes collide count once; with
//!   `learn_after` values the odds are about `learn_after² / 2⁶⁵`).
//! - The first segment is never learned: top-level names are the API's
//!   structure (`/users`, `/orders`, … can be many), seldom a parameter;
//!   give a pattern (`--endpoint '/{tenant}/{rest*}'`) where they are.
//! - Only the first [`MAX_LEARNED_DEPTH`] segments are learned, and only
//!   under a parent of at most [`MAX_PARENT_LEN`] bytes: deeper or longer
//!   literals stay literal. This bounds a parent key's size and the work of
//!   one request to `O(MAX_LEARNED_DEPTH × MAX_PARENT_LEN + target length)`.
//!   Names are as long as the targets, which the HTTP parser bounds
//!   ([`crate::http::parse::HttpLimits::max_head`]).
//! - [`Endpoints::classify`] reuses one buffer for the name it builds and
//!   allocates nothing for a request whose name and parents are known (a
//!   new name, a new parent, a new value and folding allocate). Learning
//!   scans the tracked parents and names once per learned position.
//!
//! # Invariants
//!
//! Held by [`Endpoints`] between calls:
//!
//! 1. `names.len() ≤ max_endpoints` (live names: reserved pattern names,
//!    inferred names, and folded names waiting for their template).
//! 2. Every name [`Endpoints::classify`] returns is in `names`, or is
//!    [`OTHER`].
//! 3. `parents.len() ≤ 4 × max_endpoints`; a counting parent holds at most
//!    `learn_after` hashes.
//! 4. A learned parent stays learned until an ancestor position is learned
//!    (then it is unreachable and forgotten, its learning carried to its
//!    template).
//! 5. A name is `Folding` iff it is in exactly one `pending` list, keyed by
//!    the name requests that gave it are given now; inference never names
//!    a request with a `Folding` name (its literal at the learned position
//!    is `{param}` now); a pattern's name is never `Folding`.
//! 6. The endpoint given to a request depends only on the requests before
//!    it and their order, not on hash-map iteration order; `folded` is
//!    sorted.
//!
//! # Why hand-written
//!
//! No crate groups observed URLs into templates with a bounded memory and
//! a callback for results to move when a template is learned; route
//! matchers (`matchit` and the like) need the routes up front, which is
//! what the patterns are, and the rest is this module's learning.

use std::collections::{HashMap, HashSet};
use std::fmt;

use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

/// The endpoint every request goes to once `max_endpoints` names are taken
/// (and requests whose target could not be read).
pub const OTHER: &str = "other";

/// Segments of a path beyond this many are never learned.
pub const MAX_LEARNED_DEPTH: usize = 16;
/// A literal whose parent (method and generalised path before it) is longer
/// than this many bytes is never learned.
pub const MAX_PARENT_LEN: usize = 1024;
/// The placeholder an inferred identifier becomes.
pub const ID: &str = "{id}";
/// The placeholder a learned position becomes.
pub const PARAM: &str = "{param}";
/// Learning tracks at most this many parents per `max_endpoints`.
const PARENTS_PER_ENDPOINT: usize = 4;
/// The name buffer is dropped after a target this long, not kept.
const BUF_KEEP: usize = 64 * 1024;

/// A `--endpoint` pattern that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad --endpoint pattern {pattern:?}: {why}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong and what to write instead.
    pub why: String,
}

/// A `--endpoint 'GET /users/{id}'` pattern.
///
/// Syntax: an optional method (an uppercase token such as `GET`, or `*` for
/// any; absent means any), whitespace, then a path starting with `/`. Each
/// segment of the path is a literal (matched byte for byte), `{name}` (one
/// non-empty segment) or, as the last segment only, `{name*}` (the rest of
/// the path: zero or more segments). A name is `[A-Za-z0-9_]+`. Braces
/// appear nowhere else, nor do `?`, `#` or spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// `None`: any method.
    method: Option<String>,
    /// At least one (the path `/` is one empty literal).
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: one non-empty segment.
    Param(String),
    /// `{name*}`: the rest of the path; only last.
    Rest(String),
}

impl Pattern {
    /// Parses `[METHOD|*] /path/{param}/{rest*}`; see [`Pattern`].
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let err = |why: String| PatternError {
            pattern: s.to_owned(),
            why,
        };
        let mut words = s.split_whitespace();
        let (method, path) = match (words.next(), words.next(), words.next()) {
            (None, _, _) => {
                return Err(err(
                    "it is empty: write a path, optionally after a method, \
                     such as `GET /users/{id}`"
                        .into(),
                ));
            }
            (Some(path), None, _) if path.starts_with('/') => (None, path),
            (Some(word), None, _) if is_method(word) || word == "*" => {
                return Err(err(format!(
                    "it has no path: write one after the method, such as `{word} /users/{{id}}`"
                )));
            }
            (Some(word), None, _) => {
                return Err(err(format!(
                    "the path must start with `/`: write `/{word}`"
                )));
            }
            (Some(method), Some(path), None) => (parse_method(method).map_err(err)?, path),
            (Some(_), Some(_), Some(_)) => {
                return Err(err(
                    "it has more than a method and a path: a path holds no \
                     spaces (write `%20` for one)"
                        .into(),
                ));
            }
        };
        let segments = parse_path(path).map_err(err)?;
        Ok(Pattern { method, segments })
    }

    /// Whether `method` and `target` (a raw request target, normalised as
    /// by [`target_path`]) fall under it.
    pub fn matches(&self, method: &str, target: &str) -> bool {
        self.matches_path(method, target_path(target))
    }

    /// Whether an endpoint name (a template such as `GET /users/{id}`, or a
    /// concrete one) falls under it. A `{x}` segment of the name matches a
    /// `{y}` of the pattern (and no literal); a `{x*}` of the name only a
    /// `{y*}`. A name of any method (`* /x`) falls only under a pattern of
    /// any method. [`OTHER`] falls under none.
    pub fn matches_endpoint(&self, endpoint: &str) -> bool {
        let Some((method, path)) = endpoint.split_once(' ') else {
            return false;
        };
        self.method_matches(method)
            && path.starts_with('/')
            && self.segments_match(path.split('/').skip(1), true)
    }

    /// [`Self::matches`] on a path already normalised by [`target_path`].
    fn matches_path(&self, method: &str, path: &str) -> bool {
        self.method_matches(method)
            && path.starts_with('/')
            && self.segments_match(path.split('/').skip(1), false)
    }

    fn method_matches(&self, method: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
    }

    /// `names`: the segments are an endpoint name's, where `{x*}` stands
    /// for several segments.
    fn segments_match<'s>(&self, mut segs: impl Iterator<Item = &'s str>, names: bool) -> bool {
        for pattern in &self.segments {
            match pattern {
                Segment::Rest(_) => return true,
                Segment::Literal(literal) => match segs.next() {
                    Some(seg) if seg == literal => {}
                    _ => return false,
                },
                Segment::Param(_) => match segs.next() {
                    // One non-empty segment; in a name, `{x*}` stands for
                    // several.
                    None => return false,
                    Some(seg) if seg.is_empty() || (names && is_rest_placeholder(seg)) => {
                        return false;
                    }
                    Some(_) => {}
                },
            }
        }
        segs.next().is_none()
    }
}

impl fmt::Display for Pattern {
    /// `METHOD /path`, with `*` for any method: `* /health`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method.as_deref().unwrap_or("*"))?;
        f.write_str(" ")?;
        for seg in &self.segments {
            f.write_str("/")?;
            match seg {
                Segment::Literal(s) => f.write_str(s)?,
                Segment::Param(name) => write!(f, "{{{name}}}")?,
                Segment::Rest(name) => write!(f, "{{{name}*}}")?,
            }
        }
        Ok(())
    }
}

/// An uppercase token: `[A-Z][A-Z0-9_-]*`.
fn is_method(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn parse_method(m: &str) -> Result<Option<String>, String> {
    if m == "*" {
        Ok(None)
    } else if is_method(m) {
        Ok(Some(m.to_owned()))
    } else if is_method(&m.to_ascii_uppercase()) {
        Err(format!(
            "methods are case-sensitive and uppercase: write `{}`, or `*` for any method",
            m.to_ascii_uppercase()
        ))
    } else {
        Err(format!(
            "`{m}` is not a method: write an uppercase token such as `GET`, or `*` for any method"
        ))
    }
}

fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    if !path.starts_with('/') {
        return Err(format!("the path must start with `/`: write `/{path}`"));
    }
    if let Some(i) = path.find(['?', '#']) {
        return Err(format!(
            "patterns match the path only, not a query or fragment: write `{}`",
            &path[..i]
        ));
    }
    let count = path.split('/').skip(1).count();
    let mut segments = Vec::with_capacity(count);
    for (i, seg) in path.split('/').skip(1).enumerate() {
        if !seg.contains(['{', '}']) {
            segments.push(Segment::Literal(seg.to_owned()));
            continue;
        }
        let inner = seg
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|s| !s.contains(['{', '}']))
            .ok_or_else(|| {
                format!(
                    "`{seg}`: a parameter is a whole segment between slashes, \
                     `/{{name}}` (or, last, `/{{name*}}`), and braces appear nowhere else"
                )
            })?;
        let (name, rest) = match inner.strip_suffix('*') {
            Some(name) => (name, true),
            None => (inner, false),
        };
        if name.is_empty() {
            return Err(format!("`{seg}` has no name: write `{{id}}`"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "`{seg}`: a parameter's name is letters, digits and `_`, such as `{{user_id}}`"
            ));
        }
        if rest && i + 1 != count {
            return Err(format!(
                "`{seg}` matches the rest of the path, so it must be the last segment: \
                 move it to the end, or write `{{{name}}}` for one segment"
            ));
        }
        let name = name.to_owned();
        segments.push(if rest {
            Segment::Rest(name)
        } else {
            Segment::Param(name)
        });
    }
    Ok(segments)
}

/// The path of a request target: the query and fragment dropped, an
/// absolute-form target (`http://host/p?q`) reduced to its path (`/p`, `/`
/// without one); a target that does not start with `/` (`*`, an authority)
/// otherwise kept as it is.
pub fn target_path(target: &str) -> &str {
    let target = target.find(['?', '#']).map_or(target, |i| &target[..i]);
    if target.starts_with('/') {
        return target;
    }
    if let Some((scheme, rest)) = target.split_once("://") {
        let is_scheme = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if is_scheme {
            return rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    target
}

/// Whether a path segment is inferred to be an identifier (rule 2 of the
/// module docs): a number, a UUID, a long hex string or an opaque token.
pub fn is_identifier(seg: &str) -> bool {
    is_number(seg) || is_uuid(seg) || is_long_hex(seg) || is_token(seg)
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// As the diff's: 16 or more hex digits.
fn is_long_hex(s: &str) -> bool {
    s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_token(s: &str) -> bool {
    s.len() >= 20
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && s.bytes().any(|b| b.is_ascii_digit())
}

/// `{…}`: a placeholder (in a name), never a literal.
fn is_placeholder(s: &str) -> bool {
    s.len() >= 2 && s.starts_with('{') && s.ends_with('}')
}

fn is_rest_placeholder(s: &str) -> bool {
    is_placeholder(s) && s.ends_with("*}")
}

/// A segment that learning counts: not empty, not a placeholder.
fn is_literal(s: &str) -> bool {
    !s.is_empty() && !is_placeholder(s)
}

/// If `name` (a name or parent key) continues `parent` with a literal
/// segment, the part after that segment (`""` or `/…`).
fn after_literal<'n>(name: &'n str, parent: &str) -> Option<&'n str> {
    let after = name.strip_prefix(parent)?.strip_prefix('/')?;
    let (seg, rest) = after.find('/').map_or((after, ""), |i| after.split_at(i));
    is_literal(seg).then_some(rest)
}

/// `parent/{param}rest`.
fn template(parent: &str, rest: &str) -> Box<str> {
    let mut t = String::with_capacity(parent.len() + 1 + PARAM.len() + rest.len());
    t.push_str(parent);
    t.push('/');
    t.push_str(PARAM);
    t.push_str(rest);
    t.into_boxed_str()
}

/// What [`Endpoints::classify`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Classified<'a> {
    /// The endpoint's name.
    pub endpoint: &'a str,
    /// Endpoints that this request's learning made part of `endpoint`:
    /// their results move there ([`crate::summary::Results::fold`]).
    /// Sorted; they are not names any more.
    pub folded: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A pattern's name: never folded.
    Pattern,
    /// Inferred, learned or kept as is.
    Inferred,
    /// Folded into a template no request has been named with yet (it is in
    /// a `pending` list).
    Folding,
}

#[derive(Debug)]
enum Position {
    /// Hashes of the distinct literals seen; at most `learn_after`.
    Counting(HashSet<u64>),
    /// Learned: every literal is `{param}`.
    Learned,
}

/// The endpoint classifier of one run: patterns first, then inference, with
/// at most `max_endpoints` names (then [`OTHER`]).
///
/// See the module docs for the rules and invariants.
#[derive(Debug)]
pub struct Endpoints {
    /// Each with its name (its `Display`).
    patterns: Vec<(Pattern, Box<str>)>,
    max_endpoints: usize,
    learn_after: usize,
    max_parents: usize,
    /// The live names.
    names: HashMap<Box<str>, Origin>,
    /// Parent key (`METHOD /generalised/prefix`, or `METHOD ` for the first
    /// segment) → what its next position has shown.
    parents: HashMap<Box<str>, Position>,
    /// Template → the `Folding` names it takes over.
    pending: HashMap<Box<str>, Vec<Box<str>>>,
    /// The name being built.
    buf: String,
}

impl Endpoints {
    /// `learn_after`: distinct values a path position takes (under the same
    /// prefix) before it becomes a parameter.
    ///
    /// The patterns' names take their places in the bound first (as many as
    /// fit in `max_endpoints`), so that a pattern's requests are not sent to
    /// [`OTHER`] by inferred names.
    pub fn new(patterns: Vec<Pattern>, max_endpoints: usize, learn_after: usize) -> Self {
        let patterns: Vec<(Pattern, Box<str>)> = patterns
            .into_iter()
            .map(|p| {
                let name = p.to_string().into_boxed_str();
                (p, name)
            })
            .collect();
        let mut names = HashMap::new();
        for (_, name) in &patterns {
            if names.len() < max_endpoints {
                names.entry(name.clone()).or_insert(Origin::Pattern);
            }
        }
        Endpoints {
            patterns,
            max_endpoints,
            learn_after,
            max_parents: max_endpoints.saturating_mul(PARENTS_PER_ENDPOINT),
            names,
            parents: HashMap::new(),
            pending: HashMap::new(),
            buf: String::new(),
        }
    }

    /// The endpoint of one request.
    pub fn classify(&mut self, method: &str, target: &str) -> Classified<'_> {
        let path = target_path(target);
        if let Some(i) = self
            .patterns
            .iter()
            .position(|(p, _)| p.matches_path(method, path))
        {
            return self.pattern_name(i);
        }
        if self.buf.capacity() > BUF_KEEP {
            self.buf = String::new();
        }
        self.buf.clear();
        self.buf.push_str(method);
        self.buf.push(' ');
        if !path.starts_with('/') {
            self.buf.push_str(path);
            return self.hand_out();
        }
        for (depth, seg) in path.split('/').skip(1).enumerate() {
            self.buf.push('/');
            let parent_len = self.buf.len() - 1;
            if is_identifier(seg) {
                self.buf.push_str(ID);
            } else if is_literal(seg)
                && (1..MAX_LEARNED_DEPTH).contains(&depth)
                && parent_len <= MAX_PARENT_LEN
                && self.count(parent_len, seg)
            {
                self.buf.push_str(PARAM);
            } else {
                self.buf.push_str(seg);
            }
        }
        self.hand_out()
    }

    /// The name of pattern `i`, if it has or can get a place.
    fn pattern_name(&mut self, i: usize) -> Classified<'_> {
        let name = &self.patterns[i].1;
        if !self.names.contains_key(name) {
            if self.names.len() >= self.max_endpoints {
                return other();
            }
            self.names.insert(name.clone(), Origin::Pattern);
        }
        Classified {
            endpoint: name,
            folded: Vec::new(),
        }
    }

    /// Counts literal `seg` under the parent `buf[..parent_len]`; whether
    /// the position is learned (`seg` is `{param}`).
    fn count(&mut self, parent_len: usize, seg: &str) -> bool {
        let parent = &self.buf[..parent_len];
        match self.parents.get_mut(parent) {
            Some(Position::Learned) => return true,
            Some(Position::Counting(seen)) => {
                let hash = xxh3_64(seg.as_bytes());
                if seen.contains(&hash) {
                    return false;
                }
                if seen.len() < self.learn_after {
                    seen.insert(hash);
                    return false;
                }
            }
            None => {
                if self.parents.len() >= self.max_parents {
                    return false;
                }
                if self.learn_after > 0 {
                    let seen = HashSet::from([xxh3_64(seg.as_bytes())]);
                    self.parents.insert(parent.into(), Position::Counting(seen));
                    return false;
                }
            }
        }
        let parent: Box<str> = parent.into();
        self.learn(parent);
        true
    }

    /// The position after `parent` is learned: forgets the parents it makes
    /// unreachable (carrying what they learned to their templates), and
    /// folds the names it makes unreachable.
    fn learn(&mut self, parent: Box<str>) {
        let mut work = vec![parent];
        while let Some(parent) = work.pop() {
            // Each template pushed below replaces at least one parent
            // forgotten: the bound on `parents` holds.
            self.parents.insert(parent.clone(), Position::Learned);
            let mut carried = Vec::new();
            self.parents
                .retain(|key, position| match after_literal(key, &parent) {
                    Some(rest) => {
                        if matches!(position, Position::Learned) {
                            carried.push(template(&parent, rest));
                        }
                        false
                    }
                    None => true,
                });
            self.fold(&parent);
            for t in carried {
                if !matches!(self.parents.get(&t), Some(Position::Learned)) && !work.contains(&t) {
                    work.push(t);
                }
            }
        }
    }

    /// Names (and pending templates) with a literal after `parent` now go
    /// to the template with `{param}` there.
    fn fold(&mut self, parent: &str) {
        let mut moved: Vec<(Box<str>, Box<str>)> = Vec::new();
        for (name, origin) in &mut self.names {
            if *origin == Origin::Inferred
                && let Some(rest) = after_literal(name, parent)
            {
                *origin = Origin::Folding;
                moved.push((template(parent, rest), name.clone()));
            }
        }
        let retargeted: Vec<Box<str>> = self
            .pending
            .keys()
            .filter(|t| after_literal(t, parent).is_some())
            .cloned()
            .collect();
        for old in retargeted {
            if let (Some(names), Some(rest)) =
                (self.pending.remove(&old), after_literal(&old, parent))
            {
                self.pending
                    .entry(template(parent, rest))
                    .or_default()
                    .extend(names);
            }
        }
        for (t, name) in moved {
            self.pending.entry(t).or_default().push(name);
        }
    }

    /// The name in `buf`, if it has or can get a place.
    fn hand_out(&mut self) -> Classified<'_> {
        let mut folded = Vec::new();
        let taken_over = if self.pending.is_empty() {
            None
        } else {
            self.pending.remove(self.buf.as_str())
        };
        if let Some(olds) = taken_over {
            // Frees at least one place for the template.
            for old in olds {
                self.names.remove(&old);
                folded.push(String::from(old));
            }
            folded.sort_unstable();
            if !self.names.contains_key(self.buf.as_str()) {
                self.names
                    .insert(self.buf.as_str().into(), Origin::Inferred);
            }
        } else if !self.names.contains_key(self.buf.as_str()) {
            if self.names.len() >= self.max_endpoints {
                return other();
            }
            self.names
                .insert(self.buf.as_str().into(), Origin::Inferred);
        }
        Classified {
            endpoint: &self.buf,
            folded,
        }
    }
}

fn other() -> Classified<'static> {
    Classified {
        endpoint: OTHER,
        folded: Vec::new(),
    }
}

/// A difference location with array indices generalised:
/// `body:/items/3/price` → `body:/items/*/price`.
///
/// Locations are `status`, `header:NAME`, `body` or `body:POINTER` (an RFC
/// 6901 JSON pointer); in a pointer, every segment of only ASCII digits
/// becomes `*`. In a gRPC message location (`grpc[i]:/path`, see
/// [`crate::diff`]) every `[N]` (message index, occurrence of a repeated
/// field) becomes `[*]`, and segments are kept (without a schema they are
/// field numbers, not indices). Anything else is returned unchanged.
pub fn generalise_location(location: &str) -> String {
    if location.starts_with("grpc[") || location.starts_with("grpc:") {
        return generalise_brackets(location);
    }
    let Some(pointer) = location
        .strip_prefix("body:")
        .filter(|p| p.starts_with('/'))
    else {
        return location.to_owned();
    };
    let mut out = String::with_capacity(location.len());
    out.push_str("body:");
    for seg in pointer.split('/').skip(1) {
        out.push('/');
        out.push_str(if is_number(seg) { "*" } else { seg });
    }
    out
}

/// `s` with every `[DIGITS]` replaced by `[*]`.
fn generalise_brackets(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open + 1);
        out.push_str(before);
        match after.find(']') {
            Some(close) if is_number(&after[..close]) => {
                out.push('*');
                rest = &after[close..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
