//! HTTP/1.x message heads: where a head ends, what it holds, and how the
//! message's body is framed.
//!
//! A head is a start line (request line or status line) and a field
//! section, ended by an empty line (RFC 9112 §2.1). [`HeadScan`] finds the
//! end of the head at the start of a buffer as bytes arrive and checks the
//! start line as soon as it is complete, so that bytes that are not HTTP/1.x
//! fail without waiting for a head that never ends. [`parse_request_head`]
//! and [`parse_response_head`] then parse the complete head with `httparse`
//! and apply the head-level rules listed in the [parser's
//! documentation](super): which [`Framing`] the body has, that interim
//! responses are skipped and upgrades end HTTP/1.x.
//!
//! A parsed head does not borrow the buffer: a [`Field`] is a name and the
//! position of its value in the message, so that the message can be taken
//! off the buffer in one piece once complete and its values sliced out of
//! it without a copy ([`headers`]).
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

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::{HttpError, HttpLimits};
use crate::model::Header;

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

/// A header or trailer field of the current message: its name, and where
/// its value lies in the message's bytes.
#[derive(Debug)]
pub(super) struct Field {
    name: String,
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

/// Checks a complete request line (with its line end).
pub(super) fn check_request_line(line: &[u8]) -> Result<(), HttpError> {
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

/// Owned names and value positions of `parsed`, which httparse took from
/// `source`; `offset` is where `source` starts in the message.
pub(super) fn fields_of(
    source: &[u8],
    offset: usize,
    parsed: &[httparse::Header<'_>],
) -> Vec<Field> {
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

/// `fields`, which lie in `section` of the message `raw`, as headers whose
/// values are slices of `raw`; with `copy_out`, of a copy of `section`
/// instead, so that `raw` can be freed.
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
        .map(|f| Header::new(f.name, value_of(&source, base, &f.value)))
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

/// Parses a complete request head: its request line, framing and fields.
pub(super) fn parse_request_head(
    bytes: &[u8],
    limits: &HttpLimits,
) -> Result<(RequestHead, Framing, Vec<Field>), HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    complete(req.parse(bytes), limits, "request head")?;
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Parse("incomplete request line".into()));
    };
    let framing = match framing_fields(req.headers)? {
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
    };
    let head = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
    };
    Ok((head, framing, fields_of(bytes, 0, req.headers)))
}

/// Parses a complete response head to a request with `method`.
pub(super) fn parse_response_head(
    bytes: &[u8],
    method: &str,
    limits: &HttpLimits,
) -> Result<ParsedResponse, HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut resp = httparse::Response::new(&mut slots);
    complete(resp.parse(bytes), limits, "response head")?;
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
