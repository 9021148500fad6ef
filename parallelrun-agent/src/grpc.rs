//! gRPC over HTTP/2: recognising a gRPC response, splitting its body into
//! messages, and reading its status.
//!
//! A gRPC body (the DATA frames of one stream joined, see
//! [`Protocol`](crate::model::Protocol)) is a sequence of length-prefixed
//! messages: a 1-byte compressed flag (0 or 1), a 4-byte big-endian length,
//! then that many bytes. A message whose flag is 1 is compressed with the
//! stream's `grpc-encoding` (`gzip` and `identity` are decoded here; any
//! other encoding is an [`FramingError::UnknownEncoding`]). Splitting is
//! bounded by [`Limits`]: the number of messages and the total size of the
//! decoded messages, so that a hostile length prefix or a compression bomb
//! costs no more than the caller allows.
//!
//! The call's status is `grpc-status` (a decimal code) and `grpc-message`
//! (percent-encoded UTF-8) in the trailers, or, for a trailers-only
//! response (an error without a body), among the headers ([`status`]).

use std::io::Read;

use crate::model::{Header, Response, header};

/// How much [`split_messages`] decodes at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many messages in one body.
    pub max_messages: usize,
    /// At most this many bytes of messages in all, after decompression.
    pub max_decoded: usize,
}

/// Why a gRPC body could not be split into messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The body ends inside a message's prefix or payload.
    #[error(
        "message {index} is truncated: needs {needed} bytes at offset {offset}, {available} left"
    )]
    Truncated {
        index: usize,
        offset: usize,
        needed: u64,
        available: usize,
    },
    /// A compressed flag other than 0 or 1.
    #[error("message {index} has an invalid compressed flag {flag}")]
    BadFlag { index: usize, flag: u8 },
    /// More messages than [`Limits::max_messages`].
    #[error("more than {max} messages")]
    TooManyMessages { max: usize },
    /// The messages decode to more than [`Limits::max_decoded`] bytes.
    #[error("messages exceed the limit of {max} decoded bytes")]
    TooLarge { max: usize },
    /// A compressed message in an encoding that is not decoded here (or
    /// compressed with no `grpc-encoding`, or `identity`).
    #[error("message {index} is compressed with unsupported grpc-encoding {encoding:?}")]
    UnknownEncoding { index: usize, encoding: String },
    /// A compressed message whose data is corrupt.
    #[error("message {index} does not decompress as {encoding}: {message}")]
    Corrupt {
        index: usize,
        encoding: String,
        message: String,
    },
}

/// Whether `headers` (a response's or request's) say gRPC: a
/// `content-type` of `application/grpc` or `application/grpc+SUBTYPE`
/// (`+proto`, `+json`, ...), parameters and case ignored. gRPC-Web
/// (`application/grpc-web`) is not gRPC here: its trailers are in the body.
pub fn is_grpc(headers: &[Header]) -> bool {
    let Some(ct) = header(headers, "content-type") else {
        return false;
    };
    let essence = ct
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let Some((kind, rest)) = essence.split_at_checked(b"application/grpc".len()) else {
        return false;
    };
    kind.eq_ignore_ascii_case(b"application/grpc") && (rest.is_empty() || rest.starts_with(b"+"))
}

/// The `grpc-encoding` of `headers`, lowercased and trimmed; `None` when
/// absent (messages must then be uncompressed).
pub fn encoding(headers: &[Header]) -> Option<String> {
    header(headers, "grpc-encoding")
        .map(|v| String::from_utf8_lossy(v.trim_ascii()).to_ascii_lowercase())
}

/// The messages of a gRPC `body`, each decompressed per `encoding` (the
/// stream's `grpc-encoding`) when its flag says so. An empty body has no
/// messages.
pub fn split_messages(
    body: &[u8],
    encoding: Option<&str>,
    limits: Limits,
) -> Result<Vec<Vec<u8>>, FramingError> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut offset = 0;
    let mut total: usize = 0;
    while !rest.is_empty() {
        let index = out.len();
        if index >= limits.max_messages {
            return Err(FramingError::TooManyMessages {
                max: limits.max_messages,
            });
        }
        let truncated = |needed: u64, available: usize| FramingError::Truncated {
            index,
            offset,
            needed,
            available,
        };
        let Some((&[flag, a, b, c, d], payload)) = rest.split_first_chunk::<5>() else {
            return Err(truncated(5, rest.len()));
        };
        let len = u32::from_be_bytes([a, b, c, d]);
        let Some(data) = usize::try_from(len).ok().and_then(|n| payload.get(..n)) else {
            return Err(truncated(u64::from(len), payload.len()));
        };
        let room = limits.max_decoded.saturating_sub(total);
        let message = match flag {
            0 if data.len() > room => {
                return Err(FramingError::TooLarge {
                    max: limits.max_decoded,
                });
            }
            0 => data.to_vec(),
            1 => decompress(index, encoding, data, room, limits.max_decoded)?,
            flag => return Err(FramingError::BadFlag { index, flag }),
        };
        total += message.len();
        offset += 5 + data.len();
        rest = &payload[data.len()..];
        out.push(message);
    }
    Ok(out)
}

/// One compressed message, at most `room` bytes once decompressed.
fn decompress(
    index: usize,
    encoding: Option<&str>,
    data: &[u8],
    room: usize,
    max: usize,
) -> Result<Vec<u8>, FramingError> {
    match encoding {
        Some("gzip") => {
            let mut out = Vec::new();
            let cap = u64::try_from(room).unwrap_or(u64::MAX).saturating_add(1);
            flate2::read::GzDecoder::new(data)
                .take(cap)
                .read_to_end(&mut out)
                .map_err(|e| FramingError::Corrupt {
                    index,
                    encoding: "gzip".to_owned(),
                    message: e.to_string(),
                })?;
            if out.len() > room {
                return Err(FramingError::TooLarge { max });
            }
            Ok(out)
        }
        other => Err(FramingError::UnknownEncoding {
            index,
            encoding: other.unwrap_or("").to_owned(),
        }),
    }
}

/// The call's status: `grpc-status` (parsed as a decimal code) and the
/// percent-decoded `grpc-message` (empty when absent), from the trailers
/// when they carry a `grpc-status`, else from the headers (a trailers-only
/// response). `None` when neither has a `grpc-status` or it is not a
/// number.
pub fn status(response: &Response) -> Option<(u32, String)> {
    let fields = status_fields(response)?;
    let code = std::str::from_utf8(header(fields, "grpc-status")?.trim_ascii())
        .ok()?
        .parse()
        .ok()?;
    let message = header(fields, "grpc-message")
        .map(|m| percent_decode(m))
        .unwrap_or_default();
    Some((code, message))
}

/// The fields that carry the call's status: the trailers when they have a
/// `grpc-status`, else the headers when they do.
pub(crate) fn status_fields(response: &Response) -> Option<&[Header]> {
    [&response.trailers, &response.headers]
        .into_iter()
        .find(|fields| header(fields, "grpc-status").is_some())
        .map(Vec::as_slice)
}

/// A `grpc-message` value decoded: `%XX` escapes undone, then UTF-8
/// decoded lossily. A `%` not followed by two hex digits is kept as is
/// (the gRPC spec asks receivers not to fail on bad escapes).
pub fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        let escaped = match (b, value.get(i + 1), value.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests;
