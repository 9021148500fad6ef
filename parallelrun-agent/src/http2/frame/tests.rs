use super::*;

/// A frame's bytes: header then payload.
pub(crate) fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        length: payload.len() as u32,
        kind: FrameType::from_code(kind),
        flags,
        stream_id,
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(payload);
    out
}

fn read_one(bytes: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    match FrameReader::default().read(bytes)? {
        Read::Frame(frame, used) => Ok((frame, used)),
        Read::Incomplete { needed } => panic!("incomplete, {needed} needed"),
    }
}

fn malformed(bytes: &[u8]) -> Malformed {
    read_one(bytes).expect_err("malformed").reason
}

#[test]
fn preface_whole_prefix_and_absent() {
    assert_eq!(preface(PREFACE), Preface::Complete);
    let mut more = PREFACE.to_vec();
    more.extend_from_slice(&frame(4, 0, 0, &[]));
    assert_eq!(preface(&more), Preface::Complete);
    for n in 0..PREFACE.len() {
        assert_eq!(preface(&PREFACE[..n]), Preface::Partial, "prefix {n}");
    }
    assert_eq!(preface(b"GET / HTTP/1.1\r\n"), Preface::Absent);
    assert_eq!(preface(b"PRI * HTTP/2.1"), Preface::Absent);
    assert_eq!(preface(b"P"), Preface::Partial);
    assert_eq!(preface(b"X"), Preface::Absent);
}

#[test]
fn header_round_trip() {
    let header = FrameHeader {
        length: 0x12_3456,
        kind: FrameType::Headers,
        flags: 0x25,
        stream_id: 0x7fff_ffff,
    };
    assert_eq!(FrameHeader::parse(&header.encode()), Some(header));
    // The reserved bit is ignored.
    let mut bytes = header.encode();
    bytes[5] |= 0x80;
    assert_eq!(FrameHeader::parse(&bytes), Some(header));
    assert_eq!(FrameHeader::parse(&bytes[..8]), None);
    for code in 0..=255u8 {
        assert_eq!(FrameType::from_code(code).code(), code);
    }
}

#[test]
fn data_plain_and_padded() {
    let bytes = frame(0, flags::END_STREAM, 1, b"hello");
    let (f, used) = read_one(&bytes).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(
        f,
        Frame::Data {
            stream_id: 1,
            end_stream: true,
            data: b"hello",
            padding: 0
        }
    );
    let bytes = frame(0, flags::PADDED, 3, b"\x03hi\0\0\0");
    assert_eq!(
        read_one(&bytes).unwrap().0,
        Frame::Data {
            stream_id: 3,
            end_stream: false,
            data: b"hi",
            padding: 4
        }
    );
    // All padding, no data.
    let bytes = frame(0, flags::PADDED, 3, b"\x02\0\0");
    assert!(matches!(
        read_one(&bytes).unwrap().0,
        Frame::Data { data: b"", .. }
    ));
    // Padding as long as the rest, or longer: an error, not a panic.
    assert_eq!(
        malformed(&frame(0, flags::PADDED, 3, b"\x03\0\0")),
        Malformed::Padding { pad: 3, length: 3 }
    );
    assert_eq!(
        malformed(&frame(0, flags::PADDED, 3, b"")),
        Malformed::Short { length: 0, need: 1 }
    );
    assert_eq!(malformed(&frame(0, 0, 0, b"x")), Malformed::StreamZero);
}

#[test]
fn headers_with_priority_and_padding() {
    let plain = frame(1, flags::END_HEADERS, 5, b"\x82\x86");
    assert_eq!(
        read_one(&plain).unwrap().0,
        Frame::Headers {
            stream_id: 5,
            end_stream: false,
            end_headers: true,
            priority: None,
            fragment: b"\x82\x86"
        }
    );
    let mut payload = vec![2]; // pad length
    payload.extend_from_slice(&[0x80, 0, 0, 3, 15]); // exclusive, depends on 3, weight 15
    payload.extend_from_slice(b"\x82");
    payload.extend_from_slice(&[0, 0]);
    let bytes = frame(
        1,
        flags::PADDED | flags::PRIORITY | flags::END_STREAM,
        7,
        &payload,
    );
    assert_eq!(
        read_one(&bytes).unwrap().0,
        Frame::Headers {
            stream_id: 7,
            end_stream: true,
            end_headers: false,
            priority: Some(PriorityFields {
                exclusive: true,
                dependency: 3,
                weight: 15
            }),
            fragment: b"\x82"
        }
    );
    // Priority fields cut short by the payload, or eaten by padding.
    assert_eq!(
        malformed(&frame(1, flags::PRIORITY, 7, &[0, 0, 0])),
        Malformed::Short { length: 3, need: 5 }
    );
    assert_eq!(
        malformed(&frame(
            1,
            flags::PRIORITY | flags::PADDED,
            7,
            &[2, 0, 0, 0, 1, 9, 0]
        )),
        Malformed::Short { length: 7, need: 8 }
    );
    assert_eq!(malformed(&frame(1, 0, 0, b"")), Malformed::StreamZero);
}

