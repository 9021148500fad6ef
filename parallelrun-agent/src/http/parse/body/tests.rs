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

mod digested {
    //! Bodies hashed while they arrive: what is kept, and that the framing
    //! goes on as for a kept body.

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::super::super::{
        DigestPolicy, HttpError, HttpLimits, ResponseParser,
        tests::{limits, value},
    };
    use crate::{
        diff::digest_whole,
        model::{Header, Response},
    };

    fn policy(max_whole: usize) -> Option<DigestPolicy> {
        Some(DigestPolicy {
            max_whole,
            max_decoded: 1 << 20,
        })
    }

    /// Every response parsed from `wire` cut at `cuts`, then closed.
    fn parse(
        wire: &[u8],
        cuts: &[usize],
        limits: HttpLimits,
        digest: Option<DigestPolicy>,
    ) -> Vec<Result<Response, HttpError>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(wire.len());
        let mut parser = ResponseParser::with_digest(limits, digest);
        let mut out = Vec::new();
        let mut at = 0;
        for cut in cuts {
            parser.push(&wire[at..cut]);
            at = cut;
            while let Some(r) = parser.next("GET").transpose() {
                let fatal = r.as_ref().is_err_and(|e| !e.is_recoverable());
                out.push(r);
                if fatal {
                    return out;
                }
            }
        }
        while let Some(r) = parser.finish("GET").transpose() {
            let fatal = r.is_err();
            out.push(r);
            if fatal {
                break;
            }
        }
        out
    }

    fn head(extra: &str, len: Option<usize>) -> String {
        let framing = match len {
            Some(n) => format!("Content-Length: {n}\r\n"),
            None => "Transfer-Encoding: chunked\r\n".to_owned(),
        };
        format!("HTTP/1.1 200 OK\r\n{extra}{framing}\r\n")
    }

    fn chunked(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            out.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        out
    }

    const NEXT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

    #[test]
    fn binary_body_is_digested_not_kept_and_the_next_response_parses() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut wire = head("Content-Type: image/png\r\n", Some(data.len())).into_bytes();
        wire.extend_from_slice(&data);
        wire.extend_from_slice(NEXT);
        let got: Vec<Response> = parse(&wire, &[100, 2000], limits(), policy(1 << 20))
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].body.is_empty(), "the bytes are not kept");
        assert_eq!(value(&got[0].headers, "content-type"), b"image/png");
        let digest = got[0].digest.as_deref().expect("digested");
        assert_eq!(*digest, digest_whole(&[], &data, 1 << 20));
        assert_eq!(got[1].status, 204);
        assert_eq!(got[1].digest, None);
    }

    #[test]
    fn a_digested_body_is_not_buffered_while_it_arrives() {
        let data = vec![7u8; 100_000];
        let mut wire = head("Content-Type: video/mp4\r\n", Some(data.len())).into_bytes();
        wire.extend_from_slice(&data);
        let mut parser = ResponseParser::with_digest(limits(), policy(1 << 20));
        let pieces: Vec<&[u8]> = wire.chunks(1448).collect();
        let (last, before) = pieces.split_last().unwrap();
        for piece in before {
            parser.push(piece);
            assert_eq!(parser.next("GET"), Ok(None));
            assert_eq!(parser.buffered(), 0, "only the hash state is held");
        }
        parser.push(last);
        let r = parser.next("GET").unwrap().expect("complete");
        assert_eq!(
            r.digest.as_deref(),
            Some(&digest_whole(&[], &data, 1 << 20))
        );
    }

    #[test]
    fn small_text_body_stays_whole() {
        let mut wire = head("Content-Type: text/plain\r\n", Some(5)).into_bytes();
        wire.extend_from_slice(b"hello");
        let got = parse(&wire, &[], limits(), policy(1024));
        let r = got[0].as_ref().unwrap();
        assert_eq!((&r.body[..], &r.digest), (&b"hello"[..], &None));
    }

    #[test]
    fn without_a_policy_binary_bodies_are_kept() {
        let mut wire = head("Content-Type: image/png\r\n", Some(3)).into_bytes();
        wire.extend_from_slice(b"\x89PN");
        let got = parse(&wire, &[], limits(), None);
        assert_eq!(&got[0].as_ref().unwrap().body[..], b"\x89PN");
    }

    #[test]
    fn content_length_over_the_limit_is_digested_from_the_head() {
        let data = b"line of text\n".repeat(100);
        let mut wire = head("", Some(data.len())).into_bytes();
        wire.extend_from_slice(&data);
        let got = parse(&wire, &[50], limits(), policy(1000));
        let r = got[0].as_ref().unwrap();
        assert!(r.body.is_empty());
        assert_eq!(
            r.digest.as_deref(),
            Some(&digest_whole(&[], &data, 1 << 20))
        );
    }

    #[test]
    fn gzip_body_is_digested_decoded() {
        use std::io::Write as _;
        let plain = b"compressible text ".repeat(500);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&plain).unwrap();
        let sent = e.finish().unwrap();
        let mut wire = head(
            "Content-Type: application/octet-stream\r\nContent-Encoding: gzip\r\n",
            None,
        )
        .into_bytes();
        wire.extend_from_slice(&chunked(&sent, 100));
        let got = parse(&wire, &[77, 400], limits(), policy(1 << 20));
        let d = got[0].as_ref().unwrap().digest.clone().expect("digested");
        assert_eq!((d.sent_len, d.len), (sent.len() as u64, plain.len() as u64));
        assert!(d.same_content(&digest_whole(&[], &plain, 1 << 20)));
        assert_eq!(d.undecodable, None);
    }

    #[test]
    fn over_the_body_limit_is_still_too_large() {
        let data = vec![1u8; 3000];
        let mut wire = head("Content-Type: image/png\r\n", None).into_bytes();
        wire.extend_from_slice(&chunked(&data, 500));
        wire.extend_from_slice(NEXT);
        let limits = HttpLimits {
            max_body: 2000,
            ..HttpLimits::default()
        };
        let got = parse(&wire, &[600], limits, policy(100));
        assert_eq!(got[0], Err(HttpError::BodyTooLarge { limit: 2000 }));
        assert_eq!(got[1].as_ref().unwrap().status, 204, "still in step");
    }

    #[test]
    fn close_delimited_body_is_digested_to_the_close() {
        let data = vec![b'x'; 4000];
        let mut wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        wire.extend_from_slice(&data);
        let got = parse(&wire, &[60, 3000], limits(), policy(1000));
        assert_eq!(got.len(), 1);
        let r = got[0].as_ref().unwrap();
        assert_eq!(
            r.digest.as_deref(),
            Some(&digest_whole(&[], &data, 1 << 20))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A chunked text body passes the limit somewhere in its middle:
        /// whatever the segment boundaries, the digest is that of the
        /// de-chunked body, the trailers are kept and the next response
        /// parses.
        #[test]
        fn chunked_body_passing_the_limit_digests_like_the_whole(
            data in proptest::collection::vec(any::<u8>(), 0..4000),
            chunk in 1usize..700,
            max_whole in 0usize..3000,
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let mut wire = head("Content-Type: text/plain\r\n", None).into_bytes();
            let body = chunked(&data, chunk);
            wire.extend_from_slice(&body);
            wire.extend_from_slice(NEXT);
            let got = parse(&wire, &cuts, limits(), policy(max_whole));
            prop_assert_eq!(got.len(), 2);
            let r = got[0].as_ref().unwrap();
            // The trailer section ends the body: passing the limit there
            // no longer digests it.
            let before_trailers = body.len() - b"X-Trailer: t\r\n\r\n".len();
            if before_trailers > max_whole {
                prop_assert!(r.body.is_empty());
                prop_assert_eq!(r.digest.as_deref(), Some(&digest_whole(&[], &data, 1 << 20)));
            } else {
                prop_assert_eq!(&r.body, &Bytes::from(data.clone()));
                prop_assert_eq!(&r.digest, &None);
            }
            prop_assert_eq!(value(&r.trailers, "x-trailer"), b"t");
            prop_assert_eq!(r.headers.len(), 2);
            prop_assert_eq!(&r.headers[0], &Header::new("Content-Type", "text/plain"));
            prop_assert_eq!(got[1].as_ref().unwrap().status, 204);
        }
    }
}
