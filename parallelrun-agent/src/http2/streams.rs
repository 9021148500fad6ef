//! HTTP/2 streams to exchanges: one connection's two directions of frames
//! become one [`Outcome`](crate::model::Outcome) per request stream.
//!
//! An [`H2Conn`] is one connection's state: per direction a [`Side`] (the
//! frame reader, the header block assembler and the HPACK decoder of
//! [`super`]), and the streams in flight. The HTTP tracker
//! ([`crate::http::HttpTracker`]) detects HTTP/2 on a connection and hands
//! it every event of that connection from then on; outcomes go to an
//! [`Outcomes`] sink, which numbers the requests and counts the outcomes of
//! both protocols alike.
//!
//! # Rules
//!
//! - **Exactly one outcome per request stream.** A client HEADERS that opens
//!   a stream is a request: it gets an id and ends `Paired` or `Lost`, even
//!   when its header block cannot be decoded. Pushed streams (even ids,
//!   announced by PUSH_PROMISE) are no requests: counted, their frames
//!   dropped.
//! - **Pairing by stream.** A stream is paired when both its request and its
//!   response ended (`END_STREAM`), or when the response ended and the
//!   client then reset the stream (a server may answer before the request
//!   body is complete). Interim 1xx responses are skipped. `request_ts_ns`
//!   is the time of the `data()` call that carried the request's HEADERS,
//!   `response_ts_ns` that of the call that ended the response.
//! - **HPACK state is never guessed.** Every header block of a direction is
//!   decoded in order, also for streams whose outcome is known, since each
//!   may change the dynamic table. A block that names an entry the decoder
//!   never saw (a connection joined midway, or after a gap) loses its stream
//!   as `hpack_state`; the other streams go on.
//! - **Reset.** RST_STREAM, from either side, loses a stream whose response
//!   was not complete as `reset`; so does a GOAWAY for the streams above its
//!   last stream id.
//! - **Limits.** At most [`Http2Limits::max_streams`] streams are followed
//!   at once; a request beyond is lost `too_large`. A request or response
//!   body over [`Http2Limits::max_body`] loses its stream `too_large`;
//!   response bodies are digested instead of kept as [`DigestPolicy`]
//!   says. Header blocks are bounded by [`Http2Limits::block`], decoded
//!   lists and the dynamic table by [`Http2Limits::max_header_list`] and
//!   [`Http2Limits::max_table_size`] (what SETTINGS may raise the table to).
//!   A frame waiting for the rest of its bytes is held, at most one per
//!   direction (9 bytes + the maximum frame size).
//! - **Gaps and malformed frames.** A frame whose extent is known but whose
//!   content is malformed is skipped and counted; if it carried a header
//!   block fragment, the block is lost, so is that stream (`parse_error`),
//!   and the direction's HPACK decoder forgets its table (it decodes on as
//!   a joined one). A frame whose extent cannot be trusted (a length over
//!   the maximum frame size), and bytes missing from the stream (a gap),
//!   lose every stream waiting on that direction and send it to
//!   resynchronize.
//!
//! # Resynchronization and joining midway
//!
//! A direction out of step skips whole `data()` chunks until one that
//! begins with frames ([`looks_like_frames`]): reassembly hands over one
//! segment per call, and a sender usually starts a segment with a frame.
//! The skipped bytes are counted. A connection joined midway (its SYN not
//! seen) starts with both directions out of step and both decoders joined
//! ([`super::hpack::Decoder::joined`]): requests that name only entries
//! inserted since are compared, the others are lost `hpack_state`.
//!
//! # Why not the `h2` crate
//!
//! `h2` is an endpoint: it answers SETTINGS, enforces flow control, and
//! treats any protocol error as fatal to the connection. An observer must
//! follow both directions of a connection it does not take part in, start
//! in the middle of one, and survive a lost segment; so the layers of
//! [`super`] are driven here directly.

use std::collections::HashMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use serde::Serialize;

use super::{
    block::{BlockLimits, HeaderBlockAssembler},
    frame::{
        self, DEFAULT_MAX_FRAME_SIZE, Frame, FrameError, FrameHeader, FrameReader, FrameType,
        Malformed, PREFACE, Read, Settings,
    },
    hpack::{Decoder, DecoderLimits, HeaderList, HpackError, Pseudo},
};
use crate::{
    diff::{BodySink, DigestPolicy},
    model::{ConnKey, Direction, Exchange, Header, LossCause, Protocol, Request, Response},
    stream::CloseReason,
};

