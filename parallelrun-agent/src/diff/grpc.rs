//! Comparing two gRPC responses: their status, then their messages (see
//! the [module docs](super#grpc)).

use serde_json::Value;

use super::{DiffConfig, Sink, body, json, protobuf};
use crate::{
    grpc::{self, Limits},
    model::{Difference, Header, Response, header},
};

/// The status fields: compared at their own locations (wherever they are,
/// trailers or headers), so never as headers.
pub(super) const STATUS_FIELDS: &[&str] =
    &["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// Reports the differences in `grpc-status`, `grpc-message` and
/// `grpc-status-details-bin`.
pub(super) fn compare_status(cfg: &DiffConfig, old: &Response, new: &Response, sink: &mut Sink) {
    let (a, b) = (grpc::status_fields(old), grpc::status_fields(new));

    let code = |v: Option<&bytes::Bytes>| match v {
        None => Value::Null,
        Some(v) => {
            let text = String::from_utf8_lossy(v.trim_ascii());
            match text.parse::<u32>() {
                Ok(n) => Value::from(n),
                Err(_) => cfg.bounded_str(&text),
            }
        }
    };
    let (x, y) = (code(field(a, "grpc-status")), code(field(b, "grpc-status")));
    if x != y {
        sink.report(|| difference("grpc-status", x, y));
    }

    // Absent and empty are the same message; absent is shown as null.
    let message = |fields: Option<&[Header]>| {
        field(fields, "grpc-message")
            .map(|m| grpc::percent_decode(m))
            .filter(|m| !m.is_empty())
    };
    let (x, y) = (message(a), message(b));
    if x != y {
        let show = |m: Option<String>| m.map_or(Value::Null, |m| cfg.bounded_str(&m));
        sink.report(|| difference("grpc-message", show(x), show(y)));
    }

    let details = "grpc-status-details-bin";
    let (x, y) = (field(a, details), field(b, details));
    if x != y {
        let show = |v: Option<&bytes::Bytes>| {
            v.map_or(Value::Null, |v| {
                cfg.bounded_str(&String::from_utf8_lossy(v))
            })
        };
        sink.report(|| difference("grpc-status-details-bin", show(x), show(y)));
    }
}

/// Reports the differences between the two responses' messages; true when
/// they were compared by digest.
pub(super) fn compare_messages(
    cfg: &DiffConfig,
    target: &str,
    old: &Response,
    new: &Response,
    sink: &mut Sink,
) -> bool {
    if old.digest.is_some() || new.digest.is_some() {
        body::compare_digests(cfg, old, new, sink);
        return true;
    }
    if old.body == new.body {
        return false;
    }
    let limits = Limits {
        max_messages: cfg.max_grpc_messages,
        max_decoded: cfg.max_decoded_body,
    };
    let split =
        |r: &Response| grpc::split_messages(&r.body, grpc::encoding(&r.headers).as_deref(), limits);
    let (a, b) = match (split(old), split(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            let side = |split: Result<Vec<Vec<u8>>, grpc::FramingError>, r: &Response| {
                cfg.bounded_str(&match split {
                    Ok(messages) => format!(
                        "{} messages, {}",
                        messages.len(),
                        body::binary_summary(&r.body)
                    ),
                    Err(e) => format!("undecodable gRPC body: {e}"),
                })
            };
            sink.report(|| difference("grpc", side(a, old), side(b, new)));
            return false;
        }
    };
    let desc = cfg.schema.as_ref().and_then(|s| s.output_type(target));
    let n = a.len().max(b.len());
    for i in 0..n {
        let root = if n > 1 {
            format!("grpc[{i}]")
        } else {
            "grpc".to_owned()
        };
        let (x, y) = (a.get(i), b.get(i));
        if x == y {
            continue;
        }
        let decoded = |m: &Vec<u8>| decode(cfg, desc.as_ref(), m);
        let (mut dx, mut dy) = (x.map(decoded), y.map(decoded));
        let by_schema = |d: &Option<Decoded>| matches!(d, Some(Decoded::Json(_)));
        if dx.is_some() && dy.is_some() && by_schema(&dx) != by_schema(&dy) {
            // One side does not decode by the schema: both without it.
            let tree = |m: &Vec<u8>| decode(cfg, None, m);
            (dx, dy) = (x.map(tree), y.map(tree));
        }
        report_message(cfg, &root, dx, dy, sink);
    }
    false
}

/// A message as it is compared.
enum Decoded {
    /// By the schema.
    Json(Value),
    /// Without one.
    Tree(protobuf::Message),
    /// Not protobuf at all (without a schema).
    Bytes(Vec<u8>),
}

fn decode(cfg: &DiffConfig, desc: Option<&prost_reflect::MessageDescriptor>, m: &[u8]) -> Decoded {
    if let Some(json) = desc.and_then(|d| protobuf::decode_json(d, m)) {
        return Decoded::Json(json);
    }
    match protobuf::decode(m, cfg.protobuf_limits) {
        Ok(tree) => Decoded::Tree(tree),
        Err(_) => Decoded::Bytes(m.to_vec()),
    }
}

/// Reports a message pair compared in detail when both decoded alike, else
/// as one difference at `root`.
fn report_message(
    cfg: &DiffConfig,
    root: &str,
    x: Option<Decoded>,
    y: Option<Decoded>,
    sink: &mut Sink,
) {
    match (x, y) {
        (Some(Decoded::Tree(x)), Some(Decoded::Tree(y))) => {
            protobuf::compare(cfg, root, &x, &y, sink)
        }
        (Some(Decoded::Json(x)), Some(Decoded::Json(y))) => json::compare(cfg, root, &x, &y, sink),
        (x, y) => {
            let show = |d: Option<Decoded>| match d {
                None => Value::Null,
                Some(Decoded::Json(v)) => cfg.bounded_json(&v),
                Some(Decoded::Tree(t)) => cfg.bounded_json(&t.to_json(cfg.max_value_len)),
                Some(Decoded::Bytes(b)) => {
                    Value::String(protobuf::bytes_json(&b, cfg.max_value_len))
                }
            };
            sink.report(|| difference(root, show(x), show(y)));
        }
    }
}

/// The field `name` among `fields`, if any.
fn field<'a>(fields: Option<&'a [Header]>, name: &str) -> Option<&'a bytes::Bytes> {
    fields.and_then(|f| header(f, name))
}

fn difference(location: &str, old: Value, new: Value) -> Difference {
    Difference {
        location: location.to_owned(),
        old,
        new,
    }
}

#[cfg(test)]
mod tests;
