//! Pairing captured requests with the old service's responses: an
//! [`HttpTracker`] is the [`StreamHandler`] that reassembly feeds, and turns
//! each connection's two byte streams into [`Outcome`]s.
//!
//! This is one state machine per connection, kept in one file on purpose.
//! Pairing by position, resynchronization and outcomes are three views of
//! the same state ([`HttpConn`]: the two parsers, the requests waiting for
//! a response, the request being received and the two sync states), and
//! every event changes several of them in one step: a gap, for one, loses
//! every waiting request, clears both parsers and sends both directions to
//! resynchronize. The rules below, "exactly one outcome per request" first,
//! hold because each transition does all of its part; with the
//! transitions side by side they can be checked in one place, whereas
//! modules along those three lines would each need the whole state and
//! spread each invariant over several files.
//!
//! # Rules
//!
//! - **Exactly one outcome per request.** Every request whose head was
//!   parsed gets an id (one counter for the run, increasing in the order
//!   heads are parsed) and ends in exactly one [`Outcome`]: `Paired` or
//!   `Lost`. So does every request the parser rejects (see *Rejected
//!   requests*), which is lost at once. Once every connection is closed,
//!   `requests_seen == paired + lost_total()`.
//! - **Pairing by position.** The n-th response on a connection answers its
//!   n-th request (keep-alive and pipelining). `request_ts_ns` is the time of
//!   the `data()` call that carried the request's first byte,
//!   `response_ts_ns` that of the call that completed the response (or of
//!   the `fin()` that ended a close-delimited one). A response with no
//!   request waiting is counted in `unmatched_responses` and dropped.
//! - **Limits.** A request body over the limit: the request is lost
//!   (`TooLarge`) and a placeholder keeps its place so that its response is
//!   consumed and dropped. A response over the limit: its request is lost
//!   (`TooLarge`). Both parsers stay in step.
//! - **Pipeline depth.** At most [`HttpConfig::max_pipeline`] complete
//!   requests wait for responses. A request head arriving beyond that means
//!   the server is not answering in step with the client (or the response
//!   direction is not captured): keeping more would grow without bound, and
//!   placeholders would too. So the connection falls out of step: the new
//!   request and all waiting ones are lost (`TooLarge`) and both directions
//!   resynchronize, which bounds memory per connection.
//! - **Errors.** A parse error (or an over-limit head) in either direction
//!   makes the position of later messages unknown: every waiting request is
//!   lost with the error's cause and both directions resynchronize. The
//!   server's answer to a rejected request is skipped with them.
//! - **Gaps.** Bytes that will never arrive (`gap()`): every waiting request,
//!   including one whose head was parsed but whose body was not complete, is
//!   lost (`RingBufferDrop` when the kernel reported ring-buffer drops,
//!   `Gap` otherwise) and both directions resynchronize.
//! - **Upgrades.** 101 Switching Protocols, or a 2xx answer to `CONNECT`,
//!   is paired with its request like any response (so its status and
//!   headers are compared); then the connection is no longer followed: it
//!   is counted in `upgraded_connections` and its further bytes are ignored
//!   (counted in `upgraded_bytes`). Requests pipelined behind the one that
//!   upgraded are lost (`Upgrade`): their bytes were sent on a connection
//!   that no longer speaks HTTP/1.x.
//! - **Close.** A FIN from the server completes a close-delimited response.
//!   When the connection is closed, requests still waiting are lost:
//!   `Closed` for FIN, RST and end of input, `Timeout` when idle, `Evicted`
//!   when forced out. Bytes of unfinished messages are counted in
//!   `truncated_bytes`.
//!
//! # HTTP/2
//!
//! A connection whose start was seen is HTTP/2 when its first request
//! bytes are the client connection preface (prior knowledge: h2c, gRPC);
//! response bytes that come before them and look like frames (a server's
//! SETTINGS) wait for them, at most 64 KiB. A connection joined midway is
//! HTTP/2 when, before any HTTP/1.x request was found on it, a request
//! chunk begins with frames ([`streams::looks_like_frames`]). From then
//! on every event of the connection goes to its [`H2Conn`], which pairs
//! by stream (see [`crate::http2::streams`]); its outcomes are numbered
//! and counted here with HTTP/1's, so the rules above hold for both, and
//! its bytes count in `buffered_bytes` and the total limit alike.
//!
//! # Rejected requests
//!
//! A head the request parser rejects (a request line it cannot read, a
//! field it cannot parse, a framing it cannot follow, a head over the
//! limits) at a point where a request starts is a request that the server
//! received and, typically, answered: it gets an outcome, lost for the
//! error's cause (`ParseError`, or `TooLarge`), with the method and target
//! that could be read ([`RequestParser::rejected`]: the first word when it
//! looks like a method, the second when it looks like a target). Bytes
//! whose first word does not look like a method (`GET/ HTTP/1.1`, TLS)
//! are no request: they are counted in `resync_skipped_bytes`, as tshark
//! does not see a request there either.
//!
//! Request lines that servers accept though httparse does not, `GET /
//! HTTP/1.` and `GET /path` (no version), are not rejected: they are
//! parsed and paired as HTTP/1.0 (see [`super::parse`]).
//!
//! # Resynchronization
//!
//! After a gap, an error or an overflow, and from the start of a connection
//! opened midstream, parsing restarts at message boundaries guessed from
//! segment boundaries: reassembly hands over one segment per `data()` call,
//! and a message usually starts a segment.
//!
//! - Request side: bytes are skipped until a `data()` chunk that begins with
//!   a valid request line (`METHOD SP target SP HTTP/1.x` and its line end,
//!   checked with httparse, or `METHOD SP target SP HTTP/1.`). A skipped
//!   chunk that begins with a line that looks like a request the parser
//!   does not accept (a method, and `HTTP/` further on, e.g. `GET /
//!   HTTP/2.0`: [`skipped_request_line`]) is a request too: it is lost
//!   (`ParseError`) and skipping goes on.
//! - Response side: bytes are skipped until a `data()` chunk that begins
//!   with `HTTP/1.` *and* arrives at or after the time (`ts_ns`) of the
//!   `data()` call that carried the last byte of the first request parsed
//!   after resynchronizing. A server answers a request after receiving it,
//!   so an earlier response start answers an older request; it is skipped.
//!
//! Skipped bytes, and bytes of partial messages dropped when a connection
//! falls out of step, are counted in `resync_skipped_bytes`. The rule can
//! still mispair when a server only starts answering an older request after
//! the resynchronized request was sent, or when a final response arrives
//! before the body of the first resynchronized request.
//!
//! # `Expect: 100-continue`
//!
//! The interim 100 is skipped by the response parser; the common case (the
//! body follows, then the final response) pairs normally. A final status
//! sent before the body (417, 401, 413, ...) is held for the request still
//! being received: if the client sends the body anyway, the two are paired
//! when it ends; if the client closes instead, the request is lost
//! (`Closed`). A client that skips the body and sends its next request on
//! the same connection breaks the request's own framing (it declared a
//! body); the next request's bytes are then taken as that body.

