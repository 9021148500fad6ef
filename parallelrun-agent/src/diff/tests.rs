use std::io::Write as _;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::model::Header;

/// `data` in each content coding the diff decodes, for the tests of
/// `body` and `digest`.
pub(super) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(super) fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(super) fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(super) fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

pub(super) fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Response {
        version: 1,
        status,
        reason: String::new(),
        headers: headers
            .iter()
            .map(|(n, v)| Header::new(*n, v.to_string()))
            .collect(),
        body: Bytes::copy_from_slice(body),
        digest: None,
        trailers: Vec::new(),
    }
}

fn locations(c: &Comparison) -> Vec<&str> {
    c.differences.iter().map(|d| d.location.as_str()).collect()
}

#[test]
fn identical_responses_match() {
    let r = response(200, &[("Content-Type", "text/plain")], b"hello\n");
    let c = compare(&DiffConfig::default(), &r, &r.clone());
    assert!(c.is_match());
    assert_eq!(c, Comparison::default());
}

#[test]
fn status_difference_is_numbers() {
    let c = compare(
        &DiffConfig::default(),
        &response(200, &[], b""),
        &response(500, &[], b""),
    );
    assert_eq!(
        c.differences,
        vec![Difference {
            location: "status".into(),
            old: json!(200),
            new: json!(500),
        }]
    );
    assert!(!c.is_match());
}

#[test]
fn differences_come_in_order_status_headers_body() {
    let c = compare(
        &DiffConfig::default(),
        &response(200, &[("X-A", "1")], b"a"),
        &response(404, &[("X-A", "2")], b"b"),
    );
    assert_eq!(locations(&c), ["status", "header:x-a", "body"]);
}

#[test]
fn differences_are_capped_and_counted() {
    let cfg = DiffConfig {
        max_differences: 3,
        ..DiffConfig::default()
    };
    let names: Vec<String> = (0..10).map(|i| format!("x-h{i}")).collect();
    let with = |value: &'static str| {
        let hs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value)).collect();
        response(200, &hs, b"")
    };
    let c = compare(&cfg, &with("a"), &with("b"));
    assert_eq!(c.differences.len(), 3);
    assert_eq!(c.omitted, 7);
    assert!(!c.is_match());

    let none = DiffConfig {
        max_differences: 0,
        ..DiffConfig::default()
    };
    let c = compare(&none, &response(200, &[], b""), &response(201, &[], b""));
    assert!(c.differences.is_empty());
    assert_eq!(c.omitted, 1);
    assert!(!c.is_match(), "omitted differences are still differences");
}

#[test]
fn cut_keeps_char_boundary_and_says_how_much() {
    assert_eq!(cut("short", 10), "short");
    assert_eq!(cut("abcdef", 4), "abcd…(+2 bytes)");
    // 'é' is two bytes: cutting at 2 would split it.
    assert_eq!(cut("aéz", 2), "a…(+3 bytes)");
    assert_eq!(cut("abc", 0), "…(+3 bytes)");
}

#[test]
fn bounded_json_cuts_long_composites_to_their_text() {
    let cfg = DiffConfig {
        max_value_len: 10,
        ..DiffConfig::default()
    };
    let small = json!([1, 2]);
    assert_eq!(cfg.bounded_json(&small), small);
    let big = json!({"key": "a long value here"});
    let text = serde_json::to_string(&big).expect("serialisable");
    assert_eq!(
        cfg.bounded_json(&big),
        Value::String(format!("{}…(+{} bytes)", &text[..10], text.len() - 10))
    );
    assert_eq!(
        cfg.bounded_json(&json!(12_345_678_901_234_u64)),
        json!(12_345_678_901_234_u64)
    );
}

#[test]
fn header_helpers_extend_the_defaults() {
    let cfg = DiffConfig::default().with_ignored_headers(["X-Debug-*"]);
    assert!(cfg.ignores_header("date"));
    assert!(cfg.ignores_header("X-B3-TraceId"));
    assert!(cfg.ignores_header("x-debug-token"));
    assert!(!cfg.ignores_header("content-type"));
    let p: PointerPattern = "/a".parse().expect("valid pattern");
    let cfg = cfg.with_ignored_pointers([p.clone()]);
    assert_eq!(cfg.ignore_pointers, vec![p]);
}
