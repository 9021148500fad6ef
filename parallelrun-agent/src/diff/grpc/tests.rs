use std::sync::Arc;

use bytes::Bytes;
use prost_reflect::{
    prost::Message as _,
    prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        MethodDescriptorProto, ServiceDescriptorProto,
        field_descriptor_proto::{Label, Type},
    },
};
use serde_json::{Value, json};

use crate::{
    diff::{
        Comparison, DiffConfig, Schema, SchemaError, compare, compare_with_target,
        protobuf::tests::{ld, varint_field},
        tests::{gzip, response},
    },
    model::{Difference, Header, Response},
};

/// One length-prefixed gRPC message.
fn frame(flag: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A gRPC response of `messages` (uncompressed), status in the trailers.
fn grpc(messages: &[Vec<u8>], trailers: &[(&str, &str)]) -> Response {
    let body: Vec<u8> = messages.iter().flat_map(|m| frame(0, m)).collect();
    let mut r = response(200, &[("content-type", "application/grpc")], &body);
    r.trailers = trailers
        .iter()
        .map(|(n, v)| Header::new(*n, v.to_string()))
        .collect();
    r
}

fn ok(messages: &[Vec<u8>]) -> Response {
    grpc(messages, &[("grpc-status", "0")])
}

fn d(location: &str, old: Value, new: Value) -> Difference {
    Difference {
        location: location.to_owned(),
        old,
        new,
    }
}

fn diffs(c: Comparison) -> Vec<Difference> {
    assert_eq!(c.omitted, 0);
    c.differences
}

fn field(
    name: &str,
    number: i32,
    ty: Type,
    label: Label,
    type_name: Option<&str>,
) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.to_owned()),
        number: Some(number),
        label: Some(label as i32),
        r#type: Some(ty as i32),
        type_name: type_name.map(str::to_owned),
        ..FieldDescriptorProto::default()
    }
}

fn message(name: &str, fields: Vec<FieldDescriptorProto>) -> DescriptorProto {
    DescriptorProto {
        name: Some(name.to_owned()),
        field: fields,
        ..DescriptorProto::default()
    }
}

