use proptest::prelude::*;

use super::*;
use crate::model::header;

fn limits() -> HttpLimits {
    HttpLimits::default()
}

fn with_body_limit(max_body: usize) -> HttpLimits {
    HttpLimits {
        max_body,
        ..HttpLimits::default()
    }
}

/// Every result of feeding `chunks` to a request parser, up to a fatal error.
fn requests(chunks: &[&[u8]], limits: HttpLimits) -> Vec<Result<Request, HttpError>> {
    let mut parser = RequestParser::new(limits);
    let mut out = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        loop {
            match parser.next() {
                Ok(Some(request)) => out.push(Ok(request)),
                Ok(None) => break,
                Err(error) => {
                    let fatal = !error.is_recoverable();
                    out.push(Err(error));
                    if fatal {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// Every result of feeding `chunks` to a response parser (the n-th
/// response answering `methods[n]`, else GET), then closing.
fn responses(
    chunks: &[&[u8]],
    methods: &[&str],
    limits: HttpLimits,
) -> Vec<Result<Response, HttpError>> {
    let mut parser = ResponseParser::new(limits);
    let mut out = Vec::new();
    let method = |n: usize| methods.get(n).copied().unwrap_or("GET");
    for chunk in chunks {
        parser.push(chunk);
        loop {
            match parser.next(method(out.len())) {
                Ok(Some(response)) => out.push(Ok(response)),
                Ok(None) => break,
                Err(error) => {
                    let fatal = !error.is_recoverable();
                    out.push(Err(error));
                    if fatal {
                        return out;
                    }
                }
            }
        }
    }
    loop {
        match parser.finish(method(out.len())) {
            Ok(Some(response)) => out.push(Ok(response)),
            Ok(None) => return out,
            Err(error) => {
                out.push(Err(error));
                return out;
            }
        }
    }
}

fn ok<T: std::fmt::Debug>(results: Vec<Result<T, HttpError>>) -> Vec<T> {
    results
        .into_iter()
        .map(|r| r.expect("message parses"))
        .collect()
}

fn value<'a>(headers: &'a [Header], name: &str) -> &'a [u8] {
    header(headers, name).map_or(&[][..], |v| &v[..])
}

const POST: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
const GET10: &[u8] = b"GET /b?q=1 HTTP/1.0\r\nAccept: */*\r\n\r\n";
const CHUNKED_REQ: &[u8] = b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;name=val\r\nhello\r\n6;a;b=\"c\"\r\n world\r\n0;last\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";
const CHUNKED_RESP: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-encoding: chunked\r\nContent-Type: text/plain\r\n\r\n\
        3;ext\r\nabc\r\n0\r\nServer-Timing: db;dur=5\r\n\r\n";

#[test]
fn content_length_requests_keep_exact_raw_and_leftovers() {
    let mut wire = POST.to_vec();
    wire.extend_from_slice(GET10);
    wire.extend_from_slice(b"GET /c HT");
    let mut parser = RequestParser::new(limits());
    parser.push(&wire);
    let first = parser.next().unwrap().unwrap();
    assert_eq!(
        (first.method.as_str(), first.target.as_str()),
        ("POST", "/a")
    );
    assert_eq!(first.version, 1);
    assert_eq!(&first.body[..], b"hello");
    assert_eq!(&first.raw[..], POST);
    assert_eq!(value(&first.headers, "HOST"), b"x");
    let second = parser.next().unwrap().unwrap();
    assert_eq!(second.target, "/b?q=1");
    assert_eq!(second.version, 0);
    assert!(
        second.body.is_empty(),
        "a request without framing has no body"
    );
    assert_eq!(&second.raw[..], GET10);
    assert_eq!(parser.next(), Ok(None));
    assert_eq!(parser.buffered(), b"GET /c HT".len());
    assert!(parser.in_message());
    parser.push(b"TP/1.1\r\n\r\n");
    assert_eq!(parser.next().unwrap().unwrap().target, "/c");
    assert_eq!(parser.buffered(), 0);
    assert!(!parser.in_message());
}

#[test]
fn chunked_request_with_extensions_and_trailers() {
    let got = ok(requests(&[CHUNKED_REQ, GET10], limits()));
    assert_eq!(got.len(), 2);
    assert_eq!(&got[0].body[..], b"hello world");
    assert_eq!(&got[0].raw[..], CHUNKED_REQ);
    let trailers: Vec<_> = got[0]
        .trailers
        .iter()
        .map(|h| (h.name.as_str(), &h.value[..]))
        .collect();
    assert_eq!(trailers, [("X-Checksum", &b"abc"[..]), ("X-Other", b"1")]);
    assert_eq!(got[1].target, "/b?q=1");
}

#[test]
fn chunked_response_with_trailers_then_next_response() {
    let next = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
    let got = ok(responses(&[CHUNKED_RESP, next], &[], limits()));
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].status, got[0].reason.as_str()), (200, "OK"));
    assert_eq!(&got[0].body[..], b"abc");
    assert_eq!(value(&got[0].headers, "content-type"), b"text/plain");
    assert_eq!(value(&got[0].trailers, "server-timing"), b"db;dur=5");
    assert_eq!((got[1].status, &got[1].body[..]), (404, &b"no"[..]));
}

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
fn close_delimited_response_completes_at_finish() {
    let mut parser = ResponseParser::new(limits());
    parser.push(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\npart1,");
    assert_eq!(parser.next("GET"), Ok(None));
    parser.push(b"part2");
    assert_eq!(parser.next("GET"), Ok(None));
    let response = parser.finish("GET").unwrap().unwrap();
    assert_eq!(response.version, 0);
    assert_eq!(&response.body[..], b"part1,part2");
    assert_eq!(value(&response.headers, "server"), b"old");
    assert_eq!(parser.finish("GET"), Ok(None));
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn finish_reports_truncated_messages() {
    let mut parser = ResponseParser::new(limits());
    assert_eq!(parser.finish("GET"), Ok(None), "nothing pending");
    let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    parser.push(cut);
    assert_eq!(parser.finish("GET"), Err(HttpError::Truncated));
    assert_eq!(
        parser.buffered(),
        cut.len(),
        "the truncated bytes are counted"
    );
    assert_eq!(
        parser.next("GET"),
        Err(HttpError::Truncated),
        "and it sticks"
    );
    for cut in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"[..],
        b"HTTP/1.1 200 OK\r\nContent-",
    ] {
        parser.clear();
        parser.push(cut);
        assert_eq!(parser.finish("GET"), Err(HttpError::Truncated));
    }
    parser.clear();
    // A complete response still buffered comes first.
    parser.push(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\nrest");
    assert_eq!(parser.finish("GET").unwrap().unwrap().status, 204);
    assert_eq!(&parser.finish("GET").unwrap().unwrap().body[..], b"rest");
    assert_eq!(parser.finish("GET"), Ok(None));
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
fn switching_protocols_is_an_upgrade_and_sticks() {
    let mut parser = ResponseParser::new(limits());
    parser.push(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
    assert_eq!(parser.next("GET"), Err(HttpError::Upgrade));
    assert_eq!(parser.buffered(), 7, "the new protocol's bytes are left");
    assert_eq!(parser.next("GET"), Err(HttpError::Upgrade));
    parser.push(b"\x81\x05again");
    assert_eq!(
        parser.buffered(),
        7,
        "bytes after a fatal error are dropped"
    );
    assert!(!parser.in_message());
    assert_eq!(HttpError::Upgrade.cause(), LossCause::Upgrade);
    parser.clear();
    parser.push(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(parser.next("GET").unwrap().unwrap().status, 200);
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
fn too_large_bodies_are_skipped_and_the_next_message_parses() {
    let limit = 8;
    let big = b"POST /big HTTP/1.1\r\nContent-Length: 20\r\n\r\n01234567890123456789";
    let small = b"POST /small HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    let got = requests(&[big, small], with_body_limit(limit));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Err(HttpError::BodyTooLarge { limit }));
    assert_eq!(&got[1].as_ref().unwrap().body[..], b"abc");

    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            4\r\nabcd\r\n4\r\nefgh\r\n4\r\nijkl\r\n0\r\nX-T: 1\r\n\r\n";
    let next = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let got = responses(&[chunked, next], &[], with_body_limit(limit));
    assert_eq!(got[0], Err(HttpError::BodyTooLarge { limit }));
    assert_eq!(&got[1].as_ref().unwrap().body[..], b"ok");
    assert_eq!(got.len(), 2);

    // The chunk fits, but with the trailer section the body as
    // transferred does not.
    let trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            1\r\na\r\n0\r\nX-Trailer: long enough\r\n\r\n";
    let got = responses(&[trailers, next], &[], with_body_limit(limit));
    assert_eq!(got[0], Err(HttpError::BodyTooLarge { limit }));
    assert_eq!(&got[1].as_ref().unwrap().body[..], b"ok");

    let until_close = b"HTTP/1.0 200 OK\r\n\r\n0123456789abcdef";
    assert_eq!(
        responses(&[until_close], &[], with_body_limit(limit)),
        [Err(HttpError::BodyTooLarge { limit })]
    );
}

#[test]
fn skipped_bodies_are_not_buffered() {
    let limits = with_body_limit(64 * 1024);
    let piece = vec![b'x'; 4096];
    let mut parser = ResponseParser::new(limits);
    parser.push(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n");
    for _ in 0..256 {
        assert_eq!(parser.next("GET"), Ok(None));
        parser.push(&piece);
        assert!(parser.buffered() <= piece.len(), "{}", parser.buffered());
    }
    assert_eq!(
        parser.next("GET"),
        Err(HttpError::BodyTooLarge { limit: 64 * 1024 })
    );

    // Chunked: the limit counts the body as transferred.
    let mut parser = RequestParser::new(limits);
    parser.push(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = [b"1000\r\n".as_slice(), &piece, b"\r\n"].concat();
    for _ in 0..64 {
        parser.push(&chunk);
        assert!(matches!(
            parser.next_event(),
            Ok(Some(RequestEvent::Head { .. })) | Ok(None)
        ));
        assert!(
            parser.buffered() <= 64 * 1024 + chunk.len(),
            "{}",
            parser.buffered()
        );
    }
    parser.push(b"0\r\n\r\n");
    assert_eq!(
        parser.next(),
        Err(HttpError::BodyTooLarge { limit: 64 * 1024 })
    );
    assert_eq!(parser.buffered(), 0);
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
fn garbage_is_a_parse_error() {
    let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\x01\x02";
    assert!(matches!(
        requests(&[tls], limits()).as_slice(),
        [Err(HttpError::Parse(_))]
    ));
    let response_as_request = b"HTTP/1.1 200 OK\r\n\r\n";
    assert!(matches!(
        requests(&[response_as_request], limits()).as_slice(),
        [Err(HttpError::Parse(_))]
    ));
    let request_as_response = b"GET / HTTP/1.1\r\n\r\n";
    assert!(matches!(
        responses(&[request_as_response], &[], limits()).as_slice(),
        [Err(HttpError::Parse(_))]
    ));
    let http2 = b"GET / HTTP/2.0\r\n\r\n";
    assert!(matches!(
        requests(&[http2], limits()).as_slice(),
        [Err(HttpError::Parse(_))]
    ));
    let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    assert!(matches!(
        responses(&[bad_chunk], &[], limits()).as_slice(),
        [Err(HttpError::Parse(_))]
    ));
    let no_crlf_after_data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY";
    assert!(matches!(
        responses(&[no_crlf_after_data], &[], limits()).as_slice(),
        [Err(HttpError::Parse(_))]
    ));
    assert_eq!(
        HttpError::Parse(String::new()).cause(),
        LossCause::ParseError
    );
    // The error is detected from the start line alone, before a head ends.
    let mut parser = RequestParser::new(limits());
    parser.push(b"\x16\x03\x01 junk\n");
    assert!(matches!(parser.next(), Err(HttpError::Parse(_))));
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
fn head_event_comes_before_the_body() {
    let mut parser = RequestParser::new(limits());
    parser.push(b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(
        parser.next_event(),
        Ok(Some(RequestEvent::Head {
            method: "POST".into(),
            target: "/up".into()
        }))
    );
    assert_eq!(parser.next_event(), Ok(None));
    assert!(parser.in_message());
    parser.push(b"data");
    let Ok(Some(RequestEvent::Complete(request))) = parser.next_event() else {
        panic!("request completes");
    };
    assert_eq!(&request.body[..], b"data");
    assert!(!parser.in_message());
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

/// Requests exercising every framing, pipelined.
fn request_corpus() -> Vec<u8> {
    [
            POST,
            GET10,
            CHUNKED_REQ,
            b"\r\nPUT /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n1\r\nz\r\n0\r\n\r\n",
            b"GET /lf HTTP/1.1\nA: b\n\n",
        ]
        .concat()
}

/// Responses exercising every framing, and the method each answers.
fn response_corpus() -> (Vec<u8>, Vec<&'static str>) {
    let wire = [
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"[..],
        CHUNKED_RESP,
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    ]
    .concat();
    (wire, vec!["POST", "GET", "HEAD", "GET", "GET"])
}

#[test]
fn byte_at_a_time_equals_all_at_once() {
    let wire = request_corpus();
    let whole = ok(requests(&[&wire], limits()));
    assert_eq!(whole.len(), 5);
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(ok(requests(&bytes, limits())), whole);

    let (wire, methods) = response_corpus();
    let whole = ok(responses(&[&wire], &methods, limits()));
    assert_eq!(whole.len(), 5);
    assert_eq!(&whole[4].body[..], b"until the end");
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(ok(responses(&bytes, &methods, limits())), whole);
}

/// `wire` cut at `cuts` (sorted, deduplicated, in range).
fn split<'a>(wire: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([wire.len()]) {
        out.push(&wire[start..cut]);
        start = cut;
    }
    out
}

proptest! {
    #[test]
    fn any_split_gives_the_same_requests(cuts in prop::collection::vec(any::<usize>(), 0..40)) {
        let wire = request_corpus();
        prop_assert_eq!(requests(&split(&wire, &cuts), limits()), requests(&[&wire], limits()));
    }

    #[test]
    fn any_split_gives_the_same_responses(cuts in prop::collection::vec(any::<usize>(), 0..40)) {
        let (wire, methods) = response_corpus();
        prop_assert_eq!(
            responses(&split(&wire, &cuts), &methods, limits()),
            responses(&[&wire], &methods, limits())
        );
    }

    #[test]
    fn any_split_skips_too_large_bodies_alike(cuts in prop::collection::vec(any::<usize>(), 0..40)) {
        let wire = request_corpus();
        let limits = with_body_limit(6);
        let whole = requests(&[&wire], limits);
        // Both chunked requests are over 6 bytes as transferred.
        prop_assert_eq!(whole.iter().filter(|r| r.is_err()).count(), 2);
        prop_assert_eq!(requests(&split(&wire, &cuts), limits), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(wire in prop::collection::vec(any::<u8>(), 0..512), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let small = HttpLimits { max_head: 128, max_headers: 4, max_body: 64 };
        let _ = requests(&split(&wire, &cuts), small);
        let _ = responses(&split(&wire, &cuts), &["HEAD", "GET"], small);
    }
}
