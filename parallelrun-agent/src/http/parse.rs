//! Incremental HTTP/1.0 and HTTP/1.1 message parsers, shared by capture-side
//! tracking ([`super::track`]) and by the replay client.
//!
//! A parser takes bytes as they arrive ([`RequestParser::push`]) and hands
//! out complete messages ([`RequestParser::next`]); bytes after a message
//! stay buffered for the next one, so keep-alive and pipelined connections
//! parse message after message. Heads are parsed in place with `httparse`;
//! a message's bytes are taken off the buffer in one piece when it is
//! complete, so allocation happens per message, not per pushed chunk.
//!
//! # Framing (RFC 9112 §6)
//!
//! - `Transfer-Encoding` (any spelling of the name) whose last coding is
//!   `chunked`: a chunked body; chunk extensions are ignored, trailer fields
//!   end up in `trailers`. It wins over `Content-Length`. `chunked` anywhere
//!   but last is an error.
//! - Otherwise `Content-Length`: several fields or a list are accepted when
//!   all values agree; differing or non-decimal values are an error.
//! - Otherwise a request has no body, and a response's body runs until the
//!   server closes the connection ([`ResponseParser::finish`]). A response
//!   whose `Transfer-Encoding` does not end in `chunked` is close-delimited
//!   too; for a request it is an error.
//! - Responses to `HEAD`, and 1xx, 204 and 304 responses, have no body.
//!   Interim 1xx responses (100 Continue, 103 Early Hints) are skipped; 101
//!   Switching Protocols and a 2xx answer to `CONNECT` end HTTP/1.x on the
//!   connection ([`HttpError::Upgrade`]; the response itself, a head
//!   without a body, is then had from [`ResponseParser::take_upgrade`]).
//! - Empty lines before a message are skipped (RFC 9112 §2.2) and are not
//!   part of [`Request::raw`].
//!
//! # Request lines
//!
//! A request line is read by httparse (`METHOD SP target SP HTTP/1.x`), or
//! in one of two lenient forms that servers accept and answer like any
//! request, read as HTTP/1.0: the version's minor digit missing (`GET /
//! HTTP/1.`), or no version at all (`GET /index.html`, the shape of an
//! HTTP/1.0 simple request line, here followed by a field section). The
//! `head` submodule says why each is accepted. Any other line is
//! [`HttpError::Parse`]; when the parser rejects a head (its line, its
//! fields, its framing or its size), [`RequestParser::rejected`] says what
//! of its request line could be read, if it looks like one.
//!
//! # Limits and errors
//!
//! [`HttpLimits`] bounds every message. A body over `max_body` is not
//! buffered: the parser keeps following its framing while discarding its
//! bytes and, when the message ends, returns [`HttpError::BodyTooLarge`]; it
//! is then still in step with the stream, and the next message parses.
//! Every other error ([`HttpError::is_recoverable`] is false) leaves the
//! parser failed: the message's end is unknown, so the parser cannot find
//! the next one by itself. It returns the same error until
//! [`RequestParser::clear`] and drops bytes pushed meanwhile; `buffered()`
//! still counts the bytes it had not parsed (after an upgrade: the first
//! bytes of the new protocol), so that a caller can account for them.
//!
//! Memory held between calls is bounded: after `next` returned `Ok(None)` a
//! parser holds at most the head of the current message (`max_head`), its
//! body as transferred so far (`max_body`), and one incomplete chunk-size
//! line or trailer section (`max_head`). A response parser with a
//! [`DigestPolicy`] holds a digested body's hash state instead of its
//! bytes, and a kept one up to [`DigestPolicy::max_whole`].
//!
//! # Layout
//!
//! The `head` submodule finds the end of a head, parses it and decides the
//! body's framing; `body` follows that framing until the body ends. This module
//! owns what they share: the buffer, where a parser is within the current
//! message, the failed state, and taking a complete message off the buffer.

mod body;
mod head;

use std::mem;

use bytes::{Buf, Bytes, BytesMut};

