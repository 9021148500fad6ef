//! Captured fields a replay does not copy as they were: those that belong
//! to the captured connection or its framing. The HTTP/1 wire format drops
//! them and redoes the framing; the shadow marker may not take their names.

/// Headers that describe the captured connection or the captured framing,
/// not the request (RFC 9110 section 7.6.1, plus the body framing the
/// HTTP/1 replay redoes).
const CONNECTION_FIELDS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Whether `name` (any case) is one of the [`CONNECTION_FIELDS`].
pub(super) fn is_connection_field(name: &str) -> bool {
    CONNECTION_FIELDS
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// Whether a replay rewrites or drops every field named `name`: the
/// connection's fields, `Host` (the override, or `:authority` over
/// HTTP/2) and `HTTP2-Settings` (an `Upgrade: h2c` request's).
pub(super) fn is_rewritten(name: &str) -> bool {
    is_connection_field(name)
        || name.eq_ignore_ascii_case("host")
        || name.eq_ignore_ascii_case("http2-settings")
}
