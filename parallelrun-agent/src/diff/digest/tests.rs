//! Streaming digests: any split of the body gives the digest of the whole,
//! every content coding gives the digest of the decoded bytes, and what
//! cannot be decoded is digested as sent.

use proptest::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

use super::*;
use crate::diff::tests::{brotli, gzip, raw_deflate, zlib};

fn codings(list: &[&str]) -> Vec<String> {
    list.iter().map(|c| (*c).to_owned()).collect()
}

/// The digest of `body` fed in pieces cut at `cuts` (offsets, any order).
fn streamed(list: &[&str], body: &[u8], cuts: &[usize]) -> BodyDigest {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut d = BodyDigester::new(codings(list), 1 << 20);
    let mut at = 0;
    for cut in cuts {
        d.update(&body[at..cut]);
        at = cut;
    }
    d.update(&body[at..]);
    d.finish()
}

/// What an undecoded body of `plain` digests to.
fn plain_digest(plain: &[u8], sent_len: usize) -> BodyDigest {
    BodyDigest {
        sent_len: sent_len as u64,
        len: plain.len() as u64,
        xxh3: xxh3_128(plain),
        undecodable: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_split_digests_like_the_whole(
        plain in proptest::collection::vec(any::<u8>(), 0..20_000),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        coding in 0usize..5,
    ) {
        let (list, sent): (&[&str], Vec<u8>) = match coding {
            0 => (&[], plain.clone()),
            1 => (&["gzip"], gzip(&plain)),
            2 => (&["deflate"], zlib(&plain)),
            3 => (&["deflate"], raw_deflate(&plain)),
            _ => (&["br"], brotli(&plain)),
        };
        let got = streamed(list, &sent, &cuts);
        // Like the whole fed at once, and like the decoded bytes.
        prop_assert_eq!(&got, &streamed(list, &sent, &[]));
        prop_assert_eq!(got, plain_digest(&plain, sent.len()));
    }
}

#[test]
fn stacked_codings_are_undone_right_to_left() {
    let plain = b"inner gzip, outer brotli".repeat(50);
    let sent = brotli(&gzip(&plain));
    let got = streamed(&["gzip", "br"], &sent, &[1, 7, 300]);
    assert_eq!(got, plain_digest(&plain, sent.len()));
}

#[test]
fn identity_and_encoded_forms_digest_alike() {
    let plain = b"the same bytes, however they were sent\n".repeat(100);
    let identity = digest_whole(&[], &plain, 1 << 20);
    for (coding, sent) in [
        ("gzip", gzip(&plain)),
        ("x-gzip", gzip(&plain)),
        ("deflate", zlib(&plain)),
        ("deflate", raw_deflate(&plain)),
        ("br", brotli(&plain)),
    ] {
        let h = [Header::new("Content-Encoding", coding)];
        let got = digest_whole(&h, &sent, 1 << 20);
        assert!(got.same_content(&identity), "{coding}: {got:?}");
        assert_eq!(got.sent_len, sent.len() as u64);
        assert_eq!(got.len, plain.len() as u64);
    }
}

#[test]
fn corrupt_data_is_digested_as_sent_and_says_why() {
    let sent = b"not gzip at all".to_vec();
    let got = streamed(&["gzip"], &sent, &[3]);
    assert_eq!((got.len, got.xxh3), (sent.len() as u64, xxh3_128(&sent)));
    let why = got.undecodable.expect("undecodable");
    assert!(why.starts_with("undecodable gzip: "), "{why}");
}

#[test]
fn truncated_stream_is_undecodable() {
    let sent = gzip(&b"abc".repeat(1000));
    let cut = &sent[..sent.len() / 2];
    let got = streamed(&["gzip"], cut, &[]);
    assert_eq!(got.len, cut.len() as u64);
    assert!(got.undecodable.is_some(), "{got:?}");
}

#[test]
fn unsupported_coding_names_it() {
    let got = streamed(&["compress"], b"\x1f\x9d", &[]);
    assert_eq!(
        got.undecodable.as_deref(),
        Some("undecodable compress: unsupported content coding")
    );
    assert_eq!(got.xxh3, xxh3_128(b"\x1f\x9d"));
}

#[test]
fn decoding_is_bounded() {
    let plain = vec![0u8; 10_000];
    let sent = gzip(&plain);
    let mut d = BodyDigester::new(codings(&["gzip"]), 1000);
    d.update(&sent);
    let got = d.finish();
    assert_eq!(got.len, sent.len() as u64, "compared as sent");
    let why = got.undecodable.expect("over the bound");
    assert!(why.contains("exceeds the limit of 1000 bytes"), "{why}");
}

#[test]
fn codings_are_listed_lowercase_without_identity() {
    let h = [
        Header::new("Content-Encoding", "GZIP, identity"),
        Header::new("content-encoding", " br "),
    ];
    assert_eq!(content_codings(&h), ["gzip", "br"]);
}

#[test]
fn summary_shows_length_and_hash_prefix() {
    assert_eq!(
        summary(0, xxh3_128(b"")),
        "<0 bytes, xxh3 99aa06d3014798d8>"
    );
}
