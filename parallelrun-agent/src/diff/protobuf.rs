//! Protobuf messages: decoded without a schema into a tree of field
//! numbers, or by name with a [`Schema`], and compared (see the
//! [module docs](super#grpc) for where this is used).
//!
//! # Without a schema
//!
//! [`decode`] reads a message as the wire format says it, into a
//! [`Message`]: its fields in wire order, each a field number and a
//! [`Value`] by wire type:
//!
//! - varint → [`Value::Varint`] (`u64`), fixed64 → [`Value::Fixed64`]
//!   (`u64`), fixed32 → [`Value::Fixed32`] (`u32`);
//! - length-delimited → a nested [`Value::Message`] when the bytes are not
//!   text (valid UTF-8 without control characters other than tab, CR and
//!   LF), are not empty, parse completely as a message, and the depth
//!   allows; else [`Value::String`] when they are UTF-8; else
//!   [`Value::Bytes`];
//! - groups (wire types 3 and 4, deprecated since proto2) and wire types 6
//!   and 7 are errors: a length-delimited field containing them is not a
//!   nested message, and a top-level message containing them does not
//!   decode (it is then compared as bytes).
//!
//! Decoding is bounded by [`Limits`]: nested messages are only tried down
//! to `max_depth`, and at most `max_fields` fields are held at once (a
//! message with more does not decode). Time is linear in the input for each
//! level of depth; no input panics.
//!
//! The limits of a schemaless decoder: the wire format does not say which
//! scalar type a field has, so `int32`, `int64`, `uint*`, `bool` and enums
//! are all the varint's unsigned value (a negative `int32` is a ten-byte
//! varint near 2^64, `sint*` is shown zigzag-encoded), `double`/`fixed64`/
//! `sfixed64` and `float`/`fixed32`/`sfixed32` are their bit patterns as
//! unsigned integers; a packed repeated field is one bytes value, not a
//! list; a `bytes` or `string` field whose content happens to parse as a
//! message is shown as one (and the guess can differ between two sides
//! whose values differ, which is then a change of type at that field); map
//! entries are nested messages with fields 1 (key) and 2 (value), in wire
//! order; default values are absent from the wire, so an explicit `0` and
//! an absent field differ. A [`Schema`] removes all of these.
//!
//! # As JSON
//!
//! A [`Value`] shown in a [`Difference`] is JSON:
//! numbers for varints and fixed fields, strings for strings, and for bytes
//! `"base64:DATA"` (standard alphabet, padded), or `<N bytes, xxh3 PREFIX>`
//! when that would be longer than [`DiffConfig::max_value_len`]. A message
//! is an object keyed by field number (as a string), with a field that
//! occurs more than once as an array of its values in wire order.
//!
//! # Comparing two trees
//!
//! Differences are located by the path of field numbers from the message's
//! root, `ROOT:/2/1/3` (`ROOT` is `grpc` or `grpc[i]`, see the
//! [module docs](super#grpc)). A field that occurs more than once on either
//! side (a repeated field) has each occurrence's index in its segment,
//! `/1[0]`, `/1[1]`, occurrences paired by position, one only one side has
//! reported with `null` on the other; a field that occurs at most once on
//! both sides has no index. Field order (between field numbers) is no
//! difference. Two values of different wire types or decoded kinds are
//! reported at their node, not below. [`DiffConfig::ignore_pointers`]
//! patterns are matched against the segments as written (`/2/*` matches
//! `/2/1[0]`).
//!
//! # With a schema
//!
//! A [`Schema`] is a `FileDescriptorSet` (what `protoc --include_imports
//! --descriptor_set_out=FILE` writes). The gRPC method, from the request
//! target `/package.Service/Method`, names the response message type; each
//! message is decoded as that type and converted to JSON by the protobuf
//! JSON mapping with the `.proto` field names (not lowerCamelCase), fields
//! with default values omitted, 64-bit integers as strings, enums by name,
//! bytes as base64. The two JSON documents are then compared as JSON bodies
//! are ([`super#json`]), located `ROOT:/field_name/sub_name/0` (array
//! indexes for repeated fields, always). A method the schema does not know,
//! or a message pair one of which does not decode as the type, is compared
//! without the schema.

