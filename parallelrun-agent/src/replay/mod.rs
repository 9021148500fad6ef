//! Replaying captured requests to the new (and secondary) service.
//!
//! A [`Replayer`] sends each captured [`Request`] to one target and returns
//! the new service's [`Response`]. Concurrency is bounded: the caller takes
//! a [`Permit`] ([`Replayer::acquire`] waits for one,
//! [`Replayer::try_acquire`] does not) before replaying; at most
//! `max_in_flight` are out at once. The pipeline bounds the replays that
//! wait for one (its queue), and skips (and counts) the requests beyond.
//! Each exchange (taking or opening a connection, writing
//! the request and reading the whole response) is bounded by
//! [`ReplayConfig::request_timeout`]; whatever goes wrong is a
//! [`ReplayError`].
//!
//! # Protocols
//!
//! What a replay sends is built from the exchange by the client for the
//! exchange's [`Protocol`]: [`Replayer::send`] is the one place that chooses
//! it, and wraps it with what every protocol shares (the in-flight bound
//! and the request timeout). A client implements `ReplayProtocol`. HTTP/1
//! comes in two parts along the seam between the protocol and the
//! connections:
//!
//! * `wire`: what is sent and how the answer is read. The request is
//!   rebuilt as captured (header order and spelling, `Host` override, body
//!   re-framed with `Content-Length`: see [`serialize_request`]), and the
//!   response is read with the capture side's HTTP parser.
//! * `pool`: the HTTP/1 client. Keep-alive connections to the target, the
//!   connect timeout, the single retry of a stale pooled connection, and
//!   why this is not hyper's client.
//!
//! HTTP/2 (h2c with prior knowledge) plugs in beside them:
//!
//! * `h2`: the HTTP/2 client, hyper's, on one or a few connections shared
//!   by every request (HTTP/2 multiplexes them; the HTTP/1 pool, one
//!   request per connection at a time, does not fit), with the mapping of
//!   an exchange captured over HTTP/2 onto the request sent and of the
//!   answer onto a [`Response`]; why this design is in its documentation.
//!
//! A protocol plugs in with its [`Protocol`] variant, a client implementing
//! `ReplayProtocol` (with its own wire format and its own connections), a
//! field in the replayer built from the same [`ReplayConfig`], and an arm
//! in [`Replayer::send`]. It answers with a [`Replayed`] holding a
//! [`Response`], or a [`ReplayError`], like HTTP/1, so the diff, noise
//! cancellation, mismatch log and accounting do not change.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::{h2::Http2Client, pool::Http1Pool};
pub use self::{
    marker::{MarkerError, MarkerHeader, ShadowMarker},
    wire::serialize_request,
};
use crate::{
    http::{DigestPolicy, HttpError, HttpLimits},
    model::{Protocol, Request, Response},
};

mod fields;
mod h2;
pub mod marker;
mod pool;
mod wire;

/// Where and how to replay.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// The new service.
    pub target: SocketAddr,
    /// Requests in flight at most; [`Replayer::try_acquire`] refuses beyond.
    pub max_in_flight: usize,
    /// Idle keep-alive connections kept for reuse (HTTP/2: connections
    /// with no stream in flight).
    pub max_idle: usize,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// Bound on a whole exchange: connection, request and complete response.
    pub request_timeout: Duration,
    /// Replaces the captured `Host` header (added when the request has none).
    pub host_override: Option<String>,
    /// How every replayed request is marked as one ([`ShadowMarker`]).
    pub marker: ShadowMarker,
    /// Limits on the responses read.
    pub limits: HttpLimits,
    /// Which response bodies are hashed while they are read instead of
    /// kept ([`DigestPolicy`], as for the captured responses); `None` keeps
    /// every body whole.
    pub digest: Option<DigestPolicy>,
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
    /// connect, 10 s per exchange, the captured Host, the default shadow
    /// marker header, default HTTP limits.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            max_idle: Self::DEFAULT_MAX_IDLE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            host_override: None,
            marker: ShadowMarker::default_header(),
            limits: HttpLimits::default(),
            digest: None,
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
    /// HTTP/2 failed beyond the connection closing: the new service reset
    /// the stream or ended the connection with an error code (GOAWAY), the
    /// HTTP/2 layer found a protocol error, or the captured request cannot
    /// be sent over HTTP/2 (a field the HTTP/2 client refuses, a CONNECT
    /// tunnel). An HTTP/2 response over the limits is [`Http`](Self::Http).
    #[error("HTTP/2 exchange with the new service failed: {0}")]
    Http2(String),
}

