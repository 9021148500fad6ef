//! Head-level rules: start lines, field sections, framing decisions,
//! interim responses and upgrades. Driven through the parsers, which apply
//! them.

use super::super::{
    HttpError, HttpLimits, RequestParser,
    tests::{limits, ok, requests, responses, value},
};
use super::{
    ParsedResponse, STACK_SLOTS, parse_request_head, parse_response_head, skipped_request_line,
    starts_with_request_line,
};
use crate::{
    http::parse::{RequestLine, ResponseParser},
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
    // The lenient form with a version is a resync point, the one without
    // is not.
    assert!(starts_with_request_line(b"GET / HTTP/1.\nHost: a\n"));
    assert!(!starts_with_request_line(b"GET /HTTP/1.1\nHost: a\n"));
}

#[test]
fn lenient_request_lines_parse_as_http_1_0() {
    // The shapes of zeek's methods.pcap: no minor version, no version.
    let wire = b"GET / HTTP/1.\nHost: www.google.com\n\n\
        CCM_POST /HTTP/1.1\nHost: www.google.com\nContent-Length: 2\n\nhi\
        CONNECT db:5432\r\n\r\n\
        OPTIONS * HTTP/1.\r\n\r\n\
        GET http://a.example/x\r\n\r\n";
    let got = ok(requests(&[wire], limits()));
    let lines: Vec<_> = got
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str(), r.version))
        .collect();
    assert_eq!(
        lines,
        [
            ("GET", "/", 0),
            ("CCM_POST", "/HTTP/1.1", 0),
            ("CONNECT", "db:5432", 0),
            ("OPTIONS", "*", 0),
            ("GET", "http://a.example/x", 0),
        ]
    );
    assert_eq!(&got[0].raw[..], b"GET / HTTP/1.\nHost: www.google.com\n\n");
    assert_eq!(value(&got[0].headers, "host"), b"www.google.com");
    assert_eq!(&got[1].body[..], b"hi");
    assert_eq!(value(&got[1].headers, "content-length"), b"2");
}

#[test]
fn other_request_lines_are_rejected() {
    for line in [
        &b"OPTIONS HTTP/1.1\n"[..],
        b"OPTIONS\n",
        b"OPTIONS \n",
        b"OPTIONSHTTP/1.1\n",
        b"GET/ HTTP/1.1\n",
        b"GET/HTTP/1.1\n",
        b"\xc3\x83\xc2\x82\xc3\x83 / HTTP/1.\n",
        b"GET / HTTP/1\n",
        b"GET / HTTP/9.9\n",
        b"GET / HTTP/1. extra\n",
        b"GET lo world\n",
    ] {
        let mut wire = line.to_vec();
        wire.extend_from_slice(b"Host: x\n\n");
        let got = requests(&[&wire], limits());
        assert!(
            matches!(got.as_slice(), [Err(HttpError::Parse(_))]),
            "{}: {got:?}",
            String::from_utf8_lossy(line)
        );
    }
    // A lenient line is still followed by a valid field section.
    let bad_field = b"GET /x\nBad Header\n\n";
    assert!(matches!(
        requests(&[bad_field], limits()).as_slice(),
        [Err(HttpError::Parse(_))]
    ));
}

/// What [`RequestParser::rejected`] reads of a head it failed on.
fn rejected(wire: &[u8], limits: HttpLimits) -> Option<RequestLine> {
    let mut parser = RequestParser::new(limits);
    parser.push(wire);
    assert!(parser.next().is_err(), "{}", String::from_utf8_lossy(wire));
    parser.rejected()
}

fn line(method: &str, target: Option<&str>) -> Option<RequestLine> {
    Some(RequestLine {
        method: method.into(),
        target: target.map(Into::into),
    })
}