use std::{collections::BTreeMap, fmt, path::Path};

use base64::Engine as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value as Json};

use super::{DiffConfig, Sink, digest};
use crate::model::Difference;

/// Bounds on [`decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Length-delimited fields are tried as nested messages down to this
    /// depth (the top-level message is depth 0).
    pub max_depth: usize,
    /// At most this many fields (all depths) in one decoded message.
    pub max_fields: usize,
}

impl Default for Limits {
    /// Depth 32, a million fields.
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_fields: 1_000_000,
        }
    }
}

/// A message decoded without a schema: its fields in wire order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub fields: Vec<(u32, Value)>,
}

/// A field's value, by wire type (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    String(String),
    Bytes(Vec<u8>),
    Message(Message),
}

/// Why bytes are not a protobuf message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated at offset {0}")]
    Truncated(usize),
    #[error("varint over 64 bits at offset {0}")]
    VarintOverflow(usize),
    #[error("field number 0 or over 2^29-1 at offset {0}")]
    BadFieldNumber(usize),
    #[error("group (wire type {wire_type}) at offset {offset}")]
    Group { offset: usize, wire_type: u8 },
    #[error("invalid wire type {wire_type} at offset {offset}")]
    BadWireType { offset: usize, wire_type: u8 },
    #[error("more than {0} fields")]
    TooManyFields(usize),
}

/// `bytes` as a protobuf message without a schema (see the
/// [module docs](self)).
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Message, DecodeError> {
    Decoder { limits, fields: 0 }.message(bytes, 0, 0)
}

struct Decoder {
    limits: Limits,
    /// Fields held now, in the result and in nested attempts under way.
    fields: usize,
}

impl Decoder {
    /// The message in `data`, at `depth`; `base` is its offset in the
    /// top-level message (for errors).
    fn message(&mut self, data: &[u8], depth: usize, base: usize) -> Result<Message, DecodeError> {
        let held = self.fields;
        let result = self.fields_of(data, depth, base);
        if result.is_err() {
            self.fields = held;
        }
        result
    }

    fn fields_of(
        &mut self,
        data: &[u8],
        depth: usize,
        base: usize,
    ) -> Result<Message, DecodeError> {
        let mut out = Message::default();
        let mut pos = 0;
        while pos < data.len() {
            let at = base + pos;
            let key = varint(data, &mut pos, base)?;
            let field = u32::try_from(key >> 3)
                .ok()
                .filter(|&f| (1..=MAX_FIELD_NUMBER).contains(&f))
                .ok_or(DecodeError::BadFieldNumber(at))?;
            let wire_type = (key & 7) as u8;
            let value = match wire_type {
                0 => Value::Varint(varint(data, &mut pos, base)?),
                1 => Value::Fixed64(u64::from_le_bytes(fixed(data, &mut pos, base)?)),
                5 => Value::Fixed32(u32::from_le_bytes(fixed(data, &mut pos, base)?)),
                2 => {
                    let len = varint(data, &mut pos, base)?;
                    let start = pos;
                    let bytes = usize::try_from(len)
                        .ok()
                        .and_then(|n| data.get(start..start.checked_add(n)?))
                        .ok_or(DecodeError::Truncated(base + start))?;
                    pos += bytes.len();
                    self.length_delimited(bytes, depth, base + start)
                }
                3 | 4 => {
                    return Err(DecodeError::Group {
                        offset: at,
                        wire_type,
                    });
                }
                _ => {
                    return Err(DecodeError::BadWireType {
                        offset: at,
                        wire_type,
                    });
                }
            };
            if self.fields >= self.limits.max_fields {
                return Err(DecodeError::TooManyFields(self.limits.max_fields));
            }
            self.fields += 1;
            out.fields.push((field, value));
        }
        Ok(out)
    }

