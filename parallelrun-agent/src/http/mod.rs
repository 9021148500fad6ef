//! HTTP/1.x: incremental parsing ([`parse`], which reads message heads and
//! follows body framing in submodules of its own) and request/response
//! pairing ([`track`]).

pub mod parse;
pub mod track;

pub use parse::{
    DEFAULT_MAX_WHOLE_BODY, DigestPolicy, HttpError, HttpLimits, RequestEvent, RequestParser,
    ResponseParser,
};
pub use track::{HttpConfig, HttpConn, HttpStats, HttpTracker};