/// The descriptor set of
///
/// ```proto
/// syntax = "proto3";
/// package shop;
/// message Item { string name = 1; int64 price = 2; repeated string tags = 3; }
/// message GetRequest { string id = 1; }
/// message GetReply { Item item = 1; repeated Item related = 2; int32 count = 3; }
/// service Shop { rpc Get(GetRequest) returns (GetReply); }
/// ```
fn descriptor_set() -> Vec<u8> {
    let (opt, rep) = (Label::Optional, Label::Repeated);
    let file = FileDescriptorProto {
        name: Some("shop.proto".to_owned()),
        package: Some("shop".to_owned()),
        syntax: Some("proto3".to_owned()),
        message_type: vec![
            message(
                "Item",
                vec![
                    field("name", 1, Type::String, opt, None),
                    field("price", 2, Type::Int64, opt, None),
                    field("tags", 3, Type::String, rep, None),
                ],
            ),
            message("GetRequest", vec![field("id", 1, Type::String, opt, None)]),
            message(
                "GetReply",
                vec![
                    field("item", 1, Type::Message, opt, Some(".shop.Item")),
                    field("related", 2, Type::Message, rep, Some(".shop.Item")),
                    field("count", 3, Type::Int32, opt, None),
                ],
            ),
        ],
        service: vec![ServiceDescriptorProto {
            name: Some("Shop".to_owned()),
            method: vec![MethodDescriptorProto {
                name: Some("Get".to_owned()),
                input_type: Some(".shop.GetRequest".to_owned()),
                output_type: Some(".shop.GetReply".to_owned()),
                ..MethodDescriptorProto::default()
            }],
            ..ServiceDescriptorProto::default()
        }],
        ..FileDescriptorProto::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
}

fn with_schema() -> DiffConfig {
    let schema = Schema::from_bytes(&descriptor_set()).unwrap();
    DiffConfig {
        schema: Some(Arc::new(schema)),
        ..DiffConfig::default()
    }
}

/// An `Item` message.
fn item(name: &str, price: u64, tags: &[&str]) -> Vec<u8> {
    let mut out = [ld(1, name.as_bytes()), varint_field(2, price)].concat();
    for t in tags {
        out.extend(ld(3, t.as_bytes()));
    }
    out
}

#[test]
fn equal_calls_match() {
    let r = ok(&[varint_field(1, 1)]);
    assert!(compare(&DiffConfig::default(), &r, &r.clone()).is_match());
}

#[test]
fn status_is_compared_wherever_it_is() {
    // A status in the trailers and the same status in the headers of a
    // trailers-only response are no difference.
    let old = grpc(
        &[],
        &[("grpc-status", "5"), ("grpc-message", "not%20found")],
    );
    let new = response(
        200,
        &[
            ("content-type", "application/grpc"),
            ("grpc-status", "5"),
            ("grpc-message", "not found"),
        ],
        b"",
    );
    assert!(compare(&DiffConfig::default(), &old, &new).is_match());

    let new = response(
        200,
        &[
            ("content-type", "application/grpc"),
            ("grpc-status", "13"),
            ("grpc-message", "boom%21"),
            ("grpc-status-details-bin", "CAE"),
        ],
        b"",
    );
    assert_eq!(
        diffs(compare(&DiffConfig::default(), &old, &new)),
        vec![
            d("grpc-status", json!(5), json!(13)),
            d("grpc-message", json!("not found"), json!("boom!")),
            d("grpc-status-details-bin", json!(null), json!("CAE")),
        ]
    );
}

#[test]
fn a_missing_status_or_message() {
    let old = ok(&[]);
    let new = grpc(&[], &[("grpc-status", "x"), ("grpc-message", "")]);
    assert_eq!(
        diffs(compare(&DiffConfig::default(), &old, &new)),
        vec![d("grpc-status", json!(0), json!("x"))]
    );
    let new = grpc(&[], &[]);
    assert_eq!(
        diffs(compare(&DiffConfig::default(), &old, &new)),
        vec![d("grpc-status", json!(0), json!(null))]
    );
}

#[test]
fn per_call_metadata_is_ignored_but_not_the_encoding() {
    let mut old = ok(&[varint_field(1, 1)]);
    old.headers.push(Header::new("grpc-trace-bin", "AAA"));
    old.trailers
        .push(Header::new("grpc-server-stats-bin", "AAA"));
    let msg = varint_field(1, 1);
    let mut new = response(
        200,
        &[
            ("content-type", "application/grpc"),
            ("grpc-encoding", "gzip"),
            ("grpc-trace-bin", "BBB"),
        ],
        &frame(1, &gzip(&msg)),
    );
    new.trailers = vec![Header::new("grpc-status", "0")];
    assert_eq!(
        diffs(compare(&DiffConfig::default(), &old, &new)),
        vec![d("header:grpc-encoding", json!(null), json!("gzip"))]
    );
}

#[test]
fn one_message_is_located_at_grpc() {
    let old = ok(&[[
        varint_field(1, 7),
        ld(
            2,
            &[ld(1, &item("a", 10, &[])), ld(1, &item("b", 20, &[]))].concat(),
        ),
    ]
    .concat()]);
    let new = ok(&[[
        varint_field(1, 7),
        ld(
            2,
            &[ld(1, &item("a", 11, &[])), ld(1, &item("b", 20, &[]))].concat(),
        ),
    ]
    .concat()]);
    assert_eq!(
        diffs(compare(&DiffConfig::default(), &old, &new)),
        vec![d("grpc:/2/1[0]/2", json!(10), json!(11))]
    );
}

#[test]
fn messages_of_a_stream_are_indexed() {
    let old = ok(&[varint_field(1, 1), varint_field(1, 2), varint_field(1, 3)]);
    let new = ok(&[varint_field(1, 1), varint_field(1, 5)]);
    assert_eq!(
        diffs(compare(&DiffConfig::default(), &old, &new)),
        vec![
            d("grpc[1]:/1", json!(2), json!(5)),
            d("grpc[2]", json!({"1": 3}), json!(null)),
        ]
    );
    // One message against none is no stream.
    let new = ok(&[]);
    assert_eq!(
        diffs(compare(
            &DiffConfig::default(),
            &ok(&[varint_field(1, 1)]),
            &new
        )),
        vec![d("grpc", json!({"1": 1}), json!(null))]
    );
}

#[test]
fn messages_that_are_not_protobuf_are_bytes() {
    let old = ok(&[vec![0xff, 0xff]]);
    let new = ok(&[varint_field(1, 1)]);
    assert_eq!(
        diffs(compare(&DiffConfig::default(), &old, &new)),
        vec![d("grpc", json!("base64://8="), json!({"1": 1}))]
    );
}

#[test]
fn an_undecodable_body_is_one_difference() {
    let old = ok(&[varint_field(1, 1)]);
    let mut new = old.clone();
    new.body = Bytes::from_static(&[0, 0, 0, 0, 9, 1]);
    let c = diffs(compare(&DiffConfig::default(), &old, &new));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].location, "grpc");
    assert!(
        c[0].old
            .as_str()
            .unwrap()
            .starts_with("1 messages, <7 bytes, xxh3 "),
        "{:?}",
        c[0].old
    );
    assert_eq!(
        c[0].new,
        json!("undecodable gRPC body: message 0 is truncated: needs 9 bytes at offset 0, 1 left")
    );
}

#[test]
fn only_one_side_grpc_compares_bodies_as_usual() {
    let old = ok(&[varint_field(1, 1)]);
    let new = response(200, &[("content-type", "application/json")], b"{}");
    let locs: Vec<String> = diffs(compare(&DiffConfig::default(), &old, &new))
        .into_iter()
        .map(|d| d.location)
        .collect();
    assert_eq!(locs, ["header:content-type", "body"]);
}

