//! Replaying captured requests to the new (and secondary) service.
//!
//! A [`Replayer`] sends each captured [`Request`] to one target over a small
//! pool of keep-alive HTTP/1.x connections and returns the new service's
//! [`Response`]. Concurrency is bounded and never queues: the caller takes a
//! [`Permit`] with [`Replayer::try_acquire`] before replaying, and skips (and
//! counts) the request when all `max_in_flight` slots are taken.
//!
//! # What is sent
//!
//! [`serialize_request`] rebuilds the request from the captured one: request
//! line and headers as captured, the body re-framed with `Content-Length`,
//! hop-by-hop headers dropped (see its documentation). Each exchange — taking
//! or opening a connection, writing the request and reading the whole
//! response — is bounded by [`ReplayConfig::request_timeout`].
//!
//! # Connections
//!
//! After a complete response a connection goes back to the idle pool (up to
//! [`ReplayConfig::max_idle`], most recently used first) unless the response
//! ended it: `Connection: close`, an HTTP/1.0 response without
//! `Connection: keep-alive`, or a body delimited by the server closing.
//! A pooled connection is checked before use (a server that closed it since
//! is noticed without writing to it). When a pooled connection still fails
//! before any byte of a response arrives (the write fails, or the server
//! closes or resets it: it timed the connection out while the request was on
//! its way), the request is sent once more on a new connection; a request
//! that received part of a response is never re-sent.

use std::{
    io::{self, Write as _},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::{
    http::{HttpError, HttpLimits, ResponseParser},
    model::{Header, Request, Response},
};

/// Bytes read from a connection at a time (one buffer per connection).
const READ_BUF: usize = 16 * 1024;
/// Capacity of a pooled connection's request buffer kept after a large
/// request; the rest is freed so idle connections stay small.
const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// Where and how to replay.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// The new service.
    pub target: SocketAddr,
    /// Requests in flight at most; [`Replayer::try_acquire`] refuses beyond.
    pub max_in_flight: usize,
    /// Idle keep-alive connections kept for reuse.
    pub max_idle: usize,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// Bound on a whole exchange: connection, request and complete response.
    pub request_timeout: Duration,
    /// Replaces the captured `Host` header (added when the request has none).
    pub host_override: Option<String>,
    /// Limits on the responses read.
    pub limits: HttpLimits,
}

impl ReplayConfig {
    /// Default in-flight bound.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
    /// Default idle-pool size.
    pub const DEFAULT_MAX_IDLE: usize = 32;
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

    /// The defaults for `target`: 64 in flight, 32 idle connections, 2 s to
    /// connect, 10 s per exchange, the captured Host, default HTTP limits.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            max_idle: Self::DEFAULT_MAX_IDLE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            host_override: None,
            limits: HttpLimits::default(),
        }
    }
}

/// Why a replay produced no response.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Opening a connection to the target failed (refused, unreachable).
    #[error(
        "cannot connect to the new service at {addr}: {source}; check that it is running and \
         that the target address is right"
    )]
    Connect { addr: SocketAddr, source: io::Error },
    /// Opening a connection took longer than
    /// [`ReplayConfig::connect_timeout`].
    #[error(
        "connecting to the new service timed out; check that it is reachable, or raise the \
         connect timeout"
    )]
    ConnectTimeout,
    /// The exchange took longer than [`ReplayConfig::request_timeout`].
    #[error(
        "the new service did not complete its response within the request timeout; raise the \
         timeout if it is legitimately slow"
    )]
    Timeout,
    /// Writing or reading the connection failed.
    #[error("connection to the new service failed: {0}")]
    Io(#[source] io::Error),
    /// The server closed the connection before the response was complete
    /// (before it began, or in its middle).
    #[error("the new service closed the connection before a complete response")]
    Closed,
    /// The response is not valid HTTP/1.x, is over the limits, or switches
    /// protocols.
    #[error("the new service sent an invalid HTTP response: {0}")]
    Http(#[source] HttpError),
}

impl ReplayError {
    /// A stable label for metrics: `connect` (including a connect timeout),
    /// `timeout`, `io`, `closed` or `http`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplayError::Connect { .. } | ReplayError::ConnectTimeout => "connect",
            ReplayError::Timeout => "timeout",
            ReplayError::Io(_) => "io",
            ReplayError::Closed => "closed",
            ReplayError::Http(_) => "http",
        }
    }
}