#[test]
fn rejected_heads_say_what_was_readable() {
    let l = limits();
    assert_eq!(
        rejected(b"OPTIONS HTTP/1.1\nHost: x\n\n", l),
        line("OPTIONS", None)
    );
    assert_eq!(rejected(b"OPTIONS\nHost: x\n\n", l), line("OPTIONS", None));
    assert_eq!(
        rejected(b"GET /a HTTP/9.9\r\n\r\n", l),
        line("GET", Some("/a"))
    );
    assert_eq!(
        rejected(b"M-SEARCH * HTTP/3\r\n\r\n", l),
        line("M-SEARCH", Some("*"))
    );
    assert_eq!(
        rejected(b"CONNECT db:5432 HTTP/1.1\r\nBad\r\n\r\n", l),
        line("CONNECT", Some("db:5432"))
    );
    assert_eq!(
        rejected(b"POST /x HTTP/1.1\r\nContent-Length: x\r\n\r\n", l),
        line("POST", Some("/x"))
    );
    for no_request in [
        &b"GET/ HTTP/1.1\n\n"[..],
        b"OPTIONSHTTP/1.1\n\n",
        b"Host: x\n\n",
        b"get / HTTP/9\n\n",
        b"\x16\x03\x01\x02\x00\n",
        b"\xc3\x83\xc2\x82\xc3\x83 / HTTP/1.\n\n",
    ] {
        assert_eq!(
            rejected(no_request, l),
            None,
            "{}",
            String::from_utf8_lossy(no_request)
        );
    }
    // Over the head limit: the words the limit did not cut.
    let small = HttpLimits {
        max_head: 32,
        ..HttpLimits::default()
    };
    let long_field = format!("GET /a HTTP/1.1\r\nX: {}", "v".repeat(40));
    assert_eq!(
        rejected(long_field.as_bytes(), small),
        line("GET", Some("/a"))
    );
    let long_target = format!("GET /{}", "a".repeat(40));
    assert_eq!(rejected(long_target.as_bytes(), small), line("GET", None));
    // Not failed, or failed in a body: nothing.
    let mut parser = RequestParser::new(l);
    parser.push(b"GET /a HTTP/1.1\r\n");
    assert_eq!(parser.next(), Ok(None));
    assert_eq!(parser.rejected(), None);
    let mut parser = RequestParser::new(l);
    parser.push(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert!(parser.next().is_err());
    assert_eq!(parser.rejected(), None);
    parser.clear();
    assert_eq!(parser.rejected(), None);
}

#[test]
fn skipped_chunks_that_look_like_requests() {
    assert_eq!(
        skipped_request_line(b"GET /x HTTP/2.0\r\nHost: a\r\n"),
        line("GET", Some("/x"))
    );
    assert_eq!(
        skipped_request_line(b"PRI * HTTP/2.0\r\n"),
        line("PRI", Some("*"))
    );
    for not in [
        &b"GET /x HTTP/2.0"[..],
        b"UPDATE users SET x = 1\n",
        b"OPTIONS\n",
        b"DELETE /tmp/x\n",
        b"lo world HTTP/1.1\n",
        b"HTTP/1.1 200 OK\r\n",
    ] {
        assert_eq!(
            skipped_request_line(not),
            None,
            "{}",
            String::from_utf8_lossy(not)
        );
    }
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

#[test]
fn heads_with_more_fields_than_the_stack_slots_parse() {
    // Past STACK_SLOTS the slots come from the heap; the limit still holds.
    let fields: String = (0..STACK_SLOTS + 10)
        .map(|i| format!("X-F{i}: {i}\r\n"))
        .collect();
    let limits = HttpLimits {
        max_headers: STACK_SLOTS + 10,
        ..HttpLimits::default()
    };
    let req = format!("GET / HTTP/1.1\r\n{fields}\r\n");
    let (_, _, parsed) = parse_request_head(req.as_bytes(), &limits).expect("request head");
    assert_eq!(parsed.len(), STACK_SLOTS + 10);
    let resp = format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
    let parsed = parse_response_head(resp.as_bytes(), "GET", &limits).expect("response head");
    let ParsedResponse::Final(_, _, parsed) = parsed else {
        panic!("not a final response");
    };
    assert_eq!(parsed.len(), STACK_SLOTS + 10);
    let fewer = HttpLimits {
        max_headers: STACK_SLOTS + 9,
        ..HttpLimits::default()
    };
    assert!(matches!(
        parse_request_head(req.as_bytes(), &fewer),
        Err(HttpError::TooManyHeaders { .. })
    ));
}