#[test]
fn fixed_size_frames() {
    assert_eq!(
        read_one(&frame(2, 0, 9, &[0, 0, 0, 1, 255])).unwrap().0,
        Frame::Priority {
            stream_id: 9,
            priority: PriorityFields {
                exclusive: false,
                dependency: 1,
                weight: 255
            }
        }
    );
    assert!(matches!(
        malformed(&frame(2, 0, 9, &[0; 4])),
        Malformed::BadLength { length: 4, .. }
    ));
    assert_eq!(
        read_one(&frame(3, 0, 9, &[0, 0, 0, 8])).unwrap().0,
        Frame::RstStream {
            stream_id: 9,
            error_code: 8
        }
    );
    assert!(matches!(
        malformed(&frame(3, 0, 9, &[0; 5])),
        Malformed::BadLength { .. }
    ));
    assert_eq!(malformed(&frame(3, 0, 0, &[0; 4])), Malformed::StreamZero);
    assert_eq!(
        read_one(&frame(6, flags::ACK, 0, b"12345678")).unwrap().0,
        Frame::Ping {
            ack: true,
            data: *b"12345678"
        }
    );
    assert!(matches!(
        malformed(&frame(6, 0, 0, b"1234567")),
        Malformed::BadLength { .. }
    ));
    assert_eq!(
        malformed(&frame(6, 0, 1, b"12345678")),
        Malformed::NotStreamZero
    );
    assert_eq!(
        read_one(&frame(8, 0, 0, &[0x80, 0, 1, 0])).unwrap().0,
        Frame::WindowUpdate {
            stream_id: 0,
            increment: 256
        }
    );
    assert_eq!(
        read_one(&frame(8, 0, 3, &[0, 0, 0, 0])).unwrap().0,
        Frame::WindowUpdate {
            stream_id: 3,
            increment: 0
        }
    );
    assert!(matches!(
        malformed(&frame(8, 0, 3, &[0; 3])),
        Malformed::BadLength { .. }
    ));
}

