//! Making captured values safe and small enough to show: secret query
//! values redacted, long strings cut. Shared by everything that prints or
//! keeps parts of captured requests: the mismatch log, lost-request logs
//! and the per-endpoint summary's examples.

use serde_json::Value;

/// Query parameter name fragments that mark a value as secret: a parameter
/// whose name (percent-decoded, ASCII-lowercased) contains any of these has
/// its value redacted.
pub const SECRET_QUERY_WORDS: [&str; 8] = [
    "token",
    "password",
    "passwd",
    "secret",
    "key",
    "auth",
    "session",
    "signature",
];
/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Cuts every string in `v` (at any depth) as [`cut_string`] does.
pub(crate) fn cut_value(v: &mut Value, max: usize) {
    match v {
        Value::String(s) => cut_string(s, max),
        Value::Array(items) => items.iter_mut().for_each(|i| cut_value(i, max)),
        Value::Object(map) => map.values_mut().for_each(|i| cut_value(i, max)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Cuts `s` to at most `max` bytes at a char boundary and appends
/// `…(+N bytes)` when it was longer.
pub(crate) fn cut_string(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let cut = s.len() - end;
    s.truncate(end);
    s.push_str(&format!("…(+{cut} bytes)"));
}

/// The target with secret query values redacted, or `None` if unchanged.
pub fn redact_query(target: &str) -> Option<String> {
    let (path, rest) = target.split_once('?')?;
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let mut changed = false;
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, value))
                if !value.is_empty() && value != REDACTED && is_secret_name(name) =>
            {
                changed = true;
                format!("{name}={REDACTED}")
            }
            _ => param.to_owned(),
        })
        .collect();
    if !changed {
        return None;
    }
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

fn is_secret_name(name: &str) -> bool {
    let decoded = percent_decode(name).to_ascii_lowercase();
    SECRET_QUERY_WORDS.iter().any(|w| decoded.contains(w))
}

/// `%XX` and `+` decoding, lossy: only used to recognise names.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
