//! HTTP/2 frames (RFC 9113 §4 and §6) read in place from one direction of
//! a reassembled TCP stream.
//!
//! # Invariants
//!
//! - [`FrameReader::read`] looks only at the start of the buffer it is
//!   given and never keeps it: a frame borrows its payload from that buffer,
//!   and the reader reports how many bytes the frame took ([`Read::Frame`]).
//!   The caller drops those bytes and calls again; the reader holds no bytes
//!   between calls and allocates nothing.
//! - A buffer shorter than a whole frame is [`Read::Incomplete`], with the
//!   number of bytes the frame needs once its 9-byte header is in: never an
//!   error, never a panic, whatever the length.
//! - A frame whose declared length passes the reader's maximum frame size
//!   is [`Malformed::TooLarge`] as soon as its header is in, without waiting
//!   for its payload: the reader never asks a caller to buffer more than
//!   `9 + max_frame_size` bytes.
//! - Every other check applies to a complete frame, whose extent is then
//!   known: the error carries it ([`FrameError::frame_len`]), so a caller that
//!   only observes can skip the frame and stay in step with the stream.
//! - Padding (`PADDED`) and priority fields (`PRIORITY`) are stripped with
//!   bounds checks: a pad length that leaves no room is an error, not a
//!   slice out of range.
//! - Frames of an unknown type are returned as [`Frame::Unknown`] (to be
//!   skipped, RFC 9113 §4.1) and counted ([`FrameReader::unknown_frames`]).
//!
//! The maximum frame size is SETTINGS_MAX_FRAME_SIZE as the *receiver* of
//! this direction advertised it: 16,384 by default, raised up to 2^24 − 1 by
//! a SETTINGS frame seen in the other direction
//! ([`FrameReader::set_max_frame_size`]).
//!
//! The connection preface a client sends first is recognised by
//! [`preface`]: whole, a prefix of it (more bytes needed), or absent.

use thiserror::Error;

/// The client connection preface (RFC 9113 §3.4), before its first SETTINGS.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 9;

/// SETTINGS_MAX_FRAME_SIZE until a SETTINGS frame changes it.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest SETTINGS_MAX_FRAME_SIZE a peer may advertise (2^24 − 1).
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// Frame flags (RFC 9113 §6). Which apply depends on the frame type.
pub mod flags {
    /// DATA, HEADERS: the last frame the sender sends on the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the header block ends here.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE: a pad length byte and padding.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: exclusive flag, stream dependency and weight precede the
    /// fragment.
    pub const PRIORITY: u8 = 0x20;
}

/// What a buffer starts with, as to the client connection preface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preface {
    /// The whole preface: [`PREFACE`]`.len()` bytes to drop.
    Complete,
    /// A proper prefix of the preface (possibly empty): more bytes decide.
    Partial,
    /// Bytes that are not the preface.
    Absent,
}

/// Whether `buf` starts with the client connection preface.
pub fn preface(buf: &[u8]) -> Preface {
    let n = buf.len().min(PREFACE.len());
    if buf.get(..n) != PREFACE.get(..n) {
        Preface::Absent
    } else if n == PREFACE.len() {
        Preface::Complete
    } else {
        Preface::Partial
    }
}

/// A frame's type (RFC 9113 §6; unknown types are kept by number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 0x0.
    Data,
    /// 0x1.
    Headers,
    /// 0x2.
    Priority,
    /// 0x3.
    RstStream,
    /// 0x4.
    Settings,
    /// 0x5.
    PushPromise,
    /// 0x6.
    Ping,
    /// 0x7.
    GoAway,
    /// 0x8.
    WindowUpdate,
    /// 0x9.
    Continuation,
    /// Any other type: ignored and skipped (RFC 9113 §4.1, §5.5).
    Unknown(u8),
}

impl FrameType {
    /// The type of wire code `code`.
    pub fn from_code(code: u8) -> Self {
        match code {
            0x0 => Self::Data,
            0x1 => Self::Headers,
            0x2 => Self::Priority,
            0x3 => Self::RstStream,
            0x4 => Self::Settings,
            0x5 => Self::PushPromise,
            0x6 => Self::Ping,
            0x7 => Self::GoAway,
            0x8 => Self::WindowUpdate,
            0x9 => Self::Continuation,
            other => Self::Unknown(other),
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Data => 0x0,
            Self::Headers => 0x1,
            Self::Priority => 0x2,
            Self::RstStream => 0x3,
            Self::Settings => 0x4,
            Self::PushPromise => 0x5,
            Self::Ping => 0x6,
            Self::GoAway => 0x7,
            Self::WindowUpdate => 0x8,
            Self::Continuation => 0x9,
            Self::Unknown(code) => code,
        }
    }

