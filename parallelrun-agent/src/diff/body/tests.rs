use serde_json::json;

use super::super::{
    compare as compare_responses,
    tests::{brotli, gzip, raw_deflate, response, zlib},
};
use super::*;

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
    let hash = |b: &[u8]| format!("{:016x}", xxhash_rust::xxh3::xxh3_128(b) >> 64);
    assert_eq!(
        got,
        vec![d(
            "body",
            json!(format!("<6 bytes, xxh3 {}>", hash(b"\x89PNG\xff\x00"))),
            json!(format!("<5 bytes, xxh3 {}>", hash(b"\x89PNG\xfe"))),
        )]
    );
    // The XXH3-128 of the empty string (99aa06d3014798d8 6001c324468d497f),
    // as a fixed point.
    assert_eq!(binary_summary(b""), "<0 bytes, xxh3 99aa06d3014798d8>");
}

#[test]
fn zlib_header_detection() {
    assert!(is_zlib(&zlib(b"x")));
    assert!(!is_zlib(&raw_deflate(b"x")));
    assert!(!is_zlib(b"x"));
}

mod by_digest {
    //! Bodies of which one side at least was digested while it arrived.

    use super::*;
    use crate::diff::{Comparison, digest_whole};

    /// A response whose body was digested as the parser digests it.
    fn digested(headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut r = response(200, headers, b"");
        r.digest = Some(Box::new(digest_whole(&r.headers, body, 1 << 20)));
        r
    }

    fn body_only(c: &Comparison) -> Vec<Difference> {
        c.differences
            .iter()
            .filter(|d| d.location.starts_with("body"))
            .cloned()
            .collect()
    }

    fn shown(body: &[u8]) -> Value {
        json!(format!(
            "<{} bytes, xxh3 {:016x}>",
            body.len(),
            xxhash_rust::xxh3::xxh3_128(body) >> 64
        ))
    }

    #[test]
    fn every_coding_against_identity_compares_equal() {
        let plain: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let png = [("Content-Type", "image/png")];
        for (coding, sent) in [
            ("gzip", gzip(&plain)),
            ("deflate", zlib(&plain)),
            ("deflate", raw_deflate(&plain)),
            ("br", brotli(&plain)),
        ] {
            let encoded = [("Content-Type", "image/png"), ("Content-Encoding", coding)];
            // Digested on both sides, and digested against whole, both ways.
            let pairs = [
                (digested(&encoded, &sent), digested(&png, &plain)),
                (digested(&encoded, &sent), response(200, &png, &plain)),
                (response(200, &encoded, &sent), digested(&png, &plain)),
            ];
            for (old, new) in pairs {
                let c = compare_responses(&DiffConfig::default(), &old, &new);
                assert_eq!(body_only(&c), [], "{coding}");
                assert!(c.body_by_digest, "{coding}");
                assert_eq!(
                    locations(&c),
                    ["header:content-encoding"],
                    "{coding}: only the encoding differs"
                );
            }
        }
    }

    fn locations(c: &Comparison) -> Vec<&str> {
        c.differences.iter().map(|d| d.location.as_str()).collect()
    }

    #[test]
    fn binary_body_differing_in_one_byte_shows_both_lengths_and_digests() {
        let old: Vec<u8> = (0..65_536u32).map(|i| (i * 31) as u8).collect();
        let mut new = old.clone();
        new[40_000] ^= 1;
        let h = [("Content-Type", "application/octet-stream")];
        let c = compare_responses(
            &DiffConfig::default(),
            &digested(&h, &old),
            &digested(&h, &new),
        );
        assert!(c.body_by_digest);
        assert_eq!(c.differences, [d("body", shown(&old), shown(&new))]);
        assert_ne!(shown(&old), shown(&new));
    }

    #[test]
    fn big_text_body_is_compared_by_digest_not_by_line() {
        let old = b"a line of text\n".repeat(20_000);
        let mut new = old.clone();
        new.extend_from_slice(b"one more line\n");
        let h = [("Content-Type", "text/plain")];
        let c = compare_responses(
            &DiffConfig::default(),
            &digested(&h, &old),
            &response(200, &h, &new),
        );
        assert!(c.body_by_digest);
        assert_eq!(c.differences, [d("body", shown(&old), shown(&new))]);
    }

    #[test]
    fn mixed_sides_of_equal_bodies_match() {
        let body = br#"{"big": "json that went over the limit on one side only"}"#;
        let h = [("Content-Type", "application/json")];
        let c = compare_responses(
            &DiffConfig::default(),
            &response(200, &h, body),
            &digested(&h, body),
        );
        assert!(c.is_match(), "{c:?}");
        assert!(c.body_by_digest);
    }

    #[test]
    fn undecodable_digested_side_says_why_and_shows_the_bytes_as_sent() {
        let h = [("Content-Type", "image/png"), ("Content-Encoding", "gzip")];
        let plain = [("Content-Type", "image/png")];
        let c = compare_responses(
            &DiffConfig::default(),
            &digested(&h, b"garbage"),
            &digested(&plain, b"x"),
        );
        let got = body_only(&c);
        assert_eq!(got.len(), 1);
        let old = got[0].old.as_str().unwrap();
        assert!(old.starts_with("undecodable gzip: "), "{old}");
        assert!(
            old.ends_with(&format!(
                "; as sent {}",
                shown(b"garbage").as_str().unwrap()
            )),
            "{old}"
        );
        assert_eq!(got[0].new, shown(b"x"));
    }

    #[test]
    fn whole_bodies_are_not_compared_by_digest() {
        let c = compare_responses(
            &DiffConfig::default(),
            &response(200, &[], b"a\n"),
            &response(200, &[], b"b\n"),
        );
        assert!(!c.body_by_digest);
    }

    #[test]
    fn binary_content_types() {
        for t in [
            "image/png",
            "IMAGE/JPEG; q=1",
            "video/mp4",
            "audio/ogg",
            "font/woff2",
            "application/octet-stream",
            "application/pdf",
            "application/x-protobuf",
        ] {
            assert!(binary_content_type(t.as_bytes()), "{t}");
        }
        for t in [
            "image/svg+xml",
            "text/html; charset=utf-8",
            "application/json",
            "application/problem+json",
            "application/xml",
            "application/javascript",
            "",
        ] {
            assert!(!binary_content_type(t.as_bytes()), "{t}");
        }
    }
}