pub use crate::diff::{DEFAULT_MAX_WHOLE_BODY, DigestPolicy};
use crate::model::{BodyDigest, Header, LossCause, Request, Response};
use body::{Body, DigestPlan};
use head::{
    Field, Framing, HeadScan, ParsedResponse, RequestHead, ResponseHead, check_request_line,
    check_status_line, headers, parse_request_head, parse_response_head,
};
pub use head::{skipped_request_line, starts_with_request_line};

/// Size limits that every parser enforces on each message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest head in bytes: start line and header fields with their line
    /// ends. Also bounds one chunk-size line and a trailer section.
    /// Default 64 KiB.
    pub max_head: usize,
    /// Most header fields in a head, and most fields in a trailer section.
    /// Default 128.
    pub max_headers: usize,
    /// Largest body in bytes, counted as transferred: for a chunked body the
    /// chunk framing and trailer section count too, so that the limit
    /// bounds the memory a parser holds. Default 16 MiB.
    pub max_body: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_head: 64 * 1024,
            max_headers: 128,
            max_body: 16 * 1024 * 1024,
        }
    }
}

/// Why a parser could not produce a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The bytes are not HTTP/1.x (or break its framing rules).
    #[error("not valid HTTP/1.x: {0}")]
    Parse(String),
    /// A head (or chunk-size line, or trailer section) over
    /// [`HttpLimits::max_head`]. The parser cannot resync after it.
    #[error("message head over the limit of {limit} bytes")]
    HeadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// More header (or trailer) fields than [`HttpLimits::max_headers`]. The
    /// parser cannot resync after it.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit in fields.
        limit: usize,
    },
    /// A body over [`HttpLimits::max_body`]. Its bytes were skipped; the
    /// parser is in step with the stream and goes on with the next message.
    #[error("message body over the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 101 Switching Protocols, or a 2xx answer to `CONNECT`: what follows on
    /// the connection is not HTTP/1.x.
    #[error("the connection left HTTP/1.x (101 Switching Protocols or CONNECT)")]
    Upgrade,
    /// The peer closed the connection in the middle of a message.
    #[error("the connection closed in the middle of a message")]
    Truncated,
}

impl HttpError {
    /// How a request that this error prevented from pairing is reported.
    pub fn cause(&self) -> LossCause {
        match self {
            HttpError::Parse(_) => LossCause::ParseError,
            HttpError::HeadTooLarge { .. }
            | HttpError::TooManyHeaders { .. }
            | HttpError::BodyTooLarge { .. } => LossCause::TooLarge,
            HttpError::Upgrade => LossCause::Upgrade,
            HttpError::Truncated => LossCause::Closed,
        }
    }

    /// True when the parser is still in step with the stream after this
    /// error and keeps parsing (only [`HttpError::BodyTooLarge`]); after any
    /// other error it stays failed until cleared.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, HttpError::BodyTooLarge { .. })
    }
}

/// What [`RequestParser::next_event`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestEvent {
    /// A request head was parsed; its body, if any, follows. Each request
    /// yields one `Head`, later followed by its `Complete` or by
    /// `Err(HttpError::BodyTooLarge)`, unless the parser fails or is cleared
    /// first.
    Head {
        /// The request method as sent.
        method: String,
        /// The request target as sent.
        target: String,
    },
    /// The request that the last `Head` began is complete.
    Complete(Request),
}

/// What could be read of a request line the parser did not accept
/// ([`RequestParser::rejected`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    /// The first word, which looks like a method.
    pub method: String,
    /// The second word, when it has the form of a request target.
    pub target: Option<String>,
}

