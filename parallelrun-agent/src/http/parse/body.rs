//! HTTP/1.x message bodies: following a body's framing while its bytes
//! arrive (RFC 9112 §6 and §7).
//!
//! A [`Body`] is made for each message once its head is parsed, with the
//! [`Framing`] the head declares, and is handed the buffer that holds the
//! message from its first byte on. It finds where the body ends: a
//! `Content-Length` count, a close of the connection, or the chunked coding,
//! whose chunk-size lines, CRLF after each chunk's data and trailer section
//! it validates as they arrive (chunk extensions are ignored). The body's
//! bytes stay in the buffer as they were transferred; when the message is
//! complete, [`Body::finish`] returns its data, de-chunked in one pass, and
//! its trailer fields.
//!
//! # Invariants
//!
//! - `buf[..pos]` is the message so far: its head, then its body as
//!   transferred. `pos` only grows, until the body goes over
//!   [`HttpLimits::max_body`] as transferred (chunk framing and trailer
//!   section included): then the message is dropped from the buffer, and
//!   from then on each byte of it is dropped as soon as it is parsed, so
//!   `pos` stays 0 (*discarding*). The framing is still followed to the
//!   end of the message, which keeps the parser in step with the stream.
//! - A body whose `Content-Length` is over the limit, and a chunk whose
//!   size would take the body over it, are discarded before their data is
//!   buffered.
//! - A chunk-size line and the trailer section are each bounded by
//!   [`HttpLimits::max_head`], like a head.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::{
    HttpError, HttpLimits,
    head::{Field, Framing, field_error, fields_of, find_line, headers, section_end},
};
use crate::model::Header;

/// The body of the current message, while it arrives.
#[derive(Debug)]
pub(super) struct Body {
    limits: HttpLimits,
    /// As the head declared it.
    framing: Framing,
    state: State,
    /// End of the parsed bytes of the message in the buffer (0 while
    /// discarding).
    pos: usize,
    /// Where the search for a line end resumes, relative to the start of
    /// the chunk-size line or trailer section being looked for.
    scan: usize,
    discarding: bool,
    /// Body bytes as transferred so far (framing included).
    wire: u64,
    /// De-chunked body length so far.
    decoded: u64,
    /// The trailer section's place in the message, and its fields.
    trailers: Option<(Range<usize>, Vec<Field>)>,
}

/// How far the body has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// This many body bytes are still to come (0 for a message without
    /// body).
    Length(u64),
    Chunked(Chunk),
    /// Everything until the connection closes.
    UntilClose,
}

/// Position within a chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data are still to come.
    Data(u64),
    /// The CRLF after chunk data is next.
    DataEnd,
    /// The trailer section after the last chunk is next.
    Trailers,
}

impl Body {
    /// The body framed by `framing` of the message at the start of `buf`,
    /// whose head is `buf[..head_len]`.
    pub(super) fn new(
        framing: Framing,
        head_len: usize,
        buf: &mut BytesMut,
        limits: HttpLimits,
    ) -> Self {
        let state = match framing {
            Framing::Empty => State::Length(0),
            Framing::Length(len) => State::Length(len),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = Self {
            limits,
            framing,
            state,
            pos: head_len,
            scan: 0,
            discarding: false,
            wire: 0,
            decoded: 0,
            trailers: None,
        };
        if let Framing::Length(len) = framing {
            if len > limits.max_body as u64 {
                body.discard(buf);
            } else {
                // The body's size is known: grow the buffer once instead of
                // reallocating (and copying) as segments arrive.
                buf.reserve(clamp(len, usize::MAX));
            }
        }
        body
    }

    /// Over the body limit: the message is not kept.
    pub(super) fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Chunked: its bytes in the buffer are not its data.
    pub(super) fn is_chunked(&self) -> bool {
        self.framing == Framing::Chunked
    }

    /// Close-delimited: only the end of the connection completes it.
    pub(super) fn until_close(&self) -> bool {
        self.framing == Framing::UntilClose
    }

    /// Where the message ends in the buffer, so far.
    pub(super) fn end(&self) -> usize {
        self.pos
    }

    /// Parses as much of the body as `buf` holds; true when it is complete.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<bool, HttpError> {
        let max_body = self.limits.max_body as u64;
        loop {
            let avail = unparsed(buf, self.pos).len();
            match self.state {
                State::Length(left) => {
                    let left = self.consume_up_to(buf, left, avail);
                    self.state = State::Length(left);
                    return Ok(left == 0);
                }
                State::UntilClose => {
                    self.consume(buf, avail);
                    return Ok(false);
                }
                State::Chunked(Chunk::Size) => {
                    let rest = unparsed(buf, self.pos);
                    let Some(nl) = find_line(rest, &mut self.scan, self.limits.max_head)? else {
                        return Ok(false);
                    };
                    let line = rest.get(..=nl).unwrap_or_default();
                    let size = match httparse::parse_chunk_size(line) {
                        Ok(httparse::Status::Complete((used, size))) if used == line.len() => size,
                        _ => return Err(HttpError::Parse("invalid chunk-size line".into())),
                    };
                    self.scan = 0;
                    self.consume(buf, nl + 1);
                    if size == 0 {
                        self.state = State::Chunked(Chunk::Trailers);
                    } else {
                        // Skip a chunk that cannot fit before buffering it.
                        if !self.discarding
                            && self.wire.saturating_add(size).saturating_add(2) > max_body
                        {
                            self.discard(buf);
                        }
                        self.decoded = self.decoded.saturating_add(size);
                        self.state = State::Chunked(Chunk::Data(size));
                    }
                }
                State::Chunked(Chunk::Data(left)) => {
                    let left = self.consume_up_to(buf, left, avail);
                    if left > 0 {
                        self.state = State::Chunked(Chunk::Data(left));
                        return Ok(false);
                    }
                    self.state = State::Chunked(Chunk::DataEnd);
                }
                State::Chunked(Chunk::DataEnd) => match unparsed(buf, self.pos) {
                    [b'\r', b'\n', ..] => {
                        self.consume(buf, 2);
                        self.state = State::Chunked(Chunk::Size);
                    }
                    [] | [b'\r'] => return Ok(false),
                    _ => return Err(HttpError::Parse("chunk data not followed by CRLF".into())),
                },
                State::Chunked(Chunk::Trailers) => return self.trailer_section(buf),
            }
        }
    }

