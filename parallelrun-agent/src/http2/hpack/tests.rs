use super::*;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).expect("hex")
        })
        .collect()
}

/// An integer with an `n`-bit prefix after the `flags` bits (§5.1).
pub(crate) fn int(flags: u8, n: u32, mut value: u32) -> Vec<u8> {
    let max = (1u32 << n) - 1;
    if value < max {
        return vec![flags | value as u8];
    }
    let mut out = vec![flags | max as u8];
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
    out
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut out = int(0, 7, s.len() as u32);
    out.extend_from_slice(s);
    out
}

/// Literal with incremental indexing, new name.
pub(crate) fn insert(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x40];
    out.extend(string(name.as_bytes()));
    out.extend(string(value.as_bytes()));
    out
}

/// Literal with incremental indexing, indexed name.
fn insert_named(index: u32, value: &str) -> Vec<u8> {
    let mut out = int(0x40, 6, index);
    out.extend(string(value.as_bytes()));
    out
}

fn indexed(index: u32) -> Vec<u8> {
    int(0x80, 7, index)
}

fn size_update(size: u32) -> Vec<u8> {
    int(0x20, 5, size)
}

fn pairs(list: &HeaderList) -> Vec<(String, String)> {
    list.all()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn limits(table: usize) -> DecoderLimits {
    DecoderLimits {
        max_table_size: table,
        ..DecoderLimits::default()
    }
}

/// Runs a sequence of RFC 7541 Appendix C blocks, checking each list and
/// the table size after it.
/// One Appendix C step: the block in hex, the list, the table size after.
type Step<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);