/// Incremental parser of the requests a client sends on one connection.
#[derive(Debug)]
pub struct RequestParser {
    core: Core<RequestHead>,
    /// The parser failed on a head (not on a body).
    head_failed: bool,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: HttpLimits) -> Self {
        Self {
            core: Core::new(limits),
            head_failed: false,
        }
    }

    /// Appends the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.core.push(bytes);
    }

    /// After [`next_event`](Self::next_event) (or `next`) failed on a
    /// message's head rather than its body: what of the head's request
    /// line can be read, when its first word looks like a method (an HTTP
    /// token in upper case: `GET / HTTP/9.9`, `OPTIONS HTTP/1.1`, `OPTIONS`
    /// alone), the target when the second word has a request target's
    /// form. `None` for bytes that do not look like a request (`GET/
    /// HTTP/1.1`, TLS), and while the parser has not failed on a head.
    pub fn rejected(&self) -> Option<RequestLine> {
        if !self.head_failed || !matches!(self.core.phase, Phase::Failed(_)) {
            return None;
        }
        head::readable_request_line(&self.core.buf, self.core.limits.max_head)
    }

    /// The next complete request, if the buffer holds one; bytes after it
    /// stay buffered. [`Request::raw`] holds its exact wire bytes.
    #[allow(
        clippy::should_implement_trait,
        reason = "fallible: not an Iterator; the name matches ResponseParser::next"
    )]
    pub fn next(&mut self) -> Result<Option<Request>, HttpError> {
        loop {
            match self.next_event()? {
                Some(RequestEvent::Head { .. }) => continue,
                Some(RequestEvent::Complete(request)) => return Ok(Some(request)),
                None => return Ok(None),
            }
        }
    }

    /// Like [`RequestParser::next`], but also reports each request as soon
    /// as its head is parsed, before its body arrives.
    pub fn next_event(&mut self) -> Result<Option<RequestEvent>, HttpError> {
        let result = self.step();
        self.core.settle(result)
    }

    /// Bytes held: the current message so far and bytes not parsed yet.
    pub fn buffered(&self) -> usize {
        self.core.buf.len()
    }

    /// True between a message's first byte and its end (including while an
    /// over-limit body is being skipped).
    pub fn in_message(&self) -> bool {
        self.core.in_message()
    }

    /// Forgets everything: buffered bytes, the message in progress and a
    /// failure. The next pushed byte is taken as the start of a message.
    pub fn clear(&mut self) {
        self.core.clear();
        self.head_failed = false;
    }

    /// Takes the bytes buffered after the last request parsed: after an
    /// upgrade, the first bytes of the protocol that follows it.
    pub fn take_buffered(&mut self) -> BytesMut {
        std::mem::take(&mut self.core.buf)
    }

    fn step(&mut self) -> Result<Option<RequestEvent>, HttpError> {
        let core = &mut self.core;
        match mem::replace(&mut core.phase, Phase::Head) {
            Phase::Failed(error) => {
                core.phase = Phase::Failed(error.clone());
                Err(error)
            }
            Phase::Head => {
                let head = Self::head(core);
                self.head_failed = head.is_err();
                head
            }
            Phase::Body(message) => Ok(core
                .complete(message, true)?
                .map(|(head, parts)| RequestEvent::Complete(parts.into_request(head)))),
        }
    }

    /// Head phase: the head, once complete, and the start of its body.
    fn head(core: &mut Core<RequestHead>) -> Result<Option<RequestEvent>, HttpError> {
        let Some(head_len) = core.head(check_request_line)? else {
            return Ok(None);
        };
        let bytes = core.buf.get(..head_len).unwrap_or_default();
        let (head, framing, fields) = parse_request_head(bytes, &core.limits)?;
        let event = RequestEvent::Head {
            method: head.method.clone(),
            target: head.target.clone(),
        };
        core.start_body(head, head_len, framing, fields, None);
        Ok(Some(event))
    }
}

/// Incremental parser of the responses a server sends on one connection.
#[derive(Debug)]
pub struct ResponseParser {
    core: Core<ResponseHead>,
    /// The response that ended HTTP/1.x, until taken.
    upgrade: Option<Response>,
    /// Which bodies are digested instead of kept (none without).
    digest: Option<DigestPolicy>,
}

impl ResponseParser {
    /// A parser enforcing `limits` that keeps every body whole.
    pub fn new(limits: HttpLimits) -> Self {
        Self::with_digest(limits, None)
    }