use std::{borrow::Cow, collections::VecDeque};

use serde::Serialize;
use tracing::debug;

use super::parse::{
    DigestPolicy, HttpError, HttpLimits, RequestEvent, RequestLine, RequestParser, ResponseParser,
    skipped_request_line, starts_with_request_line,
};
use crate::{
    http2::streams::{self, H2Conn, Http2Limits, Http2Stats, Outcomes},
    model::{ConnKey, Direction, Exchange, LossCause, Lost, Outcome, Request, Response},
    redact::redact_query,
    stream::{CloseReason, StreamHandler},
};

/// Limits of HTTP tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Limits of every captured message.
    pub limits: HttpLimits,
    /// Most complete requests awaiting responses on one connection (at
    /// least 1 is used). Default 64.
    pub max_pipeline: usize,
    /// Bytes all connections together may hold in messages not yet paired
    /// (parser buffers and requests awaiting responses). A connection that
    /// pushes the total over it falls out of step: its waiting requests are
    /// lost (`TooLarge`) and its buffers dropped. Default 256 MiB.
    pub max_total_buffered: usize,
    /// Which response bodies are hashed while they arrive instead of kept
    /// ([`DigestPolicy`]); `None` (the default) keeps every body whole.
    pub digest: Option<DigestPolicy>,
    /// Limits of connections followed as HTTP/2; their body limit is
    /// `limits.max_body`.
    pub http2: Http2Limits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            limits: HttpLimits::default(),
            max_pipeline: 64,
            max_total_buffered: 256 << 20,
            digest: None,
            http2: Http2Limits::default(),
        }
    }
}

