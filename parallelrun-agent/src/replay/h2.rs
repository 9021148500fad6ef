//! The HTTP/2 replay client: h2c (cleartext HTTP/2 with prior knowledge)
//! on a few connections to one target, shared by every request.
//!
//! [`Http2Client`] is the [`ReplayProtocol`] client of
//! [`Protocol::Http2`](crate::model::Protocol::Http2). Its
//! [`send`](ReplayProtocol::send) builds the request from the captured
//! stream (see [`Protocol`](crate::model::Protocol) for how a stream is an
//! exchange), sends it as a new stream on a shared connection, and reads
//! the whole response: head, body (bounded, and hashed instead of kept as
//! [`DigestPolicy`] says) and trailers. The [`Replayer`](super::Replayer)
//! around it bounds the requests in flight and the time of each exchange.
//!
//! # Why hyper here
//!
//! The HTTP/1 client is not hyper's, so that the new service's bytes are
//! read by the parser that read the old one's, and the captured bytes are
//! sent as captured (see the pool). Neither reason holds for HTTP/2: a
//! captured stream cannot be sent as captured (its header blocks are HPACK
//! encoded against the captured connection's dynamic table, its frames
//! were cut and flow-controlled for that connection), and HTTP/2 has no
//! framing choices that could tell two responses apart (no chunked against
//! `Content-Length`, no close-delimited body, field names always
//! lowercase). What is compared is the fields, the DATA payloads and the
//! trailers, the same on both sides. What remains is the protocol's
//! machinery (HPACK encoder and decoder, flow control, stream states,
//! SETTINGS, GOAWAY), which hyper's HTTP/2 client (the `h2` crate) does
//! well. One thing is lost: hyper sends the fields from a `HeaderMap`, so a
//! field repeated apart from the first of its name goes out next to it
//! (the order of fields of different names is kept).
//!
//! # Connections
//!
//! HTTP/2 multiplexes requests over one connection, so there is no pool of
//! idle connections each carrying one request, as for HTTP/1. Every request
//! takes a stream on the open connection with the fewest streams in flight
//! that is below the server's `SETTINGS_MAX_CONCURRENT_STREAMS` (as the
//! connection last read it; hyper's 100 until the server's SETTINGS
//! arrive). A connection is opened only when none has room (or none is
//! open), one at a time: requests that arrive together wait for that one
//! connection and share it instead of each opening its own. The streams in
//! flight are bounded by the replayer's in-flight permits, so a server
//! that takes at least `max_in_flight` streams sees a single connection;
//! a server with a lower limit gets a few, at most [`MAX_CONNECTIONS`],
//! beyond which requests wait inside hyper for a stream to end.
//!
//! Opening a connection (TCP connect and the HTTP/2 preface) is bounded by
//! [`ReplayConfig::connect_timeout`]. Connections with no stream in flight
//! are kept up to [`ReplayConfig::max_idle`]; beyond they are dropped, and
//! hyper closes them. A connection that the server closed, that ended with
//! an error, or on which the server sent GOAWAY takes no new stream; the
//! next request opens a new one (reconnect).
//!
//! A replay cancelled (dropped, as at the request timeout) resets its
//! stream with `CANCEL`; the connection goes on for the others.
//!
//! A request that the server did not process is sent once more, on
//! another (or a new) connection: one hyper could not send because its
//! connection had just ended, one refused with `REFUSED_STREAM`, and one
//! whose connection failed (closed, reset, GOAWAY) before any response head
//! arrived, when that connection had carried requests before (the server
//! closed it while the request was on its way, as a stale pooled HTTP/1
//! connection). A request whose response head arrived is never sent again.
//!
//! # The request sent
//!
//! * `:method` is the captured method, `:path` the target (`/` when
//!   empty), `:scheme` `http`.
//! * `:authority` is [`ReplayConfig::host_override`] when set, else the
//!   captured `:authority`, else the captured `Host` (HTTP/2 carries it as
//!   `:authority`), else the target's address. `Host` itself is never sent:
//!   `:authority` stands for it, and RFC 9113 section 8.3.1 forbids the two
//!   to differ. A captured IPv6 literal without brackets (h2load writes
//!   `fd77::1:8080`), which is no valid authority, is sent in brackets
//!   (`[fd77::1]:8080`) rather than failing the replay. With the shadow
//!   marker's host suffix on, `-shadow` follows its name
//!   ([`ShadowMarker`]).
//! * The shadow marker's header, lowercased, replaces any captured field of
//!   its name.
//! * The regular fields follow in captured order, except the
//!   connection-specific ones HTTP/2 forbids (RFC 9113 section 8.2.2):
//!   `Connection` and the fields it names, `Keep-Alive`,
//!   `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE` other
//!   than `trailers`. A captured `Content-Length` is kept when it is the
//!   body's length (and none is added when there was none).
//! * The body and the trailers (a trailing HEADERS frame) as captured.
//! * CONNECT (a tunnel, also with `:protocol`) is not replayed:
//!   [`ReplayError::Http2`].
//!
//! # The response read
//!
//! Status from `:status` (interim 1xx skipped by hyper), fields in the
//! order hyper gives them (names lowercase, as HTTP/2 has them), the DATA
//! payloads joined, the trailing fields (gRPC's `grpc-status`) in
//! [`Response::trailers`]; `version` 0 and `reason` empty, as the capture
//! side makes them. [`ReplayConfig::limits`] bound it like an HTTP/1
//! response: more fields than `max_headers`, or fields longer than
//! `max_head` (counted as HTTP/1 would write them, `name: value` and a line
//! end each), in the head or in the trailers, and a body over `max_body`,
//! are [`ReplayError::Http`] with the [`HttpError`] HTTP/1 gives (the
//! stream is then cancelled, the connection kept). With a [`DigestPolicy`]
//! the body is hashed by a [`BodyDigester`] instead of kept, on the rules
//! of the HTTP/1 parser: a binary content type from its first byte, a
//! declared `Content-Length` over `max_whole` too, any other body once its
//! size passes `max_whole` (what was kept is hashed then).
//!
//! # Errors
//!
//! Connecting fails as for HTTP/1 ([`ReplayError::Connect`],
//! [`ReplayError::ConnectTimeout`]). The connection closing before the
//! response is complete (end of stream, or GOAWAY without an error) is
//! [`ReplayError::Closed`]; another I/O failure [`ReplayError::Io`]; a
//! stream reset, a GOAWAY with an error code, or a protocol error
//! [`ReplayError::Http2`].