    /// A parser enforcing `limits` that digests the bodies `digest` says
    /// (see [`DigestPolicy`]), or keeps every body whole with `None`.
    pub fn with_digest(limits: HttpLimits, digest: Option<DigestPolicy>) -> Self {
        Self {
            core: Core::new(limits),
            upgrade: None,
            digest,
        }
    }

    /// After [`next`](Self::next) or [`finish`](Self::finish) returned
    /// [`HttpError::Upgrade`]: the response that ended HTTP/1.x on the
    /// connection (101 Switching Protocols, or the 2xx answer to
    /// `CONNECT`), a head without a body; once.
    pub fn take_upgrade(&mut self) -> Option<Response> {
        self.upgrade.take()
    }

    /// Appends the next bytes of the stream. The data of a body being
    /// digested (or skipped over the limit) is hashed (or dropped) straight
    /// from `bytes` when nothing is buffered before it, without a copy.
    pub fn push(&mut self, bytes: &[u8]) {
        let core = &mut self.core;
        let rest = match &mut core.phase {
            Phase::Body(message) => message.body.absorb(bytes, &mut core.buf),
            Phase::Head | Phase::Failed(_) => bytes,
        };
        core.push(rest);
    }

    /// The next complete response to a request with `method` (HEAD, and
    /// statuses 1xx/204/304, have no body). Interim 1xx (100 Continue, 103)
    /// are consumed and skipped; 101 → Err(Upgrade); CONNECT + 2xx →
    /// Err(Upgrade), the response then in [`take_upgrade`](Self::take_upgrade).
    ///
    /// `method` is looked at when a response head is parsed; while a body
    /// is still arriving the method given with the call that parsed its
    /// head applies.
    pub fn next(&mut self, method: &str) -> Result<Option<Response>, HttpError> {
        let result = self.step(method);
        self.core.settle(result)
    }

    /// The peer closed: completes a close-delimited body (no Content-Length,
    /// not chunked); Ok(None) when nothing was pending; a truncated message
    /// is an error.
    ///
    /// A complete response still buffered is returned first, so call it
    /// until it returns `Ok(None)` or an error. A truncated message
    /// ([`HttpError::Truncated`]) leaves the parser failed, its bytes still
    /// counted by `buffered()`, until cleared.
    pub fn finish(&mut self, method: &str) -> Result<Option<Response>, HttpError> {
        if let Some(response) = self.next(method)? {
            return Ok(Some(response));
        }
        let result = match mem::replace(&mut self.core.phase, Phase::Head) {
            Phase::Failed(error) => Err(error),
            Phase::Head if self.core.buf.is_empty() => Ok(None),
            Phase::Head => Err(HttpError::Truncated),
            Phase::Body(message) if message.body.until_close() => self
                .core
                .take(message, false)
                .map(|(head, parts)| Some(parts.into_response(head))),
            Phase::Body(_) => Err(HttpError::Truncated),
        };
        self.core.settle(result)
    }

    /// Bytes held: the current message so far and bytes not parsed yet.
    pub fn buffered(&self) -> usize {
        self.core.buf.len()
    }

    /// True between a message's first byte and its end (including while an
    /// over-limit body is being skipped).
    pub fn in_message(&self) -> bool {
        self.core.in_message()
    }

    /// Forgets everything: buffered bytes, the message in progress and a
    /// failure. The next pushed byte is taken as the start of a message.
    pub fn clear(&mut self) {
        self.core.clear();
        self.upgrade = None;
    }

    /// Takes the bytes buffered after the last message parsed: after an
    /// upgrade, the first bytes of the protocol that follows it.
    pub fn take_buffered(&mut self) -> BytesMut {
        std::mem::take(&mut self.core.buf)
    }

