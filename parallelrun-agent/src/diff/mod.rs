//! Comparing the old response with the new one.
//!
//! [`compare`] (or [`compare_with_target`], which also knows the request's
//! target) reports every [`Difference`] between two [`Response`]s, in this
//! order:
//!
//! 1. `status`: the status codes, as JSON numbers.
//! 2. `header:NAME`: headers by lowercase name ([`headers`](self#headers)).
//! 3. `body` / `body:/json/pointer`: the bodies after undoing
//!    Content-Encoding ([`body`](self#bodies)).
//!
//! When both responses are gRPC ([`crate::grpc::is_grpc`]: Content-Type
//! `application/grpc` or `application/grpc+*`), 3. is replaced by the
//! call's status and its messages ([`gRPC`](self#grpc)):
//!
//! 3. `grpc-status`, `grpc-message`, `grpc-status-details-bin`.
//! 4. `grpc` / `grpc:/path` / `grpc[i]` / `grpc[i]:/path`: the messages.
//!
//! Trailers (but gRPC's status fields), the reason phrase and the HTTP
//! version are not compared.
//!
//! # Headers
//!
//! Names are compared ASCII case-insensitively. Names matched by
//! [`DiffConfig::ignore_headers`] are skipped (by default the per-response
//! and framing headers in [`DEFAULT_IGNORED_HEADERS`]). All fields of one
//! name are compared as one list, their values joined with `", "` in wire
//! order; a header present on one side only has `null` on the other. For
//! `Set-Cookie` only the names of the cookies set are compared (sorted),
//! since the values (session ids, CSRF tokens) differ on every response.
//!
//! # Bodies
//!
//! Each side's Content-Encoding is undone independently (`gzip`/`x-gzip`,
//! `deflate` as zlib or raw deflate, `br`, `identity`; a list such as
//! `gzip, br` is undone right to left), each step bounded by
//! [`DiffConfig::max_decoded_body`]. Bodies equal after decoding are no
//! difference, so the same body gzip-encoded on one side and plain on the
//! other differs only in `header:content-encoding`. A side that cannot be
//! decoded (corrupt data, unknown coding, over the limit) is compared as its
//! raw bytes; if those differ from the other side, one `body` difference
//! says `undecodable CODING: ERROR` for that side.
//!
//! Decoded bodies are then compared by kind:
//!
//! - **JSON** on both sides (Content-Type `*/json` or `*/*+json`, or a body
//!   starting with `{` or `[`, and it parses): structurally, see
//!   [`json`](self#json).
//! - **text** on both sides (`text/*`, decoded lossily, or any valid UTF-8):
//!   one `body` difference naming the first differing line, see
//!   [`text`](self#text).
//! - anything else (**binary**: a binary content type as
//!   [`binary_content_type`] names them, or bytes that are not text; or the
//!   two sides of different kinds): one `body` difference whose values
//!   summarise each side: the JSON value, the text itself, or
//!   `<N bytes, xxh3 PREFIX>` for binary.
//!
//! # Digests
//!
//! A response body that was hashed while it arrived instead of kept
//! ([`Response::digest`], see [`digest`]: binary content types, and bodies
//! over the size kept whole) has no bytes to diff. When either side has a
//! digest, the other side's whole body is digested the same way (its
//! Content-Encoding undone first), and the two compare by decoded length and
//! hash: equal bodies, whatever their coding, are no difference; else one
//! `body` difference shows `<N bytes, xxh3 PREFIX>` per side (for a side
//! whose coding could not be undone: why, and the digest of its bytes as
//! sent). [`Comparison::body_by_digest`] says that this happened.
//!
//! # JSON
//!
//! Differences are reported at `body:POINTER` (RFC 6901, `~0`/`~1`
//! escaped; a difference at the root is reported at `body`) with the two
//! JSON values. Object key order is no difference. Arrays are compared index
//! by index; elements only one side has are reported at their index with
//! `null` on the other side. A value whose type changed is reported at its
//! node, not below it. An object key that is absent on one side and JSON
//! `null` on the other is *not* a difference (a [`Difference`] could not
//! tell the two apart, and serialisers differ in whether they omit nulls).
//! Numbers compare by value: `1`, `1.0` and `1e0` are equal (integers
//! exactly, otherwise as `f64`). Paths matched by
//! [`DiffConfig::ignore_pointers`] are skipped with their subtrees.
//!
//! # Text
//!
//! Both bodies are split into lines after each `\n` (the terminator is part
//! of the line, so a missing final newline or CRLF vs LF is a difference).
//! The common leading and trailing lines are skipped; of the lines between,
//! each side's value counts those the other side lacks (a multiset
//! difference: linear time, and moved lines are not counted) and shows the
//! first differing line:
//! `"line 12: <text> (2 of 120 lines not in new)"` (the count only for multi-line bodies). A side that has no such
//! line shows `line 12: <end of body>`.
//!
//! # Limits
//!
//! String values longer than [`DiffConfig::max_value_len`] bytes are cut at
//! a char boundary and marked `…(+N bytes)`; a JSON array or object whose
//! JSON text is longer is replaced by that text, cut the same way. At most
//! [`DiffConfig::max_differences`] differences are kept per comparison;
//! [`Comparison::omitted`] counts the rest. The bound is there for memory
//! only and is far above what a mismatch event lists (100): noise
//! cancellation decides over every difference kept, and a comparison that
//! omitted some cannot be all noise.
//!
//! # gRPC
//!
//! Only when both sides are gRPC; a gRPC response against anything else is
//! compared as any two responses are (`application/grpc` is a binary
//! type).
//!
//! **Status.** `grpc-status`, `grpc-message` and `grpc-status-details-bin`
//! are read from the trailers when they carry a `grpc-status`, else from
//! the headers (a trailers-only response), and compared at their own
//! locations, never as `header:` (so a status in the trailers and the same
//! status trailers-only are no difference). `grpc-status` is a JSON number
//! (the raw text when it is not one, `null` when absent); `grpc-message` is
//! percent-decoded, an empty one the same as none (shown `null`);
//! `grpc-status-details-bin` is compared as its text (base64). The gRPC
//! per-call metadata in [`DEFAULT_IGNORED_HEADERS`] (`grpc-trace-bin`,
//! `grpc-tags-bin`, `grpc-server-stats-bin`, `grpc-previous-rpc-attempts`)
//! is ignored like any header; `grpc-encoding` and `grpc-accept-encoding`
//! are compared (they describe the server, not the call).
//!
//! **Messages.** Each body is split into its length-prefixed messages
//! ([`crate::grpc::split_messages`]: compressed ones decoded per
//! `grpc-encoding`, at most [`DiffConfig::max_grpc_messages`] messages and
//! [`DiffConfig::max_decoded_body`] bytes in all; Content-Encoding is not
//! used by gRPC and not undone). A body that cannot be split, when the
//! bodies differ, is one `grpc` difference: `undecodable gRPC body: ERROR`
//! on that side, `N messages, <N bytes, xxh3 PREFIX>` on a side that
//! splits. Messages are paired by index; when either side has more than one
//! message each message's location starts `grpc[i]` (from 0), else `grpc`.
//! A message only one side has is reported at its root with `null` on the
//! other; equal bytes are no difference. A pair is compared:
//!
//! - with [`DiffConfig::schema`], when the method (the target
//!   `/package.Service/Method` given to [`compare_with_target`]) is in the
//!   schema and both messages decode as its response type: as JSON (proto
//!   field names), with the JSON rules above, located `grpc:/item/price`,
//!   `grpc[2]:/related/0/name` ([`protobuf`](protobuf#with-a-schema));
//! - else without a schema, as trees of field numbers, located
//!   `grpc:/2/1[0]/3` (field numbers; `[k]` the k-th occurrence of a field
//!   that occurs more than once on either side), see
//!   [`protobuf`](protobuf#comparing-two-trees);
//! - a message that is not protobuf at all is shown as bytes
//!   (`"base64:…"` or `<N bytes, xxh3 PREFIX>`), and the pair is one
//!   difference at its root.
//!
//! [`DiffConfig::ignore_pointers`] apply to message paths too. Bodies that
//! were digested while they arrived are compared by digest, as in
//! [`Digests`](self#digests).
//!
//! Noise cancellation (differences that are not regressions) is in
//! [`noise`].

