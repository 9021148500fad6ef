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
mod tests {
    use std::io::Write;

    use serde_json::json;

    use super::super::{compare as compare_responses, tests::response};
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    fn body_diffs(
        cfg: &DiffConfig,
        old: (&[(&str, &str)], &[u8]),
        new: (&[(&str, &str)], &[u8]),
    ) -> Vec<Difference> {
        compare_responses(
            cfg,
            &response(200, old.0, old.1),
            &response(200, new.0, new.1),
        )
        .differences
        .into_iter()
        .filter(|d| d.location.starts_with("body"))
        .collect()
    }

    fn d(location: &str, old: Value, new: Value) -> Difference {
        Difference {
            location: location.into(),
            old,
            new,
        }
    }

    const JSON: &[u8] = br#"{"user": {"id": 7, "name": "Ann"}}"#;

    #[test]
    fn gzip_vs_identity_of_the_same_body_is_only_a_header_difference() {
        let c = compare_responses(
            &DiffConfig::default(),
            &response(200, &[("Content-Encoding", "gzip")], &gzip(JSON)),
            &response(200, &[], JSON),
        );
        assert_eq!(
            c.differences,
            vec![d("header:content-encoding", json!("gzip"), Value::Null)]
        );
    }

    #[test]
    fn every_coding_decodes() {
        let cfg = DiffConfig::default();
        let plain: (&[(&str, &str)], &[u8]) = (&[], JSON);
        for (coding, body) in [
            ("gzip", gzip(JSON)),
            ("x-gzip", gzip(JSON)),
            ("deflate", zlib(JSON)),
            ("deflate", raw_deflate(JSON)),
            ("br", brotli(JSON)),
            ("identity", JSON.to_vec()),
            ("gzip, br", brotli(&gzip(JSON))),
            ("GZIP , identity", gzip(JSON)),
        ] {
            let encoded: (&[(&str, &str)], &[u8]) = (&[("Content-Encoding", coding)], &body);
            assert!(body_diffs(&cfg, encoded, plain).is_empty(), "{coding}");
        }
        // Several Content-Encoding fields form one list.
        let two = brotli(&gzip(JSON));
        let fields: (&[(&str, &str)], &[u8]) = (
            &[("Content-Encoding", "gzip"), ("Content-Encoding", "br")],
            &two,
        );
        assert!(body_diffs(&cfg, fields, plain).is_empty());
    }

    #[test]
    fn decoded_bodies_are_compared() {
        let changed = br#"{"user": {"id": 8, "name": "Ann"}}"#;
        assert_eq!(
            body_diffs(
                &DiffConfig::default(),
                (&[("Content-Encoding", "br")], &brotli(JSON)),
                (&[("Content-Encoding", "gzip")], &gzip(changed)),
            ),
            vec![d("body:/user/id", json!(7), json!(8))]
        );
    }

    #[test]
    fn decompression_bombs_are_undecodable() {
        let cfg = DiffConfig {
            max_decoded_body: 1 << 20,
            ..DiffConfig::default()
        };
        let bomb = gzip(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 << 10);
        let got = body_diffs(&cfg, (&[("Content-Encoding", "gzip")], &bomb), (&[], b"ok"));
        assert_eq!(
            got,
            vec![d(
                "body",
                json!("undecodable gzip: decoded body exceeds the limit of 1048576 bytes"),
                json!("ok")
            )]
        );
        // The same bomb on both sides: equal raw bytes, no difference.
        let both = (&[("Content-Encoding", "gzip")][..], &bomb[..]);
        assert!(body_diffs(&cfg, both, both).is_empty());
        // Exactly at the limit is fine.
        let at = gzip(&vec![1u8; 1 << 20]);
        let at_limit = (&[("Content-Encoding", "gzip")][..], &at[..]);
        let other = vec![1u8; 1 << 20];
        assert!(body_diffs(&cfg, at_limit, (&[], &other)).is_empty());
    }

    #[test]
    fn undecodable_side_is_named_with_its_coding() {
        let got = body_diffs(
            &DiffConfig::default(),
            (&[], b"hello"),
            (&[("Content-Encoding", "gzip")], b"not gzip at all"),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].old, json!("hello"));
        let new = got[0].new.as_str().unwrap_or_default();
        assert!(new.starts_with("undecodable gzip: "), "{new}");