/// The new service's answer to a replayed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// The complete response (interim 1xx responses skipped).
    pub response: Response,
    /// From the start of writing the request to the response's last byte
    /// (of the attempt that succeeded, when a stale connection was retried).
    pub latency_ns: u64,
}

/// One in-flight slot of a [`Replayer`], taken by [`Replayer::try_acquire`]
/// and given back when dropped (when [`Replayer::send`] finishes or is
/// cancelled).
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

/// Replays requests to one target; cheap to clone (clones share the pool and
/// the in-flight bound).
#[derive(Clone)]
pub struct Replayer {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ReplayConfig,
    slots: Arc<Semaphore>,
    /// Idle connections, most recently used last.
    idle: Mutex<Vec<Conn>>,
}

/// A connection with its buffers, pooled together so that a warm connection
/// replays without allocating (beyond the response itself).
struct Conn {
    stream: TcpStream,
    parser: ResponseParser,
    read_buf: Box<[u8]>,
    /// The serialized request.
    out: Vec<u8>,
}

/// A failed attempt on one connection.
struct Failed {
    error: ReplayError,
    /// Nothing of a response arrived: the request may be sent again.
    retryable: bool,
}

impl Failed {
    fn fatal(error: ReplayError) -> Self {
        Self {
            error,
            retryable: false,
        }
    }

    fn retryable(error: ReplayError) -> Self {
        Self {
            error,
            retryable: true,
        }
    }
}

impl Replayer {
    /// A replayer for `cfg.target`. No connection is opened until a request
    /// is sent.
    pub fn new(cfg: ReplayConfig) -> Self {
        let slots = Arc::new(Semaphore::new(
            cfg.max_in_flight.min(Semaphore::MAX_PERMITS),
        ));
        Self {
            inner: Arc::new(Inner {
                idle: Mutex::new(Vec::with_capacity(cfg.max_idle.min(1024))),
                slots,
                cfg,
            }),
        }
    }

    /// Takes an in-flight slot without waiting: `None` when
    /// `max_in_flight` requests are in flight. The pipeline then skips the
    /// request (and counts it) rather than queue without bound.
    pub fn try_acquire(&self) -> Option<Permit> {
        let slot = Arc::clone(&self.inner.slots).try_acquire_owned().ok()?;
        Some(Permit { _slot: slot })
    }

    /// Takes an in-flight slot, waiting for one. For offline replay, where
    /// waiting slows the reader instead of losing traffic.
    pub async fn acquire(&self) -> Permit {
        let slot = Arc::clone(&self.inner.slots).acquire_owned().await;
        // The semaphore is never closed, so acquiring cannot fail.
        match slot {
            Ok(slot) => Permit { _slot: slot },
            Err(_) => unreachable!("the replay semaphore is never closed"),
        }
    }

    /// Replays `req` and reads the response. The permit is held until the
    /// exchange ends; dropping the future cancels the exchange and closes its
    /// connection.
    pub async fn send(&self, permit: Permit, req: &Request) -> Result<Replayed, ReplayError> {
        let _permit = permit;
        let inner = &self.inner;
        tokio::time::timeout(inner.cfg.request_timeout, inner.exchange(req))
            .await
            .unwrap_or(Err(ReplayError::Timeout))
    }

    /// Requests in flight (permits held).
    pub fn in_flight(&self) -> usize {
        let max = self.inner.cfg.max_in_flight.min(Semaphore::MAX_PERMITS);
        max.saturating_sub(self.inner.slots.available_permits())
    }

    /// Idle connections in the pool.
    pub fn idle_connections(&self) -> usize {
        self.inner.idle().len()
    }
}