/// Counters of HTTP tracking, for the whole run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HttpStats {
    /// Requests whose head was parsed, and heads the parser rejected that
    /// look like requests; each has exactly one outcome.
    pub requests_seen: u64,
    /// Requests paired with their response.
    pub paired: u64,
    /// Requests lost, indexed like [`LossCause::ALL`] (serialized as a map
    /// by cause name).
    #[serde(serialize_with = "serialize_lost")]
    pub lost: [u64; LossCause::ALL.len()],
    /// Responses that came when no request was waiting for one.
    pub unmatched_responses: u64,
    /// Bytes skipped while resynchronizing, and bytes of partial messages
    /// dropped when a connection fell out of step.
    pub resync_skipped_bytes: u64,
    /// Bytes of unfinished messages dropped when their connection closed.
    pub truncated_bytes: u64,
    /// Bytes not parsed because their connection had left HTTP/1.x.
    pub upgraded_bytes: u64,
    /// Connections opened.
    pub connections: u64,
    /// Connections that left HTTP/1.x (101, or CONNECT answered with 2xx).
    pub upgraded_connections: u64,
    /// Connections forced out of step because all connections together held
    /// more than [`HttpConfig::max_total_buffered`].
    pub shed_connections: u64,
    /// Bytes held now in messages not yet paired, over all connections.
    pub buffered_bytes: u64,
    /// Highest `buffered_bytes` seen.
    pub peak_buffered_bytes: u64,
    /// What happened below the outcomes on HTTP/2 connections.
    pub http2: Http2Stats,
}

/// One warning per 1000 sheds: a flood must not flood stderr too.
fn warn_shed(n: u64, limit: usize) {
    if n % 1000 == 1 {
        tracing::warn!(
            shed = n,
            limit,
            "unpaired HTTP messages over the total limit: connections dropped out of step \
             (their requests count as too_large); raise --max-http-buffer if memory allows"
        );
    }
}

fn serialize_lost<S: serde::Serializer>(
    lost: &[u64; LossCause::ALL.len()],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(LossCause::ALL.iter().zip(lost).map(|(c, n)| (c.name(), n)))
}

impl HttpStats {
    /// Requests lost for `cause`.
    pub fn lost(&self, cause: LossCause) -> u64 {
        self.lost[cause_index(cause)]
    }

    /// Requests lost for any cause.
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().sum()
    }
}

/// `target` as it may be logged: the values of secret query parameters
/// redacted, as the mismatch log does ([`redact_query`]).
pub fn redacted(target: &str) -> Cow<'_, str> {
    redact_query(target).map_or(Cow::Borrowed(target), Cow::Owned)
}

/// Position of `cause` in [`LossCause::ALL`] (and [`HttpStats::lost`]).
fn cause_index(cause: LossCause) -> usize {
    match cause {
        LossCause::RingBufferDrop => 0,
        LossCause::Gap => 1,
        LossCause::ParseError => 2,
        LossCause::Timeout => 3,
        LossCause::Closed => 4,
        LossCause::TooLarge => 5,
        LossCause::Upgrade => 6,
        LossCause::Evicted => 7,
        LossCause::Reset => 8,
        LossCause::HpackState => 9,
    }
}

/// Turns reassembled streams into paired exchanges and lost requests.
#[derive(Debug)]
pub struct HttpTracker {
    cfg: HttpConfig,
    stats: HttpStats,
    next_id: u64,
    outcomes: Vec<Outcome>,
}

/// Per-connection state of an [`HttpTracker`].
#[derive(Debug)]
pub struct HttpConn {
    requests: RequestParser,
    responses: ResponseParser,
    /// Complete requests awaiting responses, oldest first.
    waiting: VecDeque<Slot>,
    /// The request being received: head parsed, body not complete.
    current: Option<Current>,
    /// Time of the `data()` call that carried the first byte of the request
    /// being received.
    request_start_ns: u64,
    request_sync: RequestSync,
    response_sync: ResponseSync,
    upgraded: bool,
    /// What this connection adds to [`HttpStats::buffered_bytes`].
    held: u64,
    /// Whether the connection speaks HTTP/1.x or HTTP/2 is still open.
    detect: Detect,
    /// The connection speaks HTTP/2: every event goes to it.
    h2: Option<Box<H2Conn>>,
}

/// Bytes of response held on a connection whose first request bytes are
/// yet to come (a server may send its HTTP/2 SETTINGS first).
const MAX_EARLY_RESPONSE: usize = 64 * 1024;

/// How far a connection's protocol is known (see the module documentation,
/// *HTTP/2*).
#[derive(Debug)]
enum Detect {
    /// Its start was seen and no request byte yet: the first ones tell.
    /// Response bytes that come first wait here.
    Start { early: Vec<u8>, ts_ns: u64 },
    /// Joined midway and not yet in step with HTTP/1.x: a request chunk
    /// that begins with HTTP/2 frames makes it HTTP/2.
    Midstream,
    /// Decided.
    Done,
}

