//! The values that flow between pipeline stages: a TCP segment from either
//! source (ring buffer or pcap), the connection it belongs to, and the HTTP
//! exchange that reassembly and parsing make of a connection's bytes, with
//! the [`Protocol`] it was captured in.

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
pub use parallelrun_common::{Direction, tcp_flags};

/// One connection to the old service, named from the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// The peer of the old service.
    pub client: SocketAddr,
    /// The old service.
    pub server: SocketAddr,
}

/// A TCP segment of an old service's connection, borrowed from wherever it
/// was read (a ring-buffer record or a pcap packet). No allocation.
#[derive(Clone, Copy, Debug)]
pub struct TcpSegment<'a> {
    /// Wall-clock time the segment was seen, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub conn: ConnKey,
    /// `Request`: client → server; `Response`: server → client.
    pub direction: Direction,
    pub seq: u32,
    pub ack: u32,
    /// TCP flags byte ([`tcp_flags`]).
    pub flags: u8,
    /// The payload bytes that were captured.
    pub payload: &'a [u8],
    /// Payload bytes the segment carried beyond `payload` (the capture cut
    /// them: a >64 KiB skb, or a pcap snaplen). They follow `payload` in
    /// sequence space and are a gap to the stream.
    pub missing: u32,
}

impl TcpSegment<'_> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Sequence space the segment's payload covers (captured + missing).
    pub fn payload_len(&self) -> u32 {
        self.payload.len() as u32 + self.missing
    }
}

/// The wall clock now, as [`TcpSegment::ts_ns`] counts time: nanoseconds
/// since the Unix epoch (0 before it, `u64::MAX` after 2554).
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A header as it was on the wire: name spelled as sent, value as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: Bytes,
}

impl Header {
    pub fn new(name: impl Into<HeaderName>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A header's name as spelt on the wire, a `str`. Parsed names share the
/// message's bytes ([`HeaderName::from_shared`]) instead of each being
/// copied into a `String` of its own: a head's fields cost no allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HeaderName(Bytes);

impl HeaderName {
    /// The name in `bytes`, shared; `None` unless they are UTF-8.
    pub fn from_shared(bytes: Bytes) -> Option<Self> {
        std::str::from_utf8(&bytes).is_ok().then_some(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or starts from UTF-8 (`from_shared`
        // validates, `From<String>`/`From<&str>` take a `str`'s bytes).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl std::ops::Deref for HeaderName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for HeaderName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for HeaderName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for HeaderName {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for HeaderName {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for HeaderName {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl std::fmt::Debug for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for HeaderName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for HeaderName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HeaderName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// First header named `name` (ASCII case-insensitive), if any.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a Bytes> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| &h.value)
}

/// An HTTP/1.x request as captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// In wire order.
    pub headers: Vec<Header>,
    /// The body with transfer framing removed (de-chunked), not decoded.
    pub body: Bytes,
    /// Trailer fields of a chunked body, in wire order.
    pub trailers: Vec<Header>,
    /// The request exactly as it was on the wire (head, framing and body).
    pub raw: Bytes,
}

/// An HTTP/1.x response: the old one captured on the wire, or a replayed one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub status: u16,
    pub reason: String,
    /// In wire order.
    pub headers: Vec<Header>,
    /// The body with transfer framing removed (de-chunked), not decoded
    /// (Content-Encoding is the diff's business). Empty when the body was
    /// not kept ([`digest`](Self::digest)).
    pub body: Bytes,
    /// Set when the body was hashed while it arrived instead of kept (a
    /// binary content type, or over the size kept whole): what the diff
    /// compares it by. `body` is then empty.
    pub digest: Option<Box<BodyDigest>>,
    /// Trailer fields of a chunked body, in wire order.
    pub trailers: Vec<Header>,
}

/// What is kept of a body that was hashed instead of kept: enough to
/// compare it with another body, and to say what it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyDigest {
    /// Length as sent: transfer framing removed, content coding not undone.
    pub sent_len: u64,
    /// Length of the bytes compared: decoded, or as sent when
    /// [`undecodable`](Self::undecodable).
    pub len: u64,
    /// XXH3-128 of the bytes compared.
    pub xxh3: u128,
    /// Why the content coding could not be undone (`undecodable CODING:
    /// ERROR`); `len` and `xxh3` are then of the bytes as sent.
    pub undecodable: Option<String>,
}

impl BodyDigest {
    /// Whether the two bodies compared equal (same bytes after decoding,
    /// or as sent where undecodable).
    pub fn same_content(&self, other: &BodyDigest) -> bool {
        self.len == other.len && self.xxh3 == other.xxh3
    }
}

/// The protocol an [`Exchange`] was captured in, which decides how its
/// request is replayed.
///
/// Each protocol has a variant here, the capture-side parser that makes its
/// exchanges, and its replay client in [`crate::replay`] (which documents
/// how a client plugs in). The diff, noise cancellation, mismatch log and
/// accounting work on exchanges whatever their protocol.
///
/// # HTTP/2 exchanges
///
/// An HTTP/2 stream ([`crate::http2`]) becomes a [`Request`] and a
/// [`Response`] of the same shape as HTTP/1's, so that everything after
/// capture is shared:
///
/// - `Request::method` and `target` are `:method` and `:path`; `headers`
///   begin with the `:authority`, `:scheme` and `:protocol` pseudo-header
///   fields that were sent (named with their colon), then the regular
///   fields in wire order; `body` is the DATA frames' payloads joined
///   (padding removed); `trailers` the fields of a trailing HEADERS; `raw`
///   is empty (frames are not replayed as captured: HPACK state belongs
///   to the connection); `version` is 0.
/// - `Response::status` is `:status` (interim 1xx responses skipped),
///   `reason` empty, `version` 0, `headers` the regular fields, `body` and
///   `trailers` as for the request. A gRPC trailers-only response has its
///   `grpc-status` among the headers and no trailers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.0 and HTTP/1.1 ([`crate::http`]); the minor version is in
    /// [`Request::version`] and [`Response::version`].
    Http1,
    /// HTTP/2 over cleartext TCP (h2c, prior knowledge or `Upgrade: h2c`),
    /// gRPC included; see the type's documentation for how a stream maps
    /// to an exchange, and [`Exchange::stream_id`].
    Http2,
}

impl Protocol {
    /// Stable name, used in the `exchanges` output.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// A request paired with the old service's response to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// Unique within one run, increasing in the order requests were seen.
    pub id: u64,
    pub conn: ConnKey,
    /// The protocol the exchange was captured in.
    pub protocol: Protocol,
    /// The HTTP/2 stream the exchange was sent on; 0 for HTTP/1.
    pub stream_id: u32,
    pub request: Request,
    pub response: Response,
    /// Wall-clock ns of the segment carrying the request's first byte.
    pub request_ts_ns: u64,
    /// Wall-clock ns of the segment carrying the response's last byte.
    pub response_ts_ns: u64,
}

impl Exchange {
    /// The old service's latency as seen on the wire.
    pub fn old_latency_ns(&self) -> u64 {
        self.response_ts_ns.saturating_sub(self.request_ts_ns)
    }
}

/// Why a request seen on the wire did not become an [`Exchange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LossCause {
    /// Bytes missing from a stream while the kernel reported ring-buffer drops.
    RingBufferDrop,
    /// Bytes missing from a stream that never arrived (capture cut, loss).
    Gap,
    /// The bytes were not valid HTTP/1.x.
    ParseError,
    /// The connection went idle, was closed or reset before the response ended.
    Timeout,
    /// The connection closed or reset before the response was complete.
    Closed,
    /// A body or head over the configured limit.
    TooLarge,
    /// Sent on a connection that an earlier request upgraded (101, or a
    /// CONNECT answered with 2xx; that request is paired): what follows is
    /// no longer HTTP/1.x.
    Upgrade,
    /// Reassembly memory limits forced the connection out.
    Evicted,
    /// HTTP/2: the stream was reset (RST_STREAM, or a GOAWAY that excluded
    /// it) before its response was complete.
    Reset,
    /// HTTP/2: the request's or response's header block named HPACK table
    /// entries inserted before the agent joined the connection (or lost in
    /// a gap); its fields are unknown, and never guessed.
    HpackState,
}

