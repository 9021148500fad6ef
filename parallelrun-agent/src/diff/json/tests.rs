use serde_json::json;

use super::*;

fn pattern(s: &str) -> PointerPattern {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn diff_with(cfg: &DiffConfig, old: Value, new: Value) -> Vec<Difference> {
    let mut sink = Sink::new(cfg.max_differences);
    compare(cfg, "body", &old, &new, &mut sink);
    sink.finish().differences
}

fn diff(old: Value, new: Value) -> Vec<Difference> {
    diff_with(&DiffConfig::default(), old, new)
}

fn d(location: &str, old: Value, new: Value) -> Difference {
    Difference {
        location: location.into(),
        old,
        new,
    }
}

#[test]
fn pattern_parsing() {
    assert_eq!(
        "a/b".parse::<PointerPattern>(),
        Err(PointerPatternError::NoLeadingSlash("a/b".into()))
    );
    assert_eq!(
        "/a~2".parse::<PointerPattern>(),
        Err(PointerPatternError::BadEscape("/a~2".into()))
    );
    assert_eq!(
        "/a/~".parse::<PointerPattern>(),
        Err(PointerPatternError::BadEscape("/a/~".into()))
    );
    assert_eq!(
        "/**/a".parse::<PointerPattern>(),
        Err(PointerPatternError::RestNotLast("/**/a".into()))
    );
    assert_eq!(pattern("/items/*/id").to_string(), "/items/*/id");
}

#[test]
fn pattern_matching() {
    let p = pattern("/items/*/id");
    assert!(p.matches("/items/0/id"));
    assert!(p.matches("/items/key/id"));
    assert!(!p.matches("/items/0"));
    assert!(!p.matches("/items/0/id/x"));
    assert!(!p.matches("/items/0/name"));
    assert!(!p.matches("items/0/id"), "not a pointer");

    let rest = pattern("/meta/**");
    assert!(rest.matches("/meta"));
    assert!(rest.matches("/meta/a/b/c"));
    assert!(!rest.matches("/metadata"));

    let escaped = pattern("/a~1b/c~0d");
    assert!(escaped.matches("/a~1b/c~0d"));
    assert!(!escaped.matches("/a/b/c~0d"));

    assert!(pattern("").matches(""));
    assert!(!pattern("").matches("/a"));
    assert!(pattern("/").matches("/"), "the empty key");
    assert!(pattern("/**").matches(""));
}

#[test]
fn equal_documents_and_key_order() {
    assert!(diff(json!({"a": 1, "b": [1, 2]}), json!({"b": [1, 2], "a": 1})).is_empty());
}

#[test]
fn changed_field_reports_its_pointer_escaped() {
    assert_eq!(
        diff(
            json!({"user": {"a/b": 1, "c~d": "x", "same": true}}),
            json!({"user": {"a/b": 2, "c~d": "y", "same": true}}),
        ),
        vec![
            d("body:/user/a~1b", json!(1), json!(2)),
            d("body:/user/c~0d", json!("x"), json!("y")),
        ]
    );
}

#[test]
fn added_and_removed_keys_have_null_on_the_other_side() {
    assert_eq!(
        diff(json!({"gone": 1, "k": 0}), json!({"k": 0, "new": {"x": 1}})),
        vec![
            d("body:/gone", json!(1), Value::Null),
            d("body:/new", Value::Null, json!({"x": 1})),
        ]
    );
}

#[test]
fn absent_key_equals_null() {
    assert!(diff(json!({"a": null}), json!({})).is_empty());
    assert_eq!(
        diff(json!({"a": null}), json!({"a": 0})),
        vec![d("body:/a", Value::Null, json!(0))]
    );
}

#[test]
fn array_length_change_reports_extra_elements_at_their_index() {
    assert_eq!(
        diff(json!({"items": [1, 2, 3]}), json!({"items": [1, 9]})),
        vec![
            d("body:/items/1", json!(2), json!(9)),
            d("body:/items/2", json!(3), Value::Null),
        ]
    );
    assert_eq!(
        diff(json!([1]), json!([1, null])),
        vec![d("body:/1", Value::Null, Value::Null)],
        "an extra null element is still an extra element"
    );
}

#[test]
fn type_change_is_reported_at_the_node() {
    assert_eq!(
        diff(json!({"a": {"b": 1}}), json!({"a": [1]})),
        vec![d("body:/a", json!({"b": 1}), json!([1]))]
    );
    assert_eq!(
        diff(json!({"n": 1}), json!({"n": "1"})),
        vec![d("body:/n", json!(1), json!("1"))]
    );
    assert_eq!(
        diff(json!([1]), json!({"0": 1})),
        vec![d("body", json!([1]), json!({"0": 1}))],
        "the root is reported at `body`"
    );
}

#[test]
fn numbers_compare_by_value() {
    assert!(diff(json!([1, 100, -3]), json!([1.0, 1e2, -3.0])).is_empty());
    assert_eq!(
        diff(json!([u64::MAX]), json!([u64::MAX - 1])),
        vec![d("body:/0", json!(u64::MAX), json!(u64::MAX - 1))]
    );
    assert_eq!(diff(json!(0.5), json!(0.25)).len(), 1);
}

#[test]
fn ignored_pointers_skip_subtrees() {
    let cfg =
        DiffConfig::default().with_ignored_pointers([pattern("/items/*/id"), pattern("/meta")]);
    let got = diff_with(
        &cfg,
        json!({"items": [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}], "meta": {"t": 1}}),
        json!({"items": [{"id": 7, "n": "a"}, {"id": 8, "n": "c"}, {"id": 9}], "meta": 5}),
    );
    assert_eq!(
        got,
        vec![
            d("body:/items/1/n", json!("b"), json!("c")),
            d("body:/items/2", Value::Null, json!({"id": 9})),
        ]
    );
    let extra_ignored = DiffConfig::default().with_ignored_pointers([pattern("/x/*")]);
    assert!(diff_with(&extra_ignored, json!({"x": [1]}), json!({"x": [1, 2, 3]})).is_empty());
    let all = DiffConfig::default().with_ignored_pointers([pattern("")]);
    assert!(diff_with(&all, json!([1]), json!({"a": 2})).is_empty());
}

#[test]
fn long_strings_are_truncated() {
    let cfg = DiffConfig {
        max_value_len: 3,
        ..DiffConfig::default()
    };
    assert_eq!(
        diff_with(&cfg, json!({"s": "abcdef"}), json!({"s": "ab"})),
        vec![d("body:/s", json!("abc…(+3 bytes)"), json!("ab"))]
    );
}

#[test]
fn differences_beyond_the_cap_are_counted() {
    let cfg = DiffConfig {
        max_differences: 2,
        ..DiffConfig::default()
    };
    let mut sink = Sink::new(cfg.max_differences);
    compare(
        &cfg,
        "body",
        &json!([1, 2, 3, 4, 5]),
        &json!([0, 0, 0, 0, 0]),
        &mut sink,
    );
    let c = sink.finish();
    assert_eq!(c.differences.len(), 2);
    assert_eq!(c.omitted, 3);
    assert_eq!(c.differences[1].location, "body:/1");
}