        let got = body_diffs(
            &DiffConfig::default(),
            (&[("Content-Encoding", "zstd")], b"\x28\xb5\x2f\xfd"),
            (&[], b"x"),
        );
        assert_eq!(
            got,
            vec![d(
                "body",
                json!("undecodable zstd: unsupported content coding"),
                json!("x")
            )]
        );
    }

    #[test]
    fn empty_body_with_a_coding_is_empty() {
        let cfg = DiffConfig::default();
        let head = (&[("Content-Encoding", "gzip")][..], &b""[..]);
        assert!(body_diffs(&cfg, head, (&[], b"")).is_empty());
    }

    #[test]
    fn json_against_non_json_is_one_body_difference() {
        assert_eq!(
            body_diffs(
                &DiffConfig::default(),
                (&[("Content-Type", "application/json")], br#"{"a": 1}"#),
                (&[("Content-Type", "text/html")], b"<h1>Error</h1>"),
            ),
            vec![d("body", json!({"a": 1}), json!("<h1>Error</h1>"))]
        );
    }

    #[test]
    fn json_is_detected_by_type_or_by_sniffing() {
        let cfg = DiffConfig::default();
        // `+json` type with a scalar body.
        assert_eq!(
            body_diffs(
                &cfg,
                (&[("Content-Type", "application/problem+json")], b"1"),
                (
                    &[("Content-Type", "application/problem+json; charset=utf-8")],
                    b"2"
                ),
            ),
            vec![d("body", json!(1), json!(2))]
        );
        // No type: sniffed, so key order is no difference.
        assert!(
            body_diffs(
                &cfg,
                (&[], b" {\"a\":1,\"b\":2}"),
                (&[], b"{\"b\":2,\"a\":1}")
            )
            .is_empty()
        );
        // Looks like JSON but does not parse: compared as text.
        let got = body_diffs(&cfg, (&[], b"{oops"), (&[], b"{oops!"));
        assert_eq!(got[0].location, "body");
        assert!(
            got[0]
                .old
                .as_str()
                .unwrap_or_default()
                .contains("line 1: {oops")
        );
    }

    #[test]
    fn text_reports_first_differing_line_and_counts() {
        let old = "a\nb\nc\nd\ne\n";
        let new = "a\nb\nX\nd\nY\ne\n";
        let got = body_diffs(
            &DiffConfig::default(),
            (&[], old.as_bytes()),
            (&[], new.as_bytes()),
        );
        assert_eq!(
            got,
            vec![d(
                "body",
                json!("line 3: c (1 of 5 lines not in new)"),
                json!("line 3: X (2 of 6 lines not in old)")
            )]
        );
    }

    #[test]
    fn text_line_difference_edge_cases() {
        assert_eq!(
            line_difference("a\nb\n", "a\nb\nc\n"),
            (
                "line 3: <end of body> (0 of 2 lines not in new)".to_owned(),
                "line 3: c (1 of 3 lines not in old)".to_owned()
            )
        );
        assert_eq!(
            line_difference("a\n", "a"),
            (
                "line 1: a".to_owned(),
                "line 1: a (no newline at end)".to_owned()
            )
        );
        // Moved lines: found, but not counted.
        assert_eq!(
            line_difference("x\ny\n", "y\nx\n"),
            (
                "line 1: x (0 of 2 lines not in new)".to_owned(),
                "line 1: y (0 of 2 lines not in old)".to_owned()
            )
        );
        assert_eq!(
            line_difference("", "z"),
            ("line 1: <end of body>".to_owned(), "line 1: z".to_owned())
        );
    }

    #[test]
    fn text_type_with_invalid_utf8_is_text() {
        let got = body_diffs(
            &DiffConfig::default(),
            (
                &[("Content-Type", "text/plain; charset=latin1")],
                b"caf\xe9\n",
            ),
            (&[("Content-Type", "text/plain; charset=latin1")], b"cafe\n"),
        );
        assert_eq!(
            got,
            vec![d(
                "body",
                json!("line 1: caf\u{fffd}"),
                json!("line 1: cafe")
            )]
        );
    }

    #[test]
    fn long_text_values_are_truncated() {
        let cfg = DiffConfig {
            max_value_len: 40,
            ..DiffConfig::default()
        };
        let long = "z".repeat(100);
        let got = body_diffs(&cfg, (&[], long.as_bytes()), (&[], b"short"));
        let old = got[0].old.as_str().unwrap_or_default();
        assert_eq!(old, format!("line 1: {}…(+68 bytes)", "z".repeat(32)));
    }

    #[test]
    fn binary_bodies_are_summarised_by_size_and_hash() {
        let got = body_diffs(
            &DiffConfig::default(),
            (&[("Content-Type", "image/png")], b"\x89PNG\xff\x00"),
            (&[("Content-Type", "image/png")], b"\x89PNG\xfe"),
        );
        let hash = |b: &[u8]| {
            let d = Sha256::digest(b);
            d[..8]
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
        };
        assert_eq!(
            got,
            vec![d(
                "body",
                json!(format!("<6 bytes, sha256 {}>", hash(b"\x89PNG\xff\x00"))),
                json!(format!("<5 bytes, sha256 {}>", hash(b"\x89PNG\xfe"))),
            )]
        );
        // The known digest of the empty string, as a fixed point.
        assert_eq!(binary_summary(b""), "<0 bytes, sha256 e3b0c44298fc1c14>");
    }

    #[test]
    fn zlib_header_detection() {
        assert!(is_zlib(&zlib(b"x")));
        assert!(!is_zlib(&raw_deflate(b"x")));
        assert!(!is_zlib(b"x"));
    }
}