mod body;
pub mod digest;
mod grpc;
mod headers;
mod json;
pub mod noise;
pub mod protobuf;

use std::{io::Write, sync::Arc};

use serde_json::Value;

pub use self::{
    body::binary_content_type,
    digest::{
        BodyDigester, BodySink, DEFAULT_MAX_WHOLE_BODY, DigestPolicy, content_codings, digest_whole,
    },
    headers::HeaderPatterns,
    json::{PointerPattern, PointerPatternError},
    noise::{EndpointNoise, NoiseThresholds, cancel},
    protobuf::{Schema, SchemaError},
};
use crate::model::{Difference, Response};

/// Headers ignored by default: values that differ on every response
/// (dates, request and trace ids, timings, proxy stamps), validators derived
/// from them (`etag`, `last-modified`: a changed body is reported as a body
/// difference anyway), and framing or hop-by-hop headers that describe the
/// connection, not the content.
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    // Per-response values.
    "date",
    "server",
    "age",
    "expires",
    "last-modified",
    "etag",
    "x-request-id",
    "x-correlation-id",
    "request-id",
    "x-amzn-trace-id",
    "x-amzn-requestid",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-*",
    "x-cloud-trace-context",
    "x-runtime",
    "x-response-time",
    "server-timing",
    "x-envoy-upstream-service-time",
    "via",
    "cf-ray",
    "report-to",
    "nel",
    // Framing and hop-by-hop.
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    // gRPC per-call metadata: tracing and stats of this one call, and
    // the client's retry count (`grpc-status` and `grpc-message` are
    // compared, see the module docs).
    "grpc-trace-bin",
    "grpc-tags-bin",
    "grpc-server-stats-bin",
    "grpc-previous-rpc-attempts",
];

