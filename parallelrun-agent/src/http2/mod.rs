//! HTTP/2 (RFC 9113) as seen from one direction of a reassembled TCP
//! stream: the layers below HTTP semantics, each usable on its own.
//!
//! - [`frame`]: the client connection preface, and frames read in place
//!   from a byte buffer ([`frame::FrameReader`]), padding and priority
//!   fields stripped, malformed frames as typed errors.
//! - [`block`]: a HEADERS or PUSH_PROMISE fragment and its CONTINUATION
//!   frames joined into one header block ([`block::HeaderBlockAssembler`]),
//!   bounded in size and frame count.
//! - [`hpack`]: header blocks decoded with the connection's dynamic table
//!   ([`hpack::Decoder`]), also for a connection the decoder joined in the
//!   middle, where entries it never saw are an error of their own
//!   ([`hpack::HpackError::UnknownIndex`]) instead of a guess.
//! - [`streams`]: one connection's frames, both directions, made into
//!   exchanges stream by stream ([`streams::H2Conn`]); the HTTP tracker
//!   hands it the connections it detects as HTTP/2.
//!
//! Data flows frame → block → header list; one [`frame::FrameReader`], one
//! [`block::HeaderBlockAssembler`] and one [`hpack::Decoder`] per direction
//! of a connection. Nothing here panics on input, and every buffer held
//! between calls is bounded by a limit the caller sets.

pub mod block;
pub mod frame;
pub mod hpack;
pub mod streams;

#[cfg(test)]
mod tests;
