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
//!   connection ([`HttpError::Upgrade`]).
//! - Empty lines before a message are skipped (RFC 9112 §2.2) and are not
//!   part of [`Request::raw`].
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
//! line or trailer section (`max_head`).

use std::{mem, ops::Range};

use bytes::{Buf, Bytes, BytesMut};

use crate::model::{Header, LossCause, Request, Response};

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

/// Incremental parser of the requests a client sends on one connection.
#[derive(Debug)]
pub struct RequestParser {
    core: Core<RequestHead>,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: HttpLimits) -> Self {
        Self {
            core: Core::new(limits),
        }
    }

    /// Appends the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.core.push(bytes);
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
        if let Err(error) = &result {
            self.core.failed(error);
        }
        result
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
    }

    fn step(&mut self) -> Result<Option<RequestEvent>, HttpError> {
        match mem::replace(&mut self.core.phase, Phase::Head) {
            Phase::Failed(error) => {
                self.core.phase = Phase::Failed(error.clone());
                Err(error)
            }
            Phase::Head => {
                let Some(head_len) = self.core.head(check_request_line)? else {
                    return Ok(None);
                };
                let bytes = self.core.buf.get(..head_len).unwrap_or_default();
                let (head, framing, fields) = parse_request_head(bytes, &self.core.limits)?;
                let event = RequestEvent::Head {
                    method: head.method.clone(),
                    target: head.target.clone(),
                };
                self.core.start_body(head_len, framing, fields);
                self.core.phase = Phase::Body(head);
                Ok(Some(event))
            }
            Phase::Body(head) => {
                if !self.core.body()? {
                    self.core.phase = Phase::Body(head);
                    return Ok(None);
                }
                let parts = self.core.take(true)?;
                Ok(Some(RequestEvent::Complete(Request {
                    method: head.method,
                    target: head.target,
                    version: head.version,
                    headers: parts.headers,
                    body: parts.body,
                    trailers: parts.trailers,
                    raw: parts.raw,
                })))
            }
        }
    }
}

/// Incremental parser of the responses a server sends on one connection.
#[derive(Debug)]
pub struct ResponseParser {
    core: Core<ResponseHead>,
}

impl ResponseParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: HttpLimits) -> Self {
        Self {
            core: Core::new(limits),
        }
    }

    /// Appends the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.core.push(bytes);
    }

    /// The next complete response to a request with `method` (HEAD, and
    /// statuses 1xx/204/304, have no body). Interim 1xx (100 Continue, 103)
    /// are consumed and skipped; 101 → Err(Upgrade); CONNECT + 2xx →
    /// Err(Upgrade).
    ///
    /// `method` is looked at when a response head is parsed; while a body
    /// is still arriving the method given with the call that parsed its
    /// head applies.
    pub fn next(&mut self, method: &str) -> Result<Option<Response>, HttpError> {
        let result = self.step(method);
        if let Err(error) = &result {
            self.core.failed(error);
        }
        result
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
            Phase::Body(head) if self.core.framing == Framing::UntilClose => self
                .core
                .take(false)
                .map(|parts| Some(head.into_response(parts))),
            Phase::Body(_) => Err(HttpError::Truncated),
        };
        if let Err(error) = &result {
            self.core.failed(error);
        }
        result
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
    }

    fn step(&mut self, method: &str) -> Result<Option<Response>, HttpError> {
        loop {
            match mem::replace(&mut self.core.phase, Phase::Head) {
                Phase::Failed(error) => {
                    self.core.phase = Phase::Failed(error.clone());
                    return Err(error);
                }
                Phase::Head => {
                    let Some(head_len) = self.core.head(check_status_line)? else {
                        return Ok(None);
                    };
                    let bytes = self.core.buf.get(..head_len).unwrap_or_default();
                    match parse_response_head(bytes, method, &self.core.limits) {
                        Ok(ParsedResponse::Interim) => self.core.skip_head(head_len),
                        Ok(ParsedResponse::Final(head, framing, fields)) => {
                            self.core.start_body(head_len, framing, fields);
                            self.core.phase = Phase::Body(head);
                        }
                        Err(HttpError::Upgrade) => {
                            // What follows the head is the new protocol.
                            self.core.skip_head(head_len);
                            return Err(HttpError::Upgrade);
                        }
                        Err(error) => return Err(error),
                    }
                }
                Phase::Body(head) => {
                    if !self.core.body()? {
                        self.core.phase = Phase::Body(head);
                        return Ok(None);
                    }
                    let parts = self.core.take(false)?;
                    return Ok(Some(head.into_response(parts)));
                }
            }
        }
    }
}