impl LossCause {
    pub const ALL: [LossCause; 10] = [
        LossCause::RingBufferDrop,
        LossCause::Gap,
        LossCause::ParseError,
        LossCause::Timeout,
        LossCause::Closed,
        LossCause::TooLarge,
        LossCause::Upgrade,
        LossCause::Evicted,
        LossCause::Reset,
        LossCause::HpackState,
    ];

    /// Stable snake_case name, used in metrics labels, JSON and summaries.
    pub fn name(self) -> &'static str {
        match self {
            LossCause::RingBufferDrop => "ring_buffer_drop",
            LossCause::Gap => "gap",
            LossCause::ParseError => "parse_error",
            LossCause::Timeout => "timeout",
            LossCause::Closed => "closed",
            LossCause::TooLarge => "too_large",
            LossCause::Upgrade => "upgrade",
            LossCause::Evicted => "evicted",
            LossCause::Reset => "reset",
            LossCause::HpackState => "hpack_state",
        }
    }
}

/// A request that was seen (its head parsed, or rejected by the parser
/// though it looks like a request) but ended without a pairable response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub conn: ConnKey,
    pub cause: LossCause,
    /// Method and target as far as they could be read: both when the head
    /// was parsed; of a rejected head, the first word when it looks like a
    /// method and the second when it looks like a target.
    pub method: Option<String>,
    pub target: Option<String>,
}

/// What HTTP tracking makes of each request seen: exactly one outcome each.
// Most outcomes are pairs; boxing them would add an allocation per exchange
// to save a few hundred bytes in a short-lived queue.
#[allow(
    clippy::large_enum_variant,
    reason = "most outcomes are pairs; boxing would allocate per exchange"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Paired(Exchange),
    Lost(Lost),
}

/// One difference between the old response and a replayed one, as the diff
/// reports it and the mismatch log writes it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Difference {
    /// `status`, `header:NAME` (name lowercase), `body`, or
    /// `body:/json/pointer` (RFC 6901); for gRPC `grpc-status`,
    /// `grpc-message`, `grpc-status-details-bin`, and `grpc`, `grpc[i]`,
    /// `grpc:/path`, `grpc[i]:/path` (see [`crate::diff`]).
    #[serde(rename = "where")]
    pub location: String,
    /// The old side's value; `null` when absent there.
    pub old: serde_json::Value,
    /// The new side's value; `null` when absent there.
    pub new: serde_json::Value,
}

/// RFC 3339 in UTC with milliseconds: `2024-05-01T12:00:00.123Z`.
pub fn timestamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