    /// The name RFC 9113 gives it (`UNKNOWN` for others).
    pub fn name(self) -> &'static str {
        match self {
            Self::Data => "DATA",
            Self::Headers => "HEADERS",
            Self::Priority => "PRIORITY",
            Self::RstStream => "RST_STREAM",
            Self::Settings => "SETTINGS",
            Self::PushPromise => "PUSH_PROMISE",
            Self::Ping => "PING",
            Self::GoAway => "GOAWAY",
            Self::WindowUpdate => "WINDOW_UPDATE",
            Self::Continuation => "CONTINUATION",
            Self::Unknown(_) => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for FrameType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "UNKNOWN(0x{code:02x})"),
            known => f.write_str(known.name()),
        }
    }
}

/// The 9-byte frame header (RFC 9113 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub length: u32,
    /// Frame type.
    pub kind: FrameType,
    /// Flags, as sent.
    pub flags: u8,
    /// Stream identifier, reserved bit cleared (31 bits).
    pub stream_id: u32,
}

impl FrameHeader {
    /// Parses the header at the start of `buf`, if 9 bytes are there.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let h: &[u8; FRAME_HEADER_LEN] = buf.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        Some(Self {
            length: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: FrameType::from_code(h[3]),
            flags: h[4],
            stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    /// The header's 9 bytes (the length truncated to 24 bits).
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let l = self.length.to_be_bytes();
        let s = (self.stream_id & 0x7fff_ffff).to_be_bytes();
        [
            l[1],
            l[2],
            l[3],
            self.kind.code(),
            self.flags,
            s[0],
            s[1],
            s[2],
            s[3],
        ]
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The whole frame's length on the wire: header and payload.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.length as usize
    }
}

/// Stream priority fields (HEADERS with `PRIORITY`, and PRIORITY frames;
/// deprecated by RFC 9113 §5.3.2 but still sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriorityFields {
    /// The exclusive flag.
    pub exclusive: bool,
    /// The stream this one depends on.
    pub dependency: u32,
    /// Weight minus one, as sent (0..=255).
    pub weight: u8,
}

impl PriorityFields {
    fn parse(b: &[u8; 5]) -> Self {
        let dep = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Self {
            exclusive: dep & 0x8000_0000 != 0,
            dependency: dep & 0x7fff_ffff,
            weight: b[4],
        }
    }
}

/// The parameters of a SETTINGS frame, read in place: `(identifier, value)`
/// pairs in wire order (RFC 9113 §6.5.1). Unknown identifiers are kept:
/// a receiver ignores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings<'a> {
    payload: &'a [u8],
}

impl<'a> Settings<'a> {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;

    /// The parameters of a SETTINGS payload given apart from a frame (the
    /// `HTTP2-Settings` header of an h2c upgrade, decoded).
    pub fn from_payload(payload: &'a [u8]) -> Self {
        Self { payload }
    }

    /// The parameters, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u32)> + 'a {
        self.payload.chunks_exact(6).map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
    }

    /// The last value given for `id`, if any (a later one overrides).
    pub fn get(&self, id: u16) -> Option<u32> {
        self.iter().filter(|(i, _)| *i == id).map(|(_, v)| v).last()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.payload.len() / 6
    }

    /// True when the frame carries no parameter.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

