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
//!
//! # Digested bodies
//!
//! A response parser with a [`DigestPolicy`] gives each message a
//! [`DigestPlan`]: a body of a binary content type, or one whose
//! `Content-Length` is over [`DigestPolicy::max_whole`], is *digested* from
//! its first byte, any other once its size as transferred passes that limit.
//! Digesting copies the head out of the buffer, hashes the body's data
//! bytes (de-chunked; the chunk framing is only followed) with a
//! [`BodyDigester`], and from then on drops each byte as soon as it is
//! parsed, like discarding, so `pos` stays 0. What was buffered before the
//! switch is hashed first. The framing, the body limit and the errors are
//! exactly those of a kept body; [`Body::finish`] returns the digest
//! instead of the data.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::{
    DigestPolicy, HttpError, HttpLimits,
    head::{Field, Framing, field_error, field_values, fields_of, find_line, headers, section_end},
};
use crate::{
    diff::{BodyDigester, binary_content_type, content_codings},
    model::{BodyDigest, Header},
};

/// How the body of one response is to be kept: decided from its head by a
/// parser with a [`DigestPolicy`].
#[derive(Debug)]
pub(super) struct DigestPlan {
    policy: DigestPolicy,
    /// A binary content type: digested from the first byte.
    binary: bool,
    /// Its content codings, as [`content_codings`] lists them.
    codings: Vec<String>,
}

impl DigestPlan {
    /// The plan for the response whose head is `head`, with `fields`.
    pub(super) fn new(policy: DigestPolicy, fields: &[Field], head: &[u8]) -> Self {
        let binary = field_values(fields, head, "content-type")
            .next()
            .is_some_and(binary_content_type);
        let codings = if field_values(fields, head, "content-encoding")
            .next()
            .is_some()
        {
            let encodings: Vec<Header> = field_values(fields, head, "content-encoding")
                .map(|v| Header::new("content-encoding", Bytes::copy_from_slice(v)))
                .collect();
            content_codings(&encodings)
        } else {
            Vec::new()
        };
        Self {
            policy,
            binary,
            codings,
        }
    }
}

