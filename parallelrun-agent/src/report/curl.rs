//! Copy as curl: a kept [`Example`] request as a shell command line that
//! sends it again, to the new service (or any other base URL).
//!
//! The command is for a POSIX shell: every value taken from the request
//! (method, URL, headers, body) is single-quoted, an embedded `'` written as
//! `'\''`, so nothing in it is expanded (`$(…)`, backquotes, `!`, globs) and
//! newlines stay inside their argument. Flags are fixed strings.
//!
//! What curl would otherwise change is taken care of:
//!
//! - the request target is appended to the base as sent (`--path-as-is`
//!   when it holds dot segments curl would squash, `-g` when it holds
//!   `[]{}` curl would glob, as the `[redacted]` of a redacted query
//!   does); an absolute-form target (`http://host/p`) keeps its path, any
//!   other form (`*`, `host:port`) is sent with `--request-target`;
//! - framing and hop-by-hop headers are dropped (`Content-Length`,
//!   `Transfer-Encoding`, `Connection` and the headers it names,
//!   `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`,
//!   `Expect`): curl frames the body itself; `Host` is kept as a `-H`, so
//!   the service sees the original host;
//! - curl's own `Accept`, `User-Agent` and (with a body) `Content-Type` are
//!   suppressed (`-H 'Accept:'`) when the request had none; a header with an
//!   empty value is sent as `-H 'name;'` (curl's spelling for it); a body
//!   starting with `@` goes in `--data-raw` (not read as a file name);
//!   `--compressed` when the request accepted an encoding, so the response
//!   prints readably;
//! - `HEAD` is `--head` (curl would wait for a body after `-X HEAD`);
//! - an HTTP/2 request (its pseudo-headers `:authority`, `:scheme` among
//!   the headers) is sent with `--http2-prior-knowledge`, its `:authority`
//!   as `Host` (curl makes it `:authority` again); pseudo-headers are
//!   never `-H` (they are not tokens).
//!
//! Values redacted in the summary stay `[redacted]`: the command shows
//! where a secret goes, never the secret. A body not kept whole
//! ([`Example::body_omitted`]) is said in a trailing shell comment.

use crate::summary::Example;

/// Headers curl must not be given: it frames the request itself, and
/// hop-by-hop headers belong to the original connection.
const DROPPED: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// One argument: a fixed flag (printed bare) or a value from the request
/// (always quoted).
enum Arg {
    Flag(&'static str),
    Value(String),
}

/// The command line (`curl -sS -X GET 'http://…' -H '…' …`) that sends
/// `example` to `base` (`http://10.0.0.2:8080`; a trailing `/` is ignored).
pub fn curl(example: &Example, base: &str) -> String {
    let mut line = String::from("curl");
    for arg in build(example, base) {
        line.push(' ');
        match arg {
            Arg::Flag(f) => line.push_str(f),
            Arg::Value(v) => line.push_str(&quote(&v)),
        }
    }
    let mut notes = Vec::new();
    if example.body_omitted > 0 {
        notes.push(format!(
            "{} body bytes were not kept: the body sent is incomplete",
            example.body_omitted
        ));
    }
    if example.body.contains('\0') {
        notes.push("NUL bytes of the body were dropped".to_owned());
    }
    if !notes.is_empty() {
        line.push_str(" # ");
        line.push_str(&notes.join("; "));
    }
    line
}

/// The arguments after `curl`, unquoted (what the shell hands curl).
pub fn args(example: &Example, base: &str) -> Vec<String> {
    build(example, base)
        .into_iter()
        .map(|a| match a {
            Arg::Flag(f) => f.to_owned(),
            Arg::Value(v) => v,
        })
        .collect()
}

fn build(example: &Example, base: &str) -> Vec<Arg> {
    use Arg::{Flag, Value};
    let mut a = vec![Flag("-sS")];
    let (url, request_target) = url(base, &example.target);
    if url.contains(['[', ']', '{', '}']) {
        a.push(Flag("-g"));
    }
    if has_dot_segment(&url) {
        a.push(Flag("--path-as-is"));
    }
    if example.method.eq_ignore_ascii_case("HEAD") {
        a.push(Flag("--head"));
    } else {
        a.push(Flag("-X"));
        a.push(Value(example.method.clone()));
    }
    a.push(Value(url));
    if let Some(t) = request_target {
        a.push(Flag("--request-target"));
        a.push(Value(t));
    }

    let nominated = nominated_by_connection(&example.headers);
    let has = |name: &str| {
        example
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    // An HTTP/2 request: sent over h2c, its `:authority` as the Host curl
    // turns into `:authority` again; the other pseudo-headers are curl's.
    if has(":authority") || has(":scheme") {
        a.push(Flag("--http2-prior-knowledge"));
    }
    let authority = example
        .headers
        .iter()
        .find(|(n, _)| n == ":authority")
        .filter(|_| !has("host"));
    if let Some((_, value)) = authority {
        a.push(Flag("-H"));
        a.push(Value(format!(
            "Host: {}",
            value.replace(['\r', '\n'], " ").trim()
        )));
    }
    for (name, value) in &example.headers {
        let lower = name.to_ascii_lowercase();
        if !is_token(name) || DROPPED.contains(&lower.as_str()) || nominated.contains(&lower) {
            continue;
        }
        // A header value is one line; a parsed request cannot hold CR or LF
        // in one, and curl would send them as further header lines.
        let value = value.replace(['\r', '\n'], " ");
        a.push(Flag("-H"));
        if value.trim().is_empty() {
            a.push(Value(format!("{name};")));
        } else {
            a.push(Value(format!("{name}: {}", value.trim())));
        }
    }
    if has("accept-encoding") {
        a.push(Flag("--compressed"));
    }
    for own in ["Accept", "User-Agent"] {
        if !has(own) {
            a.push(Flag("-H"));
            a.push(Value(format!("{own}:")));
        }
    }
    let body = example.body.replace('\0', "");
    if !body.is_empty() || example.body_omitted > 0 {
        if !has("content-type") {
            a.push(Flag("-H"));
            a.push(Value("Content-Type:".to_owned()));
        }
        a.push(Flag(if body.starts_with('@') {
            "--data-raw"
        } else {
            "--data-binary"
        }));
        a.push(Value(body));
    }
    a
}

/// `s` as one POSIX shell word: single-quoted, each `'` as `'\''`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The URL for `target` under `base`, and the request target to send
/// instead when it is not a path (`*`, authority form).
fn url(base: &str, target: &str) -> (String, Option<String>) {
    let base = base.trim_end_matches('/');
    if target.starts_with('/') {
        return (format!("{base}{target}"), None);
    }
    if let Some((scheme, rest)) = target.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        return (format!("{base}{path}"), None);
    }
    (format!("{base}/"), Some(target.to_owned()))
}

/// Whether the path has a `.` or `..` segment (curl would remove them).
fn has_dot_segment(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme
        .find('/')
        .map_or("", |i| &after_scheme[i..])
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    path.split('/').any(|seg| seg == "." || seg == "..")
}

/// Header names (lowercase) listed in `Connection`: hop-by-hop too.
fn nominated_by_connection(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// An HTTP token (RFC 9110 `tchar`s), as header names are.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests;