#[test]
fn settings_frames() {
    let mut payload = Vec::new();
    for (id, value) in [(1u16, 65_536u32), (5, 1 << 20), (0x99, 7), (5, 32_768)] {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    let bytes = frame(4, 0, 0, &payload);
    let (Frame::Settings { ack, settings }, _) = read_one(&bytes).unwrap() else {
        panic!("not SETTINGS");
    };
    assert!(!ack);
    assert_eq!(settings.len(), 4);
    assert_eq!(settings.get(Settings::HEADER_TABLE_SIZE), Some(65_536));
    assert_eq!(settings.get(Settings::MAX_FRAME_SIZE), Some(32_768));
    assert_eq!(settings.get(Settings::ENABLE_PUSH), None);
    assert_eq!(settings.iter().nth(2), Some((0x99, 7)));
    assert!(matches!(
        read_one(&frame(4, flags::ACK, 0, &[])).unwrap().0,
        Frame::Settings { ack: true, settings } if settings.is_empty()
    ));
    assert!(matches!(
        malformed(&frame(4, flags::ACK, 0, &payload)),
        Malformed::BadLength { .. }
    ));
    assert!(matches!(
        malformed(&frame(4, 0, 0, &payload[..7])),
        Malformed::BadLength { length: 7, .. }
    ));
    assert_eq!(malformed(&frame(4, 0, 1, &[])), Malformed::NotStreamZero);
}

#[test]
fn push_promise_goaway_continuation_unknown() {
    let bytes = frame(
        5,
        flags::END_HEADERS | flags::PADDED,
        1,
        b"\x01\x80\0\0\x02\x82\0",
    );
    assert_eq!(
        read_one(&bytes).unwrap().0,
        Frame::PushPromise {
            stream_id: 1,
            end_headers: true,
            promised_stream_id: 2,
            fragment: b"\x82"
        }
    );
    assert_eq!(
        malformed(&frame(5, 0, 1, &[0, 0, 2])),
        Malformed::Short { length: 3, need: 4 }
    );
    let bytes = frame(7, 0, 0, b"\0\0\0\x05\0\0\0\x02debug");
    assert_eq!(
        read_one(&bytes).unwrap().0,
        Frame::GoAway {
            last_stream_id: 5,
            error_code: 2,
            debug: b"debug"
        }
    );
    assert!(matches!(
        malformed(&frame(7, 0, 0, &[0; 7])),
        Malformed::Short { length: 7, need: 8 }
    ));
    assert_eq!(
        malformed(&frame(7, 0, 3, &[0; 8])),
        Malformed::NotStreamZero
    );
    assert_eq!(
        read_one(&frame(9, flags::END_HEADERS, 1, b"ab")).unwrap().0,
        Frame::Continuation {
            stream_id: 1,
            end_headers: true,
            fragment: b"ab"
        }
    );
    assert_eq!(malformed(&frame(9, 0, 0, b"")), Malformed::StreamZero);

    let mut reader = FrameReader::default();
    let bytes = frame(0xfa, 0xff, 77, b"whatever");
    let Read::Frame(f, used) = reader.read(&bytes).unwrap() else {
        panic!("incomplete");
    };
    assert_eq!(used, bytes.len());
    assert_eq!(f.kind(), FrameType::Unknown(0xfa));
    assert_eq!(f.stream_id(), 77);
    assert_eq!((reader.frames(), reader.unknown_frames()), (1, 1));
}

#[test]
fn a_stream_of_frames_reads_in_order() {
    let mut stream = PREFACE.to_vec();
    stream.extend(frame(4, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
    stream.extend(frame(1, flags::END_HEADERS, 1, b"\x82"));
    stream.extend(frame(0x20, 0, 0, b"ext"));
    stream.extend(frame(0, flags::END_STREAM, 1, b"body"));
    assert_eq!(preface(&stream), Preface::Complete);
    let mut rest = &stream[PREFACE.len()..];
    let mut reader = FrameReader::default();
    let mut kinds = Vec::new();
    while !rest.is_empty() {
        let Read::Frame(f, used) = reader.read(rest).unwrap() else {
            panic!("incomplete");
        };
        kinds.push(f.kind());
        rest = &rest[used..];
    }
    assert_eq!(
        kinds,
        [
            FrameType::Settings,
            FrameType::Headers,
            FrameType::Unknown(0x20),
            FrameType::Data
        ]
    );
    assert_eq!(reader.unknown_frames(), 1);
}

#[test]
fn truncated_input_at_every_length_needs_more() {
    let frames = [
        frame(0, flags::PADDED, 1, b"\x02data\0\0"),
        frame(
            1,
            flags::PRIORITY | flags::END_HEADERS,
            1,
            &[0, 0, 0, 0, 1, 0x82],
        ),
        frame(4, 0, 0, &[0, 1, 0, 0, 0, 0]),
        frame(7, 0, 0, &[0; 12]),
        frame(9, 0, 3, b""),
    ];
    for bytes in &frames {
        let mut reader = FrameReader::default();
        for n in 0..bytes.len() {
            let needed = if n < FRAME_HEADER_LEN {
                FRAME_HEADER_LEN
            } else {
                bytes.len()
            };
            assert_eq!(
                reader.read(&bytes[..n]),
                Ok(Read::Incomplete { needed }),
                "{n} of {} bytes",
                bytes.len()
            );
        }
        assert!(matches!(reader.read(bytes), Ok(Read::Frame(_, used)) if used == bytes.len()));
        assert_eq!(reader.frames(), 1);
    }
}

#[test]
fn oversized_frames_fail_at_the_header() {
    let mut reader = FrameReader::default();
    let header = FrameHeader {
        length: DEFAULT_MAX_FRAME_SIZE + 1,
        kind: FrameType::Data,
        flags: 0,
        stream_id: 1,
    };
    let bytes = header.encode();
    let error = reader.read(&bytes).expect_err("too large");
    assert_eq!(
        error.reason,
        Malformed::TooLarge {
            length: DEFAULT_MAX_FRAME_SIZE + 1,
            max: DEFAULT_MAX_FRAME_SIZE
        }
    );
    assert_eq!(error.frame_len, FRAME_HEADER_LEN + 16_385);
    assert_eq!(error.kind, FrameType::Data);
    // Exactly the maximum is fine.
    let max = frame(0, 0, 1, &vec![0; DEFAULT_MAX_FRAME_SIZE as usize]);
    assert!(matches!(reader.read(&max), Ok(Read::Frame(..))));
    // A peer's SETTINGS raise it, within bounds.
    reader.set_max_frame_size(1 << 20);
    assert_eq!(
        reader.read(&bytes),
        Ok(Read::Incomplete {
            needed: FRAME_HEADER_LEN + 16_385
        })
    );
    reader.set_max_frame_size(u32::MAX);
    assert_eq!(reader.max_frame_size(), MAX_MAX_FRAME_SIZE);
    reader.set_max_frame_size(0);
    assert_eq!(reader.max_frame_size(), DEFAULT_MAX_FRAME_SIZE);
}

#[test]
fn errors_name_the_frame_and_why() {
    let error = read_one(&frame(6, 0, 0, b"1234567")).expect_err("bad ping");
    assert_eq!(error.kind, FrameType::Ping);
    assert_eq!(error.frame_len, 16);
    assert_eq!(
        error.to_string(),
        "malformed PING frame on stream 0: payload of 7 bytes where its type requires 8 bytes"
    );
}