impl ReplayError {
    /// A stable label for metrics: `connect` (including a connect timeout),
    /// `timeout`, `io`, `closed`, `http` or `http2`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplayError::Connect { .. } | ReplayError::ConnectTimeout => "connect",
            ReplayError::Timeout => "timeout",
            ReplayError::Io(_) => "io",
            ReplayError::Closed => "closed",
            ReplayError::Http(_) => "http",
            ReplayError::Http2(_) => "http2",
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

/// A replay client for one [`Protocol`]: sends captured requests to
/// [`ReplayConfig::target`] and reads the responses back. The [`Replayer`]
/// holds one per protocol, chooses by the exchange's protocol in
/// [`Replayer::send`], and bounds each call by the in-flight permits and
/// [`ReplayConfig::request_timeout`].
trait ReplayProtocol {
    /// Sends `req` as it was captured and reads the complete response
    /// (interim responses skipped) into the shape the capture side gives
    /// the old service's responses of this protocol (for HTTP/1, by the
    /// same parser). Dropping the future cancels the exchange: an HTTP/1
    /// connection is not reused, an HTTP/2 stream is reset (its connection
    /// goes on).
    fn send(&self, req: &Request) -> impl Future<Output = Result<Replayed, ReplayError>> + Send;

    /// Connections kept open for later requests.
    fn idle_connections(&self) -> usize;
}

/// Replays requests to one target; cheap to clone (clones share the pool and
/// the in-flight bound).
#[derive(Clone)]
pub struct Replayer {
    inner: Arc<Inner>,
}

struct Inner {
    /// [`ReplayConfig::max_in_flight`], as the semaphore holds it.
    max_in_flight: usize,
    request_timeout: Duration,
    slots: Arc<Semaphore>,
    http1: Http1Pool,
    http2: Http2Client,
}

impl Replayer {
    /// A replayer for `cfg.target`. No connection is opened until a request
    /// is sent.
    pub fn new(cfg: ReplayConfig) -> Self {
        let max_in_flight = cfg.max_in_flight.min(Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                max_in_flight,
                request_timeout: cfg.request_timeout,
                slots: Arc::new(Semaphore::new(max_in_flight)),
                http2: Http2Client::new(cfg.clone()),
                http1: Http1Pool::new(cfg),
            }),
        }
    }

    /// Takes an in-flight slot without waiting: `None` when
    /// `max_in_flight` requests are in flight.
    pub fn try_acquire(&self) -> Option<Permit> {
        let slot = Arc::clone(&self.inner.slots).try_acquire_owned().ok()?;
        Some(Permit { _slot: slot })
    }

    /// Takes an in-flight slot, waiting for one (the pipeline's queue bounds
    /// how many wait).
    pub async fn acquire(&self) -> Permit {
        let slot = Arc::clone(&self.inner.slots).acquire_owned().await;
        // The semaphore is never closed, so acquiring cannot fail.
        match slot {
            Ok(slot) => Permit { _slot: slot },
            Err(_) => unreachable!("the replay semaphore is never closed"),
        }
    }

    /// Replays `req`, captured in `protocol` (the exchange's), and reads the
    /// response. The permit is held until the exchange ends; dropping the
    /// future cancels the exchange (closes its HTTP/1 connection, resets
    /// its HTTP/2 stream).
    pub async fn send(
        &self,
        permit: Permit,
        protocol: Protocol,
        req: &Request,
    ) -> Result<Replayed, ReplayError> {
        let _permit = permit;
        let inner = &self.inner;
        // The one place that chooses the client by protocol. HTTP/2's
        // future (hyper's) is boxed, so that HTTP/1 replay tasks do not
        // carry its size.
        let exchange = async {
            match protocol {
                Protocol::Http1 => inner.http1.send(req).await,
                Protocol::Http2 => Box::pin(inner.http2.send(req)).await,
            }
        };
        tokio::time::timeout(inner.request_timeout, exchange)
            .await
            .unwrap_or(Err(ReplayError::Timeout))
    }

    /// Requests in flight (permits held).
    pub fn in_flight(&self) -> usize {
        let max = self.inner.max_in_flight;
        max.saturating_sub(self.inner.slots.available_permits())
    }

    /// Connections kept open for later requests: the idle HTTP/1
    /// connections in the pool and the open HTTP/2 connections (which take
    /// new streams whether or not some are in flight).
    pub fn idle_connections(&self) -> usize {
        self.inner.http1.idle_connections() + self.inner.http2.idle_connections()
    }
}

#[cfg(test)]
mod tests;