/// What [`compare`] ignores and how much it reports.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffConfig {
    /// Header names not compared: `*` matches any run of characters
    /// (`x-b3-*`), `?` one. Matched ASCII case-insensitively.
    pub ignore_headers: HeaderPatterns,
    /// JSON paths not compared, with their subtrees.
    pub ignore_pointers: Vec<PointerPattern>,
    /// String values in a [`Difference`] are cut to this many bytes.
    pub max_value_len: usize,
    /// At most this many differences are kept per comparison (a memory
    /// bound: each difference holds at most two values of
    /// [`max_value_len`](Self::max_value_len) bytes).
    pub max_differences: usize,
    /// A body that decodes (per Content-Encoding step) to more than this
    /// many bytes is undecodable (decompression bombs).
    pub max_decoded_body: usize,
    /// A gRPC body of more messages than this is not compared message by
    /// message (its messages' total decoded size is bounded by
    /// [`max_decoded_body`](Self::max_decoded_body)).
    pub max_grpc_messages: usize,
    /// Bounds on decoding a gRPC message without a schema.
    pub protobuf_limits: protobuf::Limits,
    /// Protobuf descriptors by which gRPC messages are decoded by name
    /// (`--proto-descriptor FILE`, loaded by [`Schema::load`]); without,
    /// they are decoded by field number. Used by [`compare_with_target`],
    /// which knows the method.
    pub schema: Option<Arc<Schema>>,
}

impl Default for DiffConfig {
    /// [`DEFAULT_IGNORED_HEADERS`], no ignored pointers, values cut at
    /// 512 bytes, 10 000 differences, bodies decoded up to 64 MiB, at most
    /// 100 000 gRPC messages per body, default [`protobuf::Limits`], no
    /// schema.
    fn default() -> Self {
        Self {
            ignore_headers: DEFAULT_IGNORED_HEADERS.iter().collect(),
            ignore_pointers: Vec::new(),
            max_value_len: 512,
            max_differences: 10_000,
            max_decoded_body: 64 << 20,
            max_grpc_messages: 100_000,
            protobuf_limits: protobuf::Limits::default(),
            schema: None,
        }
    }
}

impl DiffConfig {
    /// Also ignores `names` (`*` and `?` wildcards allowed).
    #[must_use]
    pub fn with_ignored_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.ignore_headers.extend(names);
        self
    }

    /// Also ignores the JSON paths matched by `patterns`.
    #[must_use]
    pub fn with_ignored_pointers<I>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = PointerPattern>,
    {
        self.ignore_pointers.extend(patterns);
        self
    }

    /// Whether the header `name` is not compared.
    pub fn ignores_header(&self, name: &str) -> bool {
        self.ignore_headers.matches(name)
    }

    /// `s` as a JSON string, cut to [`max_value_len`](Self::max_value_len).
    fn bounded_str(&self, s: &str) -> Value {
        Value::String(cut(s, self.max_value_len))
    }

    /// `v` with strings cut and a long array or object replaced by its cut
    /// JSON text. Memory is bounded by the limit, not by `v`'s size.
    fn bounded_json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => self.bounded_str(s),
            Value::Array(_) | Value::Object(_) => {
                let mut w = PrefixWriter::new(self.max_value_len);
                // Writing to a PrefixWriter cannot fail, nor can serialising
                // a Value (its map keys are strings).
                if serde_json::to_writer(&mut w, v).is_err() || w.total > self.max_value_len {
                    let prefix = w.prefix_str();
                    let cut_bytes = w.total - prefix.len();
                    Value::String(format!("{prefix}{}", marker(cut_bytes)))
                } else {
                    v.clone()
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
        }
    }
}

