//! Header blocks: a HEADERS or PUSH_PROMISE frame's fragment and the
//! CONTINUATION frames that follow it until `END_HEADERS` (RFC 9113 §4.3,
//! §6.10), assembled for HPACK decoding.
//!
//! # Invariants
//!
//! - Every frame of the direction goes through [`HeaderBlockAssembler::push`],
//!   in order, so that the assembler sees what comes between the fragments
//!   of a block.
//! - While a block is open, the only frame allowed is a CONTINUATION on the
//!   block's stream: any other frame is [`BlockError::Interleaved`], a
//!   CONTINUATION on another stream [`BlockError::WrongStream`]. A
//!   CONTINUATION while no block is open is
//!   [`BlockError::UnexpectedContinuation`].
//! - A block held in the assembler is at most [`BlockLimits::max_block`]
//!   bytes, from at most [`BlockLimits::max_fragments`] frames (empty
//!   CONTINUATION frames count too): a CONTINUATION flood ends in
//!   [`BlockError::TooLarge`] or [`BlockError::TooManyFragments`], with no
//!   more held than the limit.
//! - A block in one frame (HEADERS with `END_HEADERS`, the common case) is
//!   handed back borrowed from the frame, with no copy; only a block split
//!   over CONTINUATION frames is copied, into one buffer that is reused.
//! - After an error the open block is dropped and the assembler waits for
//!   the next HEADERS or PUSH_PROMISE. The header block that was lost had
//!   changed the HPACK state in ways no one can know: the decoder must be
//!   told ([`super::hpack::Decoder::desync`]).

use thiserror::Error;

use super::frame::{Frame, FrameType};

/// Bounds on the header blocks a [`HeaderBlockAssembler`] assembles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLimits {
    /// Largest header block in bytes (the fragments, without padding or
    /// priority fields). Default 64 KiB.
    pub max_block: usize,
    /// Most frames a header block may span, its HEADERS or PUSH_PROMISE
    /// included. Default 256.
    pub max_fragments: usize,
}

impl Default for BlockLimits {
    fn default() -> Self {
        Self {
            max_block: 64 * 1024,
            max_fragments: 256,
        }
    }
}

/// Why a header block could not be assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum BlockError {
    /// A frame other than CONTINUATION came while a block was open.
    #[error("{kind} frame on stream {stream_id} inside the header block of stream {open}")]
    Interleaved {
        /// The stream whose block was open.
        open: u32,
        /// The frame that came.
        kind: FrameType,
        /// Its stream.
        stream_id: u32,
    },
    /// A CONTINUATION on another stream than the open block's.
    #[error("CONTINUATION on stream {stream_id} inside the header block of stream {open}")]
    WrongStream {
        /// The stream whose block was open.
        open: u32,
        /// The CONTINUATION's stream.
        stream_id: u32,
    },
    /// A CONTINUATION while no block was open.
    #[error("CONTINUATION on stream {stream_id} without a header block open")]
    UnexpectedContinuation {
        /// Its stream.
        stream_id: u32,
    },
    /// The block passes [`BlockLimits::max_block`].
    #[error("header block over the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The block spans more than [`BlockLimits::max_fragments`] frames.
    #[error("header block in more than {limit} frames")]
    TooManyFragments {
        /// The limit in frames.
        limit: usize,
    },
}

/// A complete header block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderBlock<'a> {
    /// The stream the block was sent on.
    pub stream_id: u32,
    /// The HEADERS frame's `END_STREAM` (false for PUSH_PROMISE).
    pub end_stream: bool,
    /// For PUSH_PROMISE: the promised stream.
    pub promised_stream_id: Option<u32>,
    /// The block's bytes, fragments joined, for HPACK.
    pub bytes: &'a [u8],
}

/// The block being assembled.
#[derive(Clone, Copy, Debug)]
struct Open {
    stream_id: u32,
    end_stream: bool,
    promised_stream_id: Option<u32>,
    fragments: usize,
}

/// Joins header block fragments (see the module documentation).
#[derive(Debug, Default)]
pub struct HeaderBlockAssembler {
    limits: BlockLimits,
    open: Option<Open>,
    buf: Vec<u8>,
}

