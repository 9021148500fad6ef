//! HTTP/1.x message heads: where a head ends, what it holds, and how the
//! message's body is framed.
//!
//! A head is a start line (request line or status line) and a field
//! section, ended by an empty line (RFC 9112 §2.1). [`HeadScan`] finds the
//! end of the head at the start of a buffer as bytes arrive and checks the
//! start line as soon as it is complete, so that bytes that are not HTTP/1.x
//! fail without waiting for a head that never ends. [`parse_request_head`]
//! and [`parse_response_head`] then parse the complete head with `httparse`
//! (a request line in one of the lenient forms servers accept,
//! [`lenient_request_line`], by hand) and apply the head-level rules listed
//! in the [parser's documentation](super): which [`Framing`] the body has,
//! that interim responses are skipped and upgrades end HTTP/1.x.
//!
//! When the request parser rejects a head, [`readable_request_line`] reads
//! what it can of its request line, so that tracking can report the
//! request; [`skipped_request_line`] does the same for a chunk skipped
//! while resynchronizing.
//!
//! A parsed head does not borrow the buffer: a [`Field`] is the positions
//! of its name and its value in the message, so that the message can be
//! taken off the buffer in one piece once complete and its names and values
//! sliced out of it without a copy ([`headers`]).
//!
//! A chunked body's chunk-size lines and trailer section follow the same
//! line and field rules as a head, under the same size limit, so
//! [`super::body`] uses [`find_line`], [`section_end`], [`fields_of`] and
//! [`field_error`] too. Invariant of every search here: it resumes where
//! the previous one stopped (at the last line end), so a head that arrives
//! a byte at a time is not searched again from its start, and it fails with
//! [`HttpError::HeadTooLarge`] as soon as more than
//! [`HttpLimits::max_head`] bytes are buffered without the end it looks
//! for.

use std::{mem::MaybeUninit, ops::Range};

use bytes::{Buf, Bytes, BytesMut};

use super::{HttpError, HttpLimits, RequestLine};
use crate::model::{Header, HeaderName};

/// How a message's body is delimited, as its head says (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length`: this many bytes.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// Request line fields kept while the body arrives.
#[derive(Debug)]
pub(super) struct RequestHead {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) version: u8,
}

/// Status line fields kept while the body arrives.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) version: u8,
    pub(super) status: u16,
    pub(super) reason: String,
}

/// What a response head turned out to be.
pub(super) enum ParsedResponse {
    /// A 1xx other than 101: skipped.
    Interim,
    Final(ResponseHead, Framing, Vec<Field>),
    /// 101 Switching Protocols, or a 2xx answer to `CONNECT`: the last
    /// HTTP/1.x message on the connection, without a body.
    Upgrade(ResponseHead, Vec<Field>),
}

/// A header or trailer field of the current message: where its name and
/// its value lie in the message's bytes.
#[derive(Debug)]
pub(super) struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// Finds the head at the start of a buffer while its bytes arrive.
#[derive(Debug, Default)]
pub(super) struct HeadScan {
    /// Where the search for a line end resumes, from the start of the head.
    scan: usize,
    /// The start line is complete and valid.
    line_checked: bool,
}

impl HeadScan {
    /// The length of the complete head at the start of `buf`, once there is
    /// one. Empty lines before it are dropped from `buf` (RFC 9112 §2.2).
    /// `check_line` validates the start line, with its line end, as soon as
    /// it is complete.
    pub(super) fn find(
        &mut self,
        buf: &mut BytesMut,
        max_head: usize,
        check_line: fn(&[u8]) -> Result<(), HttpError>,
    ) -> Result<Option<usize>, HttpError> {
        let blank = buf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        if blank > 0 {
            buf.advance(blank);
            self.scan = 0;
        }
        if !self.line_checked {
            let Some(nl) = find_line(buf, &mut self.scan, max_head)? else {
                return Ok(None);
            };
            check_line(buf.get(..=nl).unwrap_or_default())?;
            self.line_checked = true;
            self.scan = nl;
        }
        section_end(buf, &mut self.scan, max_head)
    }