use std::{
    borrow::Cow,
    convert::Infallible,
    error::Error as _,
    future::poll_fn,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use ::h2::Reason;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{
    Method, Uri, Version,
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::http2,
    header::{HeaderMap, HeaderName, HeaderValue},
    http::uri::{Authority, PathAndQuery, Scheme},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{
    ReplayConfig, ReplayError, ReplayProtocol, Replayed, ShadowMarker, wire::connection_options,
};
use crate::{
    diff::BodySink,
    http::{DigestPolicy, HttpError, HttpLimits},
    model::{BodyDigest, Header, Request, Response, header},
};

/// Connections opened at most while every open one is at the server's
/// stream limit; beyond, a request waits for a stream on the least loaded.
pub(super) const MAX_CONNECTIONS: usize = 8;

/// Fields of the captured connection (or framing) that HTTP/2 forbids or
/// that `:authority` replaces; never sent (`TE` is checked apart).
const NOT_REPLAYED: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
];

type Sender = http2::SendRequest<ReplayBody>;
type Connection = http2::Connection<TokioIo<TcpStream>, ReplayBody, TokioExecutor>;

/// Shared HTTP/2 connections to [`ReplayConfig::target`].
pub(super) struct Http2Client {
    cfg: ReplayConfig,
    /// The connections opened, in the order they were.
    conns: Mutex<Vec<Conn>>,
    /// Held while a connection is being opened, so that one is.
    connecting: tokio::sync::Mutex<()>,
}

/// One connection: hyper's handle to send on it, and what the client
/// tracks of it.
#[derive(Clone)]
struct Conn {
    sender: Sender,
    state: Arc<ConnState>,
}

#[derive(Debug)]
struct ConnState {
    /// Streams in flight (leases held).
    streams: AtomicUsize,
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS`, as the task driving
    /// the connection last read it.
    max_streams: AtomicUsize,
    /// No new stream goes on it: it ended, or failed.
    retired: AtomicBool,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.sender.is_closed() && !self.state.retired.load(Ordering::Relaxed)
    }

    fn streams(&self) -> usize {
        self.state.streams.load(Ordering::Relaxed)
    }

    fn has_room(&self) -> bool {
        self.streams() < self.state.max_streams.load(Ordering::Relaxed)
    }
}

/// A stream taken on a connection; given back when dropped.
struct Lease {
    conn: Conn,
    /// The connection carried requests before this one (and may have been
    /// closed by the server since).
    reused: bool,
}

impl Lease {
    fn new(conn: &Conn, reused: bool) -> Self {
        conn.state.streams.fetch_add(1, Ordering::Relaxed);
        Self {
            conn: conn.clone(),
            reused,
        }
    }

    /// The failure `e` of this lease's stream; a failure of its connection
    /// retires the connection.
    fn failed(&self, e: &hyper::Error, before_head: bool) -> Failed {
        let (error, scope) = classify(e);
        if scope != Scope::Stream {
            self.conn.state.retired.store(true, Ordering::Relaxed);
        }
        Failed {
            error,
            scope,
            before_head,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.state.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a failure concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// The request was not processed: never sent, or refused.
    Unprocessed,
    /// The connection failed (closed, reset, GOAWAY).
    Connection,
    /// This stream only; the connection goes on.
    Stream,
}

/// A failed attempt.
struct Failed {
    error: ReplayError,
    scope: Scope,
    /// Before the response head arrived.
    before_head: bool,
}

impl Failed {
    fn fatal(error: ReplayError) -> Self {
        Self {
            error,
            scope: Scope::Stream,
            before_head: false,
        }
    }

    /// Whether the request may be sent again (see the module docs).
    fn retryable(&self, reused: bool) -> bool {
        self.before_head
            && match self.scope {
                Scope::Unprocessed => true,
                Scope::Connection => reused,
                Scope::Stream => false,
            }
    }
}

impl Http2Client {
    /// A client for `cfg.target`; no connection until a request is sent.
    pub(super) fn new(cfg: ReplayConfig) -> Self {
        Self {
            cfg,
            conns: Mutex::new(Vec::new()),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn conns(&self) -> MutexGuard<'_, Vec<Conn>> {
        // The lock guards plain list edits; a panic elsewhere while it was
        // held leaves the list valid.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream on the least loaded open connection with room for one, or
    /// on the least loaded one when [`MAX_CONNECTIONS`] are open.
    fn pick(&self, reused: bool) -> Option<Lease> {
        let mut conns = self.conns();
        conns.retain(Conn::usable);
        let roomy = conns
            .iter()
            .filter(|c| c.has_room())
            .min_by_key(|c| c.streams());
        let conn = match roomy {
            Some(conn) => conn,
            None if conns.len() >= MAX_CONNECTIONS => conns.iter().min_by_key(|c| c.streams())?,
            None => return None,
        };
        Some(Lease::new(conn, reused))
    }

    /// A stream on an open connection, or on one opened for it.
    async fn checkout(&self) -> Result<Lease, ReplayError> {
        if let Some(lease) = self.pick(true) {
            return Ok(lease);
        }
        let _connecting = self.connecting.lock().await;
        // Opened by another request while this one waited.
        if let Some(lease) = self.pick(false) {
            return Ok(lease);
        }
        let conn = self.connect().await?;
        let lease = Lease::new(&conn, false);
        self.conns().push(conn);
        Ok(lease)
    }

    /// Opens a connection and starts the task that drives it.
    async fn connect(&self) -> Result<Conn, ReplayError> {
        let addr = self.cfg.target;
        let open = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|source| ReplayError::Connect { addr, source })?;
            // Streams are written as they come; do not hold a small one back.
            stream.set_nodelay(true).map_err(ReplayError::Io)?;
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.max_header_list_size(header_list_size(&self.cfg.limits));
            builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| classify(&e).0)
        };
        let (sender, connection) = tokio::time::timeout(self.cfg.connect_timeout, open)
            .await
            .map_err(|_| ReplayError::ConnectTimeout)??;
        let state = Arc::new(ConnState {
            streams: AtomicUsize::new(0),
            max_streams: AtomicUsize::new(connection.current_max_send_streams()),
            retired: AtomicBool::new(false),
        });
        tokio::spawn(drive(connection, Arc::clone(&state), addr));
        Ok(Conn { sender, state })
    }

    /// Drops the connections that ended, and those with no stream in
    /// flight beyond [`ReplayConfig::max_idle`].
    fn trim(&self) {
        let mut conns = self.conns();
        conns.retain(Conn::usable);
        let mut idle = conns.iter().filter(|c| c.streams() == 0).count();
        conns.retain(|c| {
            if idle > self.cfg.max_idle && c.streams() == 0 {
                idle -= 1;
                return false;
            }
            true
        });
    }

    /// Sends `request` on the lease's stream and reads the response.
    async fn attempt(
        &self,
        lease: Lease,
        request: hyper::Request<ReplayBody>,
    ) -> Result<Replayed, Failed> {
        let mut sender = lease.conn.sender.clone();
        let start = Instant::now();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| lease.failed(&e, true))?;
        let response = read_response(response, &self.cfg)
            .await
            .map_err(|e| match e {
                ReadError::Hyper(e) => lease.failed(&e, false),
                ReadError::Limit(e) => Failed::fatal(ReplayError::Http(e)),
            })?;
        Ok(Replayed {
            response,
            latency_ns: u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
        })
    }
}

impl ReplayProtocol for Http2Client {
    /// Sends `req` on a stream of a shared connection and reads the
    /// response, once more on another connection when the server did not
    /// process it (see the module docs).
    async fn send(&self, req: &Request) -> Result<Replayed, ReplayError> {
        let host = self.cfg.host_override.as_deref();
        let request = build_request(req, host, &self.cfg.marker, self.cfg.target)?;
        let lease = self.checkout().await?;
        let reused = lease.reused;
        let result = match self.attempt(lease, request).await {
            Err(failed) if failed.retryable(reused) => {
                tracing::debug!(
                    target_addr = %self.cfg.target,
                    error = %failed.error,
                    "HTTP/2 request to the new service was not processed; sending it again"
                );
                let request = build_request(req, host, &self.cfg.marker, self.cfg.target)?;
                let lease = self.checkout().await?;
                self.attempt(lease, request).await.map_err(|f| f.error)
            }
            other => other.map_err(|f| f.error),
        };
        self.trim();
        result
    }

    /// The open connections (every one takes new streams).
    fn idle_connections(&self) -> usize {
        self.conns().iter().filter(|c| c.usable()).count()
    }
}

/// Drives one connection until it ends, publishing the server's stream
/// limit as it changes; retires the connection when it ends.
fn drive(
    connection: Connection,
    state: Arc<ConnState>,
    addr: SocketAddr,
) -> impl Future<Output = ()> + Send + 'static {
    let mut connection = Box::pin(connection);
    poll_fn(move |cx| {
        let done = connection.as_mut().poll(cx);
        state
            .max_streams
            .store(connection.current_max_send_streams(), Ordering::Relaxed);
        match done {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                state.retired.store(true, Ordering::Relaxed);
                if let Err(e) = result {
                    tracing::debug!(
                        target_addr = %addr,
                        error = %e,
                        "HTTP/2 connection to the new service ended"
                    );
                }
                Poll::Ready(())
            }
        }
    })
}

/// The `SETTINGS_MAX_HEADER_LIST_SIZE` advertised: room for `max_head`
/// bytes of fields and HPACK's 32 bytes of overhead for each of
/// `max_headers` of them, so that hyper does not refuse a head the limits
/// (checked on the fields received) accept.
fn header_list_size(limits: &HttpLimits) -> u32 {
    let size = limits
        .max_head
        .saturating_add(limits.max_headers.saturating_mul(32));
    u32::try_from(size).unwrap_or(u32::MAX)
}

/// The captured request as hyper sends it (see the module docs).
fn build_request(
    req: &Request,
    host_override: Option<&str>,
    marker: &ShadowMarker,
    target: SocketAddr,
) -> Result<hyper::Request<ReplayBody>, ReplayError> {
    let unsendable =
        |what: String| ReplayError::Http2(format!("the captured request cannot be sent: {what}"));
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| unsendable(format!("invalid method {:?}", req.method)))?;
    if method == Method::CONNECT {
        return Err(unsendable(
            "CONNECT opens a tunnel, which is not replayed".into(),
        ));
    }
    // An IPv6 literal captured without brackets is bracketed before the
    // marker's suffix goes after its name.
    let captured = req
        .headers
        .iter()
        .find(|h| h.name == ":authority")
        .map(|h| &h.value)
        .or_else(|| header(&req.headers, "host"))
        .map(|value| match Authority::try_from(value.as_ref()) {
            Ok(_) => Cow::Borrowed(&value[..]),
            Err(_) => bracketed_ipv6(value)
                .map_or(Cow::Borrowed(&value[..]), |v| Cow::Owned(v.into_bytes())),
        });
    let authority = match marker.host(captured.as_deref(), host_override) {
        Some(host) => Authority::try_from(host.as_ref()),
        None => Authority::try_from(target.to_string()),
    }
    .map_err(|e| unsendable(format!("invalid :authority: {e}")))?;
    let path = if req.target.is_empty() {
        PathAndQuery::from_static("/")
    } else {
        PathAndQuery::try_from(req.target.as_str())
            .map_err(|e| unsendable(format!("invalid :path {:?}: {e}", req.target)))?
    };
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| unsendable(format!("invalid URI: {e}")))?;
    let mut headers = field_map(&req.headers, req.body.len()).map_err(unsendable)?;
    if let Some(m) = &marker.header {
        // Parsed as a valid field when configured (see `MarkerHeader`).
        let name = HeaderName::from_bytes(m.lowercase_name().as_bytes())
            .map_err(|_| unsendable(format!("invalid marker header name {:?}", m.name)))?;
        let value = HeaderValue::from_str(&m.value)
            .map_err(|_| unsendable(format!("invalid value of the marker header {}", m.name)))?;
        // Replaces every captured field of that name.
        headers.insert(name, value);
    }
    let trailers = field_map(&req.trailers, req.body.len()).map_err(unsendable)?;
    let mut request = hyper::Request::new(ReplayBody {
        data: req.body.clone(),
        trailers: (!trailers.is_empty()).then_some(trailers),
    });
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;
    Ok(request)
}

/// A captured authority that is an IPv6 literal without its brackets, as
/// h2load sends it (`fd77::1:8080` for `http://[fd77::1]:8080/`), put in
/// brackets: `[fd77::1]:8080`. The last `:N` is taken as the port when what
/// comes before it is an address (the literal is ambiguous; that is how
/// such clients write it), else the whole is the address: `[fd77::1]`.
/// `None` when the value is no IPv6 literal.
fn bracketed_ipv6(value: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(value).ok()?.trim();
    if let Some((host, port)) = s.rsplit_once(':')
        && host.parse::<std::net::Ipv6Addr>().is_ok()
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok()
    {
        return Some(format!("[{host}]:{port}"));
    }
    s.parse::<std::net::Ipv6Addr>().ok()?;
    Some(format!("[{s}]"))
}

/// The fields of `fields` that are sent, in order: no pseudo-header (the
/// URI carries them), nothing [`replayed`] refuses.
fn field_map(fields: &[Header], body_len: usize) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for h in fields {
        if h.name.starts_with(':') || !replayed(h, fields, body_len) {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("invalid field name {:?}", h.name))?;
        let value = HeaderValue::from_maybe_shared(h.value.clone())
            .map_err(|_| format!("invalid value of the {} field", h.name))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Whether the regular field `h` of `fields` is sent over HTTP/2.
fn replayed(h: &Header, fields: &[Header], body_len: usize) -> bool {
    let is = |name: &str| h.name.eq_ignore_ascii_case(name);
    if NOT_REPLAYED.iter().any(|n| is(n))
        || connection_options(fields).any(|o| o.eq_ignore_ascii_case(h.name.as_bytes()))
    {
        return false;
    }
    if is("te") {
        return h.value.trim_ascii().eq_ignore_ascii_case(b"trailers");
    }
    if is("content-length") {
        // A wrong one would break the stream (RFC 9113 section 8.1.1).
        return parse_length(&h.value) == Some(body_len as u64);
    }
    true
}

fn parse_length(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// A captured body and its trailers, as hyper sends a request's.
pub(super) struct ReplayBody {
    data: Bytes,
    trailers: Option<HeaderMap>,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if !this.data.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.data)))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty() && self.trailers.is_none()
    }

    /// Not exact, so that hyper adds no `Content-Length` the capture did
    /// not have.
    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        hint.set_lower(self.data.len() as u64);
        hint
    }
}

