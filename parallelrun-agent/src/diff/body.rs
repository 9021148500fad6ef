//! Body comparison: Content-Encoding decoding, then JSON, text or binary
//! comparison (see the [module docs](super#bodies)).

use std::{
    borrow::Cow,
    collections::HashMap,
    fmt::Write as _,
    io::{self, Read},
};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{DiffConfig, Sink, json};
use crate::model::{Difference, Header, Response, header};

/// Reports the difference(s) between the two responses' bodies.
pub(super) fn compare(cfg: &DiffConfig, old: &Response, new: &Response, sink: &mut Sink) {
    let a = decode(&old.headers, &old.body, cfg.max_decoded_body);
    let b = decode(&new.headers, &new.body, cfg.max_decoded_body);
    let (a_bytes, b_bytes) = (
        a.as_deref().unwrap_or(&old.body[..]),
        b.as_deref().unwrap_or(&new.body[..]),
    );
    if a_bytes == b_bytes {
        return;
    }
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            let side = |decoded: Result<Cow<'_, [u8]>, DecodeError>, h: &[Header]| match decoded {
                Ok(bytes) => summary(cfg, &classify(content_type(h).as_deref(), &bytes)),
                Err(e) => cfg.bounded_str(&e.to_string()),
            };
            sink.report(|| body_difference(side(a, &old.headers), side(b, &new.headers)));
            return;
        }
    };
    match (
        classify(content_type(&old.headers).as_deref(), &a),
        classify(content_type(&new.headers).as_deref(), &b),
    ) {
        (Kind::Json(x), Kind::Json(y)) => json::compare(cfg, &x, &y, sink),
        (Kind::Text(x), Kind::Text(y)) => {
            sink.report(|| {
                let (old_v, new_v) = line_difference(&x, &y);
                body_difference(cfg.bounded_str(&old_v), cfg.bounded_str(&new_v))
            });
        }
        (x, y) => sink.report(|| body_difference(summary(cfg, &x), summary(cfg, &y))),
    }
}

fn body_difference(old: Value, new: Value) -> Difference {
    Difference {
        location: "body".to_owned(),
        old,
        new,
    }
}

/// Why a body could not be decoded.
#[derive(Debug)]
struct DecodeError {
    /// The content coding that failed, as sent (lowercased).
    coding: String,
    message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "undecodable {}: {}", self.coding, self.message)
    }
}

/// The body with every Content-Encoding undone, right to left, each step's
/// output bounded by `limit` bytes. An empty body stays empty (HEAD, 204 and
/// 304 responses carry the header without a body).
fn decode<'b>(
    headers: &[Header],
    body: &'b [u8],
    limit: usize,
) -> Result<Cow<'b, [u8]>, DecodeError> {
    let mut data = Cow::Borrowed(body);
    if body.is_empty() {
        return Ok(data);
    }
    let codings: Vec<String> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-encoding"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|c| String::from_utf8_lossy(c.trim_ascii()).to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    for coding in codings.iter().rev() {
        let decoded = match coding.as_str() {
            "gzip" | "x-gzip" => read_bounded(flate2::read::MultiGzDecoder::new(&data[..]), limit),
            "deflate" if is_zlib(&data) => {
                read_bounded(flate2::read::ZlibDecoder::new(&data[..]), limit)
            }
            "deflate" => read_bounded(flate2::read::DeflateDecoder::new(&data[..]), limit),
            "br" => read_bounded(brotli::Decompressor::new(&data[..], 4096), limit),
            _ => Err(io::Error::other("unsupported content coding")),
        };
        data = Cow::Owned(decoded.map_err(|e| DecodeError {
            coding: coding.clone(),
            message: e.to_string(),
        })?);
    }
    Ok(data)
}

/// Whether `data` starts with a zlib header (RFC 1950: deflate method, and
/// the check bits), as opposed to raw deflate, which some servers send.
fn is_zlib(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// All of `r`, or an error once it yields more than `limit` bytes.
fn read_bounded(r: impl Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(io::Error::other(format!(
            "decoded body exceeds the limit of {limit} bytes"
        )));
    }
    Ok(out)
}

/// A decoded body by how it is compared.
enum Kind<'a> {
    Json(Value),
    Text(Cow<'a, str>),
    Binary(&'a [u8]),
}

fn content_type(headers: &[Header]) -> Option<String> {
    let v = header(headers, "content-type")?;
    let essence = v.split(|&b| b == b';').next().unwrap_or_default();
    Some(String::from_utf8_lossy(essence.trim_ascii()).to_ascii_lowercase())
}

fn classify<'b>(content_type: Option<&str>, bytes: &'b [u8]) -> Kind<'b> {
    let ct = content_type.unwrap_or_default();
    let json_type = ct.ends_with("/json") || ct.ends_with("+json");
    let looks_json = matches!(bytes.trim_ascii_start().first(), Some(b'{' | b'['));
    if (json_type || looks_json)
        && let Ok(v) = serde_json::from_slice(bytes)
    {
        return Kind::Json(v);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Kind::Text(Cow::Borrowed(s)),
        Err(_) if ct.starts_with("text/") => Kind::Text(String::from_utf8_lossy(bytes)),
        Err(_) => Kind::Binary(bytes),
    }
}

/// One side of a `body` difference between bodies not compared in detail.
fn summary(cfg: &DiffConfig, kind: &Kind<'_>) -> Value {
    match kind {
        Kind::Json(v) => cfg.bounded_json(v),
        Kind::Text(s) => cfg.bounded_str(s),
        Kind::Binary(b) => Value::String(binary_summary(b)),
    }
}

/// `<N bytes, sha256 PREFIX>`, PREFIX the first 16 hex digits.
fn binary_summary(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(hex, "{b:02x}");
    }
    format!("<{} bytes, sha256 {hex}>", bytes.len())
}

/// The old and new values of a text body difference (see the
/// [module docs](super#text)).
fn line_difference(old: &str, new: &str) -> (String, String) {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in mid_a {
        *counts.entry(line).or_default() += 1;
    }
    let mut not_in_old = 0;
    for line in mid_b {
        match counts.get_mut(line) {
            Some(n) if *n > 0 => *n -= 1,
            _ => not_in_old += 1,
        }
    }
    let not_in_new: usize = counts.values().sum();

    let (x, y) = (a.get(prefix).copied(), b.get(prefix).copied());
    let (mut shown_x, mut shown_y) = (shown_line(x), shown_line(y));
    if shown_x == shown_y {
        // The lines differ only in their terminator.
        for (shown, line) in [(&mut shown_x, x), (&mut shown_y, y)] {
            if line.is_some_and(|l| !l.ends_with('\n')) {
                shown.push_str(" (no newline at end)");
            }
        }
    }
    let line_no = prefix + 1;
    // The first differing line, and for multi-line bodies how many lines
    // the other side lacks.
    let show = |shown: String, lines: usize, missing: usize, other: &str| {
        if lines > 1 {
            format!("line {line_no}: {shown} ({missing} of {lines} lines not in {other})")
        } else {
            format!("line {line_no}: {shown}")
        }
    };
    (
        show(shown_x, a.len(), not_in_new, "new"),
        show(shown_y, b.len(), not_in_old, "old"),
    )
}

fn shown_line(line: Option<&str>) -> String {
    match line {
        Some(l) => l.strip_suffix('\n').unwrap_or(l).to_owned(),
        None => "<end of body>".to_owned(),
    }
}

#[cfg(test)]
mod tests;