fn series(table: usize, steps: &[Step<'_>]) {
    let mut d = Decoder::new(limits(table));
    for (i, (block, want, size)) in steps.iter().enumerate() {
        let list = d
            .decode(&hex(block))
            .unwrap_or_else(|e| panic!("step {i}: {e}"));
        assert_eq!(pairs(&list), owned(want), "step {i}");
        assert_eq!(d.table_size(), *size, "table size after step {i}");
        assert!(!list.misplaced_pseudo());
    }
}

const REQ1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "www.example.com"),
    (":path", "/"),
];
const REQ2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "www.example.com"),
    (":path", "/"),
    ("cache-control", "no-cache"),
];
const REQ3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "www.example.com"),
    (":path", "/index.html"),
    ("custom-key", "custom-value"),
];
const RESP1: &[(&str, &str)] = &[
    (":status", "302"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESP2: &[(&str, &str)] = &[
    (":status", "307"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESP3: &[(&str, &str)] = &[
    (":status", "200"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ("location", "https://www.example.com"),
    ("content-encoding", "gzip"),
    (
        "set-cookie",
        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ),
];

#[test]
fn rfc7541_c3_requests_without_huffman() {
    series(
        4096,
        &[
            (
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                REQ1,
                57,
            ),
            ("8286 84be 5808 6e6f 2d63 6163 6865", REQ2, 110),
            (
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                REQ3,
                164,
            ),
        ],
    );
}

#[test]
fn rfc7541_c4_requests_with_huffman() {
    series(
        4096,
        &[
            ("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", REQ1, 57),
            ("8286 84be 5886 a8eb 1064 9cbf", REQ2, 110),
            (
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                REQ3,
                164,
            ),
        ],
    );
}

#[test]
fn rfc7541_c5_responses_without_huffman() {
    series(
        256,
        &[
            (
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
                 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
                 6c65 2e63 6f6d",
                RESP1,
                222,
            ),
            ("4803 3330 37c1 c0bf", RESP2, 222),
            (
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
                 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
                 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
                 3d31",
                RESP3,
                215,
            ),
        ],
    );
}

#[test]
fn rfc7541_c6_responses_with_huffman() {
    series(
        256,
        &[
            (
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                RESP1,
                222,
            ),
            ("4883 640e ffc1 c0bf", RESP2, 222),
            (
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                RESP3,
                215,
            ),
        ],
    );
}

#[test]
fn huffman_code_matches_appendix_b() {
    // Codes as Appendix B lists them (hex, aligned to the LSB).
    for (sym, code, len) in [
        (0u16, 0x1ff8u32, 13u8),
        (1, 0x7f_ffd8, 23),
        (10, 0x3fff_fffc, 30),
        (b' ' as u16, 0x14, 6),
        (b'0' as u16, 0x0, 5),
        (b'a' as u16, 0x3, 5),
        (b'z' as u16, 0x7b, 7),
        (b'~' as u16, 0x1ffd, 13),
        (127, 0xfff_fffc, 28),
        (128, 0xf_ffe6, 20),
        (203, 0x7ff_ffde, 27),
        (220, 0xfff_fffd, 28),
        (255, 0x3ff_ffee, 26),
        (256, 0x3fff_ffff, 30),
    ] {
        assert_eq!(huffman::code_of(sym), Some((code, len)), "symbol {sym}");
    }
    // The code is complete: the Kraft sum is exactly 1.
    let kraft: u64 = huffman::LENGTHS
        .iter()
        .map(|&l| 1u64 << (30 - u32::from(l)))
        .sum();
    assert_eq!(kraft, 1 << 30);
}

#[test]
fn huffman_round_trips_every_byte() {
    let all: Vec<u8> = (0..=255).collect();
    for input in [&all[..], b"", b"a", b"www.example.com", &[0xff; 9]] {
        let coded = huffman::encode(input);
        let mut out = Vec::new();
        huffman::decode(&coded, &mut out).unwrap();
        assert_eq!(out, input);
    }
    assert_eq!(huffman::encode(b"no-cache"), hex("a8eb 1064 9cbf"));
}

#[test]
fn huffman_rejects_eos_and_bad_padding() {
    let mut out = Vec::new();
    // EOS (30 ones) then padding: the symbol is an error.
    assert_eq!(
        huffman::decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
        Err(HuffmanError::Eos)
    );
    // 'a' (00011) padded with zeros instead of ones.
    assert_eq!(
        huffman::decode(&[0b0001_1000], &mut out),
        Err(HuffmanError::Padding)
    );
    // A whole byte of padding.
    assert_eq!(
        huffman::decode(&[0b0001_1111, 0xff], &mut out),
        Err(HuffmanError::Padding)
    );
    out.clear();
    assert_eq!(huffman::decode(&[0b0001_1111], &mut out), Ok(()));
    assert_eq!(out, b"a");
}

#[test]
fn integers_bounds() {
    let mut input = Input {
        rest: &[0x1f, 0x9a, 0x0a],
    };
    assert_eq!(input.integer(5), Ok(1337));
    assert!(input.rest.is_empty());
    let mut input = Input {
        rest: &[0x1f, 0x9a],
    };
    assert_eq!(input.integer(5), Err(HpackError::Truncated));
    let mut input = Input {
        rest: &[0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f],
    };
    assert_eq!(input.integer(7), Err(HpackError::IntegerOverflow));
    let mut input = Input {
        rest: &[0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
    };
    assert_eq!(input.integer(7), Err(HpackError::IntegerOverflow));
    let max = int(0, 7, u32::MAX);
    assert_eq!(Input { rest: &max }.integer(7), Ok(u32::MAX));
}

#[test]
fn table_size_updates_are_honoured_and_bounded() {
    let mut d = Decoder::new(DecoderLimits::default());
    let mut block = insert("a", "1");
    block.extend(insert("b", "2"));
    d.decode(&block).unwrap();
    assert_eq!((d.table_len(), d.table_size()), (2, 68));
    // Shrinking evicts the oldest.
    let mut block = size_update(40);
    block.extend(indexed(62));
    let list = d.decode(&block).unwrap();
    assert_eq!(list.get("b"), Some(&b"2"[..]));
    assert_eq!((d.table_len(), d.table_max()), (1, 40));
    assert_eq!(
        d.decode(&indexed(63)),
        Err(HpackError::InvalidIndex { index: 63 })
    );
    // Two updates at the start of a block (§4.2): 0 then back up.
    let mut d = Decoder::new(DecoderLimits::default());
    d.decode(&insert("a", "1")).unwrap();
    let mut block = size_update(0);
    block.extend(size_update(4096));
    block.extend(insert("c", "3"));
    d.decode(&block).unwrap();
    assert_eq!(d.table_len(), 1);
    // Above the allowed maximum.
    assert_eq!(
        d.decode(&size_update(4097)),
        Err(HpackError::TableSizeTooLarge {
            size: 4097,
            max: 4096
        })
    );
    // After a field.
    let mut block = indexed(2);
    block.extend(size_update(100));
    assert_eq!(d.decode(&block), Err(HpackError::MisplacedSizeUpdate));
    // SETTINGS_HEADER_TABLE_SIZE raised: a larger update is allowed.
    d.set_max_table_size(65_536);
    d.decode(&size_update(65_536)).unwrap();
    assert_eq!(d.table_max(), 65_536);
    d.set_max_table_size(1024);
    assert!(matches!(
        d.decode(&size_update(2048)),
        Err(HpackError::TableSizeTooLarge { .. })
    ));
}

#[test]
fn an_entry_larger_than_the_table_empties_it() {
    let mut d = Decoder::new(limits(64));
    d.decode(&insert("a", "1")).unwrap();
    d.decode(&insert("big", &"x".repeat(40))).unwrap();
    assert_eq!((d.table_len(), d.table_size()), (0, 0));
    assert_eq!(d.inserted(), 2);
}

#[test]
fn the_header_list_is_bounded() {
    let mut d = Decoder::new(DecoderLimits {
        max_header_list_size: 100,
        ..DecoderLimits::default()
    });
    let mut block = Vec::new();
    for _ in 0..3 {
        // 10 + 20 + 32 = 62 each.
        block.extend(insert("0123456789", "01234567890123456789"));
    }
    assert_eq!(
        d.decode(&block),
        Err(HpackError::HeaderListTooLarge { limit: 100 })
    );
    // A single literal longer than the limit fails before it is read.
    let mut block = vec![0x00];
    block.extend(int(0, 7, 1000));
    assert_eq!(
        d.decode(&block),
        Err(HpackError::Truncated),
        "length past the block"
    );
    let mut block = vec![0x00];
    block.extend(string(&[b'a'; 200]));
    block.extend(string(b"v"));
    assert_eq!(
        d.decode(&block),
        Err(HpackError::HeaderListTooLarge { limit: 100 })
    );
}

#[test]
fn invalid_and_truncated_blocks() {
    let mut d = Decoder::new(DecoderLimits::default());
    assert_eq!(
        d.decode(&indexed(0)),
        Err(HpackError::InvalidIndex { index: 0 })
    );
    // An error leaves the table unknown: a fresh decoder for each case.
    let mut d = Decoder::new(DecoderLimits::default());
    assert_eq!(
        d.decode(&indexed(62)),
        Err(HpackError::InvalidIndex { index: 62 })
    );
    assert!(!d.in_step());
    let block = insert("custom-key", "custom-value");
    for n in 1..block.len() {
        let mut d = Decoder::new(DecoderLimits::default());
        assert_eq!(d.decode(&block[..n]), Err(HpackError::Truncated), "{n}");
    }
    // A literal whose Huffman string is invalid.
    let mut block = vec![0x00, 0x81, 0x00];
    block.extend(string(b"v"));
    assert_eq!(
        d.decode(&block),
        Err(HpackError::Huffman(HuffmanError::Padding))
    );
    assert_eq!(d.decode(&[]), Ok(HeaderList::new()));
}

#[test]
fn pseudo_headers_apart_and_misplaced_ones_flagged() {
    let mut d = Decoder::new(DecoderLimits::default());
    // :method GET, :path /, :status 200, user-agent x.
    let mut block = indexed(2);
    block.extend(indexed(4));
    block.extend(indexed(8));
    block.extend(insert("user-agent", "x"));
    let list = d.decode(&block).unwrap();
    assert_eq!(list.pseudo(Pseudo::Method), Some(&b"GET"[..]));
    assert_eq!(list.pseudo(Pseudo::Path), Some(&b"/"[..]));
    assert_eq!(list.pseudo(Pseudo::Status), Some(&b"200"[..]));
    assert_eq!(list.pseudo(Pseudo::Authority), None);
    assert_eq!(list.len(), 1);
    assert_eq!(list.get("User-Agent"), Some(&b"x"[..]));
    assert!(!list.misplaced_pseudo());
    assert_eq!(
        list.size(),
        7 + 3 + 32 + 5 + 1 + 32 + 7 + 3 + 32 + 10 + 1 + 32
    );
    // After a regular field, repeated, unknown.
    for block in [
        [insert("a", "b"), indexed(2)].concat(),
        [indexed(2), indexed(3)].concat(),
        insert(":foo", "bar"),
    ] {
        let list = Decoder::new(DecoderLimits::default())
            .decode(&block)
            .unwrap();
        assert!(list.misplaced_pseudo(), "{block:?}");
    }
    let list = d.decode(&[indexed(2), indexed(3)].concat()).unwrap();
    assert_eq!(list.pseudo(Pseudo::Method), Some(&b"GET"[..]), "first kept");
}

#[test]
fn joined_decoder_reports_unseen_entries() {
    let mut d = Decoder::joined(DecoderLimits::default());
    assert!(!d.in_step());
    assert_eq!(d.known_since(), Some(0));
    // An entry from before it joined.
    assert_eq!(
        d.decode(&indexed(62)),
        Err(HpackError::UnknownIndex { index: 62 })
    );
    // Static entries always resolve.
    let list = d.decode(&indexed(2)).unwrap();
    assert_eq!(list.pseudo(Pseudo::Method), Some(&b"GET"[..]));
    // Entries inserted since resolve, newest first; older ones are unknown.
    d.decode(&insert("x-a", "1")).unwrap();
    d.decode(&insert("x-b", "2")).unwrap();
    let list = d.decode(&[indexed(62), indexed(63)].concat()).unwrap();
    assert_eq!(pairs(&list), owned(&[("x-b", "2"), ("x-a", "1")]));
    assert_eq!(
        d.decode(&indexed(64)),
        Err(HpackError::UnknownIndex { index: 64 })
    );
    // A literal naming an unknown entry's name.
    assert_eq!(
        d.decode(&insert_named(70, "v")),
        Err(HpackError::UnknownIndex { index: 70 })
    );
    assert_eq!(d.inserted(), 3);
}

#[test]
fn unknown_index_keeps_decoding_the_block() {
    let mut d = Decoder::joined(DecoderLimits::default());
    // An unknown reference, then an insertion with an unknown name, then a
    // known insertion: all three advance the table as the encoder's does.
    let block = [indexed(62), insert_named(62, "lost"), insert("x-c", "3")].concat();
    let mut list = HeaderList::new();
    assert_eq!(
        d.decode_into(&block, &mut list),
        Err(HpackError::UnknownIndex { index: 62 })
    );
    assert_eq!(pairs(&list), owned(&[("x-c", "3")]));
    assert_eq!((d.inserted(), d.table_len()), (2, 2));
    // x-c is newest (62), the entry with the unknown name next (63).
    let list = d.decode(&indexed(62)).unwrap();
    assert_eq!(list.get("x-c"), Some(&b"3"[..]));
    assert_eq!(
        d.decode(&indexed(63)),
        Err(HpackError::UnknownIndex { index: 63 })
    );
}

#[test]
fn joined_decoder_comes_in_step() {
    // A size update to 0 leaves no room for any unknown entry.
    let mut d = Decoder::joined(DecoderLimits::default());
    d.decode(&[size_update(0), size_update(4096)].concat())
        .unwrap();
    assert!(d.in_step());
    assert_eq!(
        d.decode(&indexed(62)),
        Err(HpackError::InvalidIndex { index: 62 })
    );
    // A known maximum filled by known entries.
    let mut d = Decoder::joined(DecoderLimits::default());
    d.decode(&[size_update(99), insert("a", "1")].concat())
        .unwrap();
    assert!(!d.in_step(), "34 of 99 bytes known: room for more");
    d.decode(&insert("b", "2")).unwrap();
    assert!(d.in_step(), "68 + 32 > 99: no room for an unknown entry");
    // Without a known maximum, insertions alone never prove it.
    let mut d = Decoder::joined(limits(64));
    d.decode(&insert("a", "1")).unwrap();
    d.decode(&insert("b", "2")).unwrap();
    assert!(!d.in_step());
}

#[test]
fn a_failed_block_desyncs_the_decoder() {
    let mut d = Decoder::new(DecoderLimits::default());
    d.decode(&insert("x-a", "1")).unwrap();
    let block = [insert("x-b", "2"), vec![0x40, 0x05]].concat();
    assert_eq!(d.decode(&block), Err(HpackError::Truncated));
    assert!(!d.in_step());
    assert_eq!(d.known_since(), Some(2));
    assert_eq!(
        d.decode(&indexed(62)),
        Err(HpackError::UnknownIndex { index: 62 })
    );
    d.decode(&insert("x-c", "3")).unwrap();
    let list = d.decode(&indexed(62)).unwrap();
    assert_eq!(list.get("x-c"), Some(&b"3"[..]));
    // Told from outside (a header block was lost).
    d.desync();
    assert_eq!(d.table_len(), 0);
    assert_eq!(d.known_since(), Some(3));
}

#[test]
fn joined_mid_connection_matches_a_decoder_that_saw_everything() {
    // The encoder's side: C.5's three responses. A decoder that joins
    // after the first knows only what the second and third insert.
    let blocks = [
        hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d",
        ),
        hex("4803 3330 37c1 c0bf"),
    ];
    let mut late = Decoder::joined(limits(256));
    // Block 2 inserts :status 307 (known) and names 3 entries from block 1.
    assert_eq!(
        late.decode(&blocks[1]),
        Err(HpackError::UnknownIndex { index: 65 })
    );
    let list = late.decode(&indexed(62)).unwrap();
    assert_eq!(list.pseudo(Pseudo::Status), Some(&b"307"[..]));
    let mut full = Decoder::new(limits(256));
    for block in &blocks {
        full.decode(block).unwrap();
    }
    assert_eq!(
        full.decode(&indexed(62)).unwrap().pseudo(Pseudo::Status),
        Some(&b"307"[..])
    );
}

#[test]
fn never_indexed_fields_are_marked() {
    let mut d = Decoder::new(DecoderLimits::default());
    // authorization (static 23) never indexed; a new name without indexing.
    let mut block = int(0x10, 4, 23);
    block.extend(string(b"secret"));
    block.push(0x00);
    block.extend(string(b"x-plain"));
    block.extend(string(b"1"));
    let list = d.decode(&block).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list.never_indexed().collect::<Vec<_>>(),
        [(&b"authorization"[..], &b"secret"[..])]
    );
    // Neither was inserted.
    assert_eq!(d.table_len(), 0);
}

#[test]
fn only_unknown_index_is_recoverable() {
    assert!(HpackError::UnknownIndex { index: 62 }.is_recoverable());
    assert!(!HpackError::InvalidIndex { index: 62 }.is_recoverable());
    assert!(!HpackError::Truncated.is_recoverable());
}
