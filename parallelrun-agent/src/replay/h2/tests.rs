use std::{
    sync::{Mutex, atomic::AtomicUsize},
    time::Duration,
};

use hyper::{StatusCode, service::service_fn};
use tokio::{
    net::TcpListener,
    sync::Notify,
    task::{JoinHandle, JoinSet},
};

use super::*;
use crate::{
    http::HttpError,
    model::Protocol,
    replay::{
        Replayer,
        tests::{config, request},
    },
};

/// A request as the test server received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    trailers: Vec<(String, String)>,
}

/// The server's answer to a request; `None` fails the request (hyper then
/// resets the stream).
type Handler = Arc<dyn Fn(&Seen) -> Option<hyper::Response<ReplayBody>> + Send + Sync>;

#[derive(Clone, Copy, Default)]
struct Options {
    /// Waits this long before answering.
    delay: Duration,
    /// Sends GOAWAY (a graceful shutdown) after this many requests on a
    /// connection.
    goaway_after: Option<usize>,
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS`.
    max_streams: Option<u32>,
    /// Requests whose URI ends with this are never answered.
    stall: Option<&'static str>,
}

/// A hyper HTTP/2 (h2c) server on 127.0.0.1.
struct Server {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The accept loop; aborting it closes every connection.
    task: JoinHandle<()>,
}

impl Server {
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops listening and closes every connection.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn server(
    handler: impl Fn(&Seen) -> Option<hyper::Response<ReplayBody>> + Send + Sync + 'static,
) -> Server {
    server_with(Options::default(), handler).await
}

async fn server_with(
    opts: Options,
    handler: impl Fn(&Seen) -> Option<hyper::Response<ReplayBody>> + Send + Sync + 'static,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(listener, opts, Arc::new(handler))
}

fn start(listener: TcpListener, opts: Options, handler: Handler) -> Server {
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (a, s) = (Arc::clone(&accepts), Arc::clone(&seen));
    let task = tokio::spawn(async move {
        // Dropped with the loop: aborts the connections' tasks.
        let mut conns = JoinSet::new();
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            conns.spawn(serve(sock, opts, Arc::clone(&handler), Arc::clone(&s)));
        }
    });
    Server {
        addr,
        accepts,
        seen,
        task,
    }
}

fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), v)
        })
        .collect()
}

async fn serve(sock: TcpStream, opts: Options, handler: Handler, seen: Arc<Mutex<Vec<Seen>>>) {
    let served = Arc::new(AtomicUsize::new(0));
    let goaway = Arc::new(Notify::new());
    let notify = Arc::clone(&goaway);
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let (handler, seen, served, notify) = (
            Arc::clone(&handler),
            Arc::clone(&seen),
            Arc::clone(&served),
            Arc::clone(&notify),
        );
        async move {
            let reply = answer(req, opts, &handler, &seen).await;
            if opts.goaway_after == Some(served.fetch_add(1, Ordering::SeqCst) + 1) {
                notify.notify_one();
            }
            reply
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.max_concurrent_streams(opts.max_streams);
    let conn = builder.serve_connection(TokioIo::new(sock), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = goaway.notified() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Reads the request, records it and answers it as the handler says.
async fn answer(
    req: hyper::Request<Incoming>,
    opts: Options,
    handler: &Handler,
    seen: &Mutex<Vec<Seen>>,
) -> Result<hyper::Response<ReplayBody>, io::Error> {
    let (parts, body) = req.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(e) => return Err(io::Error::other(e)),
    };
    let trailers = collected.trailers().map(pairs).unwrap_or_default();
    let got = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: pairs(&parts.headers),
        body: collected.to_bytes(),
        trailers,
    };
    let stall = opts.stall.is_some_and(|s| got.uri.ends_with(s));
    seen.lock().unwrap().push(got.clone());
    if stall {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(opts.delay).await;
    let reply = handler(&got);
    match reply {
        Some(reply) => Ok(reply),
        None => Err(io::Error::other("reset")),
    }
}

fn reply(
    status: u16,
    headers: &[(&str, &str)],
    body: &'static [u8],
    trailers: &[(&str, &str)],
) -> hyper::Response<ReplayBody> {
    let map = |fields: &[(&str, &str)]| {
        let mut map = HeaderMap::new();
        for (n, v) in fields {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    };
    let mut response = hyper::Response::new(ReplayBody {
        data: Bytes::from_static(body),
        trailers: (!trailers.is_empty()).then(|| map(trailers)),
    });
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    *response.headers_mut() = map(headers);
    response
}

fn ok(_: &Seen) -> Option<hyper::Response<ReplayBody>> {
    Some(reply(200, &[("content-type", "text/plain")], b"hello", &[]))
}

/// A request as the HTTP/2 capture makes it: `:authority` first.
fn h2_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Request {
    let mut all = vec![(":authority", "old.example")];
    all.extend_from_slice(headers);
    request(method, path, 0, &all, body)
}

fn get(path: &str) -> Request {
    h2_request("GET", path, &[], b"")
}

async fn send(r: &Replayer, req: &Request) -> Result<Replayed, ReplayError> {
    r.send(r.try_acquire().unwrap(), Protocol::Http2, req).await
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn status_headers_and_body_round_trip() {
    let srv = server(|seen| {
        let body: &'static [u8] = if seen.body.as_ref() == b"ping" {
            b"pong"
        } else {
            b"?"
        };
        Some(reply(201, &[("x-b", "2"), ("x-a", "1")], body, &[]))
    })
    .await;
    let r = Replayer::new(config(srv.addr));
    let req = h2_request(
        "POST",
        "/echo?q=1",
        &[("content-type", "text/plain"), ("x-custom", "yes")],
        b"ping",
    );
    let got = send(&r, &req).await.unwrap();
    let response = &got.response;
    assert_eq!(response.status, 201);
    assert_eq!((response.version, response.reason.as_str()), (0, ""));
    let names: Vec<&str> = response.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names[..2], ["x-b", "x-a"]);
    assert_eq!(response.headers[0].value, "2");
    assert_eq!(response.body, "pong");
    assert!(response.trailers.is_empty());
    assert!(response.digest.is_none());
    assert!(got.latency_ns > 0);
    let seen = srv.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].uri, "http://old.example/echo?q=1");
    assert_eq!(
        seen[0].headers,
        [
            ("content-type".to_owned(), "text/plain".to_owned()),
            ("x-custom".to_owned(), "yes".to_owned()),
            ("x-parallelrun-shadow".to_owned(), "1".to_owned())
        ]
    );
    assert_eq!(seen[0].body, "ping");
    assert_eq!((r.in_flight(), r.idle_connections()), (0, 1));
}

#[tokio::test]
async fn trailers_round_trip() {
    let srv = server(|_| {
        Some(reply(
            200,
            &[("content-type", "application/grpc")],
            b"\0\0\0\0\0",
            &[("grpc-status", "0"), ("grpc-message", "")],
        ))
    })
    .await;
    let r = Replayer::new(config(srv.addr));
    let mut req = h2_request(
        "POST",
        "/pkg.Service/Method",
        &[("content-type", "application/grpc"), ("te", "trailers")],
        b"\0\0\0\0\0",
    );
    req.trailers = vec![Header::new("x-checksum", "abc")];
    let got = send(&r, &req).await.unwrap();
    assert_eq!(got.response.body.as_ref(), b"\0\0\0\0\0");
    assert_eq!(
        got.response.trailers,
        [
            Header::new("grpc-status", "0"),
            Header::new("grpc-message", "")
        ]
    );
    let seen = srv.seen();
    assert_eq!(field(&seen[0].headers, "te"), Some("trailers"));
    assert_eq!(seen[0].trailers, [("x-checksum".into(), "abc".into())]);
}

#[tokio::test]
async fn fifty_concurrent_requests_share_one_connection() {
    let opts = Options {
        delay: Duration::from_millis(50),
        ..Options::default()
    };
    let srv = server_with(opts, |seen| {
        let body: &'static [u8] = if seen.uri.ends_with("/7") { b"7" } else { b"n" };
        Some(reply(200, &[], body, &[]))
    })
    .await;
    let r = Replayer::new(config(srv.addr));
    let mut sends = JoinSet::new();
    for i in 0..50 {
        let r = r.clone();
        sends.spawn(async move { (i, send(&r, &get(&format!("/{i}"))).await) });
    }
    let mut done = 0;
    while let Some(joined) = sends.join_next().await {
        let (i, got) = joined.unwrap();
        let body = got.unwrap().response.body;
        assert_eq!(body, if i == 7 { "7" } else { "n" });
        done += 1;
    }
    assert_eq!(done, 50);
    assert_eq!(srv.seen().len(), 50);
    assert_eq!(srv.accepts(), 1);
    assert_eq!(r.idle_connections(), 1);
    assert_eq!(r.in_flight(), 0);
}

#[tokio::test]
async fn a_server_stream_limit_opens_another_connection() {
    let opts = Options {
        delay: Duration::from_millis(300),
        max_streams: Some(1),
        ..Options::default()
    };
    let srv = server_with(opts, ok).await;
    let r = Replayer::new(config(srv.addr));
    // The first connection learns the limit from the server's SETTINGS.
    send(&r, &get("/warm")).await.unwrap();
    let first = {
        let r = r.clone();
        tokio::spawn(async move { send(&r, &get("/1")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&r, &get("/2")).await.unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(srv.accepts(), 2);
    assert_eq!(r.idle_connections(), 2);
}

#[tokio::test]
async fn reconnects_after_the_server_restarts() {
    let srv = server(ok).await;
    let addr = srv.addr;
    let r = Replayer::new(config(addr));
    send(&r, &get("/1")).await.unwrap();
    assert_eq!(r.idle_connections(), 1);
    srv.stop().await;
    let e = send(&r, &get("/down")).await.unwrap_err();
    assert!(matches!(e, ReplayError::Connect { .. }), "{e:?}");
    assert_eq!(r.idle_connections(), 0);
    let srv = start(
        TcpListener::bind(addr).await.unwrap(),
        Options::default(),
        Arc::new(ok),
    );
    let got = send(&r, &get("/2")).await.unwrap();
    assert_eq!(got.response.body, "hello");
    assert_eq!(srv.accepts(), 1);
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced() {
    let srv = server(ok).await;
    let addr = srv.addr;
    let r = Replayer::new(config(addr));
    send(&r, &get("/1")).await.unwrap();
    srv.stop().await;
    // Restarted at once: the request may find the old connection still
    // listed, and is then sent again on a new one.
    let srv = start(
        TcpListener::bind(addr).await.unwrap(),
        Options::default(),
        Arc::new(ok),
    );
    let got = send(&r, &get("/2")).await.unwrap();
    assert_eq!(got.response.body, "hello");
    assert_eq!(srv.accepts(), 1);
    assert_eq!(srv.seen().len(), 1);
}

#[tokio::test]
async fn reconnects_after_goaway() {
    let opts = Options {
        goaway_after: Some(1),
        ..Options::default()
    };
    let srv = server_with(opts, ok).await;
    let r = Replayer::new(config(srv.addr));
    for i in 0..3 {
        let got = send(&r, &get(&format!("/{i}"))).await.unwrap();
        assert_eq!(got.response.body, "hello");
        // The connection has ended by now.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(r.idle_connections(), 0);
    }
    assert_eq!(srv.accepts(), 3);
    // Back to back: a request may meet the connection going away, and is
    // then sent again on a new one.
    for i in 3..6 {
        let got = send(&r, &get(&format!("/{i}"))).await.unwrap();
        assert_eq!(got.response.body, "hello");
    }
    assert!(srv.accepts() > 3);
}

#[tokio::test]
async fn connect_refused_is_a_connect_error() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let r = Replayer::new(config(addr));
    let e = send(&r, &get("/")).await.unwrap_err();
    assert!(
        matches!(e, ReplayError::Connect { addr: a, .. } if a == addr),
        "{e:?}"
    );
    assert_eq!(e.kind(), "connect");
    assert_eq!((r.in_flight(), r.idle_connections()), (0, 0));
}

#[tokio::test]
async fn body_over_the_limit_is_an_error_and_the_connection_stays() {
    let srv = server(|seen| {
        let body: &'static [u8] = if seen.uri.ends_with("/big") {
            &[b'x'; 100]
        } else {
            b"small"
        };
        Some(reply(200, &[], body, &[]))
    })
    .await;
    let r = Replayer::new(ReplayConfig {
        limits: HttpLimits {
            max_body: 10,
            ..HttpLimits::default()
        },
        ..config(srv.addr)
    });
    let e = send(&r, &get("/big")).await.unwrap_err();
    assert!(
        matches!(e, ReplayError::Http(HttpError::BodyTooLarge { limit: 10 })),
        "{e:?}"
    );
    assert_eq!(e.kind(), "http");
    let got = send(&r, &get("/small")).await.unwrap();
    assert_eq!(got.response.body, "small");
    assert_eq!(srv.accepts(), 1);
}

#[tokio::test]
async fn too_many_response_fields_is_an_error() {
    let srv = server(|_| Some(reply(200, &[("a", "1"), ("b", "2"), ("c", "3")], b"", &[]))).await;
    let r = Replayer::new(ReplayConfig {
        limits: HttpLimits {
            max_headers: 2,
            ..HttpLimits::default()
        },
        ..config(srv.addr)
    });
    let e = send(&r, &get("/")).await.unwrap_err();
    assert!(
        matches!(e, ReplayError::Http(HttpError::TooManyHeaders { limit: 2 })),
        "{e:?}"
    );
}

#[tokio::test]
async fn host_override_replaces_the_authority() {
    let srv = server(ok).await;
    let r = Replayer::new(ReplayConfig {
        host_override: Some("new.example:8080".into()),
        ..config(srv.addr)
    });
    let req = h2_request("GET", "/x", &[("host", "old.example")], b"");
    send(&r, &req).await.unwrap();
    let seen = srv.seen();
    assert_eq!(seen[0].uri, "http://new.example:8080/x");
    assert_eq!(field(&seen[0].headers, "host"), None);
}

#[tokio::test]
async fn the_shadow_marker_replaces_a_captured_field_and_suffixes_the_authority() {
    let srv = server(ok).await;
    let r = Replayer::new(ReplayConfig {
        marker: ShadowMarker {
            header: "X-Shadow: replay".parse().ok(),
            host_suffix: true,
        },
        ..config(srv.addr)
    });
    for (captured, sent) in [
        ("shop.example:8080", "http://shop.example-shadow:8080/m"),
        // Bracketed, and then no name is left to suffix.
        ("fd77::1:8080", "http://[fd77::1]:8080/m"),
    ] {
        let req = request(
            "GET",
            "/m",
            0,
            &[(":authority", captured), ("x-shadow", "forged")],
            b"",
        );
        send(&r, &req).await.unwrap();
        let seen = srv.seen();
        let last = seen.last().unwrap();
        assert_eq!(last.uri, sent);
        let marks: Vec<_> = last
            .headers
            .iter()
            .filter(|(n, _)| n == "x-shadow")
            .collect();
        assert_eq!(marks, [&("x-shadow".to_owned(), "replay".to_owned())]);
    }
}

/// h2load writes an IPv6 authority without brackets (`::1:8089`), which
/// is no valid authority: it is replayed in brackets, not refused.
#[tokio::test]
async fn an_unbracketed_ipv6_authority_is_sent_in_brackets() {
    let srv = server(ok).await;
    let r = Replayer::new(config(srv.addr));
    for (captured, sent) in [
        ("fd77::1:8080", "http://[fd77::1]:8080/v6"),
        ("::1:8089", "http://[::1]:8089/v6"),
        ("fd77::1", "http://[fd77::1]/v6"),
        ("[fd77::1]:8080", "http://[fd77::1]:8080/v6"),
    ] {
        let req = request("GET", "/v6", 0, &[(":authority", captured)], b"");
        send(&r, &req)
            .await
            .unwrap_or_else(|e| panic!("{captured}: {e:?}"));
        let seen = srv.seen();
        assert_eq!(seen.last().unwrap().uri, sent, "{captured}");
    }
    assert_eq!(bracketed_ipv6(b"old.example:80"), None);
    assert_eq!(bracketed_ipv6(b"fd77::1:99999"), None);
}

#[tokio::test]
async fn the_host_field_stands_for_a_missing_authority() {
    let srv = server(ok).await;
    let r = Replayer::new(config(srv.addr));
    let req = request("GET", "/y", 0, &[("host", "h.example")], b"");
    send(&r, &req).await.unwrap();
    let seen = srv.seen();
    assert_eq!(seen[0].uri, "http://h.example/y");
    assert_eq!(field(&seen[0].headers, "host"), None);
}

#[tokio::test]
async fn connection_specific_fields_are_dropped() {
    let srv = server(ok).await;
    let r = Replayer::new(config(srv.addr));
    let req = h2_request(
        "POST",
        "/",
        &[
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("host", "old.example"),
            ("content-length", "99"),
            ("x-kept", "1"),
        ],
        b"abc",
    );
    send(&r, &req).await.unwrap();
    let seen = srv.seen();
    assert_eq!(
        seen[0].headers,
        [
            ("x-kept".to_owned(), "1".to_owned()),
            ("x-parallelrun-shadow".to_owned(), "1".to_owned())
        ]
    );
    assert_eq!(seen[0].body, "abc");
}

#[tokio::test]
async fn a_right_content_length_is_kept() {
    let srv = server(ok).await;
    let r = Replayer::new(config(srv.addr));
    let req = h2_request("PUT", "/", &[("content-length", "3")], b"abc");
    send(&r, &req).await.unwrap();
    let seen = srv.seen();
    assert_eq!(field(&seen[0].headers, "content-length"), Some("3"));
}

#[tokio::test]
async fn binary_and_large_bodies_are_digested() {
    let srv = server(|seen| {
        Some(if seen.uri.ends_with("/bin") {
            reply(200, &[("content-type", "image/png")], b"\x89PNG", &[])
        } else if seen.uri.ends_with("/large") {
            reply(200, &[("content-type", "text/plain")], &[b'a'; 64], &[])
        } else {
            reply(200, &[("content-type", "text/plain")], b"small", &[])
        })
    })
    .await;
    let r = Replayer::new(ReplayConfig {
        digest: Some(DigestPolicy {
            max_whole: 16,
            max_decoded: 1 << 20,
        }),
        ..config(srv.addr)
    });
    let headers = [Header::new("content-type", "image/png")];
    let bin = send(&r, &get("/bin")).await.unwrap().response;
    assert!(bin.body.is_empty());
    let want = crate::diff::digest_whole(&headers, b"\x89PNG", 1 << 20);
    assert_eq!(bin.digest.as_deref(), Some(&want));
    let large = send(&r, &get("/large")).await.unwrap().response;
    assert!(large.body.is_empty());
    let want = crate::diff::digest_whole(&[], &[b'a'; 64], 1 << 20);
    assert_eq!(large.digest.as_deref(), Some(&want));
    let small = send(&r, &get("/small")).await.unwrap().response;
    assert_eq!((small.body.as_ref(), small.digest), (&b"small"[..], None));
}

#[tokio::test]
async fn a_reset_stream_is_an_http2_error() {
    let srv = server(|seen| {
        if seen.uri.ends_with("/reset") {
            None
        } else {
            ok(seen)
        }
    })
    .await;
    let r = Replayer::new(config(srv.addr));
    let e = send(&r, &get("/reset")).await.unwrap_err();
    assert!(matches!(e, ReplayError::Http2(_)), "{e:?}");
    assert_eq!(e.kind(), "http2");
    // Only the stream was reset.
    send(&r, &get("/fine")).await.unwrap();
    assert_eq!(srv.accepts(), 1);
}

#[tokio::test]
async fn a_stalled_stream_times_out_and_the_connection_stays() {
    let opts = Options {
        stall: Some("/stall"),
        ..Options::default()
    };
    let srv = server_with(opts, ok).await;
    let r = Replayer::new(ReplayConfig {
        request_timeout: Duration::from_millis(200),
        ..config(srv.addr)
    });
    let e = send(&r, &get("/stall")).await.unwrap_err();
    assert!(matches!(e, ReplayError::Timeout), "{e:?}");
    assert_eq!(r.in_flight(), 0);
    let got = send(&r, &get("/fine")).await.unwrap();
    assert_eq!(got.response.body, "hello");
    assert_eq!(srv.accepts(), 1);
    assert_eq!(r.idle_connections(), 1);
}

#[tokio::test]
async fn connect_is_not_replayed() {
    let r = Replayer::new(config("127.0.0.1:1".parse().unwrap()));
    let e = send(
        &r,
        &request("CONNECT", "", 0, &[(":authority", "a:443")], b""),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ReplayError::Http2(_)), "{e:?}");
}

#[tokio::test]
async fn idle_connections_beyond_max_idle_are_closed() {
    let srv = server(ok).await;
    let r = Replayer::new(ReplayConfig {
        max_idle: 0,
        ..config(srv.addr)
    });
    send(&r, &get("/1")).await.unwrap();
    assert_eq!(r.idle_connections(), 0);
    send(&r, &get("/2")).await.unwrap();
    assert_eq!(srv.accepts(), 2);
}

#[tokio::test]
async fn a_refused_stream_is_sent_again() {
    // A bare h2 server that refuses the first stream of its first
    // connection (REFUSED_STREAM: not processed, safe to send again).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let (a, n) = (Arc::clone(&accepts), Arc::clone(&answered));
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let first_conn = a.fetch_add(1, Ordering::SeqCst) == 0;
            let n = Arc::clone(&n);
            tokio::spawn(async move {
                let mut conn = ::h2::server::handshake(sock).await.unwrap();
                let mut first_stream = true;
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    if std::mem::take(&mut first_stream) && first_conn {
                        respond.send_reset(Reason::REFUSED_STREAM);
                        continue;
                    }
                    n.fetch_add(1, Ordering::SeqCst);
                    let head = hyper::Response::new(());
                    let mut body = respond.send_response(head, false).unwrap();
                    body.send_data(Bytes::from_static(b"hello"), true).unwrap();
                }
            });
        }
    });
    let r = Replayer::new(config(addr));
    let got = send(&r, &get("/")).await.unwrap();
    assert_eq!(got.response.body, "hello");
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    // The refusing connection takes no new stream: the request went on a
    // new one.
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}