/// The outcome of one [`compare`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    /// The differences found, at most [`DiffConfig::max_differences`].
    pub differences: Vec<Difference>,
    /// Differences found beyond [`DiffConfig::max_differences`].
    pub omitted: usize,
    /// The bodies were compared by digest (one side at least was digested
    /// while it arrived: see [`digest`]), not byte by byte.
    pub body_by_digest: bool,
}

impl Comparison {
    /// Whether the two responses did not differ at all.
    pub fn is_match(&self) -> bool {
        self.differences.is_empty() && self.omitted == 0
    }
}

/// Every difference between `old` and `new` under `cfg` (see the
/// [module docs](self) for the rules), not knowing the request: gRPC
/// messages are compared without [`DiffConfig::schema`]. See
/// [`compare_with_target`].
pub fn compare(cfg: &DiffConfig, old: &Response, new: &Response) -> Comparison {
    compare_with_target(cfg, "", old, new)
}

/// Every difference between `old` and `new`, the responses to a request
/// for `target` (the request line's target, HTTP/2's `:path`), under `cfg`
/// (see the [module docs](self) for the rules). The target is only used to
/// find a gRPC method's response type in [`DiffConfig::schema`].
pub fn compare_with_target(
    cfg: &DiffConfig,
    target: &str,
    old: &Response,
    new: &Response,
) -> Comparison {
    let mut sink = Sink::new(cfg.max_differences);
    if old.status != new.status {
        sink.report(|| Difference {
            location: "status".to_owned(),
            old: Value::from(old.status),
            new: Value::from(new.status),
        });
    }
    let is_grpc = crate::grpc::is_grpc(&old.headers) && crate::grpc::is_grpc(&new.headers);
    let body_by_digest = if is_grpc {
        headers::compare(
            cfg,
            grpc::STATUS_FIELDS,
            &old.headers,
            &new.headers,
            &mut sink,
        );
        grpc::compare_status(cfg, old, new, &mut sink);
        grpc::compare_messages(cfg, target, old, new, &mut sink)
    } else {
        headers::compare(cfg, &[], &old.headers, &new.headers, &mut sink);
        body::compare(cfg, old, new, &mut sink)
    };
    Comparison {
        body_by_digest,
        ..sink.finish()
    }
}

/// Collects differences up to a cap, counting the rest.
struct Sink {
    max: usize,
    out: Vec<Difference>,
    omitted: usize,
}

impl Sink {
    fn new(max: usize) -> Self {
        Self {
            max,
            out: Vec::new(),
            omitted: 0,
        }
    }

    /// Keeps the difference `make` builds, or only counts it when full (so
    /// that no values are built beyond the cap).
    fn report(&mut self, make: impl FnOnce() -> Difference) {
        if self.out.len() < self.max {
            self.out.push(make());
        } else {
            self.omitted += 1;
        }
    }

    fn finish(self) -> Comparison {
        Comparison {
            differences: self.out,
            omitted: self.omitted,
            body_by_digest: false,
        }
    }
}

/// The marker appended to a value cut by `n` bytes.
fn marker(n: usize) -> String {
    format!("…(+{n} bytes)")
}

/// `s` cut to at most `max` bytes at a char boundary, marked when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &s[..end], marker(s.len() - end))
}

/// Keeps the first `limit` bytes written and counts all of them.
struct PrefixWriter {
    limit: usize,
    buf: Vec<u8>,
    total: usize,
}

impl PrefixWriter {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            buf: Vec::new(),
            total: 0,
        }
    }

    /// The longest valid UTF-8 prefix of what was kept.
    fn prefix_str(&self) -> &str {
        match std::str::from_utf8(&self.buf) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or_default(),
        }
    }
}

impl Write for PrefixWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        self.total += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