/// A body being digested.
#[derive(Debug)]
struct Digesting {
    digester: BodyDigester,
    /// The message's head, copied out of the buffer.
    head: Bytes,
    /// The trailer fields, once parsed.
    trailers: Vec<Header>,
}

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
    /// The length of the head before the body in the buffer.
    head_len: usize,
    /// Until the body is digested (or kept whole to its end): when to
    /// digest it. `None` keeps it whole.
    plan: Option<Box<DigestPlan>>,
    /// The body is being digested.
    digest: Option<Box<Digesting>>,
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
        plan: Option<DigestPlan>,
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
            head_len,
            plan: plan.filter(|_| framing != Framing::Empty).map(Box::new),
            digest: None,
        };
        let binary = body.plan.as_ref().is_some_and(|p| p.binary);
        if let Framing::Length(len) = framing {
            let over = body
                .plan
                .as_ref()
                .is_some_and(|p| len > p.policy.max_whole as u64);
            if len > limits.max_body as u64 {
                body.discard(buf);
            } else if len > 0 && (binary || over) {
                body.start_digest(buf);
            } else {
                // The body's size is known: grow the buffer once instead of
                // reallocating (and copying) as segments arrive.
                buf.reserve(clamp(len, usize::MAX));
            }
        } else if binary {
            body.start_digest(buf);
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
                    self.consume(buf, avail, true);
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
                    self.consume(buf, nl + 1, false);
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
                        self.consume(buf, 2, false);
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
            self.consume(buf, n, false);
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
        if let Some(d) = &mut self.digest {
            // The section is dropped once parsed: keep a copy of it.
            let copy = Bytes::copy_from_slice(section);
            d.trailers = headers(fields, &copy, 0..end, false);
        } else if !self.discarding {
            self.trailers = Some((self.pos..self.pos + end, fields));
        }
        self.scan = 0;
        self.consume(buf, end, false);
        Ok(true)
    }

    /// Takes the start of `bytes`, the next bytes of the stream, as body
    /// data without buffering them, when the body is digested or discarded
    /// and nothing is buffered before them: its data up to the framing's
    /// next boundary (the rest of a `Content-Length` body or of a chunk's
    /// data, or all of a close-delimited body). Returns the bytes not
    /// taken, which the caller buffers as usual; [`decode`](Self::decode)
    /// then goes on from where this left off.
    pub(super) fn absorb<'b>(&mut self, bytes: &'b [u8], buf: &mut BytesMut) -> &'b [u8] {
        if !buf.is_empty() || !(self.discarding || self.digest.is_some()) {
            return bytes;
        }
        let left = match self.state {
            State::Length(left) | State::Chunked(Chunk::Data(left)) => left,
            State::UntilClose => u64::MAX,
            State::Chunked(_) => return bytes,
        };
        let n = clamp(left, bytes.len());
        let (data, rest) = bytes.split_at(n);
        if !self.discarding
            && let Some(d) = &mut self.digest
        {
            d.digester.update(data);
        }
        self.wire = self.wire.saturating_add(n as u64);
        self.state = match self.state {
            State::Length(left) => State::Length(left - n as u64),
            State::Chunked(Chunk::Data(left)) => State::Chunked(Chunk::Data(left - n as u64)),
            other => other,
        };
        if !self.discarding && self.wire > self.limits.max_body as u64 {
            self.discard(buf);
        }
        rest
    }

    /// Takes up to `left` of the `avail` unparsed bytes as part of the
    /// body; how many of `left` are still to come.
    fn consume_up_to(&mut self, buf: &mut BytesMut, left: u64, avail: usize) -> u64 {
        let n = clamp(left, avail);
        self.consume(buf, n, true);
        left - n as u64
    }

    /// Takes `n` unparsed bytes as part of the body (`data`: the body's
    /// data, not chunk framing); stops keeping the message once its body
    /// as transferred is over the limit, and digests it once it is over
    /// the plan's.
    fn consume(&mut self, buf: &mut BytesMut, n: usize, data: bool) {
        let n = n.min(unparsed(buf, self.pos).len());
        if self.discarding {
            buf.advance(n);
        } else if let Some(d) = &mut self.digest {
            if data {
                d.digester.update(buf.get(..n).unwrap_or_default());
            }
            buf.advance(n);
        } else {
            self.pos += n;
        }
        self.wire = self.wire.saturating_add(n as u64);
        if self.discarding {
            return;
        }
        if self.wire > self.limits.max_body as u64 {
            self.discard(buf);
        } else if self.state != State::Chunked(Chunk::Trailers)
            && self
                .plan
                .as_ref()
                .is_some_and(|p| self.wire > p.policy.max_whole as u64)
        {
            // (The trailer section ends the body: a body whose trailers
            // take it over the limit is complete, and kept.)
            self.start_digest(buf);
        }
    }

    /// Stops keeping the current message: drops what is buffered of it.
    fn discard(&mut self, buf: &mut BytesMut) {
        let kept = self.pos.min(buf.len());
        buf.advance(kept);
        self.pos = 0;
        self.discarding = true;
        self.trailers = None;
        self.plan = None;
        self.digest = None;
    }

    /// Digests the body from here on: copies the head out, hashes the
    /// body's data buffered so far and drops it (see the
    /// [module docs](self#digested-bodies)).
    fn start_digest(&mut self, buf: &mut BytesMut) {
        let Some(plan) = self.plan.take() else {
            return;
        };
        let end = self.pos.min(buf.len());
        let head_len = self.head_len.min(end);
        let head = Bytes::copy_from_slice(buf.get(..head_len).unwrap_or_default());
        let mut digester = BodyDigester::new(plan.codings, plan.policy.max_decoded);
        let so_far = buf.get(head_len..end).unwrap_or_default();
        if self.is_chunked() {
            hash_dechunked(so_far, &mut digester);
        } else {
            digester.update(so_far);
        }
        buf.advance(end);
        self.pos = 0;
        self.digest = Some(Box::new(Digesting {
            digester,
            head,
            trailers: Vec::new(),
        }));
    }

    /// The head of a digested body, copied out of the buffer (whose bytes
    /// of the message are gone); `None` for a body kept in the buffer.
    pub(super) fn digested_head(&self) -> Option<Bytes> {
        self.digest.as_ref().map(|d| d.head.clone())
    }

    /// The data (or the digest) and trailer fields of the complete body,
    /// out of `raw`, the message's bytes, whose head is `raw[..head_len]`.
    /// With `copy_out`, the trailer values are copied out of `raw` so that
    /// it can be freed (the data of a chunked body is a copy anyway).
    pub(super) fn finish(
        self,
        raw: &Bytes,
        head_len: usize,
        copy_out: bool,
    ) -> Result<Finished, HttpError> {
        if let Some(d) = self.digest {
            return Ok((
                Bytes::new(),
                Some(Box::new(d.digester.finish())),
                d.trailers,
            ));
        }
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
        Ok((data, None, trailers))
    }
}

/// A complete body: its data (empty when digested), its digest when it
/// was digested, and its trailer fields.
pub(super) type Finished = (Bytes, Option<Box<BodyDigest>>, Vec<Header>);

/// The bytes of `buf` after `pos`.
fn unparsed(buf: &BytesMut, pos: usize) -> &[u8] {
    buf.get(pos..).unwrap_or_default()
}

/// `left` clamped to `avail`.
fn clamp(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |left| left.min(avail))
}

/// Hashes the data of the start of a chunked body, validated while it
/// arrived: whole chunks, and the start of the last one.
fn hash_dechunked(mut wire: &[u8], digester: &mut BodyDigester) {
    while let Ok(httparse::Status::Complete((used, size))) = httparse::parse_chunk_size(wire) {
        if size == 0 {
            return;
        }
        let data = wire.get(used..).unwrap_or_default();
        let n = clamp(size, data.len());
        digester.update(data.get(..n).unwrap_or_default());
        wire = data.get(n.saturating_add(2)..).unwrap_or_default();
    }
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