/// Bounds of HTTP/2 tracking, per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Limits {
    /// Streams followed at once on one connection. Default 256 (servers
    /// commonly allow 100 or 128 concurrent streams).
    pub max_streams: usize,
    /// Largest request or response body. Default 16 MiB; the HTTP tracker
    /// sets HTTP/1's ([`crate::http::HttpLimits::max_body`]).
    pub max_body: usize,
    /// Largest decoded header list (RFC 9113 §6.5.2). Default 64 KiB.
    pub max_header_list: usize,
    /// Largest dynamic table a SETTINGS_HEADER_TABLE_SIZE may ask for; a
    /// larger one is clamped, and a table size update beyond it is an error
    /// (the decoder forgets its table). Default 64 KiB.
    pub max_table_size: usize,
    /// Bounds of one header block.
    pub block: BlockLimits,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Self {
            max_streams: 256,
            max_body: 16 << 20,
            max_header_list: 64 << 10,
            max_table_size: 64 << 10,
            block: BlockLimits::default(),
        }
    }
}

/// Counters of HTTP/2 tracking, for the whole run. Outcomes are counted
/// with HTTP/1's ([`crate::http::HttpStats`]); these say what happened
/// below them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Http2Stats {
    /// Connections followed as HTTP/2.
    pub connections: u64,
    /// Of them, connections detected midway (no preface seen).
    pub joined_connections: u64,
    /// Of them, HTTP/1.1 connections upgraded with `Upgrade: h2c`.
    pub upgraded_connections: u64,
    /// Frames read, of both directions.
    pub frames: u64,
    /// Frames skipped as malformed.
    pub malformed_frames: u64,
    /// Header blocks that could not be assembled (interleaved frames,
    /// CONTINUATION floods, blocks over the limits).
    pub header_block_errors: u64,
    /// Header blocks HPACK could not decode for a reason other than an
    /// unknown entry (the decoder then forgot its table).
    pub hpack_errors: u64,
    /// Header blocks that named entries the decoder never saw.
    pub hpack_unknown_entries: u64,
    /// RST_STREAM frames.
    pub resets: u64,
    /// GOAWAY frames.
    pub goaways: u64,
    /// PUSH_PROMISE frames (pushed responses are not compared).
    pub push_promises: u64,
    /// Frames on streams that no followed request opened (pushed streams,
    /// streams opened before the agent joined or lost in a gap).
    pub unknown_stream_frames: u64,
    /// Bytes skipped while resynchronizing to a frame boundary.
    pub skipped_bytes: u64,
    /// Bytes of incomplete frames dropped when their connection closed.
    pub truncated_bytes: u64,
}

/// Where a connection's outcomes go.
pub trait Outcomes {
    /// Counts a new request and gives its id.
    fn request(&mut self) -> u64;
    /// A request paired with its response.
    fn paired(&mut self, exchange: Exchange);
    /// A request lost for `cause`, with what could be read of its method
    /// and target.
    fn lost(
        &mut self,
        key: &ConnKey,
        cause: LossCause,
        method: Option<String>,
        target: Option<String>,
    );
    /// The HTTP/2 counters.
    fn counters(&mut self) -> &mut Http2Stats;
}

/// True when `chunk` begins at a frame boundary as far as can be told:
/// every frame header in it is one a sender could send (a known type, its
/// flags, its stream rule and fixed length, a length of at most 1 MiB), at
/// least one is whole, and the last frame may run past the chunk's end.
/// Bytes of HTTP/1 (`GET /`: a length of 4.6 MB) or TLS never pass.
pub fn looks_like_frames(chunk: &[u8]) -> bool {
    let mut rest = chunk;
    let mut headers = 0;
    while let Some(header) = FrameHeader::parse(rest) {
        if !plausible(&header, rest) {
            return false;
        }
        headers += 1;
        match rest.get(header.frame_len()..) {
            Some(next) => rest = next,
            None => return true,
        }
    }
    headers > 0
}

