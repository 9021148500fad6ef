use proptest::prelude::*;
use serde_json::json;

use super::*;

/// A varint's wire bytes.
pub(crate) fn varint_bytes(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Field `field` as a varint.
pub(crate) fn varint_field(field: u32, n: u64) -> Vec<u8> {
    [varint_bytes(u64::from(field) << 3), varint_bytes(n)].concat()
}

/// Field `field` length-delimited.
pub(crate) fn ld(field: u32, data: &[u8]) -> Vec<u8> {
    [
        varint_bytes(u64::from(field) << 3 | 2),
        varint_bytes(data.len() as u64),
        data.to_vec(),
    ]
    .concat()
}

fn fixed64_field(field: u32, n: u64) -> Vec<u8> {
    [
        varint_bytes(u64::from(field) << 3 | 1),
        n.to_le_bytes().to_vec(),
    ]
    .concat()
}

fn fixed32_field(field: u32, n: u32) -> Vec<u8> {
    [
        varint_bytes(u64::from(field) << 3 | 5),
        n.to_le_bytes().to_vec(),
    ]
    .concat()
}

fn dec(bytes: &[u8]) -> Message {
    decode(bytes, Limits::default()).unwrap()
}

fn msg(fields: Vec<(u32, Value)>) -> Message {
    Message { fields }
}

fn diff_with(cfg: &DiffConfig, old: &[u8], new: &[u8]) -> Vec<Difference> {
    let mut sink = Sink::new(cfg.max_differences);
    compare(cfg, "grpc", &dec(old), &dec(new), &mut sink);
    sink.finish().differences
}

fn diff(old: &[u8], new: &[u8]) -> Vec<Difference> {
    diff_with(&DiffConfig::default(), old, new)
}

fn d(location: &str, old: Json, new: Json) -> Difference {
    Difference {
        location: location.to_owned(),
        old,
        new,
    }
}

#[test]
fn decodes_scalars_by_wire_type() {
    let bytes = [
        varint_field(1, 150),
        fixed64_field(2, 1 << 40),
        fixed32_field(3, 7),
        ld(4, b"hello world"),
        ld(5, &[0xff, 0xfe]),
        varint_field(6, u64::MAX),
        ld(7, b""),
    ]
    .concat();
    assert_eq!(
        dec(&bytes),
        msg(vec![
            (1, Value::Varint(150)),
            (2, Value::Fixed64(1 << 40)),
            (3, Value::Fixed32(7)),
            (4, Value::String("hello world".into())),
            (5, Value::Bytes(vec![0xff, 0xfe])),
            (6, Value::Varint(u64::MAX)),
            (7, Value::String(String::new())),
        ])
    );
    assert_eq!(dec(b""), Message::default());
}

#[test]
fn decodes_nested_messages() {
    let inner = [varint_field(1, 5), ld(2, b"x")].concat();
    let bytes = [ld(3, &ld(1, &inner)), varint_field(4, 1)].concat();
    assert_eq!(
        dec(&bytes),
        msg(vec![
            (
                3,
                Value::Message(msg(vec![(
                    1,
                    Value::Message(msg(vec![
                        (1, Value::Varint(5)),
                        (2, Value::String("x".into()))
                    ]))
                )]))
            ),
            (4, Value::Varint(1)),
        ])
    );
}

#[test]
fn text_that_parses_as_a_message_stays_text() {
    // "(*" is field 5 varint 42, but it is printable text.
    assert_eq!(
        dec(&ld(1, b"(*")),
        msg(vec![(1, Value::String("(*".into()))])
    );
    // A control byte in valid UTF-8 that is no message: a string still.
    assert_eq!(
        dec(&ld(1, b"\x01ab")),
        msg(vec![(1, Value::String("\x01ab".into()))])
    );
    // Bytes that do not parse completely are bytes.
    assert_eq!(
        dec(&ld(1, &[0x0a, 0x05, 0xff])),
        msg(vec![(1, Value::Bytes(vec![0x0a, 0x05, 0xff]))])
    );
}

#[test]
fn repeated_fields_stay_in_wire_order() {
    let bytes = [varint_field(1, 3), varint_field(2, 9), varint_field(1, 1)].concat();
    let m = dec(&bytes);
    assert_eq!(
        m,
        msg(vec![
            (1, Value::Varint(3)),
            (2, Value::Varint(9)),
            (1, Value::Varint(1))
        ])
    );
    assert_eq!(m.to_json(512), json!({"1": [3, 1], "2": 9}));
}

#[test]
fn groups_are_rejected() {
    // Field 1 start group, field 2 varint, field 1 end group.
    let group = [0x0b, 0x10, 0x01, 0x0c];
    assert_eq!(
        decode(&group, Limits::default()),
        Err(DecodeError::Group {
            offset: 0,
            wire_type: 3
        })
    );
    // Nested, the field is not a message (these bytes are UTF-8).
    assert_eq!(
        dec(&ld(1, &group)),
        msg(vec![(1, Value::String("\x0b\x10\x01\x0c".into()))])
    );
}

#[test]
fn malformed_input_errors() {
    let lim = Limits::default();
    assert_eq!(decode(&[0x08], lim), Err(DecodeError::Truncated(1)));
    assert_eq!(
        decode(&[0x0a, 0x05, 1], lim),
        Err(DecodeError::Truncated(2))
    );
    assert_eq!(decode(&[0x09, 1, 2], lim), Err(DecodeError::Truncated(1)));
    assert_eq!(
        decode(&[0x00, 0x01], lim),
        Err(DecodeError::BadFieldNumber(0))
    );
    assert_eq!(
        decode(&[0x0e, 0x01], lim),
        Err(DecodeError::BadWireType {
            offset: 0,
            wire_type: 6
        })
    );
    let overflow = [
        0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
    ];
    assert_eq!(decode(&overflow, lim), Err(DecodeError::VarintOverflow(1)));
    // A length over the address space is truncated, not allocated.
    let huge = [&[0x0a][..], &varint_bytes(u64::MAX)].concat();
    assert_eq!(decode(&huge, lim), Err(DecodeError::Truncated(11)));
}

#[test]
fn nesting_stops_at_the_depth_limit() {
    let mut bytes = varint_field(1, 1);
    for _ in 0..5 {
        bytes = ld(2, &bytes);
    }
    let limits = Limits {
        max_depth: 3,
        max_fields: 100,
    };
    let mut m = decode(&bytes, limits).unwrap();
    for _ in 0..3 {
        match m.fields.as_slice() {
            [(2, Value::Message(inner))] => m = inner.clone(),
            other => panic!("{other:?}"),
        }
    }
    // The message at depth 3 has its field 2 not tried as a message (and
    // UTF-8, hence a string).
    assert_eq!(m, msg(vec![(2, Value::String("\x12\x02\x08\x01".into()))]));
}

#[test]
fn field_count_is_bounded() {
    let bytes = varint_field(1, 0).repeat(11);
    let limits = Limits {
        max_depth: 3,
        max_fields: 10,
    };
    assert_eq!(decode(&bytes, limits), Err(DecodeError::TooManyFields(10)));
    assert_eq!(decode(&bytes[..20], limits).unwrap().fields.len(), 10);
    // Nested fields count.
    let nested = [ld(1, &varint_field(1, 0).repeat(10)), varint_field(2, 0)].concat();
    assert_eq!(decode(&nested, limits), Err(DecodeError::TooManyFields(10)));
    // A nested candidate over the bound is not a message, and its fields
    // are not counted against the rest.
    let nested = [ld(1, &varint_field(1, 0).repeat(11)), varint_field(2, 0)].concat();
    let m = decode(&nested, limits).unwrap();
    assert!(matches!(
        m.fields.as_slice(),
        [(1, Value::String(_)), (2, Value::Varint(0))]
    ));
}

#[test]
fn bytes_as_json() {
    assert_eq!(bytes_json(&[0xff, 0xfe], 512), "base64://4=");
    let long = bytes_json(&[0xff; 100], 64);
    assert!(long.starts_with("<100 bytes, xxh3 "), "{long}");
}

#[test]
fn equal_messages_have_no_difference() {
    let a = [varint_field(1, 1), ld(2, b"x")].concat();
    assert_eq!(diff(&a, &a), vec![]);
    // Field order between field numbers is no difference.
    let b = [ld(2, b"x"), varint_field(1, 1)].concat();
    assert_eq!(diff(&a, &b), vec![]);
}

#[test]
fn differences_are_located_by_field_number() {
    let item = |price: u64, tag: &[u8]| [varint_field(3, price), ld(4, tag)].concat();
    let old = [
        varint_field(1, 7),
        ld(
            2,
            &[ld(1, &item(10, b"a")), ld(1, &item(20, b"b"))].concat(),
        ),
    ]
    .concat();
    let new = [
        varint_field(1, 8),
        ld(
            2,
            &[ld(1, &item(11, b"a")), ld(1, &item(20, b"c"))].concat(),
        ),
    ]
    .concat();
    assert_eq!(
        diff(&old, &new),
        vec![
            d("grpc:/1", json!(7), json!(8)),
            d("grpc:/2/1[0]/3", json!(10), json!(11)),
            d("grpc:/2/1[1]/4", json!("b"), json!("c")),
        ]
    );
}

#[test]
fn occurrences_only_one_side_has() {
    let old = [varint_field(1, 1), varint_field(1, 2)].concat();
    let new = [varint_field(1, 1), ld(5, &varint_field(1, 3))].concat();
    assert_eq!(
        diff(&old, &new),
        vec![
            d("grpc:/1[1]", json!(2), json!(null)),
            d("grpc:/5", json!(null), json!({"1": 3})),
        ]
    );
}

#[test]
fn a_change_of_kind_is_reported_at_its_node() {
    let old = ld(1, &varint_field(2, 1));
    let new = ld(1, b"text");
    assert_eq!(
        diff(&old, &new),
        vec![d("grpc:/1", json!({"2": 1}), json!("text"))]
    );
    let old = varint_field(1, 1);
    let new = fixed32_field(1, 1);
    assert_eq!(diff(&old, &new), vec![d("grpc:/1", json!(1), json!(1))]);
}

#[test]
fn ignored_pointers_apply_to_field_paths() {
    let cfg = DiffConfig::default()
        .with_ignored_pointers(["/2/*".parse().unwrap(), "/3".parse().unwrap()]);
    let old = [
        ld(2, &[varint_field(1, 1), varint_field(1, 2)].concat()),
        varint_field(3, 1),
        varint_field(4, 1),
    ]
    .concat();
    let new = [
        ld(2, &[varint_field(1, 5), varint_field(1, 6)].concat()),
        varint_field(3, 2),
        varint_field(4, 2),
    ]
    .concat();
    assert_eq!(
        diff_with(&cfg, &old, &new),
        vec![d("grpc:/4", json!(1), json!(2))]
    );
}

#[test]
fn long_values_are_bounded() {
    let cfg = DiffConfig {
        max_value_len: 16,
        ..DiffConfig::default()
    };
    let old = ld(1, &[b'a'; 40]);
    let new = ld(1, &[b'b'; 40]);
    let diffs = diff_with(&cfg, &old, &new);
    assert_eq!(diffs.len(), 1);
    assert_eq!(
        diffs[0].old,
        json!(format!("{}…(+24 bytes)", "a".repeat(16)))
    );
}

proptest! {
    /// Any bytes decode or fail without panicking, within the limits, and
    /// compare with anything without panicking.
    #[test]
    fn never_panics_and_stays_bounded(
        a in proptest::collection::vec(any::<u8>(), 0..256),
        b in proptest::collection::vec(any::<u8>(), 0..256),
        max_depth in 0usize..6,
        max_fields in 1usize..64,
    ) {
        let limits = Limits { max_depth, max_fields };
        fn check(m: &Message, depth: usize, limits: Limits) -> usize {
            assert!(depth <= limits.max_depth);
            m.fields.iter().map(|(f, v)| {
                assert!(*f >= 1);
                match v {
                    Value::Message(inner) => 1 + check(inner, depth + 1, limits),
                    _ => 1,
                }
            }).sum()
        }
        let (x, y) = (decode(&a, limits), decode(&b, limits));
        for m in [&x, &y].into_iter().flatten() {
            prop_assert!(check(m, 0, limits) <= max_fields);
            let _ = m.to_json(32);
        }
        if let (Ok(x), Ok(y)) = (x, y) {
            let cfg = DiffConfig { max_differences: 8, ..DiffConfig::default() };
            let mut sink = Sink::new(cfg.max_differences);
            compare(&cfg, "grpc", &x, &y, &mut sink);
            let c = sink.finish();
            prop_assert!(c.differences.len() <= 8);
            if a == b {
                prop_assert!(c.is_match());
            }
        }
    }

    /// Nested length-delimited fields of arbitrary content at any depth.
    #[test]
    fn nested_arbitrary_content_never_panics(
        inner in proptest::collection::vec(any::<u8>(), 0..64),
        depth in 0usize..40,
    ) {
        let mut bytes = inner;
        for _ in 0..depth {
            bytes = ld(1, &bytes);
        }
        let _ = decode(&bytes, Limits { max_depth: 8, max_fields: 1000 });
    }
}
