//! The three layers together, and arbitrary input through each.

use proptest::prelude::*;

use super::block::{BlockLimits, HeaderBlockAssembler};
use super::frame::{FRAME_HEADER_LEN, FrameReader, PREFACE, Preface, Read, flags, preface};
use super::hpack::{Decoder, DecoderLimits, HeaderList, Pseudo};

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A decoded list, pseudo-headers first, as owned pairs.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Everything one direction yields: header lists per stream, and errors.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    lists: Vec<(u32, Fields)>,
    errors: usize,
}

/// Runs bytes through reader, assembler and decoder, checking the bounds.
/// Errors are counted; a frame error skips the frame when its extent is
/// known and bounded, else ends the run.
fn run(bytes: &[u8], decoder: &mut Decoder) -> Seen {
    let block_limits = BlockLimits {
        max_block: 4096,
        max_fragments: 16,
    };
    let mut reader = FrameReader::default();
    let mut assembler = HeaderBlockAssembler::new(block_limits);
    let mut list = HeaderList::new();
    let mut seen = Seen::default();
    let mut rest = match preface(bytes) {
        Preface::Complete => &bytes[PREFACE.len()..],
        _ => bytes,
    };
    loop {
        match reader.read(rest) {
            Ok(Read::Incomplete { needed }) => {
                assert!(needed > rest.len());
                assert!(needed <= FRAME_HEADER_LEN + reader.max_frame_size() as usize);
                break;
            }
            Ok(Read::Frame(frame, used)) => {
                assert!(used >= FRAME_HEADER_LEN && used <= rest.len());
                rest = &rest[used..];
                match assembler.push(&frame) {
                    Ok(Some(block)) => {
                        assert!(block.bytes.len() <= block_limits.max_block);
                        let stream = block.stream_id;
                        match decoder.decode_into(block.bytes, &mut list) {
                            Ok(()) => {
                                assert!(list.size() <= decoder.limits().max_header_list_size);
                                let fields =
                                    list.all().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
                                seen.lists.push((stream, fields));
                            }
                            Err(_) => seen.errors += 1,
                        }
                        assert!(decoder.table_size() <= decoder.table_max());
                    }
                    Ok(None) => {}
                    Err(_) => {
                        seen.errors += 1;
                        decoder.desync();
                    }
                }
                assert!(assembler.buffered() <= block_limits.max_block);
            }
            Err(error) => {
                seen.errors += 1;
                match rest.get(error.frame_len..) {
                    Some(after) if error.frame_len >= FRAME_HEADER_LEN => rest = after,
                    _ => break,
                }
            }
        }
    }
    seen
}

#[test]
fn a_request_stream_decodes_end_to_end() {
    let mut stream = PREFACE.to_vec();
    stream.extend(frame(4, 0, 0, &[]));
    // C.3.1 split over HEADERS and CONTINUATION, a DATA frame, then C.3.2.
    let first = [
        0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p', b'l',
        b'e', b'.', b'c', b'o', b'm',
    ];
    stream.extend(frame(
        1,
        flags::PRIORITY,
        1,
        &[[0, 0, 0, 0, 16].as_slice(), &first[..6]].concat(),
    ));
    stream.extend(frame(9, flags::END_HEADERS, 1, &first[6..]));
    stream.extend(frame(0, flags::END_STREAM, 1, b"body"));
    let second = [
        0x82, 0x86, 0x84, 0xbe, 0x58, 0x08, b'n', b'o', b'-', b'c', b'a', b'c', b'h', b'e',
    ];
    stream.extend(frame(
        1,
        flags::END_HEADERS | flags::END_STREAM | flags::PADDED,
        3,
        &[[3].as_slice(), &second, &[0, 0, 0]].concat(),
    ));
    let mut decoder = Decoder::new(DecoderLimits::default());
    let seen = run(&stream, &mut decoder);
    assert_eq!(seen.errors, 0);
    assert_eq!(seen.lists.len(), 2);
    assert_eq!(seen.lists[0].0, 1);
    assert_eq!(seen.lists[1].0, 3);
    let last = &seen.lists[1].1;
    assert!(last.contains(&(b":authority".to_vec(), b"www.example.com".to_vec())));
    assert!(last.contains(&(b"cache-control".to_vec(), b"no-cache".to_vec())));
    let mut list = HeaderList::new();
    decoder.decode_into(&[0x82], &mut list).unwrap();
    assert_eq!(list.pseudo(Pseudo::Method), Some(&b"GET"[..]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes never panic the frame reader, the assembler or the
    /// decoder, and every bound holds (checked in `run`).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        run(&bytes, &mut Decoder::new(DecoderLimits::default()));
        run(&bytes, &mut Decoder::joined(DecoderLimits { max_table_size: 256, max_header_list_size: 512 }));
    }

    /// Arbitrary header blocks never panic the decoder, in step or joined.
    #[test]
    fn arbitrary_blocks_never_panic(blocks in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..256), 1..8)
    ) {
        let limits = DecoderLimits { max_table_size: 512, max_header_list_size: 1024 };
        for mut decoder in [Decoder::new(limits), Decoder::joined(limits)] {
            let mut list = HeaderList::new();
            for block in &blocks {
                let _ = decoder.decode_into(block, &mut list);
                prop_assert!(list.size() <= limits.max_header_list_size);
                prop_assert!(decoder.table_size() <= decoder.table_max());
                prop_assert!(decoder.table_max() <= limits.max_table_size);
            }
        }
    }

    /// Valid frames of any type, any flags, cut anywhere: never a panic,
    /// and a prefix is never taken for a frame.
    #[test]
    fn frames_cut_anywhere(kind in 0u8..12, fl in any::<u8>(), stream in any::<u32>(),
                           payload in proptest::collection::vec(any::<u8>(), 0..64),
                           cut in any::<usize>()) {
        let bytes = frame(kind, fl, stream, &payload);
        let cut = cut % (bytes.len() + 1);
        let mut reader = FrameReader::default();
        match reader.read(&bytes[..cut]) {
            Ok(Read::Frame(_, used)) => prop_assert_eq!(used, bytes.len()),
            Ok(Read::Incomplete { needed }) => prop_assert!(needed > cut),
            Err(error) => prop_assert_eq!(error.frame_len, bytes.len()),
        }
    }
}
