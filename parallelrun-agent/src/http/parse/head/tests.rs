//! Head-level rules: start lines, field sections, framing decisions,
//! interim responses and upgrades. Driven through the parsers, which apply
//! them.

use super::super::{
    HttpError, HttpLimits, RequestParser,
    tests::{limits, ok, requests, responses, value},
};
use super::starts_with_request_line;
use crate::{
    http::parse::ResponseParser,
    model::{LossCause, header},
};

#[test]
fn transfer_encoding_name_and_coding_are_case_insensitive() {
    let req = b"PUT /x HTTP/1.1\r\ntRANSFER-eNCODING: gzip ,  Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    let got = ok(requests(&[req], limits()));
    assert_eq!(&got[0].body[..], b"hi");
    assert_eq!(
        value(&got[0].headers, "transfer-encoding"),
        b"gzip ,  Chunked"
    );
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
    assert_eq!(&ok(responses(&[resp], &[], limits()))[0].body[..], b"x");
}

#[test]
fn transfer_encoding_wins_over_content_length() {
    let req = b"POST /x HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
    let got = ok(requests(&[req], limits()));
    assert_eq!(got.len(), 2);
    assert_eq!(&got[0].body[..], b"abc");
    assert_eq!(got[1].target, "/next");
}

#[test]
fn content_length_lists_must_agree_and_be_decimal() {
    let same = b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n\r\nabc";
    assert_eq!(&ok(requests(&[same], limits()))[0].body[..], b"abc");
    for bad in [
        &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
        b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: 3a\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    ] {
        let got = requests(&[bad], limits());
        assert!(
            matches!(got.as_slice(), [Err(HttpError::Parse(_))]),
            "{:?}: {got:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    assert!(matches!(
        responses(&[resp], &[], limits()).as_slice(),
        [Err(HttpError::Parse(_))]
    ));
}

#[test]
fn transfer_codings_must_end_in_chunked() {
    for bad in [
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let got = requests(&[bad], limits());
        assert!(
            matches!(got.as_slice(), [Err(HttpError::Parse(_))]),
            "{got:?}"
        );
    }
    // A response whose codings do not end in chunked runs until close.
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8bdata";
    let got = ok(responses(&[resp], &[], limits()));
    assert_eq!(&got[0].body[..], b"\x1f\x8bdata");
}

#[test]
fn head_204_304_have_no_body() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n\
            HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n\
            HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let got = ok(responses(&[wire], &["HEAD", "GET", "GET", "GET"], limits()));
    let summary: Vec<_> = got.iter().map(|r| (r.status, &r.body[..])).collect();
    assert_eq!(
        summary,
        [(200, &b""[..]), (204, b""), (304, b""), (200, b"ok")]
    );
    assert_eq!(value(&got[0].headers, "content-length"), b"10");
}

#[test]
fn interim_responses_are_skipped() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
            HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let got = ok(responses(&[wire], &["POST"], limits()));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].status, &got[0].body[..]), (201, &b"ok"[..]));
    assert!(header(&got[0].headers, "link").is_none());
}

#[test]
fn connect_answered_with_2xx_is_an_upgrade() {
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01";
    assert_eq!(
        responses(&[established], &["CONNECT"], limits()),
        [Err(HttpError::Upgrade)]
    );
    // Refused: an ordinary response, and the connection stays HTTP.
    let refused = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\ndeny";
    let got = ok(responses(&[refused], &["CONNECT"], limits()));
    assert_eq!((got[0].status, &got[0].body[..]), (407, &b"deny"[..]));
    // The same 200 to a GET is not an upgrade (it runs until close).
    let got = ok(responses(&[established], &["GET"], limits()));
    assert_eq!(&got[0].body[..], b"\x16\x03\x01");
}

#[test]
fn head_too_large_is_fatal() {
    let limits = HttpLimits {
        max_head: 64,
        ..HttpLimits::default()
    };
    let mut parser = RequestParser::new(limits);
    parser.push(b"GET / HTTP/1.1\r\nX-Long: ");
    assert_eq!(parser.next(), Ok(None));
    parser.push(&[b'a'; 64]);
    assert_eq!(parser.next(), Err(HttpError::HeadTooLarge { limit: 64 }));
    parser.push(b"\r\n\r\n");
    assert_eq!(parser.next(), Err(HttpError::HeadTooLarge { limit: 64 }));
    // Complete but over the limit is the same error.
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(60));
    assert_eq!(
        requests(&[long.as_bytes()], limits),
        [Err(HttpError::HeadTooLarge { limit: 64 })]
    );
    assert_eq!(
        HttpError::HeadTooLarge { limit: 64 }.cause(),
        LossCause::TooLarge
    );
}

#[test]
fn too_many_headers() {
    let limits = HttpLimits {
        max_headers: 2,
        ..HttpLimits::default()
    };
    let wire = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        requests(&[wire], limits),
        [Err(HttpError::TooManyHeaders { limit: 2 })]
    );
    let two = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_eq!(ok(requests(&[two], limits))[0].headers.len(), 2);
}

#[test]
fn bare_lf_and_leading_empty_lines() {
    let wire = b"\r\n\r\nGET /lf HTTP/1.1\nHost: a\n\n\nHTTP-ish";
    let mut parser = RequestParser::new(limits());
    parser.push(wire);
    let request = parser.next().unwrap().unwrap();
    assert_eq!(request.target, "/lf");
    assert_eq!(&request.raw[..], b"GET /lf HTTP/1.1\nHost: a\n\n");
    assert_eq!(value(&request.headers, "host"), b"a");
}

#[test]
fn request_line_detection() {
    assert!(starts_with_request_line(b"GET /x HTTP/1.1\r\nHost: a\r\n"));
    assert!(starts_with_request_line(b"DELETE /x?y HTTP/1.0\n"));
    assert!(
        !starts_with_request_line(b"GET /x HTTP/1.1"),
        "incomplete line"
    );
    assert!(!starts_with_request_line(b"\r\nGET /x HTTP/1.1\r\n"));
    assert!(!starts_with_request_line(b"lo world\r\n"));
    assert!(!starts_with_request_line(b"HTTP/1.1 200 OK\r\n"));
    assert!(!starts_with_request_line(b"GET /x HTTP/2\r\n"));
    assert!(!starts_with_request_line(b""));
}

#[test]
fn the_upgrade_response_is_kept() {
    let mut parser = ResponseParser::new(limits());
    parser.push(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nContent-Length: 9\r\n\r\n\x81\x02hi");
    assert_eq!(parser.take_upgrade(), None);
    assert_eq!(parser.next("GET"), Err(HttpError::Upgrade));
    let response = parser.take_upgrade().expect("the 101 is kept");
    assert_eq!(
        (response.status, response.reason.as_str()),
        (101, "Switching Protocols")
    );
    assert_eq!(value(&response.headers, "upgrade"), b"websocket");
    assert!(response.body.is_empty(), "what follows is the new protocol");
    assert_eq!(parser.take_upgrade(), None, "once");
    assert_eq!(parser.buffered(), 4);
    let mut parser = ResponseParser::new(limits());
    parser.push(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03");
    assert_eq!(parser.next("CONNECT"), Err(HttpError::Upgrade));
    assert_eq!(parser.take_upgrade().map(|r| r.status), Some(200));
    parser.push(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    parser.clear();
    assert_eq!(parser.take_upgrade(), None);
}