    /// Starts over: the next head starts at the start of the buffer.
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The index of the first line end (LF) in `buf`, searched from `*scan`,
/// where the previous search stopped. Without one yet, `*scan` moves to the
/// end of `buf`. A line longer than `max` bytes is
/// [`HttpError::HeadTooLarge`].
pub(super) fn find_line(
    buf: &[u8],
    scan: &mut usize,
    max: usize,
) -> Result<Option<usize>, HttpError> {
    let from = (*scan).min(buf.len());
    let found = buf
        .get(from..)
        .unwrap_or_default()
        .iter()
        .position(|&b| b == b'\n');
    match found.map(|i| from + i) {
        Some(nl) if nl >= max => Err(HttpError::HeadTooLarge { limit: max }),
        Some(nl) => Ok(Some(nl)),
        None => {
            *scan = buf.len();
            if buf.len() > max {
                Err(HttpError::HeadTooLarge { limit: max })
            } else {
                Ok(None)
            }
        }
    }
}

/// The length of the field section (head or trailer section) at the start
/// of `buf`, up to and including the empty line that ends it, once `buf`
/// holds it; the search resumes at `*scan`. A section longer than `max`
/// bytes is [`HttpError::HeadTooLarge`].
pub(super) fn section_end(
    buf: &[u8],
    scan: &mut usize,
    max: usize,
) -> Result<Option<usize>, HttpError> {
    match find_section_end(buf, *scan) {
        Scan::End(end) if end > max => Err(HttpError::HeadTooLarge { limit: max }),
        Scan::End(end) => Ok(Some(end)),
        Scan::More(resume) => {
            *scan = resume;
            if buf.len() > max {
                Err(HttpError::HeadTooLarge { limit: max })
            } else {
                Ok(None)
            }
        }
    }
}

/// Result of looking for the empty line that ends a field section.
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

/// Whether `chunk` begins with a complete request line that the request
/// parser accepts and that names an HTTP version: `METHOD SP target SP
/// HTTP/1.x` (checked with httparse) or the lenient `METHOD SP target SP
/// HTTP/1.` ([parser documentation](super#request-lines)), and its line
/// end. Tracking resynchronizes a request stream at such a chunk.
///
/// The version-less lenient form (`METHOD SP target`) is accepted where a
/// request must start, but is no evidence that one does: a body resumed
/// after a gap may well hold a line like `DELETE /tmp/x`.
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
        .is_some_and(|line| {
            strict_request_line(line).is_ok()
                || lenient_request_line(line).is_some_and(|l| l.version_given)
        })
}

/// When a chunk skipped while resynchronizing begins with what looks like a
/// request line that the parser does not accept, what of it can be read.
/// It must look more like a request than a line where a request is known
/// to start ([`RequestParser::rejected`](super::RequestParser::rejected)):
/// it must also name `HTTP/`, since the chunk may be anywhere in a body
/// (`GET /x HTTP/2.0` counts, `UPDATE users SET x = 1` does not).
pub fn skipped_request_line(chunk: &[u8]) -> Option<RequestLine> {
    let nl = chunk.iter().position(|&b| b == b'\n')?;
    let line = chunk.get(..=nl)?;
    if !line.windows(6).any(|w| w == b" HTTP/") {
        return None;
    }
    readable_request_line(line, line.len())
}

