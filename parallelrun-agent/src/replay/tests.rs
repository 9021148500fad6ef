use std::{
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::*;
use crate::model::Header;

pub(super) fn request(
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

pub(super) fn get(target: &str) -> Request {
    request("GET", target, 1, &[("Host", "old.example")], b"")
}

/// What the test server does after reading a request.
#[derive(Clone, Copy, Debug)]
pub(super) enum Action {
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

pub(super) const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) accepts: Arc<AtomicUsize>,
    pub(super) requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Server {
    pub(super) fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub(super) fn requests(&self) -> Vec<String> {
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
pub(super) async fn server(
    script: impl Fn(usize, usize) -> Action + Send + Sync + 'static,
) -> Server {
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

pub(super) fn config(addr: SocketAddr) -> ReplayConfig {
    ReplayConfig {
        request_timeout: Duration::from_secs(5),
        ..ReplayConfig::new(addr)
    }
}

pub(super) async fn send(r: &Replayer, req: &Request) -> Result<Replayed, ReplayError> {
    r.send(r.try_acquire().unwrap(), Protocol::Http1, req).await
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