    fn step(&mut self, method: &str) -> Result<Option<Response>, HttpError> {
        let core = &mut self.core;
        loop {
            match mem::replace(&mut core.phase, Phase::Head) {
                Phase::Failed(error) => {
                    core.phase = Phase::Failed(error.clone());
                    return Err(error);
                }
                Phase::Head => {
                    let Some(head_len) = core.head(check_status_line)? else {
                        return Ok(None);
                    };
                    let bytes = core.buf.get(..head_len).unwrap_or_default();
                    match parse_response_head(bytes, method, &core.limits) {
                        Ok(ParsedResponse::Interim) => core.skip_head(head_len),
                        Ok(ParsedResponse::Final(head, framing, fields)) => {
                            let plan = self.digest.map(|policy| {
                                let bytes = core.buf.get(..head_len).unwrap_or_default();
                                DigestPlan::new(policy, &fields, bytes)
                            });
                            core.start_body(head, head_len, framing, fields, plan);
                        }
                        Ok(ParsedResponse::Upgrade(head, fields)) => {
                            // What follows the head is the new protocol.
                            self.upgrade = Some(core.take_head(head, head_len, fields));
                            return Err(HttpError::Upgrade);
                        }
                        Err(error) => return Err(error),
                    }
                }
                Phase::Body(message) => {
                    return Ok(core
                        .complete(message, false)?
                        .map(|(head, parts)| parts.into_response(head)));
                }
            }
        }
    }
}

/// Where a parser is within the current message.
#[derive(Debug)]
enum Phase<H> {
    /// Waiting for a complete head at the start of the buffer.
    Head,
    /// The head was parsed; the body is arriving.
    Body(Message<H>),
    /// A fatal error; returned again until cleared.
    Failed(HttpError),
}

/// A message whose head was parsed, while its body arrives; `H` is what the
/// typed parser keeps of the head.
#[derive(Debug)]
struct Message<H> {
    head: H,
    /// Length of the head at the start of the buffer.
    head_len: usize,
    /// The head's fields (none once the message is skipped).
    fields: Vec<Field>,
    body: Body,
}

impl<H> Message<H> {
    /// A message over the body limit is skipped: its fields are not kept
    /// either.
    fn forget_skipped(&mut self) {
        if self.body.is_discarding() {
            self.fields = Vec::new();
        }
    }
}

/// A complete message's pieces, taken off the buffer.
struct Parts {
    headers: Vec<Header>,
    body: Bytes,
    digest: Option<Box<BodyDigest>>,
    trailers: Vec<Header>,
    raw: Bytes,
}

impl Parts {
    fn into_request(self, head: RequestHead) -> Request {
        Request {
            method: head.method,
            target: head.target,
            version: head.version,
            headers: self.headers,
            body: self.body,
            trailers: self.trailers,
            raw: self.raw,
        }
    }

    fn into_response(self, head: ResponseHead) -> Response {
        Response {
            version: head.version,
            status: head.status,
            reason: head.reason,
            headers: self.headers,
            body: self.body,
            digest: self.digest,
            trailers: self.trailers,
        }
    }
}

/// Buffering, phases and failure, shared by both parsers.
///
/// While a message is kept, `buf` holds it from its first byte: the head,
/// then the body as transferred (up to [`Body::end`]), then bytes not
/// parsed yet. While an over-limit body is skipped its bytes are dropped as
/// they are parsed (see [`body`]).
#[derive(Debug)]
struct Core<H> {
    limits: HttpLimits,
    buf: BytesMut,
    phase: Phase<H>,
    /// Head phase: the search for the end of the head.
    head: HeadScan,
}

