//! HTTP/1.x: incremental parsing and request/response pairing.
