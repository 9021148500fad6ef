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
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};

use self::wire::ResponseReader;
pub use self::wire::serialize_request;
use crate::{
    http::{HttpError, HttpLimits},
    model::{Request, Response},
};

mod wire;

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
    reader: ResponseReader,
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
        conn.reader.clear();
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
            reader: ResponseReader::new(self.cfg.limits),
            read_buf: vec![0; READ_BUF].into_boxed_slice(),
            out: Vec::new(),
        })
    }

    /// Writes the serialized request and reads one response; the flag says
    /// whether the connection may carry another request.
    async fn round_trip(&self, conn: &mut Conn, method: &str) -> Result<(Replayed, bool), Failed> {
        conn.reader.clear();
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
                return match conn.reader.finish(method) {
                    Ok(response) => Ok((replayed(response, start), false)),
                    Err(e) => Err(Failed::fatal(e)),
                };
            };
            received = true;
            match conn.reader.push(bytes, method) {
                Ok(Some((response, reusable))) => {
                    return Ok((replayed(response, start), reusable));
                }
                Ok(None) => {}
                Err(e) => return Err(Failed::fatal(e)),
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

#[cfg(test)]
mod tests;
