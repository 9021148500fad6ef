use serde_json::json;

use super::super::{compare as compare_responses, tests::response};
use super::*;

fn diff(cfg: &DiffConfig, old: &[(&str, &str)], new: &[(&str, &str)]) -> Vec<Difference> {
    compare_responses(cfg, &response(200, old, b""), &response(200, new, b"")).differences
}

fn d(location: &str, old: Value, new: Value) -> Difference {
    Difference {
        location: location.into(),
        old,
        new,
    }
}

#[test]
fn added_removed_and_changed_headers() {
    let cfg = DiffConfig::default();
    let got = diff(
        &cfg,
        &[("X-Gone", "1"), ("X-Same", "s"), ("X-Changed", "a")],
        &[("X-Same", "s"), ("X-Changed", "b"), ("X-New", "2")],
    );
    assert_eq!(
        got,
        vec![
            d("header:x-changed", json!("a"), json!("b")),
            d("header:x-gone", json!("1"), Value::Null),
            d("header:x-new", Value::Null, json!("2")),
        ]
    );
}

#[test]
fn names_are_case_insensitive() {
    let cfg = DiffConfig::default();
    assert!(diff(&cfg, &[("Content-Type", "a/b")], &[("content-type", "a/b")]).is_empty());
    assert_eq!(
        diff(&cfg, &[("CONTENT-TYPE", "a/b")], &[("content-Type", "a/c")]),
        vec![d("header:content-type", json!("a/b"), json!("a/c"))]
    );
}

#[test]
fn repeated_headers_compare_as_the_joined_list() {
    let cfg = DiffConfig::default();
    assert!(
        diff(
            &cfg,
            &[("Vary", "a"), ("vary", "b")],
            &[("Vary", "a"), ("Vary", "b")]
        )
        .is_empty()
    );
    assert_eq!(
        diff(&cfg, &[("Vary", "a"), ("Vary", "b")], &[("Vary", "a")]),
        vec![d("header:vary", json!("a, b"), json!("a"))]
    );
}

#[test]
fn default_ignores_per_response_and_framing_headers() {
    let cfg = DiffConfig::default();
    let old = [
        ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("X-Request-Id", "aaa"),
        ("X-B3-TraceId", "1"),
        ("Content-Length", "10"),
        ("Connection", "keep-alive"),
        ("ETag", "\"x\""),
    ];
    let new = [
        ("Date", "Tue, 02 Jan 2024 00:00:00 GMT"),
        ("x-request-id", "bbb"),
        ("x-b3-spanid", "2"),
        ("Transfer-Encoding", "chunked"),
    ];
    assert!(diff(&cfg, &old, &new).is_empty());

    let none = DiffConfig {
        ignore_headers: HeaderPatterns::default(),
        ..DiffConfig::default()
    };
    assert_eq!(diff(&none, &old, &new).len(), 8);
}

#[test]
fn set_cookie_compares_cookie_names_only() {
    let cfg = DiffConfig::default();
    assert!(
        diff(
            &cfg,
            &[("Set-Cookie", "sid=abc; Path=/"), ("Set-Cookie", "csrf=1")],
            &[
                ("Set-Cookie", "csrf=2; Secure"),
                ("Set-Cookie", "sid=xyz; Path=/")
            ],
        )
        .is_empty()
    );
    assert_eq!(
        diff(
            &cfg,
            &[("Set-Cookie", "sid=abc"), ("Set-Cookie", "csrf=1")],
            &[("Set-Cookie", "sid=xyz")],
        ),
        vec![d("header:set-cookie", json!("csrf, sid"), json!("sid"))]
    );
}

#[test]
fn ignored_set_cookie_is_skipped() {
    let cfg = DiffConfig::default().with_ignored_headers(["set-cookie"]);
    assert!(diff(&cfg, &[("Set-Cookie", "a=1")], &[]).is_empty());
}

#[test]
fn header_values_are_truncated() {
    let cfg = DiffConfig {
        max_value_len: 4,
        ..DiffConfig::default()
    };
    assert_eq!(
        diff(&cfg, &[("X-Long", "abcdefgh")], &[]),
        vec![d("header:x-long", json!("abcd…(+4 bytes)"), Value::Null)]
    );
}

#[test]
fn patterns_match_names_of_their_length_and_globs() {
    let set: HeaderPatterns = ["Date", "etag", "x-b3-*", "via", "*-Id", "a?c"]
        .iter()
        .collect();
    for (name, ignored) in [
        ("date", true),
        ("DATE", true),
        ("dates", false),
        ("dat", false),
        ("ETag", true),
        ("via", true),
        ("vib", false),
        ("X-B3-TraceId", true),
        ("x-b3", false),
        ("X-Request-Id", true),
        ("abc", true),
        ("ac", false),
        ("", false),
    ] {
        assert_eq!(set.matches(name), ignored, "{name}");
    }
    assert!(!HeaderPatterns::default().matches("date"));
}

#[test]
fn cookie_names() {
    assert_eq!(cookie_name(b" sid = 1; Path=/"), b"sid");
    assert_eq!(cookie_name(b"flag; Secure"), b"flag");
    assert_eq!(cookie_name(b""), b"");
}

/// Header lists drawn from a few names (in two spellings, one of them
/// ignored by default) and values, so that equal, reordered, repeated and
/// different lists all come up.
fn header_list() -> impl proptest::strategy::Strategy<Value = Vec<Header>> {
    use proptest::prelude::*;
    let name = prop::sample::select(vec!["A", "a", "B", "b", "Date", "set-cookie"]);
    let value = prop::sample::select(vec!["1", "2", "s=1", "s=2"]);
    prop::collection::vec((name, value), 0..5)
        .prop_map(|fields| fields.into_iter().map(|(n, v)| Header::new(n, v)).collect())
}

proptest::proptest! {
    /// The in-order shortcut only ever says "equal" where the comparison
    /// by name finds nothing either: it never hides a difference.
    #[test]
    fn the_in_order_shortcut_agrees_with_the_comparison_by_name(
        old in header_list(),
        new in header_list(),
    ) {
        let cfg = DiffConfig::default();
        if same_in_order(&cfg, &[], &old, &new) {
            proptest::prop_assert_eq!(by_name(&cfg, &[], &old), by_name(&cfg, &[], &new));
        }
        let mut sink = Sink::new(cfg.max_differences);
        compare(&cfg, &[], &old, &new, &mut sink);
        let by_name_equal = by_name(&cfg, &[], &old) == by_name(&cfg, &[], &new);
        proptest::prop_assert_eq!(sink.finish().differences.is_empty(), by_name_equal);
    }
}

proptest::proptest! {
    /// The length-sorted look-up says what globbing every pattern in turn
    /// (the simple model) says.
    #[test]
    fn patterns_agree_with_globbing_each(
        patterns in proptest::collection::vec("[abAB*?-]{0,4}", 0..6),
        name in "[abAB-]{0,5}",
    ) {
        let set: HeaderPatterns = patterns.iter().collect();
        let model = patterns
            .iter()
            .any(|p| crate::glob::glob_ignore_ascii_case(p, &name));
        proptest::prop_assert_eq!(set.matches(&name), model);
    }
}