/// Whether `chunk` begins with a complete, valid HTTP/1.x request line
/// (`METHOD SP target SP HTTP/1.x` and its line end), as httparse checks it.
/// Tracking resynchronizes a request stream at such a chunk.
pub fn starts_with_request_line(chunk: &[u8]) -> bool {
    if chunk
        .first()
        .is_none_or(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
    {
        return false;
    }
    chunk
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|nl| chunk.get(..=nl))
        .is_some_and(|line| check_request_line(line).is_ok())
}

/// Request line fields kept while the body arrives.
#[derive(Debug)]
struct RequestHead {
    method: String,
    target: String,
    version: u8,
}

/// Status line fields kept while the body arrives.
#[derive(Debug)]
struct ResponseHead {
    version: u8,
    status: u16,
    reason: String,
}

impl ResponseHead {
    fn into_response(self, parts: Parts) -> Response {
        Response {
            version: self.version,
            status: self.status,
            reason: self.reason,
            headers: parts.headers,
            body: parts.body,
            trailers: parts.trailers,
        }
    }
}

/// Where a parser is within the current message.
#[derive(Debug)]
enum Phase<H> {
    /// Waiting for a complete head at the start of the buffer.
    Head,
    /// The head (kept here) was parsed; the body is arriving.
    Body(H),
    /// A fatal error; returned again until cleared.
    Failed(HttpError),
}

/// How the body of the current message ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// This many body bytes are still to come.
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

/// A header or trailer field of the current message: its name, and where
/// its value lies in the message's bytes.
#[derive(Debug)]
struct Field {
    name: String,
    value: Range<usize>,
}

/// A complete message's pieces, taken off the buffer.
struct Parts {
    headers: Vec<Header>,
    body: Bytes,
    trailers: Vec<Header>,
    raw: Bytes,
}

/// What a response head turned out to be.
enum ParsedResponse {
    /// A 1xx other than 101: skipped.
    Interim,
    Final(ResponseHead, Framing, Vec<Field>),
}

/// Buffering, head detection and body framing, shared by both parsers; `H`
/// is what the typed parser keeps of a head.
///
/// While a message is kept, `buf` holds it from its first byte: the head
/// (`..head_len`), then the body as transferred (`head_len..pos`), then
/// bytes not parsed yet. While an over-limit body is skipped (`discarding`)
/// parsed bytes are dropped at once and `pos` stays 0.
#[derive(Debug)]
struct Core<H> {
    limits: HttpLimits,
    buf: BytesMut,
    phase: Phase<H>,
    /// Where the search for a line end resumes, relative to the start of
    /// the head, chunk-size line or trailer section being looked for.
    scan: usize,
    /// Head phase: the start line is complete and valid.
    line_checked: bool,
    head_len: usize,
    pos: usize,
    framing: Framing,
    chunked: bool,
    discarding: bool,
    /// Body bytes as transferred so far (framing included).
    wire: u64,
    /// De-chunked body length so far.
    decoded: u64,
    fields: Vec<Field>,
    /// The trailer section's place in the message, and its fields.
    trailers: Option<(Range<usize>, Vec<Field>)>,
}

