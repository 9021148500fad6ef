//! The HTTP/1 wire format of a replay: a captured request written as it was
//! captured, and the new service's response read back with the parser that
//! read the old service's response on the wire.
//!
//! Nothing here does I/O: the [connection pool](super::pool) writes what
//! [`serialize_request`] produces and feeds what it reads to a
//! [`ResponseReader`]. Why this is not left to hyper's client: see the
//! pool.
//!
//! # What is sent
//!
//! [`serialize_request`] rebuilds the request from the captured one: request
//! line and headers as captured (order, spelling and repetitions), `Host`
//! replaced when asked, the body re-framed with `Content-Length`, the
//! headers that belong to the captured connection dropped (see its
//! documentation).
//!
//! # What is read
//!
//! A [`ResponseReader`] (one per connection) parses the response with
//! [`crate::http`]'s [`ResponseParser`], given the request's method (a
//! response to HEAD has no body) and the limits the capture side uses, and
//! says whether the connection may carry another request after it: not when
//! the response ends the connection (`Connection: close`, an HTTP/1.0
//! response without `Connection: keep-alive`, a body delimited by the server
//! closing), nor when bytes follow the response that no request asked for.

use std::io::Write as _;

use super::{ReplayError, ShadowMarker, fields};
use crate::{
    http::{DigestPolicy, HttpError, HttpLimits, ResponseParser},
    model::{Header, Request, Response},
};

/// Reads the new service's responses from one connection.
pub(super) struct ResponseReader {
    parser: ResponseParser,
}

impl ResponseReader {
    pub(super) fn new(limits: HttpLimits, digest: Option<DigestPolicy>) -> Self {
        Self {
            parser: ResponseParser::with_digest(limits, digest),
        }
    }

    /// Forgets what was read: before a request is written, and when the
    /// connection goes back to the pool.
    pub(super) fn clear(&mut self) {
        self.parser.clear();
    }

    /// Feeds bytes read from the connection. Once the response to a
    /// `method` request is complete (interim 1xx responses skipped), returns
    /// it with whether the connection may carry another request.
    pub(super) fn push(
        &mut self,
        bytes: &[u8],
        method: &str,
    ) -> Result<Option<(Response, bool)>, ReplayError> {
        self.parser.push(bytes);
        match self.parser.next(method) {
            Ok(Some(response)) => {
                // Bytes beyond the response were not asked for: the
                // connection is out of step, do not reuse it.
                let reusable = keeps_alive(&response) && self.parser.buffered() == 0;
                Ok(Some((response, reusable)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(ReplayError::Http(e)),
        }
    }

    /// The server closed the connection after part of a response: the
    /// response when its body was delimited by the close, else
    /// [`ReplayError::Closed`].
    pub(super) fn finish(&mut self, method: &str) -> Result<Response, ReplayError> {
        match self.parser.finish(method) {
            Ok(Some(response)) => Ok(response),
            Ok(None) | Err(HttpError::Truncated) => Err(ReplayError::Closed),
            Err(e) => Err(ReplayError::Http(e)),
        }
    }
}

/// Whether the server keeps the connection open after this response
/// (RFC 9112 section 9.3).
fn keeps_alive(response: &Response) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for option in connection_options(&response.headers) {
        close |= option.eq_ignore_ascii_case(b"close");
        keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
    }
    !close && (response.version >= 1 || keep_alive)
}

/// The comma-separated options of every `Connection` header, trimmed.
pub(super) fn connection_options(headers: &[Header]) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|o| !o.is_empty())
}

/// The request line as captured (without its line end), when the captured
/// bytes begin with this request's method and target.
fn captured_start_line(req: &Request) -> Option<&[u8]> {
    let raw = &req.raw[..];
    let end = raw.iter().position(|&b| b == b'\n')?;
    let line = raw[..end].strip_suffix(b"\r").unwrap_or(&raw[..end]);
    let rest = line
        .strip_prefix(req.method.as_bytes())?
        .strip_prefix(b" ")?
        .strip_prefix(req.target.as_bytes())?;
    (rest.is_empty() || rest.starts_with(b" ")).then_some(line)
}

/// Appends `req` to `out` as it is sent to the new service:
///
/// * the request line as captured (method, target in its captured form,
///   version); HTTP/1.0 stays HTTP/1.0, so the new service sees what the old
///   one saw;
/// * the headers in their captured order, names in their captured spelling,
///   except those that belong to the captured connection: `Connection` and
///   the headers it names, `Keep-Alive`, `Proxy-Connection`, `TE`,
///   `Upgrade` (an upgraded connection cannot be compared);
/// * `Host` as captured, or replaced in place by `host_override` (later
///   `Host` headers dropped; added first when the request had none); CR, LF
///   and NUL are removed from the override; with `-shadow` after its name
///   when the marker asks (see [`ShadowMarker`]);
/// * the marker's header last among the captured ones, a captured header of
///   its name dropped;
/// * no `Connection` header for HTTP/1.1 (keep-alive is its default);
///   `Connection: keep-alive` for HTTP/1.0, so that the connection can be
///   pooled;
/// * the body de-chunked and framed by `Content-Length: N`, sent when the
///   body is non-empty or the method is POST, PUT or PATCH (which normally
///   carry one); the captured `Content-Length`, `Transfer-Encoding` and
///   `Trailer` headers are dropped, and so are the trailer fields of a
///   chunked body (a `Content-Length` body cannot carry them).
pub fn serialize_request(
    req: &Request,
    host_override: Option<&str>,
    marker: &ShadowMarker,
    out: &mut Vec<u8>,
) {
    match captured_start_line(req) {
        // As it was on the wire: a line servers accept though it is not
        // strictly HTTP/1.x (`GET / HTTP/1.`, `GET /path`) is replayed as
        // such, to see how the new version treats it.
        Some(line) => out.extend_from_slice(line),
        None => {
            out.extend_from_slice(req.method.as_bytes());
            out.push(b' ');
            out.extend_from_slice(req.target.as_bytes());
            out.extend_from_slice(if req.version == 0 {
                b" HTTP/1.0"
            } else {
                b" HTTP/1.1"
            });
        }
    }
    out.extend_from_slice(b"\r\n");
    let write_host = |out: &mut Vec<u8>, name: &str, host: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend(host.iter().filter(|&&b| !matches!(b, b'\r' | b'\n' | 0)));
        out.extend_from_slice(b"\r\n");
    };
    let captured_host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"));
    // Rewritten when overridden or suffixed; `None` keeps every captured
    // `Host` as it was.
    let rewritten = (host_override.is_some() || marker.host_suffix)
        .then(|| marker.host(captured_host.map(|h| &h.value[..]), host_override))
        .flatten();
    let mut host_written = false;
    if let Some(host) = &rewritten
        && captured_host.is_none()
    {
        write_host(out, "Host", host);
        host_written = true;
    }
    for h in &req.headers {
        if h.name.eq_ignore_ascii_case("host") {
            if let Some(host) = &rewritten {
                if !host_written {
                    write_host(out, &h.name, host);
                    host_written = true;
                }
                continue;
            }
        } else if fields::is_connection_field(&h.name)
            || connection_options(&req.headers).any(|o| o.eq_ignore_ascii_case(h.name.as_bytes()))
            || marker.replaces(&h.name)
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(m) = &marker.header {
        out.extend_from_slice(m.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(m.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if req.version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "Content-Length: {}\r\n", req.body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
}

#[cfg(test)]
mod tests;