impl<H> Core<H> {
    fn new(limits: HttpLimits) -> Self {
        Self {
            limits,
            buf: BytesMut::new(),
            phase: Phase::Head,
            head: HeadScan::default(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if !matches!(self.phase, Phase::Failed(_)) {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn in_message(&self) -> bool {
        match self.phase {
            Phase::Head => !self.buf.is_empty(),
            Phase::Body(_) => true,
            Phase::Failed(_) => false,
        }
    }

    fn clear(&mut self) {
        *self = Self::new(self.limits);
    }

    /// Passes `result` on. A fatal error in it fails the parser, which keeps
    /// the unparsed bytes for `buffered()`; a recoverable one needs nothing.
    fn settle<T>(&mut self, result: Result<T, HttpError>) -> Result<T, HttpError> {
        if let Err(error) = &result
            && !error.is_recoverable()
        {
            let unparsed = mem::take(&mut self.buf);
            self.clear();
            self.buf = unparsed;
            self.phase = Phase::Failed(error.clone());
        }
        result
    }

    /// Head phase: the length of the complete head at the start of the
    /// buffer, once there is one.
    fn head(
        &mut self,
        check_line: fn(&[u8]) -> Result<(), HttpError>,
    ) -> Result<Option<usize>, HttpError> {
        self.head
            .find(&mut self.buf, self.limits.max_head, check_line)
    }

    /// Drops a skipped (interim) head and waits for the next one.
    fn skip_head(&mut self, head_len: usize) {
        self.buf.advance(head_len.min(self.buf.len()));
        self.head.reset();
    }

    /// The head (`..head_len`) was parsed: the body framed by `framing`
    /// follows.
    fn start_body(
        &mut self,
        head: H,
        head_len: usize,
        framing: Framing,
        fields: Vec<Field>,
        plan: Option<DigestPlan>,
    ) {
        self.head.reset();
        let body = Body::new(framing, head_len, &mut self.buf, self.limits, plan);
        let mut message = Message {
            head,
            head_len,
            fields,
            body,
        };
        message.forget_skipped();
        self.phase = Phase::Body(message);
    }

    /// Body phase: parses as much of `message`'s body as is buffered, and
    /// takes the message off the buffer once it is complete.
    fn complete(
        &mut self,
        mut message: Message<H>,
        keep_raw: bool,
    ) -> Result<Option<(H, Parts)>, HttpError> {
        let done = message.body.decode(&mut self.buf)?;
        message.forget_skipped();
        if !done {
            self.phase = Phase::Body(message);
            return Ok(None);
        }
        self.take(message, keep_raw).map(Some)
    }

    /// Takes `message`, whose body just ended, off the buffer, leaving the
    /// bytes after it; `keep_raw` also returns its wire bytes. The parser
    /// waits for the next head afterwards.
    fn take(&mut self, message: Message<H>, keep_raw: bool) -> Result<(H, Parts), HttpError> {
        let Message {
            head,
            head_len,
            fields,
            body,
        } = message;
        self.phase = Phase::Head;
        self.head.reset();
        if body.is_discarding() {
            return Err(HttpError::BodyTooLarge {
                limit: self.limits.max_body,
            });
        }
        let (raw, head_len, copy_out) = match body.digested_head() {
            // A digested body's bytes are gone; its head was copied out.
            Some(head) => {
                let len = head.len();
                (head, len, false)
            }
            None => {
                let total = body.end().min(self.buf.len());
                let raw = self.buf.split_to(total).freeze();
                // A chunked response's wire bytes are not returned: copy out
                // what is kept so that they are freed.
                (raw, head_len.min(total), body.is_chunked() && !keep_raw)
            }
        };
        let headers = headers(fields, &raw, 0..head_len, copy_out);
        let (body, digest, trailers) = body.finish(&raw, head_len, copy_out)?;
        let parts = Parts {
            headers,
            body,
            digest,
            trailers,
            raw: if keep_raw { raw } else { Bytes::new() },
        };
        Ok((head, parts))
    }
}

impl Core<ResponseHead> {
    /// Takes a head without a body (`..head_len`) off the buffer as a
    /// response; the parser waits for the next head.
    fn take_head(&mut self, head: ResponseHead, head_len: usize, fields: Vec<Field>) -> Response {
        let raw = self.buf.split_to(head_len.min(self.buf.len())).freeze();
        self.head.reset();
        Parts {
            headers: headers(fields, &raw, 0..raw.len(), false),
            body: Bytes::new(),
            digest: None,
            trailers: Vec::new(),
            raw: Bytes::new(),
        }
        .into_response(head)
    }
}

#[cfg(test)]
mod tests;
