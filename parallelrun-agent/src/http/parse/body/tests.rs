//! Body framing: chunked bodies and trailers, close-delimited bodies, and
//! bodies over the limit. Driven through the parsers, which feed the body
//! decoder.

use super::super::{
    HttpError, RequestEvent, RequestParser, ResponseParser,
    tests::{
        CHUNKED_REQ, CHUNKED_RESP, GET10, limits, ok, requests, responses, value, with_body_limit,
    },
};

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
