//! The HTTP/2 layers over arbitrary bytes: frame reader, header block
//! assembly and HPACK decoding, as one direction of a connection.
//!
//! Input: `mode:u8 split:u16le data…`. `mode` bit 0 picks the decoder (in
//! step from the connection's start, or joined mid-connection), bits 1..3
//! the limits, bit 3 whether SETTINGS frames in the data are applied (max
//! frame size to the reader, header table size to the decoder, as if seen
//! in the other direction). A client preface at the start is skipped. The
//! data is read twice: whole, and arriving in two pieces cut at `split`
//! into a buffer that keeps what was not consumed, as a caller does.
//!
//! Checked: no panic; the two runs see the same frames, blocks, header
//! lists and errors; and every bound holds between calls: a frame read
//! never needs more than 9 + max frame size bytes, a header block and what
//! the assembler holds are at most its limit, a decoded list is at most
//! the header list limit, the dynamic table is at most its current
//! maximum, which is at most the largest table size ever allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parallelrun_agent::http2::{
    block::{BlockError, BlockLimits, HeaderBlockAssembler},
    frame::{
        FRAME_HEADER_LEN, Frame, FrameError, FrameReader, PREFACE, Preface, Read, Settings, preface,
    },
    hpack::{Decoder, DecoderLimits, HeaderList, HpackError},
};

/// What one run saw, in order.
#[derive(Debug, PartialEq)]
enum Item {
    /// A frame: type code, stream, bytes taken.
    Frame(u8, u32, usize),
    FrameErr(FrameError),
    Block(BlockError),
    /// A decoded list: stream, fields (pseudo-headers first).
    List(u32, Vec<(Vec<u8>, Vec<u8>)>),
    Hpack(HpackError),
}

struct Limits {
    block: BlockLimits,
    hpack: DecoderLimits,
}

struct Conn {
    reader: FrameReader,
    assembler: HeaderBlockAssembler,
    decoder: Decoder,
    list: HeaderList,
    limits: Limits,
    apply_settings: bool,
    /// The largest table size the decoder was ever allowed.
    max_allowed: usize,
    items: Vec<Item>,
    /// Ended by an error that leaves the frame boundaries unknown.
    dead: bool,
}

impl Conn {
    fn new(mode: u8) -> Self {
        let limits = match (mode >> 1) & 3 {
            0 => Limits {
                block: BlockLimits::default(),
                hpack: DecoderLimits::default(),
            },
            1 => Limits {
                block: BlockLimits {
                    max_block: 64,
                    max_fragments: 3,
                },
                hpack: DecoderLimits {
                    max_table_size: 64,
                    max_header_list_size: 128,
                },
            },
            2 => Limits {
                block: BlockLimits {
                    max_block: 1024,
                    max_fragments: 8,
                },
                hpack: DecoderLimits {
                    max_table_size: 256,
                    max_header_list_size: 1024,
                },
            },
            _ => Limits {
                block: BlockLimits {
                    max_block: 0,
                    max_fragments: 1,
                },
                hpack: DecoderLimits {
                    max_table_size: 0,
                    max_header_list_size: 40,
                },
            },
        };
        let decoder = if mode & 1 == 0 {
            Decoder::new(limits.hpack)
        } else {
            Decoder::joined(limits.hpack)
        };
        Self {
            reader: FrameReader::default(),
            assembler: HeaderBlockAssembler::new(limits.block),
            decoder,
            list: HeaderList::new(),
            max_allowed: limits.hpack.max_table_size,
            limits,
            apply_settings: mode & 8 != 0,
            items: Vec::new(),
            dead: false,
        }
    }

    /// Reads every whole frame at the start of `buf`; returns the bytes
    /// taken.
    fn drain(&mut self, buf: &[u8]) -> usize {
        let mut at = 0;
        while !self.dead {
            let rest = &buf[at..];
            match self.reader.read(rest) {
                Ok(Read::Incomplete { needed }) => {
                    assert!(needed > rest.len(), "{needed} needed, {} held", rest.len());
                    assert!(needed <= FRAME_HEADER_LEN + self.reader.max_frame_size() as usize);
                    break;
                }
                Ok(Read::Frame(frame, used)) => {
                    assert!((FRAME_HEADER_LEN..=rest.len()).contains(&used));
                    at += used;
                    self.items
                        .push(Item::Frame(frame.kind().code(), frame.stream_id(), used));
                    self.frame(&frame);
                }
                Err(error) => {
                    self.items.push(Item::FrameErr(error));
                    // The frame's extent is known: skip it once it is all
                    // here (an oversized one ends the run).
                    if error.frame_len > FRAME_HEADER_LEN + self.reader.max_frame_size() as usize {
                        self.dead = true;
                    } else if error.frame_len <= rest.len() {
                        at += error.frame_len;
                        self.assembler.clear();
                        self.decoder.desync();
                    } else {
                        // Not all here yet: drop the error, retry later.
                        self.items.pop();
                        break;
                    }
                }
            }
        }
        at
    }

    fn frame(&mut self, frame: &Frame<'_>) {
        if self.apply_settings
            && let Frame::Settings {
                ack: false,
                settings,
            } = frame
        {
            if let Some(size) = settings.get(Settings::MAX_FRAME_SIZE) {
                self.reader.set_max_frame_size(size);
            }
            if let Some(size) = settings.get(Settings::HEADER_TABLE_SIZE) {
                let size = (size as usize).min(1 << 16);
                self.max_allowed = self.max_allowed.max(size);
                self.decoder.set_max_table_size(size);
            }
        }
        let block = match self.assembler.push(frame) {
            Ok(Some(block)) => block,
            Ok(None) => {
                assert!(self.assembler.buffered() <= self.limits.block.max_block);
                return;
            }
            Err(error) => {
                self.items.push(Item::Block(error));
                assert_eq!(self.assembler.buffered(), 0);
                self.decoder.desync();
                return;
            }
        };
        assert!(block.bytes.len() <= self.limits.block.max_block);
        let stream = block.stream_id;
        match self.decoder.decode_into(block.bytes, &mut self.list) {
            Ok(()) => {
                let fields = self
                    .list
                    .all()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect();
                self.items.push(Item::List(stream, fields));
            }
            Err(error) => self.items.push(Item::Hpack(error)),
        }
        assert!(self.list.size() <= self.limits.hpack.max_header_list_size);
        assert!(self.decoder.table_size() <= self.decoder.table_max());
        assert!(self.decoder.table_max() <= self.max_allowed);
    }
}

/// Feeds `data` in pieces cut at `cuts`, keeping what a drain left.
fn run(mode: u8, data: &[u8], cuts: &[usize]) -> Vec<Item> {
    let mut conn = Conn::new(mode);
    let mut buf = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&data.len())) {
        buf.extend_from_slice(&data[from..to]);
        from = to;
        let used = conn.drain(&buf);
        buf.drain(..used);
    }
    conn.items
}

fuzz_target!(|input: &[u8]| {
    let [mode, a, b, data @ ..] = input else {
        return;
    };
    let data = match preface(data) {
        Preface::Complete => &data[PREFACE.len()..],
        _ => data,
    };
    let split = usize::from(u16::from_le_bytes([*a, *b])) % (data.len() + 1);
    let whole = run(*mode, data, &[]);
    let pieces = run(*mode, data, &[split]);
    assert_eq!(whole, pieces, "split at {split}");
});