    /// Parses the trailer section of a chunked body; true when it is complete.
    fn trailer_section(&mut self, buf: &mut BytesMut) -> Result<bool, HttpError> {
        let rest = unparsed(buf, self.pos);
        let empty = match rest {
            [b'\r', b'\n', ..] => Some(2),
            [b'\n', ..] => Some(1),
            [] | [b'\r'] => return Ok(false),
            _ => None,
        };
        if let Some(n) = empty {
            self.consume(buf, n);
            return Ok(true);
        }
        let Some(end) = section_end(rest, &mut self.scan, self.limits.max_head)? else {
            return Ok(false);
        };
        let section = rest.get(..end).unwrap_or_default();
        let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let fields = match httparse::parse_headers(section, &mut slots) {
            Ok(httparse::Status::Complete((used, parsed))) if used == end => {
                fields_of(section, self.pos, parsed)
            }
            Ok(_) => return Err(HttpError::Parse("invalid trailer section".into())),
            Err(error) => return Err(field_error(error, &self.limits, "trailer section")),
        };
        if !self.discarding {
            self.trailers = Some((self.pos..self.pos + end, fields));
        }
        self.scan = 0;
        self.consume(buf, end);
        Ok(true)
    }

    /// Takes up to `left` of the `avail` unparsed bytes as part of the
    /// body; how many of `left` are still to come.
    fn consume_up_to(&mut self, buf: &mut BytesMut, left: u64, avail: usize) -> u64 {
        let n = clamp(left, avail);
        self.consume(buf, n);
        left - n as u64
    }

    /// Takes `n` unparsed bytes as part of the body; stops keeping the
    /// message once its body as transferred is over the limit.
    fn consume(&mut self, buf: &mut BytesMut, n: usize) {
        let n = n.min(unparsed(buf, self.pos).len());
        if self.discarding {
            buf.advance(n);
        } else {
            self.pos += n;
        }
        self.wire = self.wire.saturating_add(n as u64);
        if !self.discarding && self.wire > self.limits.max_body as u64 {
            self.discard(buf);
        }
    }

    /// Stops keeping the current message: drops what is buffered of it.
    fn discard(&mut self, buf: &mut BytesMut) {
        let kept = self.pos.min(buf.len());
        buf.advance(kept);
        self.pos = 0;
        self.discarding = true;
        self.trailers = None;
    }

    /// The data and trailer fields of the complete body, out of `raw`, the
    /// message's bytes, whose head is `raw[..head_len]`. With `copy_out`,
    /// the trailer values are copied out of `raw` so that it can be freed
    /// (the data of a chunked body is a copy anyway).
    pub(super) fn finish(
        self,
        raw: &Bytes,
        head_len: usize,
        copy_out: bool,
    ) -> Result<(Bytes, Vec<Header>), HttpError> {
        let data = if self.is_chunked() {
            dechunk(raw.get(head_len..).unwrap_or_default(), self.decoded)?
        } else if self.framing == Framing::Empty {
            Bytes::new()
        } else {
            raw.slice(head_len..)
        };
        let trailers = match self.trailers {
            Some((section, fields)) => headers(fields, raw, section, copy_out),
            None => Vec::new(),
        };
        Ok((data, trailers))
    }
}

/// The bytes of `buf` after `pos`.
fn unparsed(buf: &BytesMut, pos: usize) -> &[u8] {
    buf.get(pos..).unwrap_or_default()
}

/// `left` clamped to `avail`.
fn clamp(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |left| left.min(avail))
}

/// The data of a chunked body that was validated while it arrived.
fn dechunk(mut wire: &[u8], decoded: u64) -> Result<Bytes, HttpError> {
    let broken = || HttpError::Parse("chunked body changed while parsed".into());
    let mut body = BytesMut::with_capacity(usize::try_from(decoded).unwrap_or(0));
    loop {
        let (used, size) = match httparse::parse_chunk_size(wire) {
            Ok(httparse::Status::Complete(found)) => found,
            _ => return Err(broken()),
        };
        if size == 0 {
            return Ok(body.freeze());
        }
        let size = usize::try_from(size).map_err(|_| broken())?;
        let end = used.checked_add(size).ok_or_else(broken)?;
        body.extend_from_slice(wire.get(used..end).ok_or_else(broken)?);
        wire = wire.get(end.saturating_add(2)..).ok_or_else(broken)?;
    }
}

#[cfg(test)]
mod tests;
