use std::io::Write as _;

use bytes::Bytes;

use super::*;

const LIMITS: Limits = Limits {
    max_messages: 16,
    max_decoded: 1024,
};

/// One length-prefixed message with the compressed flag `flag`.
pub(crate) fn frame(flag: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn response(headers: &[(&str, &str)], trailers: &[(&str, &str)]) -> Response {
    let fields = |f: &[(&str, &str)]| {
        f.iter()
            .map(|(n, v)| Header::new(*n, v.to_string()))
            .collect()
    };
    Response {
        version: 0,
        status: 200,
        reason: String::new(),
        headers: fields(headers),
        body: Bytes::new(),
        digest: None,
        trailers: fields(trailers),
    }
}

#[test]
fn splits_uncompressed_messages() {
    let body = [frame(0, b"\x08\x01"), frame(0, b""), frame(0, b"abc")].concat();
    assert_eq!(
        split_messages(&body, None, LIMITS).unwrap(),
        vec![b"\x08\x01".to_vec(), Vec::new(), b"abc".to_vec()]
    );
    assert_eq!(
        split_messages(b"", None, LIMITS).unwrap(),
        Vec::<Vec<u8>>::new()
    );
}

#[test]
fn decompresses_gzip_messages() {
    let body = [frame(1, &gzip(b"hello gzip")), frame(0, b"plain")].concat();
    assert_eq!(
        split_messages(&body, Some("gzip"), LIMITS).unwrap(),
        vec![b"hello gzip".to_vec(), b"plain".to_vec()]
    );
}

#[test]
fn rejects_unknown_or_missing_encodings_of_compressed_messages() {
    let body = frame(1, b"x");
    for (enc, name) in [
        (Some("snappy"), "snappy"),
        (Some("identity"), "identity"),
        (None, ""),
    ] {
        assert_eq!(
            split_messages(&body, enc, LIMITS),
            Err(FramingError::UnknownEncoding {
                index: 0,
                encoding: name.to_owned()
            })
        );
    }
    // Uncompressed messages need no known encoding.
    assert!(split_messages(&frame(0, b"x"), Some("snappy"), LIMITS).is_ok());
}

#[test]
fn corrupt_gzip_is_an_error() {
    let body = frame(1, b"not gzip at all");
    assert!(matches!(
        split_messages(&body, Some("gzip"), LIMITS),
        Err(FramingError::Corrupt { index: 0, .. })
    ));
}

#[test]
fn truncated_prefix_and_payload() {
    let mut body = frame(0, b"abc");
    body.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        split_messages(&body, None, LIMITS),
        Err(FramingError::Truncated {
            index: 1,
            offset: 8,
            needed: 5,
            available: 3
        })
    );
    let body = &frame(0, b"abcdef")[..7];
    assert_eq!(
        split_messages(body, None, LIMITS),
        Err(FramingError::Truncated {
            index: 0,
            offset: 0,
            needed: 6,
            available: 2
        })
    );
    // A length prefix far over the body is just truncated, not allocated.
    assert!(matches!(
        split_messages(&[0, 0xff, 0xff, 0xff, 0xff, 1], None, LIMITS),
        Err(FramingError::Truncated {
            needed: 0xffff_ffff,
            ..
        })
    ));
}

#[test]
fn bad_flag() {
    assert_eq!(
        split_messages(&frame(2, b"x"), None, LIMITS),
        Err(FramingError::BadFlag { index: 0, flag: 2 })
    );
}

#[test]
fn over_the_message_limit() {
    let body = frame(0, b"").repeat(17);
    assert_eq!(
        split_messages(&body, None, LIMITS),
        Err(FramingError::TooManyMessages { max: 16 })
    );
    assert_eq!(
        split_messages(&body[..5 * 16], None, LIMITS).unwrap().len(),
        16
    );
}

#[test]
fn over_the_decoded_size_limit() {
    let body = [frame(0, &[0; 1000]), frame(0, &[0; 25])].concat();
    assert_eq!(
        split_messages(&body, None, LIMITS),
        Err(FramingError::TooLarge { max: 1024 })
    );
    // A gzip bomb stops at the limit.
    let body = frame(1, &gzip(&[0; 100_000]));
    assert_eq!(
        split_messages(&body, Some("gzip"), LIMITS),
        Err(FramingError::TooLarge { max: 1024 })
    );
    let body = [frame(0, &[0; 1000]), frame(1, &gzip(&[0; 24]))].concat();
    assert_eq!(
        split_messages(&body, Some("gzip"), LIMITS).unwrap().len(),
        2
    );
}

#[test]
fn recognises_grpc_content_types() {
    let h = |ct: &str| vec![Header::new("Content-Type", ct.to_owned())];
    assert!(is_grpc(&h("application/grpc")));
    assert!(is_grpc(&h("application/grpc+proto")));
    assert!(is_grpc(&h("Application/GRPC+json; charset=utf-8")));
    assert!(!is_grpc(&h("application/grpc-web")));
    assert!(!is_grpc(&h("application/json")));
    assert!(!is_grpc(&[]));
}

#[test]
fn status_from_trailers_else_headers() {
    let r = response(
        &[("content-type", "application/grpc")],
        &[
            ("grpc-status", "5"),
            ("grpc-message", "not%20found%3A%20%E2%9C%93"),
        ],
    );
    assert_eq!(status(&r), Some((5, "not found: ✓".to_owned())));

    let trailers_only = response(&[("grpc-status", " 14 "), ("grpc-message", "down")], &[]);
    assert_eq!(status(&trailers_only), Some((14, "down".to_owned())));

    let ok = response(&[("grpc-status", "3")], &[("grpc-status", "0")]);
    assert_eq!(status(&ok), Some((0, String::new())));

    assert_eq!(status(&response(&[], &[])), None);
    assert_eq!(status(&response(&[], &[("grpc-status", "x")])), None);
}

#[test]
fn percent_decoding_keeps_bad_escapes() {
    assert_eq!(percent_decode(b"100%"), "100%");
    assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    assert_eq!(percent_decode(b"a%2fb%2F"), "a/b/");
    assert_eq!(percent_decode(b"%FF"), "\u{fffd}");
}

proptest::proptest! {
    /// Any body splits or fails without panicking, within the limits.
    #[test]
    fn splitting_never_panics(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        gzip_encoded in proptest::prelude::any::<bool>(),
    ) {
        let limits = Limits { max_messages: 4, max_decoded: 64 };
        let enc = gzip_encoded.then_some("gzip");
        if let Ok(messages) = split_messages(&body, enc, limits) {
            proptest::prop_assert!(messages.len() <= 4);
            proptest::prop_assert!(messages.iter().map(Vec::len).sum::<usize>() <= 64);
        }
    }
}
