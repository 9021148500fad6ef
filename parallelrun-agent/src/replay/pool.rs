//! The HTTP/1 replay client: a pool of keep-alive connections to one target.
//!
//! [`Http1Pool`] is the [`ReplayProtocol`] client of
//! [`Protocol::Http1`](crate::model::Protocol::Http1). Its
//! [`send`](ReplayProtocol::send) takes an idle connection or opens one
//! (bounded by [`ReplayConfig::connect_timeout`]), writes the request as
//! [`serialize_request`] rebuilds it, and reads the response with a
//! [`ResponseReader`]. The [`Replayer`](super::Replayer) around it bounds
//! the requests in flight and the time of each exchange.
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
//!
//! # Why not hyper's client
//!
//! hyper is a dependency already (it serves the metrics endpoint) and has a
//! pooling HTTP/1 client. It is not used here, for two reasons:
//!
//! * **One parser for both sides of the comparison.** The old service's
//!   response was parsed on the wire by [`crate::http`]'s parser; the new
//!   service's response is parsed by the same code, with the same limits.
//!   A framing difference (chunked against `Content-Length`, a body
//!   delimited by the close, an interim 1xx, the bodiless response to HEAD)
//!   then cannot show up as a difference in the responses, and a framing
//!   quirk of one parser cannot hide a real one. The headers also reach the
//!   diff as the server sent them, like the old response's: hyper gives a
//!   `HeaderMap`, names lowercased and repeated headers grouped with the
//!   first of their name.
//! * **Captured bytes are sent as captured.** Header order, the spelling of
//!   names and repeated headers are part of what the old service received
//!   ([`serialize_request`]). hyper 1 (checked with 1.12) writes a request
//!   from its `HeaderMap`: names lowercased (or Title-Cased with
//!   `title_case_headers`), each repeated header moved next to the first of
//!   its name. Its `preserve_header_case` only writes back spellings that
//!   hyper itself recorded while parsing, in a private extension that a
//!   client cannot fill, so a request built from captured headers goes out
//!   lowercase all the same; `preserve_header_order` exists only with
//!   hyper's `ffi` feature.

use std::{
    io,
    sync::{Mutex, MutexGuard},
    time::Instant,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    ReplayConfig, ReplayError, ReplayProtocol, Replayed,
    wire::{ResponseReader, serialize_request},
};
use crate::model::{Request, Response};

/// Bytes read from a connection at a time (one buffer per connection).
const READ_BUF: usize = 16 * 1024;
/// Capacity of a pooled connection's request buffer kept after a large
/// request; the rest is freed so idle connections stay small.
const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// Keep-alive HTTP/1 connections to [`ReplayConfig::target`].
pub(super) struct Http1Pool {
    cfg: ReplayConfig,
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

impl Http1Pool {
    /// A pool for `cfg.target`, empty until a request is sent.
    pub(super) fn new(cfg: ReplayConfig) -> Self {
        Self {
            idle: Mutex::new(Vec::with_capacity(cfg.max_idle.min(1024))),
            cfg,
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        // The lock guards plain pushes and pops; a panic elsewhere while it
        // was held leaves the list valid.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
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
            reader: ResponseReader::new(self.cfg.limits, self.cfg.digest),
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

impl Http1Pool {
    /// Sends the request `stale` holds once more, on a new connection.
    async fn retry(&self, mut stale: Conn, method: &str) -> Result<Replayed, ReplayError> {
        let mut fresh = self.connect().await?;
        std::mem::swap(&mut fresh.out, &mut stale.out);
        drop(stale);
        match self.round_trip(&mut fresh, method).await {
            Ok(done) => Ok(self.finish(fresh, done)),
            Err(failed) => Err(failed.error),
        }
    }
}

impl ReplayProtocol for Http1Pool {
    /// Sends `req` and reads the response, on a pooled connection when one
    /// is open, retrying a stale one once on a new connection. The rare
    /// paths (connecting, the retry) are boxed: this future lives in every
    /// replay task, and what it holds inline is copied with the task.
    async fn send(&self, req: &Request) -> Result<Replayed, ReplayError> {
        let (mut conn, reused) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (Box::pin(self.connect()).await?, false),
        };
        serialize_request(
            req,
            self.cfg.host_override.as_deref(),
            &self.cfg.marker,
            &mut conn.out,
        );
        match self.round_trip(&mut conn, &req.method).await {
            Ok(done) => Ok(self.finish(conn, done)),
            Err(failed) if failed.retryable && reused => {
                tracing::debug!(
                    target_addr = %self.cfg.target,
                    error = %failed.error,
                    "pooled connection to the new service was stale; retrying on a new one"
                );
                Box::pin(self.retry(conn, &req.method)).await
            }
            Err(failed) => Err(failed.error),
        }
    }

    fn idle_connections(&self) -> usize {
        self.idle().len()
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