/// What of the request line at the start of `head` can be read, when the
/// parser rejected the head (its line, its fields or its framing, or its
/// size). Only `max` bytes are looked at.
///
/// The unit is a request when its first word looks like a method: an
/// HTTP token (RFC 9110 §5.6.2) with an upper-case letter and no
/// lower-case one (`GET`, `CCM_POST`, `M-SEARCH`). That is how tshark
/// tells a request too: `OPTIONS HTTP/1.1`, `OPTIONS` alone or
/// `GET / HTTP/9.9` are requests; `GET/ HTTP/1.1`, `OPTIONSHTTP/1.1`, a
/// non-ASCII method, `Host: x` or binary bytes (TLS, SSH) are not. The
/// target is the second word when it has the form of a request target
/// (RFC 9112 §3.2: `/path`, `*`, `scheme://...` or `host:port`), so
/// `OPTIONS HTTP/1.1` has none: `HTTP/1.1` is where the version goes.
/// A word cut by the end of the bytes (a line over the head limit) is not
/// read.
pub(super) fn readable_request_line(head: &[u8], max: usize) -> Option<RequestLine> {
    let head = head.get(..max.min(head.len()))?;
    let (line, complete) = match head.iter().position(|&b| b == b'\n') {
        Some(nl) => (head.get(..nl)?, true),
        None => (head, false),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Without its line end the last word may be cut: it is not read.
    let line = if complete {
        line
    } else {
        line.get(..line.iter().rposition(|&b| b == b' ')?)?
    };
    let mut words = line.split(|&b| b == b' ');
    let method = words.next()?;
    if !looks_like_method(method) {
        return None;
    }
    let target = words
        .next()
        .filter(|t| is_target_form(t))
        .map(|t| String::from_utf8_lossy(t).into_owned());
    Some(RequestLine {
        method: String::from_utf8_lossy(method).into_owned(),
        target,
    })
}

/// An HTTP token with an upper-case letter and no lower-case one.
fn looks_like_method(word: &[u8]) -> bool {
    is_token(word)
        && word.iter().any(u8::is_ascii_uppercase)
        && !word.iter().any(u8::is_ascii_lowercase)
}

/// A non-empty HTTP token (RFC 9110 §5.6.2 `tchar`s).
fn is_token(word: &[u8]) -> bool {
    !word.is_empty()
        && word
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// One of the four forms of a request target (RFC 9112 §3.2): origin
/// (`/path?query`), absolute (`scheme://...`), authority (`host:port`,
/// for CONNECT) or asterisk (`*`); visible bytes only.
fn is_target_form(word: &[u8]) -> bool {
    if word.is_empty() || word.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return false;
    }
    let authority = || {
        word.iter().rposition(|&b| b == b':').is_some_and(|colon| {
            let (host, port) = word.split_at(colon);
            !host.is_empty()
                && port.len() > 1
                && port.iter().skip(1).all(u8::is_ascii_digit)
                && !host.contains(&b'/')
        })
    };
    word.starts_with(b"/") || word == b"*" || word.windows(3).any(|w| w == b"://") || authority()
}

/// A request line in a form httparse does not accept but that servers
/// do, and tshark reads: the lenient forms of [`check_request_line`].
struct LenientLine<'a> {
    method: &'a str,
    target: &'a str,
    /// The line ended in a (truncated) version, not right after the target.
    version_given: bool,
}

/// Reads `line` (with its line end) in one of the lenient forms:
///
/// - `METHOD SP target SP "HTTP/1."`: the version's minor digit is
///   missing. Read as HTTP/1.0, the reading that assumes the least (no
///   persistent connection by default). Servers answer it as they answer
///   the full version:
///   zeek's `methods.pcap` has Google's front end answering `GET /
///   HTTP/1.` with 200, `PUT / HTTP/1.` with 411, exactly as for HTTP/1.1.
/// - `METHOD SP target`, no version (the shape of an HTTP/0.9 request
///   line), followed by a field section like any HTTP/1.x head. Read as
///   HTTP/1.0: servers answer such a request with an HTTP/1.0 response
///   (in `methods.pcap`: `GET /HTTP/1.1` gets `HTTP/1.0 403`, `PUT
///   /HTTP/1.1` gets `HTTP/1.0 411`), having read the target as given.
///
/// In both the method must be a token and the target have a request
/// target's form ([`is_target_form`]), which tshark's dissection agrees
/// with; `OPTIONS HTTP/1.1` is not accepted (its second word is a version,
/// not a target).
fn lenient_request_line(line: &[u8]) -> Option<LenientLine<'_>> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next()?, words.next()?);
    let version_given = match (words.next(), words.next()) {
        (None, _) => false,
        (Some(b"HTTP/1."), None) => true,
        _ => return None,
    };
    if !is_token(method) || !is_target_form(target) {
        return None;
    }
    Some(LenientLine {
        method: std::str::from_utf8(method).ok()?,
        target: std::str::from_utf8(target).ok()?,
        version_given,
    })
}

