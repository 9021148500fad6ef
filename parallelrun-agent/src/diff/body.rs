//! Body comparison: Content-Encoding decoding, then JSON, text or binary
//! comparison (see the [module docs](super#bodies)); bodies that one side
//! digested while they arrived are compared by digest
//! ([`super::digest`]).

use std::{
    borrow::Cow,
    collections::HashMap,
    io::{self, Read},
};

use serde_json::Value;

use super::{DiffConfig, Sink, digest, json};
use crate::model::{BodyDigest, Difference, Header, Response, header};

/// Content types whose bodies are compared by length and hash only: never
/// JSON or text, whatever their bytes look like. `application/grpc` is not
/// among them: gRPC bodies are kept whole (up to the size kept whole) and
/// compared message by message (see [`super::grpc`]).
const BINARY_TYPES: &[&str] = &[
    "application/octet-stream",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/vnd.rar",
    "application/x-rar-compressed",
    "application/zstd",
    "application/wasm",
    "application/protobuf",
    "application/x-protobuf",
    "application/x-google-protobuf",
    "application/msgpack",
    "application/x-msgpack",
    "application/cbor",
    "application/java-archive",
    "application/vnd.android.package-archive",
    "application/vnd.ms-fontobject",
];

/// Whether a `Content-Type` value names a binary type: `image/*` (but SVG),
/// `audio/*`, `video/*`, `font/*`, or an archive, document or serialisation
/// format of [`BINARY_TYPES`]. Parameters and case are ignored.
pub fn binary_content_type(value: &[u8]) -> bool {
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    let essence = String::from_utf8_lossy(essence.trim_ascii()).to_ascii_lowercase();
    is_binary_essence(&essence)
}

fn is_binary_essence(ct: &str) -> bool {
    let (kind, sub) = ct.split_once('/').unwrap_or((ct, ""));
    match kind {
        "image" => !sub.ends_with("+xml"),
        "audio" | "video" | "font" => true,
        _ => BINARY_TYPES.contains(&ct),
    }
}

/// Reports the difference(s) between the two responses' bodies; true when
/// they were compared by digest.
pub(super) fn compare(cfg: &DiffConfig, old: &Response, new: &Response, sink: &mut Sink) -> bool {
    if old.digest.is_some() || new.digest.is_some() {
        compare_digests(cfg, old, new, sink);
        return true;
    }
    let a = decode(&old.headers, &old.body, cfg.max_decoded_body);
    let b = decode(&new.headers, &new.body, cfg.max_decoded_body);
    let (a_bytes, b_bytes) = (
        a.as_deref().unwrap_or(&old.body[..]),
        b.as_deref().unwrap_or(&new.body[..]),
    );
    if a_bytes == b_bytes {
        return false;
    }
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            let side = |decoded: Result<Cow<'_, [u8]>, DecodeError>, h: &[Header]| match decoded {
                Ok(bytes) => summary(cfg, &classify(content_type(h).as_deref(), &bytes)),
                Err(e) => cfg.bounded_str(&e.to_string()),
            };
            sink.report(|| body_difference(side(a, &old.headers), side(b, &new.headers)));
            return false;
        }
    };
    match (
        classify(content_type(&old.headers).as_deref(), &a),
        classify(content_type(&new.headers).as_deref(), &b),
    ) {
        (Kind::Json(x), Kind::Json(y)) => json::compare(cfg, "body", &x, &y, sink),
        (Kind::Text(x), Kind::Text(y)) => {
            sink.report(|| {
                let (old_v, new_v) = line_difference(&x, &y);
                body_difference(cfg.bounded_str(&old_v), cfg.bounded_str(&new_v))
            });
        }
        (x, y) => sink.report(|| body_difference(summary(cfg, &x), summary(cfg, &y))),
    }
    false
}

/// Compares bodies of which one at least was digested: the other is
/// digested the same way now, so that identity and an encoded form of the
/// same bytes still compare equal.
pub(super) fn compare_digests(cfg: &DiffConfig, old: &Response, new: &Response, sink: &mut Sink) {
    let (a, b) = (digest_of(cfg, old), digest_of(cfg, new));
    if a.same_content(&b) {
        return;
    }
    sink.report(|| body_difference(digest_value(cfg, &a), digest_value(cfg, &b)));
}

/// The response's digest: as made while it arrived, or of its whole body.
fn digest_of<'r>(cfg: &DiffConfig, r: &'r Response) -> Cow<'r, BodyDigest> {
    match &r.digest {
        Some(d) => Cow::Borrowed(d),
        None => Cow::Owned(digest::digest_whole(
            &r.headers,
            &r.body,
            cfg.max_decoded_body,
        )),
    }
}

/// One side of a `body` difference compared by digest:
/// `<N bytes, xxh3 PREFIX>`, or why it could not be decoded and the digest
/// of its bytes as sent.
fn digest_value(cfg: &DiffConfig, d: &BodyDigest) -> Value {
    let summary = digest::summary(d.len, d.xxh3);
    match &d.undecodable {
        None => Value::String(summary),
        Some(why) => cfg.bounded_str(&format!("{why}; as sent {summary}")),
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
    let codings = digest::content_codings(headers);
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
    if is_binary_essence(ct) {
        return Kind::Binary(bytes);
    }
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

/// `<N bytes, xxh3 PREFIX>`, as [`digest::summary`] shows a digested body.
pub(super) fn binary_summary(bytes: &[u8]) -> String {
    digest::summary(bytes.len() as u64, xxhash_rust::xxh3::xxh3_128(bytes))
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