impl<H> Core<H> {
    fn new(limits: HttpLimits) -> Self {
        Self {
            limits,
            buf: BytesMut::new(),
            phase: Phase::Head,
            scan: 0,
            line_checked: false,
            head_len: 0,
            pos: 0,
            framing: Framing::Empty,
            chunked: false,
            discarding: false,
            wire: 0,
            decoded: 0,
            fields: Vec::new(),
            trailers: None,
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

    /// Records a fatal error, keeping the unparsed bytes for `buffered()`;
    /// a recoverable one needs nothing.
    fn failed(&mut self, error: &HttpError) {
        if !error.is_recoverable() {
            let unparsed = mem::take(&mut self.buf);
            self.clear();
            self.buf = unparsed;
            self.phase = Phase::Failed(error.clone());
        }
    }

    /// Unparsed bytes.
    fn rest(&self) -> &[u8] {
        unparsed(&self.buf, self.pos)
    }

    /// Takes `n` unparsed bytes as part of the body; stops keeping the
    /// message once its body as transferred is over the limit.
    fn consume(&mut self, n: usize) {
        let n = n.min(self.rest().len());
        if self.discarding {
            self.buf.advance(n);
        } else {
            self.pos += n;
        }
        self.wire = self.wire.saturating_add(n as u64);
        if !self.discarding && self.wire > self.limits.max_body as u64 {
            self.discard();
        }
    }

    /// Stops keeping the current message: drops what is buffered of it.
    fn discard(&mut self) {
        let kept = self.pos.min(self.buf.len());
        self.buf.advance(kept);
        self.pos = 0;
        self.discarding = true;
        self.fields = Vec::new();
        self.trailers = None;
    }

    /// Head phase: the length of the complete head at the start of the
    /// buffer, once there is one. Empty lines before it are dropped.
    fn head(
        &mut self,
        check_line: fn(&[u8]) -> Result<(), HttpError>,
    ) -> Result<Option<usize>, HttpError> {
        let blank = self
            .buf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        if blank > 0 {
            self.buf.advance(blank);
            self.scan = 0;
        }
        let max = self.limits.max_head;
        let too_large = HttpError::HeadTooLarge { limit: max };
        if !self.line_checked {
            let from = self.scan.min(self.buf.len());
            let found = self
                .buf
                .get(from..)
                .unwrap_or_default()
                .iter()
                .position(|&b| b == b'\n');
            let Some(nl) = found.map(|i| from + i) else {
                self.scan = self.buf.len();
                return if self.buf.len() > max {
                    Err(too_large)
                } else {
                    Ok(None)
                };
            };
            if nl >= max {
                return Err(too_large);
            }
            check_line(self.buf.get(..=nl).unwrap_or_default())?;
            self.line_checked = true;
            self.scan = nl;
        }
        match find_section_end(&self.buf, self.scan) {
            Scan::End(end) if end > max => Err(too_large),
            Scan::End(end) => Ok(Some(end)),
            Scan::More(resume) => {
                self.scan = resume;
                if self.buf.len() > max {
                    Err(too_large)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Drops a skipped (interim) head and waits for the next one.
    fn skip_head(&mut self, head_len: usize) {
        self.buf.advance(head_len.min(self.buf.len()));
        self.scan = 0;
        self.line_checked = false;
    }

    /// The head (`..head_len`) was parsed: the body framed by `framing`
    /// follows.
    fn start_body(&mut self, head_len: usize, framing: Framing, fields: Vec<Field>) {
        self.head_len = head_len;
        self.pos = head_len;
        self.scan = 0;
        self.line_checked = false;
        self.framing = framing;
        self.chunked = matches!(framing, Framing::Chunked(_));
        self.discarding = false;
        self.wire = 0;
        self.decoded = 0;
        self.fields = fields;
        self.trailers = None;
        if let Framing::Length(len) = framing {
            if len > self.limits.max_body as u64 {
                self.discard();
            } else {
                // The body's size is known: grow the buffer once instead of
                // reallocating (and copying) as segments arrive.
                self.buf.reserve(clamp(len, usize::MAX));
            }
        }
    }

    /// Parses as much of the body as is buffered; true when it is complete.
    fn body(&mut self) -> Result<bool, HttpError> {
        let max_body = self.limits.max_body as u64;
        let max_head = self.limits.max_head;
        loop {
            let avail = self.rest().len();
            match self.framing {
                Framing::Empty => return Ok(true),
                Framing::Length(left) => {
                    let n = clamp(left, avail);
                    self.consume(n);
                    let left = left - n as u64;
                    self.framing = Framing::Length(left);
                    return Ok(left == 0);
                }
                Framing::UntilClose => {
                    self.consume(avail);
                    return Ok(false);
                }
                Framing::Chunked(Chunk::Size) => {
                    let rest = unparsed(&self.buf, self.pos);
                    let from = self.scan.min(rest.len());
                    let found = rest
                        .get(from..)
                        .unwrap_or_default()
                        .iter()
                        .position(|&b| b == b'\n');
                    let Some(nl) = found.map(|i| from + i) else {
                        self.scan = rest.len();
                        if rest.len() > max_head {
                            return Err(HttpError::HeadTooLarge { limit: max_head });
                        }
                        return Ok(false);
                    };
                    if nl >= max_head {
                        return Err(HttpError::HeadTooLarge { limit: max_head });
                    }
                    let line = rest.get(..=nl).unwrap_or_default();
                    let size = match httparse::parse_chunk_size(line) {
                        Ok(httparse::Status::Complete((used, size))) if used == line.len() => size,
                        _ => return Err(HttpError::Parse("invalid chunk-size line".into())),
                    };
                    self.scan = 0;
                    self.consume(nl + 1);
                    if size == 0 {
                        self.framing = Framing::Chunked(Chunk::Trailers);
                    } else {
                        // Skip a chunk that cannot fit before buffering it.
                        if !self.discarding
                            && self.wire.saturating_add(size).saturating_add(2) > max_body
                        {
                            self.discard();
                        }
                        self.decoded = self.decoded.saturating_add(size);
                        self.framing = Framing::Chunked(Chunk::Data(size));
                    }
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let n = clamp(left, avail);
                    self.consume(n);
                    let left = left - n as u64;
                    if left > 0 {
                        self.framing = Framing::Chunked(Chunk::Data(left));
                        return Ok(false);
                    }
                    self.framing = Framing::Chunked(Chunk::DataEnd);
                }
                Framing::Chunked(Chunk::DataEnd) => match self.rest() {
                    [b'\r', b'\n', ..] => {
                        self.consume(2);
                        self.framing = Framing::Chunked(Chunk::Size);
                    }
                    [] | [b'\r'] => return Ok(false),
                    _ => return Err(HttpError::Parse("chunk data not followed by CRLF".into())),
                },
                Framing::Chunked(Chunk::Trailers) => return self.trailer_section(),
            }
        }
    }

    /// Parses the trailer section of a chunked body; true when it is complete.
    fn trailer_section(&mut self) -> Result<bool, HttpError> {
        let max_head = self.limits.max_head;
        let rest = unparsed(&self.buf, self.pos);
        let empty = match rest {
            [b'\r', b'\n', ..] => Some(2),
            [b'\n', ..] => Some(1),
            [] | [b'\r'] => return Ok(false),
            _ => None,
        };
        if let Some(n) = empty {
            self.consume(n);
            return Ok(true);
        }
        let end = match find_section_end(rest, self.scan) {
            Scan::End(end) => end,
            Scan::More(resume) => {
                self.scan = resume;
                if rest.len() > max_head {
                    return Err(HttpError::HeadTooLarge { limit: max_head });
                }
                return Ok(false);
            }
        };
        if end > max_head {
            return Err(HttpError::HeadTooLarge { limit: max_head });
        }
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
        self.consume(end);
        Ok(true)
    }

    /// Takes the message whose body just ended off the buffer, leaving the
    /// bytes after it; `keep_raw` also returns its wire bytes. The parser
    /// waits for the next head afterwards.
    fn take(&mut self, keep_raw: bool) -> Result<Parts, HttpError> {
        let discarded = self.discarding;
        let total = self.pos.min(self.buf.len());
        let head_len = self.head_len.min(total);
        let chunked = self.chunked;
        let decoded = self.decoded;
        let framing = self.framing;
        let fields = mem::take(&mut self.fields);
        let trailers = self.trailers.take();
        let raw = if discarded {
            Bytes::new()
        } else {
            self.buf.split_to(total).freeze()
        };
        self.phase = Phase::Head;
        self.scan = 0;
        self.line_checked = false;
        self.head_len = 0;
        self.pos = 0;
        self.framing = Framing::Empty;
        self.chunked = false;
        self.discarding = false;
        self.wire = 0;
        self.decoded = 0;
        if discarded {
            return Err(HttpError::BodyTooLarge {
                limit: self.limits.max_body,
            });
        }

        // A chunked response's wire bytes are not returned: copy out what
        // is kept so that they are freed.
        let copy_out = chunked && !keep_raw;
        let head = if copy_out {
            Bytes::copy_from_slice(raw.get(..head_len).unwrap_or_default())
        } else {
            raw.clone()
        };
        let headers = fields
            .into_iter()
            .map(|f| Header::new(f.name, value_of(&head, 0, &f.value)))
            .collect();
        let body = if chunked {
            dechunk(raw.get(head_len..).unwrap_or_default(), decoded)?
        } else if framing == Framing::Empty {
            Bytes::new()
        } else {
            raw.slice(head_len..)
        };
        let trailers = match trailers {
            Some((section, fields)) => {
                let (source, base) = if copy_out {
                    let bytes = raw.get(section.clone()).unwrap_or_default();
                    (Bytes::copy_from_slice(bytes), section.start)
                } else {
                    (raw.clone(), 0)
                };
                fields
                    .into_iter()
                    .map(|f| Header::new(f.name, value_of(&source, base, &f.value)))
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(Parts {
            headers,
            body,
            trailers,
            raw: if keep_raw { raw } else { Bytes::new() },
        })
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

/// Result of looking for the empty line that ends a head or trailer section.
enum Scan {
    /// The section ends just before this index.
    End(usize),
    /// Not there yet; resume the search at this index.
    More(usize),
}

/// Looks for the end of a field section (CRLF CRLF, or bare LFs) in `buf`
/// from index `from` on.
fn find_section_end(buf: &[u8], from: usize) -> Scan {
    let mut i = from;
    while let Some(off) = buf
        .get(i..)
        .and_then(|s| s.iter().position(|&b| b == b'\n'))
    {
        let nl = i + off;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Scan::End(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Scan::End(nl + 3),
            (None, _) | (Some(b'\r'), None) => return Scan::More(nl),
            _ => i = nl + 1,
        }
    }
    Scan::More(buf.len().max(from))
}

/// Checks a complete request line (with its line end).
fn check_request_line(line: &[u8]) -> Result<(), HttpError> {
    let mut none: [httparse::Header<'_>; 0] = [];
    match httparse::Request::new(&mut none).parse(line) {
        Ok(_) => Ok(()),
        Err(error) => Err(HttpError::Parse(format!("request line: {error}"))),
    }
}

/// Checks a complete status line (with its line end).
fn check_status_line(line: &[u8]) -> Result<(), HttpError> {
    let mut none: [httparse::Header<'_>; 0] = [];
    match httparse::Response::new(&mut none).parse(line) {
        Ok(_) => Ok(()),
        Err(error) => Err(HttpError::Parse(format!("status line: {error}"))),
    }
}

fn field_error(error: httparse::Error, limits: &HttpLimits, what: &str) -> HttpError {
    match error {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders {
            limit: limits.max_headers,
        },
        error => HttpError::Parse(format!("{what}: {error}")),
    }
}

/// Owned names and value positions of `parsed`, which httparse took from
/// `source`; `offset` is where `source` starts in the message.
fn fields_of(source: &[u8], offset: usize, parsed: &[httparse::Header<'_>]) -> Vec<Field> {
    let base = source.as_ptr() as usize;
    parsed
        .iter()
        .map(|h| {
            let start = (h.value.as_ptr() as usize).saturating_sub(base) + offset;
            Field {
                name: h.name.to_owned(),
                value: start..start + h.value.len(),
            }
        })
        .collect()
}

/// The bytes at `range` of the message, out of `source`, which holds the
/// message from index `base` on.
fn value_of(source: &Bytes, base: usize, range: &Range<usize>) -> Bytes {
    let start = range.start.saturating_sub(base);
    let end = range.end.saturating_sub(base);
    if start <= end && end <= source.len() {
        source.slice(start..end)
    } else {
        Bytes::new()
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

/// `Transfer-Encoding` and `Content-Length` of a head.
struct FramingFields {
    /// Some when `Transfer-Encoding` is present: whether its last coding is
    /// `chunked`.
    chunked: Option<bool>,
    content_length: Option<u64>,
}

fn framing_fields(headers: &[httparse::Header<'_>]) -> Result<FramingFields, HttpError> {
    let mut chunked = None;
    let mut content_length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in h.value.split(|&b| b == b',') {
                let name = coding
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                if name.is_empty() {
                    continue;
                }
                if chunked == Some(true) {
                    return Err(HttpError::Parse(
                        "chunked is not the last transfer coding".into(),
                    ));
                }
                chunked = Some(name.eq_ignore_ascii_case(b"chunked"));
            }
            if chunked.is_none() {
                return Err(HttpError::Parse("empty Transfer-Encoding".into()));
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for value in h.value.split(|&b| b == b',') {
                let len = parse_decimal(value.trim_ascii())
                    .ok_or_else(|| HttpError::Parse("invalid Content-Length".into()))?;
                if content_length.is_some_and(|prev| prev != len) {
                    return Err(HttpError::Parse("conflicting Content-Length values".into()));
                }
                content_length = Some(len);
            }
        }
    }
    Ok(FramingFields {
        chunked,
        content_length,
    })
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

fn parse_request_head(
    bytes: &[u8],
    limits: &HttpLimits,
) -> Result<(RequestHead, Framing, Vec<Field>), HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::Parse("incomplete request head".into()));
        }
        Err(error) => return Err(field_error(error, limits, "request head")),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Parse("incomplete request line".into()));
    };
    let framing = match framing_fields(req.headers)? {
        FramingFields {
            chunked: Some(true),
            ..
        } => Framing::Chunked(Chunk::Size),
        FramingFields {
            chunked: Some(false),
            ..
        } => {
            return Err(HttpError::Parse(
                "request Transfer-Encoding does not end in chunked".into(),
            ));
        }
        FramingFields {
            content_length: Some(len),
            ..
        } => Framing::Length(len),
        FramingFields { .. } => Framing::Empty,
    };
    let head = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
    };
    Ok((head, framing, fields_of(bytes, 0, req.headers)))
}

fn parse_response_head(
    bytes: &[u8],
    method: &str,
    limits: &HttpLimits,
) -> Result<ParsedResponse, HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::Parse("incomplete response head".into()));
        }
        Err(error) => return Err(field_error(error, limits, "response head")),
    }
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(HttpError::Parse("incomplete status line".into()));
    };
    match status {
        101 => return Err(HttpError::Upgrade),
        100..=199 => return Ok(ParsedResponse::Interim),
        200..=299 if method == "CONNECT" => return Err(HttpError::Upgrade),
        _ => {}
    }
    let framing = if method == "HEAD" || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match framing_fields(resp.headers)? {
            FramingFields {
                chunked: Some(true),
                ..
            } => Framing::Chunked(Chunk::Size),
            FramingFields {
                chunked: Some(false),
                ..
            } => Framing::UntilClose,
            FramingFields {
                content_length: Some(len),
                ..
            } => Framing::Length(len),
            FramingFields { .. } => Framing::UntilClose,
        }
    };
    let head = ResponseHead {
        version,
        status,
        reason: resp.reason.unwrap_or_default().to_owned(),
    };
    Ok(ParsedResponse::Final(
        head,
        framing,
        fields_of(bytes, 0, resp.headers),
    ))
}

#[cfg(test)]
mod tests;