/// Checks a complete request line (with its line end): as httparse reads
/// it, or in one of the lenient forms servers accept
/// ([`lenient_request_line`]).
pub(super) fn check_request_line(line: &[u8]) -> Result<(), HttpError> {
    match strict_request_line(line) {
        Err(_) if lenient_request_line(line).is_some() => Ok(()),
        result => result,
    }
}

/// Checks a complete request line (with its line end) with httparse.
fn strict_request_line(line: &[u8]) -> Result<(), HttpError> {
    let mut none: [httparse::Header<'_>; 0] = [];
    match httparse::Request::new(&mut none).parse(line) {
        Ok(_) => Ok(()),
        Err(error) => Err(HttpError::Parse(format!("request line: {error}"))),
    }
}

/// Checks a complete status line (with its line end).
pub(super) fn check_status_line(line: &[u8]) -> Result<(), HttpError> {
    let mut none: [httparse::Header<'_>; 0] = [];
    match httparse::Response::new(&mut none).parse(line) {
        Ok(_) => Ok(()),
        Err(error) => Err(HttpError::Parse(format!("status line: {error}"))),
    }
}

/// The error for an httparse failure in a field section (`what`).
pub(super) fn field_error(error: httparse::Error, limits: &HttpLimits, what: &str) -> HttpError {
    match error {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders {
            limit: limits.max_headers,
        },
        error => HttpError::Parse(format!("{what}: {error}")),
    }
}

/// Name and value positions of `parsed`, which httparse took from
/// `source`; `offset` is where `source` starts in the message.
pub(super) fn fields_of(
    source: &[u8],
    offset: usize,
    parsed: &[httparse::Header<'_>],
) -> Vec<Field> {
    let base = source.as_ptr() as usize;
    let at = |bytes: &[u8]| {
        let start = (bytes.as_ptr() as usize).saturating_sub(base) + offset;
        start..start + bytes.len()
    };
    parsed
        .iter()
        .map(|h| Field {
            name: at(h.name.as_bytes()),
            value: at(h.value),
        })
        .collect()
}

/// The values of the fields named `name` (ASCII case-insensitive) among
/// `fields`, out of `head`, the bytes they were parsed from.
pub(super) fn field_values<'a>(
    fields: &'a [Field],
    head: &'a [u8],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> {
    fields
        .iter()
        .filter(move |f| {
            head.get(f.name.clone())
                .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
        })
        .map(|f| head.get(f.value.clone()).unwrap_or_default())
}

/// `fields`, which lie in `section` of the message `raw`, as headers whose
/// names and values are slices of `raw`; with `copy_out`, of a copy of
/// `section` instead, so that `raw` can be freed.
pub(super) fn headers(
    fields: Vec<Field>,
    raw: &Bytes,
    section: Range<usize>,
    copy_out: bool,
) -> Vec<Header> {
    let (source, base) = if copy_out {
        let bytes = raw.get(section.clone()).unwrap_or_default();
        (Bytes::copy_from_slice(bytes), section.start)
    } else {
        (raw.clone(), 0)
    };
    fields
        .into_iter()
        .map(|f| Header {
            // httparse took the name from these bytes as a `str`.
            name: HeaderName::from_shared(value_of(&source, base, &f.name)).unwrap_or_default(),
            value: value_of(&source, base, &f.value),
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

/// Header slots handed to httparse without initialising them: a head
/// fills only as many as it has fields, so zeroing
/// [`HttpLimits::max_headers`] of them (32 bytes each) for every head would
/// cost more than parsing it. Up to [`STACK_SLOTS`] live on the stack.
fn with_slots<'b, R>(
    n: usize,
    parse: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if n <= STACK_SLOTS {
        let mut slots = [const { MaybeUninit::uninit() }; STACK_SLOTS];
        parse(slots.get_mut(..n).unwrap_or_default())
    } else {
        let mut slots = Vec::with_capacity(n);
        parse(slots.spare_capacity_mut())
    }
}

/// Slots [`with_slots`] keeps on the stack: the default
/// [`HttpLimits::max_headers`].
const STACK_SLOTS: usize = 128;

/// Parses a complete request head: its request line, framing and fields.
/// A request line in a [lenient form](lenient_request_line) is read by
/// hand; its field section, like any other, by httparse.
pub(super) fn parse_request_head(
    bytes: &[u8],
    limits: &HttpLimits,
) -> Result<(RequestHead, Framing, Vec<Field>), HttpError> {
    let line_len = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |nl| nl + 1);
    let line = bytes.get(..line_len).unwrap_or_default();
    if strict_request_line(line).is_err()
        && let Some(lenient) = lenient_request_line(line)
    {
        let head = RequestHead {
            method: lenient.method.to_owned(),
            target: lenient.target.to_owned(),
            version: 0,
        };
        let rest = bytes.get(line_len..).unwrap_or_default();
        // Rare: httparse has no uninitialised form of `parse_headers`.
        let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let fields = match httparse::parse_headers(rest, &mut slots) {
            Ok(httparse::Status::Complete((_, fields))) => fields,
            Ok(httparse::Status::Partial) => {
                return Err(HttpError::Parse("incomplete request head".into()));
            }
            Err(error) => return Err(field_error(error, limits, "request head")),
        };
        return Ok((head, request_framing(fields)?, fields_of(bytes, 0, fields)));
    }
    with_slots(limits.max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        complete(
            req.parse_with_uninit_headers(bytes, slots),
            limits,
            "request head",
        )?;
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return Err(HttpError::Parse("incomplete request line".into()));
        };
        let head = RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            version,
        };
        Ok((
            head,
            request_framing(req.headers)?,
            fields_of(bytes, 0, req.headers),
        ))
    })
}