impl HeaderBlockAssembler {
    /// An assembler enforcing `limits`.
    pub fn new(limits: BlockLimits) -> Self {
        Self {
            limits,
            open: None,
            buf: Vec::new(),
        }
    }

    /// True while a block waits for CONTINUATION frames.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Bytes of the open block held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drops the open block, if any.
    pub fn clear(&mut self) {
        self.open = None;
        self.buf.clear();
    }

    /// Takes the next frame of the direction. Returns the header block that
    /// `frame` completes, if any; frames that are not part of a block pass
    /// with `Ok(None)`.
    pub fn push<'s, 'f: 's>(
        &'s mut self,
        frame: &Frame<'f>,
    ) -> Result<Option<HeaderBlock<'s>>, BlockError> {
        let result = self.step(frame);
        if result.is_err() {
            self.clear();
        }
        // The block, re-borrowed from the buffer when it was copied there.
        match result {
            Ok(Some(Done::Borrowed(block))) => Ok(Some(block)),
            Ok(Some(Done::Buffered(open))) => Ok(Some(HeaderBlock {
                stream_id: open.stream_id,
                end_stream: open.end_stream,
                promised_stream_id: open.promised_stream_id,
                bytes: &self.buf,
            })),
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn step<'f>(&mut self, frame: &Frame<'f>) -> Result<Option<Done<'f>>, BlockError> {
        if let Some(open) = self.open {
            let Frame::Continuation {
                stream_id,
                end_headers,
                fragment,
            } = *frame
            else {
                return Err(BlockError::Interleaved {
                    open: open.stream_id,
                    kind: frame.kind(),
                    stream_id: frame.stream_id(),
                });
            };
            if stream_id != open.stream_id {
                return Err(BlockError::WrongStream {
                    open: open.stream_id,
                    stream_id,
                });
            }
            let fragments = open.fragments + 1;
            if fragments > self.limits.max_fragments {
                return Err(BlockError::TooManyFragments {
                    limit: self.limits.max_fragments,
                });
            }
            self.append(fragment)?;
            if end_headers {
                self.open = None;
                return Ok(Some(Done::Buffered(open)));
            }
            self.open = Some(Open { fragments, ..open });
            return Ok(None);
        }
        let (open, end_headers, fragment) = match *frame {
            Frame::Headers {
                stream_id,
                end_stream,
                end_headers,
                fragment,
                ..
            } => (
                Open {
                    stream_id,
                    end_stream,
                    promised_stream_id: None,
                    fragments: 1,
                },
                end_headers,
                fragment,
            ),
            Frame::PushPromise {
                stream_id,
                end_headers,
                promised_stream_id,
                fragment,
            } => (
                Open {
                    stream_id,
                    end_stream: false,
                    promised_stream_id: Some(promised_stream_id),
                    fragments: 1,
                },
                end_headers,
                fragment,
            ),
            Frame::Continuation { stream_id, .. } => {
                return Err(BlockError::UnexpectedContinuation { stream_id });
            }
            _ => return Ok(None),
        };
        if fragment.len() > self.limits.max_block {
            return Err(BlockError::TooLarge {
                limit: self.limits.max_block,
            });
        }
        if end_headers {
            return Ok(Some(Done::Borrowed(HeaderBlock {
                stream_id: open.stream_id,
                end_stream: open.end_stream,
                promised_stream_id: open.promised_stream_id,
                bytes: fragment,
            })));
        }
        if self.limits.max_fragments < 2 {
            // A CONTINUATION must follow, and would pass the bound.
            return Err(BlockError::TooManyFragments {
                limit: self.limits.max_fragments,
            });
        }
        self.buf.clear();
        self.append(fragment)?;
        self.open = Some(open);
        Ok(None)
    }

    fn append(&mut self, fragment: &[u8]) -> Result<(), BlockError> {
        if self.buf.len().saturating_add(fragment.len()) > self.limits.max_block {
            return Err(BlockError::TooLarge {
                limit: self.limits.max_block,
            });
        }
        self.buf.extend_from_slice(fragment);
        Ok(())
    }
}

/// How a block was completed.
enum Done<'f> {
    /// In one frame: borrowed from it.
    Borrowed(HeaderBlock<'f>),
    /// Over several: in the buffer.
    Buffered(Open),
}

#[cfg(test)]
mod tests;
