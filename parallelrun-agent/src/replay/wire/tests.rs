use bytes::Bytes;

use super::*;
use crate::replay::tests::request;

fn serialized(req: &Request, host_override: Option<&str>) -> String {
    marked(req, host_override, &ShadowMarker::none())
}

fn marked(req: &Request, host_override: Option<&str>, marker: &ShadowMarker) -> String {
    let mut out = Vec::new();
    serialize_request(req, host_override, marker, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_marker_header_is_added_once_and_a_captured_one_is_dropped() {
    let req = request(
        "POST",
        "/orders",
        1,
        &[
            ("Host", "shop.example:8080"),
            ("x-parallelrun-shadow", "0"),
            ("Accept", "*/*"),
        ],
        b"{}",
    );
    assert_eq!(
        marked(&req, None, &ShadowMarker::default_header()),
        "POST /orders HTTP/1.1\r\nHost: shop.example:8080\r\nAccept: */*\r\n\
         X-Parallelrun-Shadow: 1\r\nContent-Length: 2\r\n\r\n{}"
    );
}

#[test]
fn the_host_suffix_applies_to_the_captured_host_and_to_the_override() {
    let marker = ShadowMarker {
        header: "X-Shadow: yes".parse().ok(),
        host_suffix: true,
    };
    let req = request("GET", "/", 1, &[("host", "shop.example:8080")], b"");
    assert_eq!(
        marked(&req, None, &marker),
        "GET / HTTP/1.1\r\nhost: shop.example-shadow:8080\r\nX-Shadow: yes\r\n\r\n"
    );
    assert_eq!(
        marked(&req, Some("new.internal"), &marker),
        "GET / HTTP/1.1\r\nhost: new.internal-shadow\r\nX-Shadow: yes\r\n\r\n"
    );
    // No Host captured: none is made up (HTTP/1.0).
    let bare = request("GET", "/", 0, &[], b"");
    assert_eq!(
        marked(&bare, None, &marker),
        "GET / HTTP/1.0\r\nX-Shadow: yes\r\nConnection: keep-alive\r\n\r\n"
    );
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
        digest: None,
        trailers: Vec::new(),
    };
    assert!(keeps_alive(&resp(1, None)));
    assert!(!keeps_alive(&resp(1, Some("Close"))));
    assert!(!keeps_alive(&resp(1, Some("foo, close"))));
    assert!(!keeps_alive(&resp(0, None)));
    assert!(keeps_alive(&resp(0, Some(" Keep-Alive "))));
    assert!(!keeps_alive(&resp(0, Some("keep-alive, close"))));
}

#[test]
fn request_line_is_sent_as_captured() {
    // Accepted by servers, parsed as HTTP/1.0: replayed as it was.
    for line in ["GET / HTTP/1.", "CCM_POST /HTTP/1.1"] {
        let (method, target) = line.split_once(' ').unwrap();
        let target = target.split(' ').next().unwrap();
        let mut req = request(method, target, 0, &[("Host", "x")], b"");
        req.raw = Bytes::from(format!("{line}\r\nHost: x\r\n\r\n"));
        let out = serialized(&req, None);
        assert!(out.starts_with(&format!("{line}\r\nHost: x\r\n")), "{out}");
    }
    // Captured bytes that are not this request's line are not used.
    let mut req = request("GET", "/a", 1, &[("Host", "x")], b"");
    req.raw = Bytes::from_static(b"GET /b HTTP/1.1\r\n\r\n");
    assert!(serialized(&req, None).starts_with("GET /a HTTP/1.1\r\n"));
}