impl Inner {
    fn idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        // The lock guards plain pushes and pops; a panic elsewhere while it
        // was held leaves the list valid.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn exchange(&self, req: &Request) -> Result<Replayed, ReplayError> {
        let (mut conn, reused) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        serialize_request(req, self.cfg.host_override.as_deref(), &mut conn.out);
        match self.round_trip(&mut conn, &req.method).await {
            Ok(done) => Ok(self.finish(conn, done)),
            Err(failed) if failed.retryable && reused => {
                tracing::debug!(
                    target_addr = %self.cfg.target,
                    error = %failed.error,
                    "pooled connection to the new service was stale; retrying on a new one"
                );
                let mut fresh = self.connect().await?;
                std::mem::swap(&mut fresh.out, &mut conn.out);
                drop(conn);
                match self.round_trip(&mut fresh, &req.method).await {
                    Ok(done) => Ok(self.finish(fresh, done)),
                    Err(failed) => Err(failed.error),
                }
            }
            Err(failed) => Err(failed.error),
        }
    }

    /// Pools the connection when the response left it reusable.
    fn finish(&self, conn: Conn, (replayed, reusable): (Replayed, bool)) -> Replayed {
        if reusable {
            self.release(conn);
        }
        replayed
    }

    /// The most recently used idle connection that is still open.
    fn take_idle(&self) -> Option<Conn> {
        loop {
            let conn = self.idle().pop()?;
            // An idle connection has nothing to read: readable means the
            // server closed it (EOF), reset it or sent something unasked.
            match conn.stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
    }

    fn release(&self, mut conn: Conn) {
        conn.out.clear();
        conn.out.shrink_to(KEEP_OUT_CAPACITY);
        conn.parser.clear();
        let mut idle = self.idle();
        if idle.len() < self.cfg.max_idle {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, ReplayError> {
        let addr = self.cfg.target;
        let stream = tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ReplayError::ConnectTimeout)?
            .map_err(|source| ReplayError::Connect { addr, source })?;
        // Requests go out in one write; do not hold a small one back.
        stream.set_nodelay(true).map_err(ReplayError::Io)?;
        Ok(Conn {
            stream,
            parser: ResponseParser::new(self.cfg.limits),
            read_buf: vec![0; READ_BUF].into_boxed_slice(),
            out: Vec::new(),
        })
    }

    /// Writes the serialized request and reads one response; the flag says
    /// whether the connection may carry another request.
    async fn round_trip(&self, conn: &mut Conn, method: &str) -> Result<(Replayed, bool), Failed> {
        conn.parser.clear();
        let start = Instant::now();
        if let Err(e) = conn.stream.write_all(&conn.out).await {
            return Err(Failed::retryable(ReplayError::Io(e)));
        }
        let mut received = false;
        loop {
            let n = match conn.stream.read(&mut conn.read_buf).await {
                Ok(n) => n,
                Err(e) if !received => return Err(Failed::retryable(ReplayError::Io(e))),
                Err(e) => return Err(Failed::fatal(ReplayError::Io(e))),
            };
            let Some(bytes) = conn.read_buf.get(..n).filter(|b| !b.is_empty()) else {
                // The server closed its side.
                if !received {
                    return Err(Failed::retryable(ReplayError::Closed));
                }
                return match conn.parser.finish(method) {
                    Ok(Some(response)) => Ok((replayed(response, start), false)),
                    Ok(None) | Err(HttpError::Truncated) => Err(Failed::fatal(ReplayError::Closed)),
                    Err(e) => Err(Failed::fatal(ReplayError::Http(e))),
                };
            };
            received = true;
            conn.parser.push(bytes);
            match conn.parser.next(method) {
                Ok(Some(response)) => {
                    // Bytes beyond the response were not asked for: the
                    // connection is out of step, do not reuse it.
                    let reusable = keeps_alive(&response) && conn.parser.buffered() == 0;
                    return Ok((replayed(response, start), reusable));
                }
                Ok(None) => {}
                Err(e) => return Err(Failed::fatal(ReplayError::Http(e))),
            }
        }
    }
}

fn replayed(response: Response, start: Instant) -> Replayed {
    Replayed {
        response,
        latency_ns: u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
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
fn connection_options(headers: &[Header]) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|o| !o.is_empty())
}

/// Headers that describe the captured connection or the captured framing,
/// not the request: never replayed (RFC 9110 section 7.6.1, plus the body
/// framing that [`serialize_request`] redoes).
const NOT_REPLAYED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

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
///   and NUL are removed from the override;
/// * no `Connection` header for HTTP/1.1 (keep-alive is its default);
///   `Connection: keep-alive` for HTTP/1.0, so that the connection can be
///   pooled;
/// * the body de-chunked and framed by `Content-Length: N`, sent when the
///   body is non-empty or the method is POST, PUT or PATCH (which normally
///   carry one); the captured `Content-Length`, `Transfer-Encoding` and
///   `Trailer` headers are dropped, and so are the trailer fields of a
///   chunked body (a `Content-Length` body cannot carry them).
pub fn serialize_request(req: &Request, host_override: Option<&str>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(if req.version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let write_host = |out: &mut Vec<u8>, name: &str, host: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend(host.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
        out.extend_from_slice(b"\r\n");
    };
    let has_host = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("host"));
    let mut host_written = false;
    if let Some(host) = host_override
        && !has_host
    {
        write_host(out, "Host", host);
        host_written = true;
    }
    for h in &req.headers {
        if h.name.eq_ignore_ascii_case("host") {
            if let Some(host) = host_override {
                if !host_written {
                    write_host(out, &h.name, host);
                    host_written = true;
                }
                continue;
            }
        } else if NOT_REPLAYED.iter().any(|n| h.name.eq_ignore_ascii_case(n))
            || connection_options(&req.headers).any(|o| o.eq_ignore_ascii_case(h.name.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
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
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use tokio::net::TcpListener;

    use super::*;

    fn request(
        method: &str,
        target: &str,
        version: u8,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            version,
            headers: headers
                .iter()
                .map(|(n, v)| Header::new(*n, Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            body: Bytes::copy_from_slice(body),
            trailers: Vec::new(),
            raw: Bytes::new(),
        }
    }

    fn get(target: &str) -> Request {
        request("GET", target, 1, &[("Host", "old.example")], b"")
    }

    fn serialized(req: &Request, host_override: Option<&str>) -> String {
        let mut out = Vec::new();
        serialize_request(req, host_override, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn chunked_request_is_reframed_exactly() {
        let mut req = request(
            "POST",
            "/upload?x=1",
            1,
            &[
                ("host", "old.example"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Type", "text/plain"),
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"),
                ("Trailer", "X-Checksum"),
                ("TE", "trailers"),
                ("X-Request-Id", "abc"),
            ],
            b"hello world",
        );
        req.trailers = vec![Header::new("X-Checksum", "123")];
        req.raw = Bytes::from_static(b"(the chunked wire bytes)");
        assert_eq!(
            serialized(&req, None),
            "POST /upload?x=1 HTTP/1.1\r\n\
             host: old.example\r\n\
             Content-Type: text/plain\r\n\
             X-Request-Id: abc\r\n\
             Content-Length: 11\r\n\
             \r\n\
             hello world"
        );
    }

    #[test]
    fn bodies_versions_and_connection_headers() {
        // A GET without a body gets no Content-Length; an empty POST gets 0.
        assert_eq!(
            serialized(
                &request("GET", "/", 1, &[("Content-Length", "0")], b""),
                None
            ),
            "GET / HTTP/1.1\r\n\r\n"
        );
        assert_eq!(
            serialized(&request("POST", "/", 1, &[], b""), None),
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        );
        // HTTP/1.0 stays 1.0 and asks for keep-alive; Connection: close goes.
        assert_eq!(
            serialized(
                &request(
                    "GET",
                    "/a",
                    0,
                    &[("Connection", "close"), ("Accept", "*/*")],
                    b""
                ),
                None
            ),
            "GET /a HTTP/1.0\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
        );
        // An upgrade request is replayed as a plain request.
        assert_eq!(
            serialized(
                &request(
                    "GET",
                    "/ws",
                    1,
                    &[
                        ("Host", "h"),
                        ("Connection", "Upgrade"),
                        ("Upgrade", "websocket")
                    ],
                    b""
                ),
                None
            ),
            "GET /ws HTTP/1.1\r\nHost: h\r\n\r\n"
        );
    }

    #[test]
    fn host_override_replaces_in_place_or_adds() {
        let req = request(
            "GET",
            "/",
            1,
            &[
                ("Accept", "*/*"),
                ("HOST", "old"),
                ("X-A", "1"),
                ("Host", "dup"),
            ],
            b"",
        );
        assert_eq!(
            serialized(&req, Some("new.example:8080")),
            "GET / HTTP/1.1\r\nAccept: */*\r\nHOST: new.example:8080\r\nX-A: 1\r\n\r\n"
        );
        assert_eq!(
            serialized(&req, None),
            "GET / HTTP/1.1\r\nAccept: */*\r\nHOST: old\r\nX-A: 1\r\nHost: dup\r\n\r\n"
        );
        let req = request("GET", "/", 0, &[("Accept", "*/*")], b"");
        assert_eq!(
            serialized(&req, Some("new\r\nX-Injected: 1")),
            "GET / HTTP/1.0\r\nHost: newX-Injected: 1\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let resp = |version, connection: Option<&str>| Response {
            version,
            status: 200,
            reason: "OK".into(),
            headers: connection
                .map(|c| {
                    vec![Header::new(
                        "connection",
                        Bytes::copy_from_slice(c.as_bytes()),
                    )]
                })
                .unwrap_or_default(),
            body: Bytes::new(),
            trailers: Vec::new(),
        };
        assert!(keeps_alive(&resp(1, None)));
        assert!(!keeps_alive(&resp(1, Some("Close"))));
        assert!(!keeps_alive(&resp(1, Some("foo, close"))));
        assert!(!keeps_alive(&resp(0, None)));
        assert!(keeps_alive(&resp(0, Some(" Keep-Alive "))));
        assert!(!keeps_alive(&resp(0, Some("keep-alive, close"))));
    }

    /// What the test server does after reading a request.
    #[derive(Clone, Copy, Debug)]
    enum Action {
        /// Write these bytes, keep the connection.
        Reply(&'static [u8]),
        /// Write these bytes, then close.
        ReplyClose(&'static [u8]),
        /// Close without answering.
        Close,
        /// Never answer.
        Stall,
    }

    type Script = Arc<dyn Fn(usize, usize) -> Action + Send + Sync>;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

    struct Server {
        addr: SocketAddr,
        accepts: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Server {
        fn accepts(&self) -> usize {
            self.accepts.load(Ordering::SeqCst)
        }

        fn requests(&self) -> Vec<String> {
            self.requests
                .lock()
                .unwrap()
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect()
        }
    }

    /// A raw HTTP server on 127.0.0.1; `script(connection, request)` says how
    /// to answer the request-th request of the connection-th connection.
    async fn server(script: impl Fn(usize, usize) -> Action + Send + Sync + 'static) -> Server {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (Arc::clone(&accepts), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let conn = a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(sock, conn, Arc::clone(&script), Arc::clone(&r)));
            }
        });
        Server {
            addr,
            accepts,
            requests,
        }
    }

    async fn serve(
        mut sock: TcpStream,
        conn: usize,
        script: Script,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
    ) {
        let mut buf = Vec::new();
        for n in 0.. {
            let Some(req) = read_request(&mut sock, &mut buf).await else {
                return;
            };
            requests.lock().unwrap().push(req);
            match script(conn, n) {
                Action::Reply(bytes) => sock.write_all(bytes).await.unwrap(),
                Action::ReplyClose(bytes) => {
                    sock.write_all(bytes).await.unwrap();
                    return;
                }
                Action::Close => return,
                Action::Stall => std::future::pending().await,
            }
        }
    }

    /// Reads one request (head and Content-Length body); `None` at EOF.
    async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    return Some(buf.drain(..end + 4 + len).collect());
                }
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn config(addr: SocketAddr) -> ReplayConfig {
        ReplayConfig {
            request_timeout: Duration::from_secs(5),
            ..ReplayConfig::new(addr)
        }
    }

    async fn send(r: &Replayer, req: &Request) -> Result<Replayed, ReplayError> {
        r.send(r.try_acquire().unwrap(), req).await
    }

    #[tokio::test]
    async fn returns_the_response_with_its_body() {
        let srv = server(|_, _| Action::Reply(OK)).await;
        let r = Replayer::new(config(srv.addr));
        let got = send(&r, &get("/x")).await.unwrap();
        assert_eq!(got.response.status, 200);
        assert_eq!(got.response.body, "hello");
        assert!(got.latency_ns > 0);
        assert_eq!(
            srv.requests(),
            ["GET /x HTTP/1.1\r\nHost: old.example\r\n\r\n"]
        );
        assert_eq!(r.in_flight(), 0);
    }

    #[tokio::test]
    async fn keep_alive_reuses_one_connection() {
        let srv = server(|_, _| Action::Reply(OK)).await;
        let r = Replayer::new(config(srv.addr));
        for i in 0..5 {
            let got = send(&r, &get(&format!("/{i}"))).await.unwrap();
            assert_eq!(got.response.body, "hello");
        }
        assert_eq!(srv.accepts(), 1);
        assert_eq!(r.idle_connections(), 1);
    }

    #[tokio::test]
    async fn head_response_has_no_body() {
        let srv =
            server(|_, _| Action::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")).await;
        let r = Replayer::new(config(srv.addr));
        for _ in 0..2 {
            let got = send(&r, &request("HEAD", "/", 1, &[], b"")).await.unwrap();
            assert_eq!((got.response.status, got.response.body.len()), (200, 0));
        }
        assert_eq!(srv.accepts(), 1);
    }

    #[tokio::test]
    async fn stale_pooled_connection_is_retried_once() {
        // The server drops the second request of its first connection
        // without answering, as after its keep-alive timeout.
        let srv = server(|conn, n| {
            if (conn, n) == (0, 1) {
                Action::Close
            } else {
                Action::Reply(OK)
            }
        })
        .await;
        let r = Replayer::new(config(srv.addr));
        send(&r, &get("/1")).await.unwrap();
        let got = send(&r, &get("/2")).await.unwrap();
        assert_eq!(got.response.body, "hello");
        assert_eq!(srv.accepts(), 2);
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[1], reqs[2]);
    }

    #[tokio::test]
    async fn idle_connection_closed_by_the_server_is_not_used() {
        let srv = server(|_, _| Action::ReplyClose(OK)).await;
        let r = Replayer::new(config(srv.addr));
        send(&r, &get("/1")).await.unwrap();
        assert_eq!(r.idle_connections(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The closed connection is noticed before a request is written to it.
        assert!(r.inner.take_idle().is_none());
        send(&r, &get("/2")).await.unwrap();
        assert_eq!(srv.accepts(), 2);
    }

    #[tokio::test]
    async fn a_fresh_connection_closed_without_answer_is_not_retried() {
        let srv = server(|_, _| Action::Close).await;
        let r = Replayer::new(config(srv.addr));
        let e = send(&r, &get("/")).await.unwrap_err();
        assert!(matches!(e, ReplayError::Closed), "{e:?}");
        assert_eq!(e.kind(), "closed");
        assert_eq!(srv.accepts(), 1);
    }

    #[tokio::test]
    async fn a_partly_answered_request_is_not_resent() {
        let srv = server(|_, n| {
            if n == 0 {
                Action::Reply(OK)
            } else {
                Action::ReplyClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            }
        })
        .await;
        let r = Replayer::new(config(srv.addr));
        send(&r, &get("/1")).await.unwrap();
        let e = send(&r, &get("/2")).await.unwrap_err();
        assert!(matches!(e, ReplayError::Closed), "{e:?}");
        assert_eq!(srv.accepts(), 1);
        assert_eq!(srv.requests().len(), 2);
    }

    #[tokio::test]
    async fn connection_close_and_http10_are_not_pooled() {
        for (response, pooled) in [
            (
                &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
                false,
            ),
            (
                &b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
                false,
            ),
            (
                &b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"[..],
                true,
            ),
        ] {
            // The server keeps the connection open either way: only the
            // response decides.
            let srv = server(move |_, _| Action::Reply(response)).await;
            let r = Replayer::new(config(srv.addr));
            for _ in 0..2 {
                assert_eq!(send(&r, &get("/")).await.unwrap().response.body, "ok");
            }
            let want = if pooled { 1 } else { 2 };
            assert_eq!(srv.accepts(), want, "{}", String::from_utf8_lossy(response));
        }
    }

    #[tokio::test]
    async fn unasked_bytes_after_a_response_end_its_connection() {
        let srv = server(|_, _| {
            Action::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
        })
        .await;
        let r = Replayer::new(config(srv.addr));
        for _ in 0..2 {
            assert_eq!(send(&r, &get("/")).await.unwrap().response.body, "ok");
        }
        assert_eq!(srv.accepts(), 2);
    }

    #[tokio::test]
    async fn close_delimited_body_ends_at_eof() {
        let srv = server(|_, _| Action::ReplyClose(b"HTTP/1.1 200 OK\r\n\r\nall of it")).await;
        let r = Replayer::new(config(srv.addr));
        let got = send(&r, &get("/")).await.unwrap();
        assert_eq!(got.response.body, "all of it");
        assert_eq!(r.idle_connections(), 0);
    }

    #[tokio::test]
    async fn stalled_server_times_out() {
        let srv = server(|_, _| Action::Stall).await;
        let r = Replayer::new(ReplayConfig {
            request_timeout: Duration::from_millis(200),
            ..ReplayConfig::new(srv.addr)
        });
        let start = Instant::now();
        let e = send(&r, &get("/")).await.unwrap_err();
        assert!(matches!(e, ReplayError::Timeout), "{e:?}");
        assert_eq!(e.kind(), "timeout");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(r.in_flight(), 0);
        assert_eq!(r.idle_connections(), 0);
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let r = Replayer::new(config(addr));
        let e = send(&r, &get("/")).await.unwrap_err();
        assert!(
            matches!(&e, ReplayError::Connect { addr: a, .. } if *a == addr),
            "{e:?}"
        );
        assert_eq!(e.kind(), "connect");
        assert!(e.to_string().contains(&addr.to_string()));
    }

    #[tokio::test]
    async fn invalid_response_is_an_http_error() {
        let srv = server(|_, _| Action::ReplyClose(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")).await;
        let r = Replayer::new(config(srv.addr));
        let e = send(&r, &get("/")).await.unwrap_err();
        assert_eq!(e.kind(), "http", "{e:?}");
    }

    #[tokio::test]
    async fn try_acquire_refuses_at_max_in_flight() {
        let r = Replayer::new(ReplayConfig {
            max_in_flight: 2,
            ..ReplayConfig::new("127.0.0.1:1".parse().unwrap())
        });
        let a = r.try_acquire().unwrap();
        let b = r.try_acquire().unwrap();
        assert!(r.try_acquire().is_none());
        assert_eq!(r.in_flight(), 2);
        drop(a);
        assert_eq!(r.in_flight(), 1);
        let _c = r.clone().try_acquire().unwrap();
        assert!(r.try_acquire().is_none());
        drop(b);
    }

    #[tokio::test]
    async fn host_override_reaches_the_server() {
        let srv = server(|_, _| Action::Reply(OK)).await;
        let r = Replayer::new(ReplayConfig {
            host_override: Some("new.example".into()),
            ..config(srv.addr)
        });
        send(&r, &get("/a")).await.unwrap();
        send(&r, &request("GET", "/b", 1, &[], b"")).await.unwrap();
        assert_eq!(
            srv.requests(),
            [
                "GET /a HTTP/1.1\r\nHost: new.example\r\n\r\n",
                "GET /b HTTP/1.1\r\nHost: new.example\r\n\r\n"
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sends_share_a_bounded_pool() {
        let srv = server(|_, _| Action::Reply(OK)).await;
        let r = Replayer::new(ReplayConfig {
            max_in_flight: 8,
            max_idle: 3,
            ..config(srv.addr)
        });
        let mut tasks = Vec::new();
        for i in 0..8 {
            let r = r.clone();
            let permit = r.try_acquire().unwrap();
            tasks.push(tokio::spawn(async move {
                let req = request("POST", &format!("/{i}"), 1, &[], b"body");
                r.send(permit, &req).await.map(|g| g.response.body)
            }));
        }
        assert!(r.try_acquire().is_none());
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "hello");
        }
        assert_eq!(r.in_flight(), 0);
        assert!(r.idle_connections() <= 3);
        assert!(
            srv.requests()
                .iter()
                .all(|q| q.ends_with("Content-Length: 4\r\n\r\nbody"))
        );
    }
}