/// Why reading a response failed.
enum ReadError {
    Hyper(hyper::Error),
    Limit(HttpError),
}

impl From<HttpError> for ReadError {
    fn from(e: HttpError) -> Self {
        ReadError::Limit(e)
    }
}

/// Reads the whole response: head, body and trailers, within the limits.
async fn read_response(
    response: hyper::Response<Incoming>,
    cfg: &ReplayConfig,
) -> Result<Response, ReadError> {
    let (parts, mut incoming) = response.into_parts();
    let headers = fields(&parts.headers, &cfg.limits)?;
    let mut body = LimitedBody::new(&cfg.limits, cfg.digest, &headers)?;
    let mut trailers = Vec::new();
    while let Some(frame) = incoming.frame().await {
        match frame.map_err(ReadError::Hyper)?.into_data() {
            Ok(data) => body.push(&data)?,
            Err(frame) => {
                if let Ok(fields_sent) = frame.into_trailers() {
                    trailers = fields(&fields_sent, &cfg.limits)?;
                }
            }
        }
    }
    let (body, digest) = body.finish();
    Ok(Response {
        version: 0,
        status: parts.status.as_u16(),
        reason: String::new(),
        headers,
        body,
        digest,
        trailers,
    })
}

/// A received field section as [`Header`]s, within the limits: at most
/// `max_headers` fields, at most `max_head` bytes as HTTP/1 would write
/// them.
fn fields(map: &HeaderMap, limits: &HttpLimits) -> Result<Vec<Header>, HttpError> {
    if map.len() > limits.max_headers {
        return Err(HttpError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    let size = map.iter().fold(0usize, |size, (name, value)| {
        size.saturating_add(name.as_str().len() + value.len() + 4)
    });
    if size > limits.max_head {
        return Err(HttpError::HeadTooLarge {
            limit: limits.max_head,
        });
    }
    Ok(map
        .iter()
        .map(|(name, value)| Header::new(name.as_str(), Bytes::copy_from_slice(value.as_bytes())))
        .collect())
}

/// A response body while it arrives ([`BodySink`]: kept, or hashed as the
/// [`DigestPolicy`] says, the rules of the HTTP/1 parser), within
/// `max_body`.
struct LimitedBody {
    max_body: usize,
    sink: BodySink,
}

impl LimitedBody {
    fn new(
        limits: &HttpLimits,
        policy: Option<DigestPolicy>,
        headers: &[Header],
    ) -> Result<Self, HttpError> {
        let declared = header(headers, "content-length").and_then(|v| parse_length(v));
        if declared.is_some_and(|len| len > limits.max_body as u64) {
            return Err(HttpError::BodyTooLarge {
                limit: limits.max_body,
            });
        }
        Ok(Self {
            max_body: limits.max_body,
            sink: BodySink::new(policy, headers, declared),
        })
    }

    fn push(&mut self, data: &[u8]) -> Result<(), HttpError> {
        if self.sink.received().saturating_add(data.len()) > self.max_body {
            return Err(HttpError::BodyTooLarge {
                limit: self.max_body,
            });
        }
        self.sink.push(data);
        Ok(())
    }

    fn finish(self) -> (Bytes, Option<Box<BodyDigest>>) {
        self.sink.finish()
    }
}

/// The [`ReplayError`] of a hyper failure, and what it concerns.
fn classify(e: &hyper::Error) -> (ReplayError, Scope) {
    if e.is_canceled() {
        // hyper did not send the request: its connection had ended.
        return (ReplayError::Closed, Scope::Unprocessed);
    }
    if let Some(e) = find_source::<::h2::Error>(e) {
        return classify_h2(e);
    }
    if let Some(e) = find_source::<io::Error>(e) {
        return (io_error(e), Scope::Connection);
    }
    if e.is_closed() || e.is_incomplete_message() {
        return (ReplayError::Closed, Scope::Connection);
    }
    (ReplayError::Http2(e.to_string()), Scope::Stream)
}

fn classify_h2(e: &::h2::Error) -> (ReplayError, Scope) {
    if let Some(io) = e.get_io() {
        return (io_error(io), Scope::Connection);
    }
    let reason = e.reason().unwrap_or(Reason::INTERNAL_ERROR);
    if e.is_reset() {
        if !e.is_remote() {
            let why = format!("the response broke the protocol; stream reset ({reason:?})");
            return (ReplayError::Http2(why), Scope::Stream);
        }
        let why = format!("the new service reset the stream ({reason:?})");
        let scope = if reason == Reason::REFUSED_STREAM {
            Scope::Unprocessed
        } else {
            Scope::Stream
        };
        return (ReplayError::Http2(why), scope);
    }
    if e.is_go_away() {
        if !e.is_remote() {
            let why = format!("the connection broke the protocol; closed ({reason:?})");
            return (ReplayError::Http2(why), Scope::Connection);
        }
        if reason == Reason::NO_ERROR {
            return (ReplayError::Closed, Scope::Connection);
        }
        let why = format!("the new service closed the connection with GOAWAY ({reason:?})");
        return (ReplayError::Http2(why), Scope::Connection);
    }
    (ReplayError::Http2(e.to_string()), Scope::Stream)
}

/// An I/O failure of the connection: the server closing it is
/// [`ReplayError::Closed`] (h2 reports the end of the stream as a broken
/// pipe), anything else [`ReplayError::Io`].
fn io_error(e: &io::Error) -> ReplayError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => ReplayError::Closed,
        kind => ReplayError::Io(io::Error::new(kind, e.to_string())),
    }
}

/// The first error of type `E` in `e`'s chain of sources.
fn find_source<E: std::error::Error + 'static>(e: &hyper::Error) -> Option<&E> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<E>() {
            return Some(found);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests;