    fn length_delimited(&mut self, bytes: &[u8], depth: usize, base: usize) -> Value {
        let text = std::str::from_utf8(bytes).ok();
        let plain_text = text.is_some_and(|s| {
            s.chars()
                .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        });
        if !bytes.is_empty()
            && !plain_text
            && depth < self.limits.max_depth
            && let Ok(m) = self.message(bytes, depth + 1, base)
        {
            return Value::Message(m);
        }
        match text {
            Some(s) => Value::String(s.to_owned()),
            None => Value::Bytes(bytes.to_vec()),
        }
    }
}

/// The largest field number protobuf allows.
const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

/// The varint at `*pos`, advancing past it.
fn varint(data: &[u8], pos: &mut usize, base: usize) -> Result<u64, DecodeError> {
    let start = *pos;
    let mut value: u64 = 0;
    for i in 0..10 {
        let &b = data
            .get(start + i)
            .ok_or(DecodeError::Truncated(base + start))?;
        if i == 9 && b > 1 {
            return Err(DecodeError::VarintOverflow(base + start));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *pos = start + i + 1;
            return Ok(value);
        }
    }
    Err(DecodeError::VarintOverflow(base + start))
}

/// The `N` bytes at `*pos`, advancing past them.
fn fixed<const N: usize>(
    data: &[u8],
    pos: &mut usize,
    base: usize,
) -> Result<[u8; N], DecodeError> {
    let bytes = data
        .get(*pos..)
        .and_then(|rest| rest.first_chunk::<N>())
        .ok_or(DecodeError::Truncated(base + *pos))?;
    *pos += N;
    Ok(*bytes)
}

impl Message {
    /// The message as JSON (see the [module docs](self#as-json)), bytes
    /// shown in at most `max_len` bytes.
    pub fn to_json(&self, max_len: usize) -> Json {
        let mut map = Map::new();
        for (field, values) in by_field(self) {
            let v = match values.as_slice() {
                [one] => one.to_json(max_len),
                many => Json::Array(many.iter().map(|v| v.to_json(max_len)).collect()),
            };
            map.insert(field.to_string(), v);
        }
        Json::Object(map)
    }
}

impl Value {
    /// The value as JSON (see the [module docs](self#as-json)).
    pub fn to_json(&self, max_len: usize) -> Json {
        match self {
            Value::Varint(n) | Value::Fixed64(n) => Json::from(*n),
            Value::Fixed32(n) => Json::from(*n),
            Value::String(s) => Json::String(s.clone()),
            Value::Bytes(b) => Json::String(bytes_json(b, max_len)),
            Value::Message(m) => m.to_json(max_len),
        }
    }
}

/// `base64:DATA`, or `<N bytes, xxh3 PREFIX>` when that is over `max_len`.
pub(super) fn bytes_json(b: &[u8], max_len: usize) -> String {
    // base64 takes 4 bytes per 3, padded.
    if 7 + b.len().div_ceil(3) * 4 <= max_len {
        format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
    } else {
        digest::summary(b.len() as u64, xxhash_rust::xxh3::xxh3_128(b))
    }
}

/// The message's values by field number, each field's in wire order.
fn by_field(m: &Message) -> BTreeMap<u32, Vec<&Value>> {
    let mut map: BTreeMap<u32, Vec<&Value>> = BTreeMap::new();
    for (field, value) in &m.fields {
        map.entry(*field).or_default().push(value);
    }
    map
}

/// Reports the differences between two schemaless messages, located under
/// `root` (see the [module docs](self#comparing-two-trees)).
pub(super) fn compare(cfg: &DiffConfig, root: &str, old: &Message, new: &Message, sink: &mut Sink) {
    Walker {
        cfg,
        sink,
        root,
        path: Vec::new(),
    }
    .message(old, new);
}

struct Walker<'a> {
    cfg: &'a DiffConfig,
    sink: &'a mut Sink,
    root: &'a str,
    /// Segments of the current node: `2`, `1[0]`.
    path: Vec<String>,
}