/// Whether a sender could have sent `h` (see [`looks_like_frames`]); `raw`
/// begins with its bytes (for the reserved bit).
fn plausible(h: &FrameHeader, raw: &[u8]) -> bool {
    use FrameType as T;
    const MAX_PLAUSIBLE: u32 = 1 << 20;
    let reserved = raw.get(5).is_some_and(|b| b & 0x80 != 0);
    let (flags, on_stream, fixed): (u8, Option<bool>, Option<u32>) = match h.kind {
        T::Data => (0x09, Some(true), None),
        T::Headers => (0x2d, Some(true), None),
        T::Priority => (0, Some(true), Some(5)),
        T::RstStream => (0, Some(true), Some(4)),
        T::Settings => (0x01, Some(false), None),
        T::PushPromise => (0x0c, Some(true), None),
        T::Ping => (0x01, Some(false), Some(8)),
        T::GoAway => (0, Some(false), None),
        T::WindowUpdate => (0, None, Some(4)),
        T::Continuation => (0x04, Some(true), None),
        T::Unknown(_) => return false,
    };
    let stream_ok = on_stream.is_none_or(|on| on == (h.stream_id != 0));
    let len_ok = fixed.is_none_or(|n| n == h.length)
        && (h.kind != T::Settings || h.length.is_multiple_of(6))
        && (h.kind != T::GoAway || h.length >= 8);
    !reserved && h.flags & !flags == 0 && stream_ok && len_ok && h.length <= MAX_PLAUSIBLE
}

/// One direction of a connection.
#[derive(Debug)]
struct Side {
    reader: FrameReader,
    blocks: HeaderBlockAssembler,
    hpack: Decoder,
    /// The bytes of a frame that runs past the chunks seen so far.
    pending: Vec<u8>,
    /// Bytes of a malformed frame still to skip.
    skip: usize,
    /// Skipping chunks until one that begins with frames.
    resync: bool,
    /// Reused from block to block.
    list: HeaderList,
}

impl Side {
    fn new(limits: &Http2Limits, joined: bool) -> Self {
        let hpack_limits = DecoderLimits {
            max_header_list_size: limits.max_header_list,
            ..DecoderLimits::default()
        };
        Self {
            reader: FrameReader::new(DEFAULT_MAX_FRAME_SIZE),
            blocks: HeaderBlockAssembler::new(limits.block),
            hpack: if joined {
                Decoder::joined(hpack_limits)
            } else {
                Decoder::new(hpack_limits)
            },
            pending: Vec::new(),
            skip: 0,
            resync: joined,
            list: HeaderList::new(),
        }
    }

    fn buffered(&self) -> usize {
        self.pending.len() + self.blocks.buffered()
    }

    /// The direction lost its place: resynchronize, and decode on as a
    /// joined decoder.
    fn lose_place(&mut self, stats: &mut Http2Stats) {
        stats.skipped_bytes += self.pending.len() as u64;
        self.pending.clear();
        self.skip = 0;
        self.blocks.clear();
        self.hpack.desync();
        self.resync = true;
    }
}

/// What is known of a stream's response.
#[derive(Debug)]
struct ResponsePart {
    status: u16,
    headers: Vec<Header>,
    body: BodySink,
    trailers: Vec<Header>,
    ended: bool,
    ts_ns: u64,
}

/// A request stream.
#[derive(Debug)]
struct Stream {
    id: u64,
    ts_ns: u64,
    method: String,
    target: String,
    headers: Vec<Header>,
    body: Vec<u8>,
    trailers: Vec<Header>,
    request_ended: bool,
    response: Option<ResponsePart>,
    /// Its outcome was reported: its frames are read and dropped until it
    /// ends.
    reported: bool,
}

impl Stream {
    fn held(&self) -> usize {
        self.body.len() + self.response.as_ref().map_or(0, |r| r.body.kept())
    }

    fn response_ended(&self) -> bool {
        self.response.as_ref().is_some_and(|r| r.ended)
    }
}

/// The state of one HTTP/2 connection (see the module documentation).
#[derive(Debug)]
pub struct H2Conn {
    limits: Http2Limits,
    digest: Option<DigestPolicy>,
    client: Side,
    server: Side,
    /// Bytes of the client preface still expected.
    preface_left: usize,
    streams: HashMap<u32, Stream>,
    /// Bytes of bodies held by `streams`.
    stream_bytes: usize,
}

