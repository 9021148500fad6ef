//! HTTP/1.x: incremental parsing ([`parse`]) and request/response pairing
//! ([`track`]).

pub mod parse;
pub mod track;

pub use parse::{HttpError, HttpLimits, RequestEvent, RequestParser, ResponseParser};
pub use track::{HttpConfig, HttpConn, HttpStats, HttpTracker};
