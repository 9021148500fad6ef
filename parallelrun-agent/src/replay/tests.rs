use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::net::TcpListener;

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

fn get(target: &str) -> Request {
    request("GET", target, 1, &[("Host", "old.example")], b"")
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
    let srv = server(|_, _| Action::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")).await;
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
