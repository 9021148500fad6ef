use super::*;
use crate::http2::frame::PriorityFields;

fn headers(stream_id: u32, end_headers: bool, fragment: &[u8]) -> Frame<'_> {
    Frame::Headers {
        stream_id,
        end_stream: true,
        end_headers,
        priority: None,
        fragment,
    }
}

fn continuation(stream_id: u32, end_headers: bool, fragment: &[u8]) -> Frame<'_> {
    Frame::Continuation {
        stream_id,
        end_headers,
        fragment,
    }
}

#[test]
fn a_block_in_one_frame_is_borrowed() {
    let mut a = HeaderBlockAssembler::default();
    let bytes = b"\x82\x86".to_vec();
    let frame = headers(1, true, &bytes);
    let block = a.push(&frame).unwrap().expect("complete");
    assert_eq!(
        block,
        HeaderBlock {
            stream_id: 1,
            end_stream: true,
            promised_stream_id: None,
            bytes: b"\x82\x86"
        }
    );
    assert!(std::ptr::eq(block.bytes.as_ptr(), bytes.as_ptr()));
    assert!(!a.is_open());
    assert_eq!(a.buffered(), 0);
}

#[test]
fn continuation_frames_join_until_end_headers() {
    let mut a = HeaderBlockAssembler::default();
    assert_eq!(a.push(&headers(3, false, b"ab")), Ok(None));
    assert!(a.is_open());
    assert_eq!(a.push(&continuation(3, false, b"")), Ok(None));
    assert_eq!(a.push(&continuation(3, false, b"cd")), Ok(None));
    let block = a
        .push(&continuation(3, true, b"e"))
        .unwrap()
        .expect("complete");
    assert_eq!(block.bytes, b"abcde");
    assert_eq!(block.stream_id, 3);
    assert!(block.end_stream);
    assert!(!a.is_open());
    // Other frames pass between blocks.
    let ping = Frame::Ping {
        ack: false,
        data: [0; 8],
    };
    assert_eq!(a.push(&ping), Ok(None));
    let data = Frame::Data {
        stream_id: 3,
        end_stream: false,
        data: b"x",
        padding: 0,
    };
    assert_eq!(a.push(&data), Ok(None));
}

#[test]
fn push_promise_blocks() {
    let mut a = HeaderBlockAssembler::default();
    let frame = Frame::PushPromise {
        stream_id: 1,
        end_headers: false,
        promised_stream_id: 2,
        fragment: b"p",
    };
    assert_eq!(a.push(&frame), Ok(None));
    let block = a
        .push(&continuation(1, true, b"q"))
        .unwrap()
        .expect("complete");
    assert_eq!(block.promised_stream_id, Some(2));
    assert!(!block.end_stream);
    assert_eq!(block.bytes, b"pq");
}

#[test]
fn continuation_on_another_stream_is_an_error() {
    let mut a = HeaderBlockAssembler::default();
    a.push(&headers(1, false, b"ab")).unwrap();
    assert_eq!(
        a.push(&continuation(3, true, b"cd")),
        Err(BlockError::WrongStream {
            open: 1,
            stream_id: 3
        })
    );
    // The block was dropped: a CONTINUATION now has nothing to continue.
    assert!(!a.is_open());
    assert_eq!(
        a.push(&continuation(1, true, b"cd")),
        Err(BlockError::UnexpectedContinuation { stream_id: 1 })
    );
}

#[test]
fn frames_interleaved_in_a_block_are_an_error() {
    let interlopers = [
        Frame::Data {
            stream_id: 1,
            end_stream: false,
            data: b"x",
            padding: 0,
        },
        headers(5, true, b"x"),
        Frame::Priority {
            stream_id: 1,
            priority: PriorityFields {
                exclusive: false,
                dependency: 0,
                weight: 0,
            },
        },
        Frame::Ping {
            ack: false,
            data: [0; 8],
        },
        Frame::WindowUpdate {
            stream_id: 0,
            increment: 1,
        },
    ];
    for frame in interlopers {
        let mut a = HeaderBlockAssembler::default();
        a.push(&headers(1, false, b"ab")).unwrap();
        assert_eq!(
            a.push(&frame),
            Err(BlockError::Interleaved {
                open: 1,
                kind: frame.kind(),
                stream_id: frame.stream_id()
            })
        );
        assert!(!a.is_open());
        assert_eq!(a.buffered(), 0);
    }
}

#[test]
fn a_continuation_flood_is_bounded() {
    let limits = BlockLimits {
        max_block: 100,
        max_fragments: 10,
    };
    // By size.
    let mut a = HeaderBlockAssembler::new(limits);
    a.push(&headers(1, false, &[0; 60])).unwrap();
    assert_eq!(a.push(&continuation(1, false, &[0; 40])), Ok(None));
    assert_eq!(
        a.push(&continuation(1, false, &[0; 1])),
        Err(BlockError::TooLarge { limit: 100 })
    );
    assert_eq!(a.buffered(), 0);
    assert_eq!(
        a.push(&headers(1, true, &[0; 101])),
        Err(BlockError::TooLarge { limit: 100 })
    );
    // By frame count: empty CONTINUATION frames add nothing but count.
    let mut a = HeaderBlockAssembler::new(limits);
    a.push(&headers(1, false, b"")).unwrap();
    for _ in 1..10 {
        assert_eq!(a.push(&continuation(1, false, b"")), Ok(None));
    }
    assert_eq!(
        a.push(&continuation(1, true, b"")),
        Err(BlockError::TooManyFragments { limit: 10 })
    );
    // The next block assembles.
    let block = a.push(&headers(3, true, b"ok")).unwrap().expect("complete");
    assert_eq!(block.bytes, b"ok");
}