impl HttpConn {
    /// Bytes held in parser buffers and in requests awaiting responses.
    fn holding(&self) -> u64 {
        let waiting: usize = self
            .waiting
            .iter()
            .map(|s| match s {
                Slot::Waiting { request, .. } => request.raw.len() + request.body.len(),
                Slot::Reported { .. } => 0,
            })
            .sum();
        let h2 = self.h2.as_ref().map_or(0, |h2| h2.holding());
        let early = match &self.detect {
            Detect::Start { early, .. } => early.len(),
            _ => 0,
        };
        (self.requests.buffered() + self.responses.buffered() + waiting + early) as u64 + h2
    }

    fn new(limits: HttpLimits, digest: Option<DigestPolicy>, midstream: bool) -> Self {
        let (request_sync, response_sync) = if midstream {
            (RequestSync::Resync, ResponseSync::Resync { after_ns: None })
        } else {
            (RequestSync::InStep, ResponseSync::InStep)
        };
        Self {
            requests: RequestParser::new(limits),
            responses: ResponseParser::with_digest(limits, digest),
            waiting: VecDeque::new(),
            current: None,
            request_start_ns: 0,
            request_sync,
            response_sync,
            upgraded: false,
            held: 0,
            detect: if midstream {
                Detect::Midstream
            } else {
                Detect::Start {
                    early: Vec::new(),
                    ts_ns: 0,
                }
            },
            h2: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestSync {
    InStep,
    /// Skipping until a chunk that begins with a request line.
    Resync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseSync {
    InStep,
    /// Skipping until a chunk that begins with `HTTP/1.` at or after
    /// `after_ns`, the end of the first request parsed since (None: no
    /// request ended yet).
    Resync {
        after_ns: Option<u64>,
    },
}

/// A complete request awaiting its response.
#[derive(Debug)]
enum Slot {
    Waiting {
        id: u64,
        ts_ns: u64,
        request: Request,
    },
    /// Its outcome was reported already (body over the limit); its response
    /// is consumed and dropped. The method decides that response's framing.
    Reported { method: String },
}

/// The request being received.
#[derive(Debug)]
enum Current {
    Tracked {
        id: u64,
        method: String,
        target: String,
        ts_ns: u64,
        /// A response that came before the request was complete (a final
        /// status sent before the body), and when it completed.
        early: Option<(Response, u64)>,
    },
    /// Its outcome was reported (its response was over the limit) and its
    /// response consumed; the rest of it is parsed and dropped.
    Answered,
}

/// The method the next response answers, for its framing: that of the
/// oldest request without a response.
fn answering<'a>(waiting: &'a VecDeque<Slot>, current: &'a Option<Current>) -> &'a str {
    match (waiting.front(), current) {
        (Some(Slot::Waiting { request, .. }), _) => &request.method,
        (Some(Slot::Reported { method }), _) => method,
        (
            None,
            Some(Current::Tracked {
                method,
                early: None,
                ..
            }),
        ) => method,
        // Unmatched: framed like the answer to a GET.
        _ => "GET",
    }
}

impl HttpTracker {
    /// A tracker with `cfg`.
    pub fn new(cfg: HttpConfig) -> Self {
        Self {
            cfg,
            stats: HttpStats::default(),
            next_id: 0,
            outcomes: Vec::new(),
        }
    }

    /// The HTTP/2 limits, the body limit being HTTP/1's.
    fn http2_limits(&self) -> Http2Limits {
        Http2Limits {
            max_body: self.cfg.limits.max_body,
            ..self.cfg.http2
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// Outcomes produced since the last call, in order. The pipeline drains
    /// them after every segment it hands to reassembly.
    pub fn outcomes(&mut self) -> std::vec::Drain<'_, Outcome> {
        self.outcomes.drain(..)
    }

    fn lose(&mut self, key: &ConnKey, cause: LossCause, method: String, target: String) {
        self.lose_line(key, cause, Some(method), Some(target));
    }

    /// Reports a lost request, of which `method` and `target` were read.
    /// Logged at debug level, secret query values redacted as in the
    /// mismatch log.
    fn lose_line(
        &mut self,
        key: &ConnKey,
        cause: LossCause,
        method: Option<String>,
        target: Option<String>,
    ) {
        debug!(conn = ?key, cause = cause.name(), method = ?method,
            target = ?target.as_deref().map(redacted), "request lost");
        self.stats.lost[cause_index(cause)] += 1;
        self.outcomes.push(Outcome::Lost(Lost {
            conn: *key,
            cause,
            method,
            target,
        }));
    }

    /// A request the parser rejected (`line`: what of it could be read) is
    /// counted, and lost for `cause`.
    fn reject(&mut self, key: &ConnKey, cause: LossCause, line: RequestLine) {
        self.new_request();
        self.lose_line(key, cause, Some(line.method), line.target);
    }

    fn pair(
        &mut self,
        key: &ConnKey,
        (id, request_ts_ns, request): (u64, u64, Request),
        (response, response_ts_ns): (Response, u64),
    ) {
        self.stats.paired += 1;
        self.outcomes.push(Outcome::Paired(Exchange {
            id,
            conn: *key,
            protocol: crate::model::Protocol::Http1,
            stream_id: 0,
            request,
            response,
            request_ts_ns,
            response_ts_ns,
        }));
    }

    /// Every request of `conn` without an outcome is lost for `cause`.
    fn lose_all(&mut self, conn: &mut HttpConn, key: &ConnKey, cause: LossCause) {
        for slot in std::mem::take(&mut conn.waiting) {
            if let Slot::Waiting { request, .. } = slot {
                self.lose(key, cause, request.method, request.target);
            }
        }
        if let Some(Current::Tracked { method, target, .. }) = conn.current.take() {
            self.lose(key, cause, method, target);
        }
    }

    /// Updates the bytes held after `conn` changed; over the total limit, the
    /// connection falls out of step (its messages are dropped).
    fn account(&mut self, conn: &mut HttpConn, key: &ConnKey) {
        self.update_held(conn);
        if self.stats.buffered_bytes > self.cfg.max_total_buffered as u64 {
            self.stats.shed_connections += 1;
            warn_shed(self.stats.shed_connections, self.cfg.max_total_buffered);
            self.desync(conn, key, LossCause::TooLarge);
            self.update_held(conn);
        }
        self.stats.peak_buffered_bytes = self
            .stats
            .peak_buffered_bytes
            .max(self.stats.buffered_bytes);
    }

    /// Brings [`HttpStats::buffered_bytes`] up to date with what `conn`
    /// holds now.
    fn update_held(&mut self, conn: &mut HttpConn) {
        let now = conn.holding();
        self.stats.buffered_bytes = self.stats.buffered_bytes.saturating_sub(conn.held) + now;
        conn.held = now;
    }

    /// `conn` fell out of step: its requests are lost for `cause` and both
    /// directions resynchronize.
    fn desync(&mut self, conn: &mut HttpConn, key: &ConnKey, cause: LossCause) {
        if let Some(h2) = conn.h2.as_deref_mut() {
            h2.shed(self, key);
            return;
        }
        debug!(
            ?key,
            cause = cause.name(),
            "HTTP stream out of step, resynchronizing"
        );
        self.lose_all(conn, key, cause);
        self.stats.resync_skipped_bytes +=
            (conn.requests.buffered() + conn.responses.buffered()) as u64;
        conn.requests.clear();
        conn.responses.clear();
        conn.request_sync = RequestSync::Resync;
        conn.response_sync = ResponseSync::Resync { after_ns: None };
    }

    /// `conn` left HTTP/1.x: the requests still without a response are lost
    /// and it is no longer parsed.
    fn upgrade(&mut self, conn: &mut HttpConn, key: &ConnKey) {
        debug!(?key, "connection upgraded, no longer followed");
        self.lose_all(conn, key, LossCause::Upgrade);
        self.stats.upgraded_connections += 1;
        self.stats.upgraded_bytes += (conn.requests.buffered() + conn.responses.buffered()) as u64;
        conn.requests.clear();
        conn.responses.clear();
        conn.upgraded = true;
    }

    /// `conn` switched to HTTP/2 with `Upgrade: h2c`: the oldest waiting
    /// request is its stream 1, answered in HTTP/2 (the 101 is not its
    /// response); requests pipelined behind it are lost (`Upgrade`), and
    /// the bytes buffered after the 101 are the first frames.
    fn upgrade_to_h2c(&mut self, conn: &mut HttpConn, key: &ConnKey, ts_ns: u64) {
        let Some(Slot::Waiting {
            id,
            ts_ns: start_ns,
            request,
        }) = conn.waiting.pop_front()
        else {
            return;
        };
        self.lose_all(conn, key, LossCause::Upgrade);
        let mut h2 = H2Conn::upgraded(
            self.http2_limits(),
            self.cfg.digest,
            &mut self.stats.http2,
            (id, start_ns, request),
        );
        let requests = conn.requests.take_buffered();
        let responses = conn.responses.take_buffered();
        conn.requests.clear();
        conn.responses.clear();
        h2.data(self, key, Direction::Request, ts_ns, &requests);
        h2.data(self, key, Direction::Response, ts_ns, &responses);
        conn.h2 = Some(Box::new(h2));
    }

    fn request_data(&mut self, conn: &mut HttpConn, key: &ConnKey, ts_ns: u64, bytes: &[u8]) {
        if conn.request_sync == RequestSync::Resync {
            if !starts_with_request_line(bytes) {
                self.stats.resync_skipped_bytes += bytes.len() as u64;
                if let Some(line) = skipped_request_line(bytes) {
                    self.reject(key, LossCause::ParseError, line);
                }
                return;
            }
            conn.request_sync = RequestSync::InStep;
        }
        if !conn.requests.in_message() {
            conn.request_start_ns = ts_ns;
        }
        conn.requests.push(bytes);
        loop {
            match conn.requests.next_event() {
                Ok(None) => break,
                Ok(Some(RequestEvent::Head { method, target })) => {
                    if !self.request_head(conn, key, method, target) {
                        break;
                    }
                }
                Ok(Some(RequestEvent::Complete(request))) => {
                    self.request_end(conn, key, Some(request), ts_ns);
                }
                Err(HttpError::BodyTooLarge { .. }) => self.request_end(conn, key, None, ts_ns),
                Err(error) => {
                    // A rejected head that looks like a request is one:
                    // lost after those before it.
                    let rejected = conn.requests.rejected();
                    self.desync(conn, key, error.cause());
                    if let Some(line) = rejected {
                        self.reject(key, error.cause(), line);
                    }
                    break;
                }
            }
        }
    }

    /// Counts a request whose outcome is still to come; its id.
    fn new_request(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.stats.requests_seen += 1;
        id
    }

    /// A request head was parsed. False when the connection fell out of step.
    fn request_head(
        &mut self,
        conn: &mut HttpConn,
        key: &ConnKey,
        method: String,
        target: String,
    ) -> bool {
        // RequestParser reports a request's end before the next head;
        // should it not, the unfinished request still gets its outcome.
        if let Some(Current::Tracked { method, target, .. }) = conn.current.take() {
            self.lose(key, LossCause::ParseError, method, target);
        }
        let id = self.new_request();
        if conn.waiting.len() >= self.cfg.max_pipeline.max(1) {
            debug!(
                ?key,
                waiting = conn.waiting.len(),
                "pipeline over the limit"
            );
            self.lose(key, LossCause::TooLarge, method, target);
            self.desync(conn, key, LossCause::TooLarge);
            return false;
        }
        conn.current = Some(Current::Tracked {
            id,
            method,
            target,
            ts_ns: conn.request_start_ns,
            early: None,
        });
        true
    }

    /// The request being received ended at `ts_ns`: complete, or (None)
    /// with its body over the limit.
    fn request_end(
        &mut self,
        conn: &mut HttpConn,
        key: &ConnKey,
        request: Option<Request>,
        ts_ns: u64,
    ) {
        // The next request's first byte, if any, is in this chunk.
        conn.request_start_ns = ts_ns;
        if let ResponseSync::Resync { after_ns: None } = conn.response_sync {
            conn.response_sync = ResponseSync::Resync {
                after_ns: Some(ts_ns),
            };
        }
        match (conn.current.take(), request) {
            (
                Some(Current::Tracked {
                    id,
                    ts_ns: start_ns,
                    early: Some(response),
                    ..
                }),
                Some(request),
            ) => self.pair(key, (id, start_ns, request), response),
            (
                Some(Current::Tracked {
                    id,
                    ts_ns: start_ns,
                    early: None,
                    ..
                }),
                Some(request),
            ) => conn.waiting.push_back(Slot::Waiting {
                id,
                ts_ns: start_ns,
                request,
            }),
            (
                Some(Current::Tracked {
                    method,
                    target,
                    early,
                    ..
                }),
                None,
            ) => {
                if early.is_none() {
                    conn.waiting.push_back(Slot::Reported {
                        method: method.clone(),
                    });
                }
                self.lose(key, LossCause::TooLarge, method, target);
            }
            (Some(Current::Answered), _) | (None, None) => {}
            // RequestParser reports a head before the request's end; should
            // it not, the request is still counted and paired.
            (None, Some(request)) => {
                let id = self.new_request();
                conn.waiting.push_back(Slot::Waiting {
                    id,
                    ts_ns: conn.request_start_ns,
                    request,
                });
            }
        }
    }

    fn response_data(&mut self, conn: &mut HttpConn, key: &ConnKey, ts_ns: u64, bytes: &[u8]) {
        if let ResponseSync::Resync { after_ns } = conn.response_sync {
            let ready =
                after_ns.is_some_and(|after| ts_ns >= after) && bytes.starts_with(b"HTTP/1.");
            if !ready {
                self.stats.resync_skipped_bytes += bytes.len() as u64;
                return;
            }
            conn.response_sync = ResponseSync::InStep;
        }
        conn.responses.push(bytes);
        self.drain_responses(conn, key, ts_ns, false);
    }

    /// Hands out every response the buffered bytes (and, when `closed`, the
    /// server's FIN) complete.
    fn drain_responses(&mut self, conn: &mut HttpConn, key: &ConnKey, ts_ns: u64, closed: bool) {
        loop {
            let method = answering(&conn.waiting, &conn.current);
            let next = if closed {
                conn.responses.finish(method)
            } else {
                conn.responses.next(method)
            };
            match next {
                Ok(Some(response)) => self.response(conn, key, Some(response), ts_ns),
                Ok(None) => break,
                Err(HttpError::BodyTooLarge { .. }) => self.response(conn, key, None, ts_ns),
                Err(HttpError::Upgrade) => {
                    let response = conn.responses.take_upgrade();
                    if let Some(response) = &response
                        && response.status == 101
                        && crate::model::header(&response.headers, "upgrade")
                            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"h2c"))
                        && matches!(conn.waiting.front(), Some(Slot::Waiting { .. }))
                    {
                        self.upgrade_to_h2c(conn, key, ts_ns);
                        break;
                    }
                    // The 101 (or 2xx to CONNECT) answers a request like
                    // any response; what follows is not HTTP/1.x.
                    if let Some(response) = response {
                        self.response(conn, key, Some(response), ts_ns);
                    }
                    self.upgrade(conn, key);
                    break;
                }
                Err(error) => {
                    if error == HttpError::Truncated {
                        self.stats.truncated_bytes += conn.responses.buffered() as u64;
                        conn.responses.clear();
                    }
                    self.desync(conn, key, error.cause());
                    break;
                }
            }
        }
    }

    /// A response completed at `ts_ns`, or (None) ended over the limit.
    fn response(
        &mut self,
        conn: &mut HttpConn,
        key: &ConnKey,
        response: Option<Response>,
        ts_ns: u64,
    ) {
        match (conn.waiting.pop_front(), response) {
            (
                Some(Slot::Waiting {
                    id,
                    ts_ns: start_ns,
                    request,
                }),
                Some(response),
            ) => {
                self.pair(key, (id, start_ns, request), (response, ts_ns));
            }
            (Some(Slot::Waiting { request, .. }), None) => {
                self.lose(key, LossCause::TooLarge, request.method, request.target);
            }
            (Some(Slot::Reported { .. }), _) => {}
            (None, response) => match (conn.current.take(), response) {
                (
                    Some(Current::Tracked {
                        id,
                        method,
                        target,
                        ts_ns: start_ns,
                        early: None,
                    }),
                    Some(response),
                ) => {
                    conn.current = Some(Current::Tracked {
                        id,
                        method,
                        target,
                        ts_ns: start_ns,
                        early: Some((response, ts_ns)),
                    });
                }
                (
                    Some(Current::Tracked {
                        method,
                        target,
                        early: None,
                        ..
                    }),
                    None,
                ) => {
                    conn.current = Some(Current::Answered);
                    self.lose(key, LossCause::TooLarge, method, target);
                }
                (current, _) => {
                    conn.current = current;
                    self.stats.unmatched_responses += 1;
                }
            },
        }
    }
}

/// HTTP/2 connections report their outcomes here, numbered and counted
/// with HTTP/1's.
impl Outcomes for HttpTracker {
    fn request(&mut self) -> u64 {
        self.new_request()
    }

    fn paired(&mut self, exchange: Exchange) {
        self.stats.paired += 1;
        self.outcomes.push(Outcome::Paired(exchange));
    }

    fn lost(
        &mut self,
        key: &ConnKey,
        cause: LossCause,
        method: Option<String>,
        target: Option<String>,
    ) {
        self.lose_line(key, cause, method, target);
    }

    fn counters(&mut self) -> &mut Http2Stats {
        &mut self.stats.http2
    }
}

impl StreamHandler for HttpTracker {
    type Conn = HttpConn;

    fn open(&mut self, _key: &ConnKey, _ts_ns: u64, midstream: bool) -> HttpConn {
        self.stats.connections += 1;
        HttpConn::new(self.cfg.limits, self.cfg.digest, midstream)
    }

    fn data(
        &mut self,
        conn: &mut HttpConn,
        key: &ConnKey,
        dir: Direction,
        ts_ns: u64,
        bytes: &[u8],
    ) {
        if let Some(h2) = conn.h2.as_deref_mut() {
            h2.data(self, key, dir, ts_ns, bytes);
            self.account(conn, key);
            return;
        }
        if conn.upgraded {
            self.stats.upgraded_bytes += bytes.len() as u64;
            return;
        }
        // Response bytes that came before the first request bytes and
        // looked like HTTP/2, once the connection is known to be HTTP/1.x:
        // parsed first, as they came (no request waits for them).
        let mut held_back = None;
        match (&mut conn.detect, dir) {
            (Detect::Done, _) => {}
            (Detect::Start { early, ts_ns: at }, Direction::Response)
                if early.len() + bytes.len() <= MAX_EARLY_RESPONSE
                    && (!early.is_empty() || streams::looks_like_frames(bytes)) =>
            {
                early.extend_from_slice(bytes);
                *at = ts_ns;
                self.account(conn, key);
                return;
            }
            (Detect::Start { .. }, _) => {
                let Detect::Start { early, ts_ns: at } =
                    std::mem::replace(&mut conn.detect, Detect::Done)
                else {
                    return;
                };
                if dir == Direction::Request && streams::starts_with_preface(bytes) {
                    let mut h2 =
                        H2Conn::new(self.http2_limits(), self.cfg.digest, &mut self.stats.http2);
                    h2.data(self, key, dir, ts_ns, bytes);
                    if !early.is_empty() {
                        h2.data(self, key, Direction::Response, at, &early);
                    }
                    conn.h2 = Some(Box::new(h2));
                    self.account(conn, key);
                    return;
                }
                held_back = Some((early, at));
            }
            (Detect::Midstream, Direction::Request) => {
                if streams::looks_like_frames(bytes) {
                    conn.detect = Detect::Done;
                    let mut h2 =
                        H2Conn::joined(self.http2_limits(), self.cfg.digest, &mut self.stats.http2);
                    h2.data(self, key, dir, ts_ns, bytes);
                    conn.h2 = Some(Box::new(h2));
                    self.account(conn, key);
                    return;
                }
            }
            (Detect::Midstream, Direction::Response) => {}
        }
        if let Some((early, at)) = held_back.filter(|(early, _)| !early.is_empty()) {
            self.response_data(conn, key, at, &early);
        }
        match dir {
            Direction::Request => self.request_data(conn, key, ts_ns, bytes),
            Direction::Response => self.response_data(conn, key, ts_ns, bytes),
        }
        if matches!(conn.detect, Detect::Midstream) && conn.request_sync == RequestSync::InStep {
            conn.detect = Detect::Done;
        }
        self.account(conn, key);
    }

    fn gap(
        &mut self,
        conn: &mut HttpConn,
        key: &ConnKey,
        dir: Direction,
        _ts_ns: u64,
        _len: u64,
        ring_drops: bool,
    ) {
        let cause = if ring_drops {
            LossCause::RingBufferDrop
        } else {
            LossCause::Gap
        };
        if let Some(h2) = conn.h2.as_deref_mut() {
            h2.gap(self, key, dir, cause);
            self.account(conn, key);
            return;
        }
        if conn.upgraded {
            return;
        }
        if let Detect::Start { early, .. } = &conn.detect {
            // Bytes missing before the protocol was known: the first ones
            // to come will not tell it.
            self.stats.resync_skipped_bytes += early.len() as u64;
            conn.detect = Detect::Midstream;
        }
        self.desync(conn, key, cause);
        self.account(conn, key);
    }

    fn fin(&mut self, conn: &mut HttpConn, key: &ConnKey, dir: Direction, ts_ns: u64) {
        if dir == Direction::Response
            && conn.h2.is_none()
            && !conn.upgraded
            && conn.response_sync == ResponseSync::InStep
        {
            self.drain_responses(conn, key, ts_ns, true);
            self.account(conn, key);
        }
    }

    fn close(&mut self, mut conn: HttpConn, key: &ConnKey, _ts_ns: u64, reason: CloseReason) {
        self.stats.buffered_bytes = self.stats.buffered_bytes.saturating_sub(conn.held);
        if let Some(h2) = conn.h2.take() {
            h2.close(self, key, reason);
            return;
        }
        if conn.upgraded {
            return;
        }
        let cause = match reason {
            CloseReason::Fin | CloseReason::Rst | CloseReason::End => LossCause::Closed,
            CloseReason::Idle => LossCause::Timeout,
            CloseReason::Evicted => LossCause::Evicted,
        };
        self.lose_all(&mut conn, key, cause);
        self.stats.truncated_bytes += (conn.requests.buffered() + conn.responses.buffered()) as u64;
    }
}

#[cfg(test)]
mod tests;