/// One frame, its payload borrowed from the reader's input, padding and
/// priority fields stripped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// DATA (§6.1).
    Data {
        /// Never 0.
        stream_id: u32,
        /// `END_STREAM`.
        end_stream: bool,
        /// The data, without padding.
        data: &'a [u8],
        /// Bytes of padding stripped, the pad length byte included: what
        /// flow control counted beyond `data`.
        padding: u32,
    },
    /// HEADERS (§6.2): the first fragment of a header block.
    Headers {
        /// Never 0.
        stream_id: u32,
        /// `END_STREAM`.
        end_stream: bool,
        /// `END_HEADERS`: no CONTINUATION follows.
        end_headers: bool,
        /// The priority fields, with the `PRIORITY` flag.
        priority: Option<PriorityFields>,
        /// The header block fragment, without padding and priority.
        fragment: &'a [u8],
    },
    /// PRIORITY (§6.3).
    Priority {
        /// Never 0.
        stream_id: u32,
        /// The fields.
        priority: PriorityFields,
    },
    /// RST_STREAM (§6.4).
    RstStream {
        /// Never 0.
        stream_id: u32,
        /// The error code.
        error_code: u32,
    },
    /// SETTINGS (§6.5), on stream 0.
    Settings {
        /// `ACK` (then without parameters).
        ack: bool,
        /// The parameters.
        settings: Settings<'a>,
    },
    /// PUSH_PROMISE (§6.6): the first fragment of a header block.
    PushPromise {
        /// The stream the promise is sent on; never 0.
        stream_id: u32,
        /// `END_HEADERS`.
        end_headers: bool,
        /// The stream reserved for the pushed response.
        promised_stream_id: u32,
        /// The header block fragment, without padding.
        fragment: &'a [u8],
    },
    /// PING (§6.7), on stream 0.
    Ping {
        /// `ACK`.
        ack: bool,
        /// The opaque data.
        data: [u8; 8],
    },
    /// GOAWAY (§6.8), on stream 0.
    GoAway {
        /// The last stream the sender may have processed.
        last_stream_id: u32,
        /// The error code.
        error_code: u32,
        /// Additional debug data.
        debug: &'a [u8],
    },
    /// WINDOW_UPDATE (§6.9); stream 0 is the connection.
    WindowUpdate {
        /// The stream, or 0.
        stream_id: u32,
        /// The increment (31 bits; 0 is the peer's protocol error, passed
        /// on as sent).
        increment: u32,
    },
    /// CONTINUATION (§6.10): a further fragment of a header block.
    Continuation {
        /// Never 0.
        stream_id: u32,
        /// `END_HEADERS`.
        end_headers: bool,
        /// The header block fragment.
        fragment: &'a [u8],
    },
    /// A frame of an unknown type: to be skipped.
    Unknown {
        /// The header as sent.
        header: FrameHeader,
        /// The payload.
        payload: &'a [u8],
    },
}

impl Frame<'_> {
    /// The frame's type.
    pub fn kind(&self) -> FrameType {
        match self {
            Frame::Data { .. } => FrameType::Data,
            Frame::Headers { .. } => FrameType::Headers,
            Frame::Priority { .. } => FrameType::Priority,
            Frame::RstStream { .. } => FrameType::RstStream,
            Frame::Settings { .. } => FrameType::Settings,
            Frame::PushPromise { .. } => FrameType::PushPromise,
            Frame::Ping { .. } => FrameType::Ping,
            Frame::GoAway { .. } => FrameType::GoAway,
            Frame::WindowUpdate { .. } => FrameType::WindowUpdate,
            Frame::Continuation { .. } => FrameType::Continuation,
            Frame::Unknown { header, .. } => header.kind,
        }
    }

    /// The stream the frame is on (0 for the connection).
    pub fn stream_id(&self) -> u32 {
        match *self {
            Frame::Data { stream_id, .. }
            | Frame::Headers { stream_id, .. }
            | Frame::Priority { stream_id, .. }
            | Frame::RstStream { stream_id, .. }
            | Frame::PushPromise { stream_id, .. }
            | Frame::WindowUpdate { stream_id, .. }
            | Frame::Continuation { stream_id, .. } => stream_id,
            Frame::Settings { .. } | Frame::Ping { .. } | Frame::GoAway { .. } => 0,
            Frame::Unknown { header, .. } => header.stream_id,
        }
    }
}

/// Why a frame is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum Malformed {
    /// The declared length passes the maximum frame size
    /// (FRAME_SIZE_ERROR).
    #[error("length {length} over the maximum frame size {max}")]
    TooLarge {
        /// The declared payload length.
        length: u32,
        /// The maximum in force.
        max: u32,
    },
    /// The payload is shorter than the fields its type and flags require
    /// (pad length byte, priority fields, promised stream, GOAWAY fields).
    #[error("payload of {length} bytes, shorter than the {need} its fields need")]
    Short {
        /// The payload length.
        length: u32,
        /// The bytes the fixed fields take.
        need: u32,
    },
    /// A fixed-size frame (PRIORITY 5, RST_STREAM 4, PING 8,
    /// WINDOW_UPDATE 4, SETTINGS a multiple of 6 and 0 with ACK) of
    /// another length.
    #[error("payload of {length} bytes where its type requires {expected}")]
    BadLength {
        /// The payload length.
        length: u32,
        /// What the type requires, in words.
        expected: &'static str,
    },
    /// The padding is as long as or longer than what remains of the
    /// payload (PROTOCOL_ERROR).
    #[error("pad length {pad} leaves no room in a payload of {length} bytes")]
    Padding {
        /// The pad length byte.
        pad: u8,
        /// The payload length.
        length: u32,
    },
    /// A stream frame on stream 0.
    #[error("sent on stream 0, which it may not be")]
    StreamZero,
    /// A connection frame (SETTINGS, PING, GOAWAY) on a stream.
    #[error("sent on a stream, where it must be on stream 0")]
    NotStreamZero,
}