#[test]
fn with_a_schema_fields_are_named() {
    let cfg = with_schema();
    let reply = |price: u64, tag: &str, count: u64| {
        [
            ld(1, &item("pen", price, &["blue", tag])),
            ld(2, &item("ink", 3, &[])),
            varint_field(3, count),
        ]
        .concat()
    };
    let old = ok(&[reply(10, "cheap", 1)]);
    let new = ok(&[reply(12, "new", 0)]);
    assert_eq!(
        diffs(compare_with_target(&cfg, "/shop.Shop/Get", &old, &new)),
        vec![
            d("grpc:/count", json!(1), json!(null)),
            d("grpc:/item/price", json!("10"), json!("12")),
            d("grpc:/item/tags/1", json!("cheap"), json!("new")),
        ]
    );
    // Without the method, the same messages are compared by number (and
    // the explicit 0 on the wire is no default value).
    assert_eq!(
        diffs(compare(&cfg, &old, &new)),
        vec![
            d("grpc:/1/2", json!(10), json!(12)),
            d("grpc:/1/3[1]", json!("cheap"), json!("new")),
            d("grpc:/3", json!(1), json!(0)),
        ]
    );
    // Nor with a method the schema does not have.
    assert_eq!(
        diffs(compare_with_target(&cfg, "/shop.Shop/Other", &old, &new)).len(),
        3
    );
}

#[test]
fn with_a_schema_streams_and_ignored_pointers() {
    let cfg = with_schema().with_ignored_pointers(["/item/price".parse().unwrap()]);
    let reply = |name: &str, price: u64| ld(1, &item(name, price, &[]));
    let old = ok(&[reply("a", 1), reply("b", 2)]);
    let new = ok(&[reply("a", 9), reply("c", 2), reply("d", 4)]);
    assert_eq!(
        diffs(compare_with_target(&cfg, "/shop.Shop/Get", &old, &new)),
        vec![
            d("grpc[1]:/item/name", json!("b"), json!("c")),
            d(
                "grpc[2]",
                json!(null),
                json!({"item": {"name": "d", "price": "4"}})
            ),
        ]
    );
}

#[test]
fn a_message_the_schema_cannot_decode_falls_back_to_numbers() {
    let cfg = with_schema();
    // Field 1 of GetReply is a message: a varint there does not decode.
    let old = ok(&[varint_field(1, 5)]);
    let new = ok(&[ld(1, &item("a", 1, &[]))]);
    assert_eq!(
        diffs(compare_with_target(&cfg, "/shop.Shop/Get", &old, &new)),
        vec![d("grpc:/1", json!(5), json!({"1": "a", "2": 1}))]
    );
}

#[test]
fn schema_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.pb");
    std::fs::write(&path, descriptor_set()).unwrap();
    let schema = Schema::load(&path).unwrap();
    let desc = schema.output_type("/shop.Shop/Get").unwrap();
    assert_eq!(desc.full_name(), "shop.GetReply");
    assert!(schema.output_type("/shop.Shop").is_none());
    assert!(schema.output_type("shop.Shop/Get").is_none());
    assert!(schema.output_type("/other.Shop/Get").is_none());

    assert!(matches!(
        Schema::load(dir.path().join("missing.pb")),
        Err(SchemaError::Read { .. })
    ));
    std::fs::write(&path, b"\xff\xff not a descriptor set").unwrap();
    assert!(matches!(
        Schema::load(&path),
        Err(SchemaError::Descriptor(_))
    ));
}

proptest::proptest! {
    /// Arbitrary gRPC bodies and statuses compare without panicking, an
    /// exchange with itself matches, and the bound on differences holds.
    #[test]
    fn arbitrary_calls_never_panic(
        a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128),
        b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128),
        status in "[0-9a-z%]{0,4}",
        gzip_side in proptest::prelude::any::<bool>(),
    ) {
        let cfg = DiffConfig { max_differences: 4, max_value_len: 16, ..with_schema() };
        let mk = |body: &[u8]| {
            let mut r = grpc(&[], &[("grpc-status", status.as_str()), ("grpc-message", status.as_str())]);
            r.body = Bytes::copy_from_slice(body);
            if gzip_side {
                r.headers.push(Header::new("grpc-encoding", "gzip"));
            }
            r
        };
        // Also as framed messages, so that decoding is reached.
        let framed = |body: &[u8]| frame(0, body);
        for (x, y) in [(mk(&a), mk(&b)), (mk(&framed(&a)), mk(&[framed(&b), framed(&a)].concat()))] {
            let c = compare_with_target(&cfg, "/shop.Shop/Get", &x, &y);
            proptest::prop_assert!(c.differences.len() <= 4);
            proptest::prop_assert!(compare_with_target(&cfg, "/shop.Shop/Get", &x, &x).is_match());
        }
    }
}