impl H2Conn {
    /// A connection whose start was seen: the client preface comes first.
    pub fn new(limits: Http2Limits, digest: Option<DigestPolicy>, stats: &mut Http2Stats) -> Self {
        stats.connections += 1;
        Self::with(limits, digest, false, PREFACE.len())
    }

    /// A connection detected midway (see the module documentation).
    pub fn joined(
        limits: Http2Limits,
        digest: Option<DigestPolicy>,
        stats: &mut Http2Stats,
    ) -> Self {
        stats.connections += 1;
        stats.joined_connections += 1;
        Self::with(limits, digest, true, 0)
    }

    /// An HTTP/1.1 connection upgraded with `Upgrade: h2c` (RFC 7540
    /// §3.2): `request`, seen as HTTP/1.1 with id `id` at `ts_ns`, is
    /// stream 1, half closed by the client; its `HTTP2-Settings` header
    /// holds the client's SETTINGS. The client preface comes next; the
    /// server's frames begin with its SETTINGS, then answer stream 1.
    pub fn upgraded(
        limits: Http2Limits,
        digest: Option<DigestPolicy>,
        stats: &mut Http2Stats,
        (id, ts_ns, request): (u64, u64, Request),
    ) -> Self {
        stats.connections += 1;
        stats.upgraded_connections += 1;
        let mut conn = Self::with(limits, digest, false, PREFACE.len());
        let settings = crate::model::header(&request.headers, "http2-settings")
            .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_ascii_end()).ok());
        if let Some(payload) = settings {
            conn.settings(Direction::Request, &Settings::from_payload(&payload));
        }
        let mut headers = Vec::with_capacity(request.headers.len());
        if let Some(host) = crate::model::header(&request.headers, "host") {
            headers.push(Header::new(Pseudo::Authority.name(), host.clone()));
        }
        headers.push(Header::new(Pseudo::Scheme.name(), "http"));
        headers.extend(request.headers.into_iter().filter(|h| {
            ![
                "host",
                "connection",
                "upgrade",
                "http2-settings",
                "keep-alive",
            ]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
        }));
        let body = request.body.to_vec();
        conn.stream_bytes = body.len();
        conn.streams.insert(
            1,
            Stream {
                id,
                ts_ns,
                method: request.method,
                target: request.target,
                headers,
                body,
                trailers: request.trailers,
                request_ended: true,
                response: None,
                reported: false,
            },
        );
        conn
    }

    fn with(
        limits: Http2Limits,
        digest: Option<DigestPolicy>,
        joined: bool,
        preface_left: usize,
    ) -> Self {
        Self {
            limits,
            digest,
            client: Side::new(&limits, joined),
            server: Side::new(&limits, joined),
            preface_left,
            streams: HashMap::new(),
            stream_bytes: 0,
        }
    }

    /// Bytes held: incomplete frames, header blocks being assembled, and
    /// the bodies of streams in flight.
    pub fn holding(&self) -> u64 {
        (self.client.buffered() + self.server.buffered() + self.stream_bytes) as u64
    }

    /// Streams in flight.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The next in-order bytes of one direction.
    pub fn data(
        &mut self,
        out: &mut impl Outcomes,
        key: &ConnKey,
        dir: Direction,
        ts_ns: u64,
        mut bytes: &[u8],
    ) {
        if dir == Direction::Request && self.preface_left > 0 {
            let at = PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(bytes.len());
            if bytes.get(..n) != PREFACE.get(at..at + n) {
                // Not the preface after all: follow it as frames from here.
                self.preface_left = 0;
                self.client.resync = true;
            } else {
                self.preface_left -= n;
                bytes = bytes.get(n..).unwrap_or_default();
            }
        }
        let side = self.side(dir);
        if side.skip > 0 {
            let n = side.skip.min(bytes.len());
            side.skip -= n;
            bytes = bytes.get(n..).unwrap_or_default();
        }
        if bytes.is_empty() {
            return;
        }
        if side.resync {
            if side.pending.is_empty() && looks_like_frames(bytes) {
                side.resync = false;
            } else {
                out.counters().skipped_bytes += bytes.len() as u64;
                return;
            }
        }
        // Complete a frame split across chunks, copying no more than it.
        let mut pending = std::mem::take(&mut self.side(dir).pending);
        while !pending.is_empty() {
            let result = self.side(dir).reader.read(&pending);
            match result {
                Ok(Read::Incomplete { needed }) => {
                    let take = needed.saturating_sub(pending.len()).min(bytes.len());
                    if take == 0 {
                        self.side(dir).pending = pending;
                        return;
                    }
                    let (head, rest) = bytes.split_at(take);
                    pending.extend_from_slice(head);
                    bytes = rest;
                }
                Ok(Read::Frame(frame, _)) => {
                    self.frame(out, key, dir, ts_ns, &frame);
                    pending.clear();
                }
                Err(e) => {
                    let used = pending.len();
                    pending.clear();
                    if !self.malformed(out, key, dir, &e, used) {
                        return;
                    }
                }
            }
        }
        self.side(dir).pending = pending;
        // The rest in place.
        while !bytes.is_empty() {
            let result = self.side(dir).reader.read(bytes);
            match result {
                Ok(Read::Incomplete { .. }) => {
                    self.side(dir).pending.extend_from_slice(bytes);
                    return;
                }
                Ok(Read::Frame(frame, used)) => {
                    self.frame(out, key, dir, ts_ns, &frame);
                    bytes = bytes.get(used..).unwrap_or_default();
                }
                Err(e) => {
                    let used = bytes.len();
                    if !self.malformed(out, key, dir, &e, used) {
                        return;
                    }
                    let n = e.frame_len.min(bytes.len());
                    self.side(dir).skip = e.frame_len - n;
                    bytes = bytes.get(n..).unwrap_or_default();
                }
            }
        }
    }

    /// Bytes of one direction are missing: every stream waiting on it is
    /// lost, and it resynchronizes.
    pub fn gap(
        &mut self,
        out: &mut impl Outcomes,
        key: &ConnKey,
        dir: Direction,
        cause: LossCause,
    ) {
        self.side(dir).lose_place(out.counters());
        let waiting: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| match dir {
                Direction::Request => !s.request_ended,
                Direction::Response => !s.response_ended(),
            })
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            self.lose(out, key, id, cause);
        }
    }

    /// The connection is no longer tracked: the streams in flight are lost.
    pub fn close(mut self, out: &mut impl Outcomes, key: &ConnKey, reason: CloseReason) {
        let cause = match reason {
            CloseReason::Fin | CloseReason::Rst | CloseReason::End => LossCause::Closed,
            CloseReason::Idle => LossCause::Timeout,
            CloseReason::Evicted => LossCause::Evicted,
        };
        self.lose_all(out, key, cause);
        out.counters().truncated_bytes += (self.client.buffered() + self.server.buffered()) as u64;
    }

    /// The connection holds too much: every stream is lost (`too_large`)
    /// and both directions resynchronize.
    pub fn shed(&mut self, out: &mut impl Outcomes, key: &ConnKey) {
        self.lose_all(out, key, LossCause::TooLarge);
        self.client.lose_place(out.counters());
        self.server.lose_place(out.counters());
    }

    fn lose_all(&mut self, out: &mut impl Outcomes, key: &ConnKey, cause: LossCause) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.lose(out, key, id, cause);
        }
    }

    fn side(&mut self, dir: Direction) -> &mut Side {
        match dir {
            Direction::Request => &mut self.client,
            Direction::Response => &mut self.server,
        }
    }

    /// A malformed frame of `used` bytes so far. Returns whether reading
    /// goes on after it (its extent is known).
    fn malformed(
        &mut self,
        out: &mut impl Outcomes,
        key: &ConnKey,
        dir: Direction,
        e: &FrameError,
        used: usize,
    ) -> bool {
        let stats = out.counters();
        stats.malformed_frames += 1;
        if matches!(e.reason, Malformed::TooLarge { .. }) {
            stats.skipped_bytes += used as u64;
            let cause = LossCause::ParseError;
            self.gap(out, key, dir, cause);
            return false;
        }
        if matches!(
            e.kind,
            FrameType::Headers | FrameType::Continuation | FrameType::PushPromise
        ) {
            let side = self.side(dir);
            side.blocks.clear();
            side.hpack.desync();
        }
        if e.stream_id != 0 {
            self.lose(out, key, e.stream_id, LossCause::ParseError);
        }
        true
    }

    /// One frame of direction `dir`.
    fn frame(
        &mut self,
        out: &mut impl Outcomes,
        key: &ConnKey,
        dir: Direction,
        ts_ns: u64,
        frame: &Frame<'_>,
    ) {
        out.counters().frames += 1;
        let side = match dir {
            Direction::Request => &mut self.client,
            Direction::Response => &mut self.server,
        };
        let block = match side.blocks.push(frame) {
            Err(_) => {
                out.counters().header_block_errors += 1;
                side.hpack.desync();
                let stream = frame.stream_id();
                self.lose(out, key, stream, LossCause::ParseError);
                return;
            }
            Ok(Some(block)) => {
                let meta = (block.stream_id, block.end_stream, block.promised_stream_id);
                let decoded = side.hpack.decode_into(block.bytes, &mut side.list);
                Some((meta, decoded))
            }
            Ok(None) => None,
        };
        if let Some(((stream, end_stream, promised), decoded)) = block {
            if let Err(e) = decoded {
                let stats = out.counters();
                if e.is_recoverable() {
                    stats.hpack_unknown_entries += 1;
                } else {
                    stats.hpack_errors += 1;
                }
            }
            match (dir, promised) {
                (_, Some(_)) => out.counters().push_promises += 1,
                (Direction::Request, None) => {
                    self.request_headers(out, key, stream, end_stream, ts_ns, decoded)
                }
                (Direction::Response, None) => {
                    self.response_headers(out, key, stream, end_stream, ts_ns, decoded)
                }
            }
            return;
        }
        match *frame {
            Frame::Data {
                stream_id,
                end_stream,
                data,
                ..
            } => self.body(out, key, dir, stream_id, end_stream, ts_ns, data),
            Frame::RstStream { stream_id, .. } => {
                out.counters().resets += 1;
                self.reset(out, key, stream_id);
            }
            Frame::Settings {
                ack: false,
                settings,
            } => self.settings(dir, &settings),
            Frame::GoAway { last_stream_id, .. } => {
                out.counters().goaways += 1;
                if dir == Direction::Response {
                    let refused: Vec<u32> = self
                        .streams
                        .keys()
                        .copied()
                        .filter(|&id| id > last_stream_id)
                        .collect();
                    for id in refused {
                        self.lose(out, key, id, LossCause::Reset);
                    }
                }
            }
            _ => {}
        }
    }

    /// SETTINGS sent in direction `dir` bound what the other direction
    /// sends: its frames' size and its HPACK table. Applied at once, and
    /// only ever raised (an observer does not see when the ACK takes
    /// effect; a bound too loose is harmless, one too tight would reject
    /// frames sent before it).
    fn settings(&mut self, dir: Direction, settings: &Settings<'_>) {
        let max_table = self.limits.max_table_size;
        let other = match dir {
            Direction::Request => &mut self.server,
            Direction::Response => &mut self.client,
        };
        if let Some(size) = settings.get(Settings::MAX_FRAME_SIZE) {
            let now = other.reader.max_frame_size();
            other.reader.set_max_frame_size(size.max(now));
        }
        if let Some(size) = settings.get(Settings::HEADER_TABLE_SIZE) {
            let size = (size as usize).min(max_table);
            let now = other.hpack.limits().max_table_size;
            other.hpack.set_max_table_size(size.max(now));
        }
    }

    fn request_headers(
        &mut self,
        out: &mut impl Outcomes,
        key: &ConnKey,
        stream: u32,
        end_stream: bool,
        ts_ns: u64,
        decoded: Result<(), HpackError>,
    ) {
        if let Some(s) = self.streams.get_mut(&stream) {
            // Trailers (or a second block the stream should not have).
            if decoded.is_err() && !s.reported {
                self.lose(out, key, stream, cause_of(&decoded));
                return;
            }
            s.trailers = fields(&self.client.list);
            if end_stream {
                s.request_ended = true;
            }
            self.try_pair(out, key, stream);
            return;
        }
        if stream.is_multiple_of(2) {
            out.counters().unknown_stream_frames += 1;
            return;
        }
        let list = &self.client.list;
        let method = list.pseudo(Pseudo::Method).map(lossy);
        let target = list.pseudo(Pseudo::Path).map(lossy);
        let id = out.request();
        if decoded.is_err() {
            out.lost(key, cause_of(&decoded), method, target);
            return;
        }
        let (method, target) = match (method, target) {
            (Some(m), Some(t)) => (m, t),
            // CONNECT, or a request without its pseudo-headers.
            (method, target) => {
                out.lost(key, LossCause::ParseError, method, target);
                return;
            }
        };
        if self.streams.len() >= self.limits.max_streams {
            out.lost(key, LossCause::TooLarge, Some(method), Some(target));
            return;
        }
        let mut headers = Vec::with_capacity(list.len() + 2);
        for p in [Pseudo::Authority, Pseudo::Scheme, Pseudo::Protocol] {
            if let Some(v) = list.pseudo(p) {
                headers.push(Header::new(p.name(), Bytes::copy_from_slice(v)));
            }
        }
        headers.extend(fields_iter(list));
        self.streams.insert(
            stream,
            Stream {
                id,
                ts_ns,
                method,
                target,
                headers,
                body: Vec::new(),
                trailers: Vec::new(),
                request_ended: end_stream,
                response: None,
                reported: false,
            },
        );
    }

    fn response_headers(
        &mut self,
        out: &mut impl Outcomes,
        key: &ConnKey,
        stream: u32,
        end_stream: bool,
        ts_ns: u64,
        decoded: Result<(), HpackError>,
    ) {
        let digest = self.digest;
        let Some(s) = self.streams.get_mut(&stream) else {
            out.counters().unknown_stream_frames += 1;
            return;
        };
        if s.reported {
            self.end_reported(stream, end_stream, Direction::Response);
            return;
        }
        if decoded.is_err() {
            self.lose(out, key, stream, cause_of(&decoded));
            return;
        }
        let list = &self.server.list;
        match &mut s.response {
            Some(r) => r.trailers = fields(list),
            None => {
                let status = list
                    .pseudo(Pseudo::Status)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u16>().ok())
                    .filter(|s| (100..1000).contains(s));
                let Some(status) = status else {
                    self.lose(out, key, stream, LossCause::ParseError);
                    return;
                };
                if (100..200).contains(&status) && !end_stream {
                    // Interim.
                    return;
                }
                let headers: Vec<Header> = fields(list);
                let declared = crate::model::header(&headers, "content-length")
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
                let body = BodySink::new(digest, &headers, declared);
                s.response = Some(ResponsePart {
                    status,
                    headers,
                    body,
                    trailers: Vec::new(),
                    ended: false,
                    ts_ns,
                });
            }
        }
        if end_stream && let Some(r) = &mut s.response {
            r.ended = true;
            r.ts_ns = ts_ns;
        }
        self.try_pair(out, key, stream);
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "a frame's fields, unpacked once by the caller"
    )]
    fn body(
        &mut self,
        out: &mut impl Outcomes,
        key: &ConnKey,
        dir: Direction,
        stream: u32,
        end_stream: bool,
        ts_ns: u64,
        data: &[u8],
    ) {
        let max_body = self.limits.max_body;
        let Some(s) = self.streams.get_mut(&stream) else {
            out.counters().unknown_stream_frames += 1;
            return;
        };
        if s.reported {
            self.end_reported(stream, end_stream, dir);
            return;
        }
        let mut grown = 0;
        let over = match dir {
            Direction::Request => {
                if s.body.len() + data.len() > max_body {
                    true
                } else {
                    s.body.extend_from_slice(data);
                    grown = data.len();
                    s.request_ended |= end_stream;
                    false
                }
            }
            Direction::Response => {
                let Some(r) = &mut s.response else {
                    // DATA before a response head.
                    self.lose(out, key, stream, LossCause::ParseError);
                    return;
                };
                if r.body.received() + data.len() > max_body {
                    true
                } else {
                    let before = r.body.kept();
                    r.body.push(data);
                    // Kept bytes grow, or drop to 0 when the body starts
                    // being digested.
                    self.stream_bytes = self.stream_bytes + r.body.kept() - before;
                    if end_stream {
                        r.ended = true;
                        r.ts_ns = ts_ns;
                    }
                    false
                }
            }
        };
        self.stream_bytes += grown;
        if over {
            self.lose(out, key, stream, LossCause::TooLarge);
            return;
        }
        if end_stream {
            self.try_pair(out, key, stream);
        }
    }

    /// A stream whose outcome is known ended one direction: forgotten once
    /// both did.
    fn end_reported(&mut self, stream: u32, end_stream: bool, dir: Direction) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if end_stream {
            match dir {
                Direction::Request => s.request_ended = true,
                Direction::Response => {
                    s.response
                        .get_or_insert_with(ResponsePart::placeholder)
                        .ended = true
                }
            }
        }
        if s.request_ended && s.response_ended() {
            self.remove(stream);
        }
    }

    fn reset(&mut self, out: &mut impl Outcomes, key: &ConnKey, stream: u32) {
        let Some(s) = self.streams.get_mut(&stream) else {
            out.counters().unknown_stream_frames += 1;
            return;
        };
        if !s.reported && s.response_ended() {
            s.request_ended = true;
            self.try_pair(out, key, stream);
        } else {
            self.lose(out, key, stream, LossCause::Reset);
        }
        self.remove(stream);
    }

    /// Pairs `stream` if both its directions ended.
    fn try_pair(&mut self, out: &mut impl Outcomes, key: &ConnKey, stream: u32) {
        let ready = self
            .streams
            .get(&stream)
            .is_some_and(|s| !s.reported && s.request_ended && s.response_ended());
        if !ready {
            return;
        }
        let Some(s) = self.remove(stream) else {
            return;
        };
        let Some(r) = s.response else {
            return;
        };
        let (body, digest) = r.body.finish();
        out.paired(Exchange {
            id: s.id,
            conn: *key,
            protocol: Protocol::Http2,
            stream_id: stream,
            request: Request {
                method: s.method,
                target: s.target,
                version: 0,
                headers: s.headers,
                body: Bytes::from(s.body),
                trailers: s.trailers,
                raw: Bytes::new(),
            },
            response: Response {
                version: 0,
                status: r.status,
                reason: String::new(),
                headers: r.headers,
                body,
                digest,
                trailers: r.trailers,
            },
            request_ts_ns: s.ts_ns,
            response_ts_ns: r.ts_ns,
        });
    }

    /// Reports `stream` lost for `cause` (once), and forgets it; or, when
    /// a direction is still to end, keeps it as reported so that its
    /// frames are dropped without being counted as unknown.
    fn lose(&mut self, out: &mut impl Outcomes, key: &ConnKey, stream: u32, cause: LossCause) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if s.reported {
            return;
        }
        s.reported = true;
        out.lost(key, cause, Some(s.method.clone()), Some(s.target.clone()));
        let done = s.request_ended && s.response_ended();
        let freed = s.held();
        s.body = Vec::new();
        if let Some(r) = &mut s.response {
            r.body = BodySink::new(None, &[], None);
        }
        self.stream_bytes -= freed;
        if done || matches!(cause, LossCause::Reset) {
            self.remove(stream);
        }
    }

    fn remove(&mut self, stream: u32) -> Option<Stream> {
        let s = self.streams.remove(&stream)?;
        self.stream_bytes -= s.held();
        Some(s)
    }
}

