use proptest::prelude::*;

use super::*;
use crate::model::header;

pub(super) fn limits() -> HttpLimits {
    HttpLimits::default()
}

pub(super) fn with_body_limit(max_body: usize) -> HttpLimits {
    HttpLimits {
        max_body,
        ..HttpLimits::default()
    }
}

/// Every result of feeding `chunks` to a request parser, up to a fatal error.
pub(super) fn requests(chunks: &[&[u8]], limits: HttpLimits) -> Vec<Result<Request, HttpError>> {
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
pub(super) fn responses(
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

pub(super) fn ok<T: std::fmt::Debug>(results: Vec<Result<T, HttpError>>) -> Vec<T> {
    results
        .into_iter()
        .map(|r| r.expect("message parses"))
        .collect()
}

pub(super) fn value<'a>(headers: &'a [Header], name: &str) -> &'a [u8] {
    header(headers, name).map_or(&[][..], |v| &v[..])
}

pub(super) const POST: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
pub(super) const GET10: &[u8] = b"GET /b?q=1 HTTP/1.0\r\nAccept: */*\r\n\r\n";
pub(super) const CHUNKED_REQ: &[u8] = b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;name=val\r\nhello\r\n6;a;b=\"c\"\r\n world\r\n0;last\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";
pub(super) const CHUNKED_RESP: &[u8] =
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