/// A malformed frame: which one, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("malformed {kind} frame on stream {stream_id}: {reason}")]
pub struct FrameError {
    /// The frame's type.
    pub kind: FrameType,
    /// The frame's stream.
    pub stream_id: u32,
    /// The frame's whole length on the wire (header and declared payload):
    /// how many bytes to skip to stay in step with the stream.
    pub frame_len: usize,
    /// Why.
    pub reason: Malformed,
}

/// What [`FrameReader::read`] found at the start of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// A whole frame, and the bytes it took (header and payload).
    Frame(Frame<'a>, usize),
    /// Not a whole frame yet: the buffer must hold `needed` bytes (9 while
    /// the header is incomplete, then the whole frame's length).
    Incomplete {
        /// Bytes the buffer must hold.
        needed: usize,
    },
}

/// Reads frames one at a time from the start of a buffer (see the module
/// documentation for its invariants).
#[derive(Clone, Debug)]
pub struct FrameReader {
    max_frame_size: u32,
    frames: u64,
    unknown: u64,
}

impl Default for FrameReader {
    /// A reader with [`DEFAULT_MAX_FRAME_SIZE`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameReader {
    /// A reader accepting payloads up to `max_frame_size` bytes (clamped to
    /// `DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE`).
    pub fn new(max_frame_size: u32) -> Self {
        let mut reader = Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            frames: 0,
            unknown: 0,
        };
        reader.set_max_frame_size(max_frame_size);
        reader
    }

    /// Applies SETTINGS_MAX_FRAME_SIZE as the receiver advertised it; values
    /// outside `16,384..=2^24 − 1` (which the receiver may not send) are
    /// clamped.
    pub fn set_max_frame_size(&mut self, size: u32) {
        self.max_frame_size = size.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE);
    }

    /// The maximum payload length in force.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Frames returned so far, unknown ones included.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames of an unknown type returned so far (to be skipped).
    pub fn unknown_frames(&self) -> u64 {
        self.unknown
    }

    /// The frame at the start of `buf`. Each returned frame is counted:
    /// the caller is expected to drop its bytes before calling again.
    pub fn read<'a>(&mut self, buf: &'a [u8]) -> Result<Read<'a>, FrameError> {
        let Some(header) = FrameHeader::parse(buf) else {
            return Ok(Read::Incomplete {
                needed: FRAME_HEADER_LEN,
            });
        };
        let error = |reason| FrameError {
            kind: header.kind,
            stream_id: header.stream_id,
            frame_len: header.frame_len(),
            reason,
        };
        if header.length > self.max_frame_size {
            return Err(error(Malformed::TooLarge {
                length: header.length,
                max: self.max_frame_size,
            }));
        }
        let total = header.frame_len();
        let Some(payload) = buf.get(FRAME_HEADER_LEN..total) else {
            return Ok(Read::Incomplete { needed: total });
        };
        let frame = parse_payload(header, payload).map_err(error)?;
        self.frames += 1;
        if matches!(frame, Frame::Unknown { .. }) {
            self.unknown += 1;
        }
        Ok(Read::Frame(frame, total))
    }
}

/// Checks the stream identifier's kind: `stream` for a stream frame (not
/// 0), else a connection frame (0).
fn check_stream(header: &FrameHeader, stream: bool) -> Result<(), Malformed> {
    match (stream, header.stream_id == 0) {
        (true, true) => Err(Malformed::StreamZero),
        (false, false) => Err(Malformed::NotStreamZero),
        _ => Ok(()),
    }
}

/// Strips the pad length byte and padding when `PADDED` is set.
fn unpad<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<(&'a [u8], u32), Malformed> {
    if !header.has(flags::PADDED) {
        return Ok((payload, 0));
    }
    let Some((&pad, rest)) = payload.split_first() else {
        return Err(Malformed::Short {
            length: header.length,
            need: 1,
        });
    };
    let keep = rest
        .len()
        .checked_sub(usize::from(pad))
        .ok_or(Malformed::Padding {
            pad,
            length: header.length,
        })?;
    Ok((rest.get(..keep).unwrap_or_default(), u32::from(pad) + 1))
}