impl ResponsePart {
    /// The response of a reported stream, of which only its end matters.
    fn placeholder() -> Self {
        Self {
            status: 0,
            headers: Vec::new(),
            body: BodySink::new(None, &[], None),
            trailers: Vec::new(),
            ended: false,
            ts_ns: 0,
        }
    }
}

/// The cause of loss for a header block that failed to decode.
fn cause_of(decoded: &Result<(), HpackError>) -> LossCause {
    match decoded {
        Err(HpackError::UnknownIndex { .. }) => LossCause::HpackState,
        Err(HpackError::HeaderListTooLarge { .. }) => LossCause::TooLarge,
        Err(_) => LossCause::ParseError,
        Ok(()) => LossCause::ParseError,
    }
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn fields_iter(list: &HeaderList) -> impl Iterator<Item = Header> + '_ {
    list.fields()
        .map(|(n, v)| Header::new(lossy(n), Bytes::copy_from_slice(v)))
}

fn fields(list: &HeaderList) -> Vec<Header> {
    fields_iter(list).collect()
}

/// Whether `bytes`, the first of a connection's request direction, begin
/// HTTP/2 with prior knowledge: the whole client preface, or a prefix of it
/// when the chunk is shorter.
pub fn starts_with_preface(bytes: &[u8]) -> bool {
    !bytes.is_empty() && !matches!(frame::preface(bytes), frame::Preface::Absent)
}

#[cfg(test)]
mod tests;