impl Walker<'_> {
    fn ignored(&self) -> bool {
        self.cfg
            .ignore_pointers
            .iter()
            .any(|p| p.matches_segments(&self.path))
    }

    fn message(&mut self, old: &Message, new: &Message) {
        if self.ignored() {
            return;
        }
        let (a, b) = (by_field(old), by_field(new));
        let mut fields: Vec<u32> = a.keys().chain(b.keys()).copied().collect();
        fields.sort_unstable();
        fields.dedup();
        let none = Vec::new();
        for field in fields {
            let (xs, ys) = (
                a.get(&field).unwrap_or(&none),
                b.get(&field).unwrap_or(&none),
            );
            let n = xs.len().max(ys.len());
            for k in 0..n {
                self.path.push(if n > 1 {
                    format!("{field}[{k}]")
                } else {
                    field.to_string()
                });
                let (x, y) = (xs.get(k).copied(), ys.get(k).copied());
                if let (Some(x), Some(y)) = (x, y) {
                    self.node(x, y);
                } else if !self.ignored() {
                    self.report(x, y);
                }
                self.path.pop();
            }
        }
    }

    fn node(&mut self, old: &Value, new: &Value) {
        match (old, new) {
            (Value::Message(a), Value::Message(b)) => self.message(a, b),
            _ if old == new || self.ignored() => {}
            _ => self.report(Some(old), Some(new)),
        }
    }

    fn report(&mut self, old: Option<&Value>, new: Option<&Value>) {
        let (cfg, root, path) = (self.cfg, self.root, &self.path);
        let json = |v: Option<&Value>| match v {
            Some(v) => cfg.bounded_json(&v.to_json(cfg.max_value_len)),
            None => Json::Null,
        };
        self.sink.report(|| Difference {
            location: location(root, path),
            old: json(old),
            new: json(new),
        });
    }
}

/// `root`, or `root:/a/b` for a node below it.
fn location(root: &str, path: &[String]) -> String {
    if path.is_empty() {
        return root.to_owned();
    }
    let mut out = format!("{root}:");
    for seg in path {
        out.push('/');
        out.push_str(seg);
    }
    out
}

/// A set of protobuf descriptors (a `FileDescriptorSet`) by which gRPC
/// messages are decoded by name (see the [module docs](self#with-a-schema)).
#[derive(Clone, PartialEq)]
pub struct Schema {
    pool: DescriptorPool,
}

/// Why a [`Schema`] could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read the descriptor set {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid descriptor set: {0}")]
    Descriptor(#[from] prost_reflect::DescriptorError),
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("files", &self.pool.files().len())
            .field("services", &self.pool.services().len())
            .finish()
    }
}

impl Schema {
    /// The `FileDescriptorSet` in the file at `path`, as written by `protoc
    /// --include_imports --descriptor_set_out=PATH` (every file a file
    /// depends on must be in the set).
    pub fn load(path: impl AsRef<Path>) -> Result<Schema, SchemaError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| SchemaError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// The encoded `FileDescriptorSet` `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Schema, SchemaError> {
        Ok(Self::from_pool(DescriptorPool::decode(bytes)?))
    }

    /// A pool of descriptors already built.
    pub fn from_pool(pool: DescriptorPool) -> Schema {
        Schema { pool }
    }

    /// The response message type of the method that the request target
    /// `/package.Service/Method` calls, if the schema has it.
    pub fn output_type(&self, target: &str) -> Option<MessageDescriptor> {
        let (service, method) = target.strip_prefix('/')?.split_once('/')?;
        self.pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)
            .map(|m| m.output())
    }
}

/// `bytes` decoded as a `desc` message, as JSON (see the
/// [module docs](self#with-a-schema)).
pub(super) fn decode_json(desc: &MessageDescriptor, bytes: &[u8]) -> Option<Json> {
    let msg = DynamicMessage::decode(desc.clone(), bytes).ok()?;
    let opts = SerializeOptions::new().use_proto_field_name(true);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .ok()
}

#[cfg(test)]
pub(super) mod tests;