/// A fixed-size array at the start of `bytes`, or [`Malformed::Short`].
fn fixed<const N: usize>(bytes: &[u8], length: u32) -> Result<&[u8; N], Malformed> {
    bytes
        .get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or(Malformed::Short {
            length,
            need: N as u32,
        })
}

/// Checks an exact payload length.
fn exact(header: &FrameHeader, len: u32, expected: &'static str) -> Result<(), Malformed> {
    if header.length == len {
        Ok(())
    } else {
        Err(Malformed::BadLength {
            length: header.length,
            expected,
        })
    }
}

fn be32(b: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*b)
}

fn parse_payload(header: FrameHeader, payload: &[u8]) -> Result<Frame<'_>, Malformed> {
    let stream_id = header.stream_id;
    let length = header.length;
    Ok(match header.kind {
        FrameType::Data => {
            check_stream(&header, true)?;
            let (data, padding) = unpad(&header, payload)?;
            Frame::Data {
                stream_id,
                end_stream: header.has(flags::END_STREAM),
                data,
                padding,
            }
        }
        FrameType::Headers => {
            check_stream(&header, true)?;
            let (rest, padding) = unpad(&header, payload)?;
            let (priority, fragment) = if header.has(flags::PRIORITY) {
                let fields = fixed::<5>(rest, length).map_err(|_| Malformed::Short {
                    length,
                    need: padding + 5,
                })?;
                (
                    Some(PriorityFields::parse(fields)),
                    rest.get(5..).unwrap_or_default(),
                )
            } else {
                (None, rest)
            };
            Frame::Headers {
                stream_id,
                end_stream: header.has(flags::END_STREAM),
                end_headers: header.has(flags::END_HEADERS),
                priority,
                fragment,
            }
        }
        FrameType::Priority => {
            check_stream(&header, true)?;
            exact(&header, 5, "5 bytes")?;
            Frame::Priority {
                stream_id,
                priority: PriorityFields::parse(fixed::<5>(payload, length)?),
            }
        }
        FrameType::RstStream => {
            check_stream(&header, true)?;
            exact(&header, 4, "4 bytes")?;
            Frame::RstStream {
                stream_id,
                error_code: be32(fixed::<4>(payload, length)?),
            }
        }
        FrameType::Settings => {
            check_stream(&header, false)?;
            let ack = header.has(flags::ACK);
            if ack {
                exact(&header, 0, "0 bytes with ACK")?;
            } else if !length.is_multiple_of(6) {
                return Err(Malformed::BadLength {
                    length,
                    expected: "a multiple of 6 bytes",
                });
            }
            Frame::Settings {
                ack,
                settings: Settings { payload },
            }
        }
        FrameType::PushPromise => {
            check_stream(&header, true)?;
            let (rest, padding) = unpad(&header, payload)?;
            let promised = fixed::<4>(rest, length).map_err(|_| Malformed::Short {
                length,
                need: padding + 4,
            })?;
            Frame::PushPromise {
                stream_id,
                end_headers: header.has(flags::END_HEADERS),
                promised_stream_id: be32(promised) & 0x7fff_ffff,
                fragment: rest.get(4..).unwrap_or_default(),
            }
        }
        FrameType::Ping => {
            check_stream(&header, false)?;
            exact(&header, 8, "8 bytes")?;
            Frame::Ping {
                ack: header.has(flags::ACK),
                data: *fixed::<8>(payload, length)?,
            }
        }
        FrameType::GoAway => {
            check_stream(&header, false)?;
            let fields = fixed::<8>(payload, length)?;
            Frame::GoAway {
                last_stream_id: u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]])
                    & 0x7fff_ffff,
                error_code: u32::from_be_bytes([fields[4], fields[5], fields[6], fields[7]]),
                debug: payload.get(8..).unwrap_or_default(),
            }
        }
        FrameType::WindowUpdate => {
            exact(&header, 4, "4 bytes")?;
            Frame::WindowUpdate {
                stream_id,
                increment: be32(fixed::<4>(payload, length)?) & 0x7fff_ffff,
            }
        }
        FrameType::Continuation => {
            check_stream(&header, true)?;
            Frame::Continuation {
                stream_id,
                end_headers: header.has(flags::END_HEADERS),
                fragment: payload,
            }
        }
        FrameType::Unknown(_) => Frame::Unknown { header, payload },
    })
}

#[cfg(test)]
pub(crate) mod tests;
