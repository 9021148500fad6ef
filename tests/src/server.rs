//! A real HTTP/1.1 server (hyper) for the old service, run in a namespace.
//!
//! Routes:
//! - `GET /bytes/N`: N bytes of [`crate::body_pattern`], with Content-Length.
//! - `GET /chunked/N`: the same bytes, chunked.
//! - `GET /etag`: 200 with `ETag: "v1"`, or 304 without a body when the
//!   request has `If-None-Match: "v1"`.
//! - anything else: 404 with a short body.
//!
//! HEAD works on every route (hyper sends the head only).

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    pin::Pin,
    task::{Context, Poll},
    thread,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use crate::{body_pattern, netns::Netns};

/// A server on its own thread inside a namespace, with its own
/// current-thread runtime: it accepts connections and hands each to the
/// server's `on_connection`, which spawns the task that serves it. Stopped
/// and joined on drop (dropping the runtime closes every connection).
pub struct Background {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Background {
    /// Binds `addr` in `ns` (port 0 picks one) and accepts there, calling
    /// `on_connection` (inside the runtime) for each connection; a failed
    /// accept is skipped.
    pub fn start(
        ns: &Netns,
        addr: SocketAddr,
        mut on_connection: impl FnMut(tokio::net::TcpStream) + Send + 'static,
    ) -> Self {
        let (tx_addr, rx_addr) = std::sync::mpsc::channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let thread = ns.spawn(move || {
            let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            listener.set_nonblocking(true).unwrap();
            tx_addr.send(listener.local_addr().unwrap()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            on_connection(stream);
                        }
                    }
                }
            });
        });
        let addr = rx_addr.recv().expect("server thread died before listening");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running server; stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    _background: Background,
}

impl Server {
    /// Starts a server in `ns` listening on `addr` (port 0 picks one).
    pub fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let background = Background::start(ns, addr, |stream| {
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        });
        Self {
            addr: background.addr,
            _background: background,
        }
    }
}

/// The body of the test servers' responses.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// A complete response: `status`, a Content-Type and `body`.
pub(crate) fn full(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .expect("a valid response")
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let etag_match = req
        .headers()
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes() == b"\"v1\"");
    // Drain any request body so keep-alive continues.
    let _ = req.into_body().collect().await;
    let full = |status: StatusCode, body: Vec<u8>| full(status, "application/octet-stream", body);
    if path == "/etag" {
        let status = if etag_match {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        let body = if etag_match {
            Vec::new()
        } else {
            b"versioned\n".to_vec()
        };
        let mut resp = full(status, body);
        resp.headers_mut()
            .insert("etag", hyper::header::HeaderValue::from_static("\"v1\""));
        return Ok(resp);
    }
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
        return Ok(full(StatusCode::OK, body_pattern(n)));
    }
    if let Some(n) = path
        .strip_prefix("/chunked/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        // No length known up front: hyper sends Transfer-Encoding: chunked.
        let chunks: Vec<Bytes> = body_pattern(n)
            .chunks(4000)
            .map(Bytes::copy_from_slice)
            .collect();
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .body(Chunks(chunks.into_iter()).boxed())
            .unwrap());
    }
    Ok(full(StatusCode::NOT_FOUND, b"not found\n".to_vec()))
}

/// A body of prepared chunks with no size hint (hyper sends it chunked).
pub(crate) struct Chunks(pub(crate) std::vec::IntoIter<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
    }
}