/// How a request's body is framed, by its fields.
fn request_framing(fields: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
    Ok(match framing_fields(fields)? {
        FramingFields {
            chunked: Some(true),
            ..
        } => Framing::Chunked,
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
    })
}

/// Parses a complete response head to a request with `method`.
pub(super) fn parse_response_head(
    bytes: &[u8],
    method: &str,
    limits: &HttpLimits,
) -> Result<ParsedResponse, HttpError> {
    with_slots(limits.max_headers, |slots| {
        parse_response_fields(bytes, method, limits, slots)
    })
}

fn parse_response_fields<'b>(
    bytes: &'b [u8],
    method: &str,
    limits: &HttpLimits,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<ParsedResponse, HttpError> {
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, bytes, slots);
    complete(parsed, limits, "response head")?;
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(HttpError::Parse("incomplete status line".into()));
    };
    let upgrade = match status {
        101 => true,
        100..=199 => return Ok(ParsedResponse::Interim),
        200..=299 => method == "CONNECT",
        _ => false,
    };
    let framing = if upgrade || method == "HEAD" || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match framing_fields(resp.headers)? {
            FramingFields {
                chunked: Some(true),
                ..
            } => Framing::Chunked,
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
    let fields = fields_of(bytes, 0, resp.headers);
    Ok(if upgrade {
        ParsedResponse::Upgrade(head, fields)
    } else {
        ParsedResponse::Final(head, framing, fields)
    })
}

/// Checks that httparse parsed a whole head (`what`).
fn complete(
    parsed: httparse::Result<usize>,
    limits: &HttpLimits,
    what: &str,
) -> Result<(), HttpError> {
    match parsed {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(HttpError::Parse(format!("incomplete {what}"))),
        Err(error) => Err(field_error(error, limits, what)),
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

#[cfg(test)]
mod tests;
