use std::time::Duration;

use super::*;
use crate::{
    model::Protocol,
    replay::{
        Replayer,
        tests::{Action, OK, config, get, request, send, server},
    },
};

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
        ["GET /x HTTP/1.1\r\nHost: old.example\r\nX-Parallelrun-Shadow: 1\r\n\r\n"]
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
    assert!(r.inner.http1.take_idle().is_none());
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
            "GET /a HTTP/1.1\r\nHost: new.example\r\nX-Parallelrun-Shadow: 1\r\n\r\n",
            "GET /b HTTP/1.1\r\nHost: new.example\r\nX-Parallelrun-Shadow: 1\r\n\r\n"
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
            r.send(permit, Protocol::Http1, &req)
                .await
                .map(|g| g.response.body)
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
