//! A raw HTTP/2 client for tests that must control the bytes: prior
//! knowledge h2c over a `TcpStream`, frames written and read by hand, and
//! an HPACK encoder whose every representation the test chooses, so that
//! a test knows exactly which dynamic-table entries a header block names.
//!
//! The encoder tracks its dynamic table (RFC 7541 §2.3.2: newest entry at
//! index 62) without evicting: a test keeps its insertions under the
//! peer's table size (4096 by default). Strings are never Huffman-coded.
//! Responses are not decoded: a test reads their frames and judges them
//! from the outside (the agent's output, tshark).

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

/// A header field's name: an index (static or dynamic) or a literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    Index(usize),
    Literal(String),
    /// The name of the newest entry `name: value`, by its index where the
    /// field is encoded (earlier insertions of the block shift it).
    Entry(String, String),
}

/// One representation of a header block (RFC 7541 §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// §6.1: the whole field from the table.
    Indexed(usize),
    /// §6.1 for the newest entry `name: value`, by its index where the
    /// field is encoded.
    Entry(String, String),
    /// §6.2.1: a literal inserted into the dynamic table.
    Insert(Name, String),
    /// §6.2.2: a literal left out of the table.
    Literal(Name, String),
}

/// The static table entries the tests use (RFC 7541 Appendix A).
pub mod static_index {
    pub const AUTHORITY: usize = 1;
    pub const METHOD_GET: usize = 2;
    pub const PATH: usize = 4;
    pub const SCHEME_HTTP: usize = 6;
    pub const USER_AGENT: usize = 58;
}

/// `value` as an HPACK integer with an `n`-bit prefix, the prefix's other
/// bits `flags` (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, flags: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A string literal, not Huffman-coded (§5.2).
fn string(out: &mut Vec<u8>, s: &str) {
    integer(out, 0, 7, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// The client's HPACK encoder: what it inserted, newest first.
#[derive(Clone, Debug, Default)]
pub struct Encoder {
    table: Vec<(String, String)>,
}

impl Encoder {
    /// The dynamic index of the newest entry `name: value` (panics if the
    /// table has none).
    pub fn index_of(&self, name: &str, value: &str) -> usize {
        let pos = self
            .table
            .iter()
            .position(|(n, v)| n == name && v == value)
            .unwrap_or_else(|| panic!("no entry {name}: {value} in {:?}", self.table));
        62 + pos
    }

    /// Entries inserted so far.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn name_of(&self, name: &Name) -> String {
        match name {
            Name::Literal(s) | Name::Entry(s, _) => s.clone(),
            Name::Index(i) => match *i {
                static_index::AUTHORITY => ":authority".into(),
                static_index::PATH => ":path".into(),
                static_index::USER_AGENT => "user-agent".into(),
                i if i >= 62 => self.table[i - 62].0.clone(),
                i => panic!("static name {i} is not in this encoder's list"),
            },
        }
    }

    /// The header block of `fields`, inserting as they say.
    pub fn encode(&mut self, fields: &[Field]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in fields {
            match f {
                Field::Indexed(i) => integer(&mut out, 0x80, 7, *i),
                Field::Entry(n, v) => integer(&mut out, 0x80, 7, self.index_of(n, v)),
                Field::Insert(name, value) | Field::Literal(name, value) => {
                    let (flags, n) = if matches!(f, Field::Insert(..)) {
                        (0x40, 6)
                    } else {
                        (0x00, 4)
                    };
                    match name {
                        Name::Index(i) => integer(&mut out, flags, n, *i),
                        Name::Entry(name, value) => {
                            integer(&mut out, flags, n, self.index_of(name, value));
                        }
                        Name::Literal(s) => {
                            out.push(flags);
                            string(&mut out, s);
                        }
                    }
                    string(&mut out, value);
                    if matches!(f, Field::Insert(..)) {
                        let name = self.name_of(name);
                        self.table.insert(0, (name, value.clone()));
                    }
                }
            }
        }
        out
    }
}

/// One frame as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// What the client read of one response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// Header block fragments (HEADERS payloads, padding and priority
    /// removed), in order.
    pub header_blocks: Vec<Vec<u8>>,
    /// Bytes of DATA.
    pub body_len: usize,
}

/// A prior-knowledge h2c connection.
pub struct Client {
    pub stream: TcpStream,
    pub encoder: Encoder,
    /// Frames read that belong to no awaited response (SETTINGS,
    /// WINDOW_UPDATE, PING...).
    pub other_frames: Vec<Frame>,
}

impl Client {
    /// Sends the preface and SETTINGS (`settings`: identifier, value),
    /// then waits for the server's SETTINGS, acknowledges them, and waits
    /// for the server's ACK of ours.
    pub fn handshake(stream: TcpStream, settings: &[(u16, u32)]) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        let mut c = Self {
            stream,
            encoder: Encoder::default(),
            other_frames: Vec::new(),
        };
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut first = PREFACE.to_vec();
        first.extend(frame(SETTINGS, 0, 0, &payload));
        c.write(&first);
        let (mut theirs, mut acked) = (false, false);
        while !(theirs && acked) {
            let f = c.read_frame();
            match (f.kind, f.flags & ACK) {
                (SETTINGS, 0) => {
                    theirs = true;
                    c.write(&frame(SETTINGS, ACK, 0, &[]));
                }
                (SETTINGS, _) => acked = true,
                _ => c.other_frames.push(f),
            }
        }
        c
    }

    /// Writes `bytes` in one call (one segment, as the tests send little).
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Encodes `fields` and sends them as one HEADERS frame that ends the
    /// request (a GET) on `stream`.
    pub fn get(&mut self, stream: u32, fields: &[Field]) {
        let block = self.encoder.encode(fields);
        self.write(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
    }

    /// Reads frames until the response on `stream` ends; other streams'
    /// frames are a failure, frames of stream 0 are kept.
    pub fn response(&mut self, stream: u32) -> Response {
        let mut r = Response::default();
        loop {
            let f = self.read_frame();
            if f.stream == 0 {
                assert_ne!(f.kind, GOAWAY, "the server sent GOAWAY: {f:?}");
                self.other_frames.push(f);
                continue;
            }
            assert_eq!(f.stream, stream, "a frame of another stream: {f:?}");
            match f.kind {
                HEADERS => r.header_blocks.push(headers_fragment(&f)),
                DATA => r.body_len += data_len(&f),
                other => panic!("unexpected frame type {other} on stream {stream}: {f:?}"),
            }
            if f.flags & END_STREAM != 0 {
                return r;
            }
        }
    }

    /// Reads one frame (panics on a timeout or EOF).
    pub fn read_frame(&mut self) -> Frame {
        let mut head = [0u8; 9];
        self.stream
            .read_exact(&mut head)
            .expect("read a frame header");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.stream
            .read_exact(&mut payload)
            .expect("read a frame payload");
        Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        }
    }
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    assert!(len < 1 << 24, "frame too long");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

fn headers_fragment(f: &Frame) -> Vec<u8> {
    let mut p = &f.payload[..];
    let mut pad = 0;
    if f.flags & PADDED != 0 {
        pad = p[0] as usize;
        p = &p[1..];
    }
    if f.flags & PRIORITY != 0 {
        p = &p[5..];
    }
    p[..p.len() - pad].to_vec()
}

fn data_len(f: &Frame) -> usize {
    if f.flags & PADDED != 0 {
        f.payload.len() - 1 - f.payload[0] as usize
    } else {
        f.payload.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_rfc_7541_examples() {
        // C.1.1 and C.1.2: 10 and 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
    }

    #[test]
    fn encoder_matches_rfc_7541_c3_1_and_tracks_insertions() {
        // C.3.1 without Huffman: GET, http, /, :authority www.example.com.
        let mut e = Encoder::default();
        let block = e.encode(&[
            Field::Indexed(static_index::METHOD_GET),
            Field::Indexed(static_index::SCHEME_HTTP),
            Field::Indexed(4),
            Field::Insert(
                Name::Index(static_index::AUTHORITY),
                "www.example.com".into(),
            ),
        ]);
        let mut expected = vec![0x82, 0x86, 0x84, 0x41, 0x0f];
        expected.extend_from_slice(b"www.example.com");
        assert_eq!(block, expected);
        assert_eq!(e.index_of(":authority", "www.example.com"), 62);
        e.encode(&[Field::Insert(Name::Literal("x-a".into()), "1".into())]);
        assert_eq!(e.index_of(":authority", "www.example.com"), 63);
        assert_eq!(e.index_of("x-a", "1"), 62);
        e.encode(&[Field::Insert(Name::Index(63), "2".into())]);
        assert_eq!(e.index_of(":authority", "2"), 62);
        assert_eq!(e.len(), 3);
        // Entries by name and value, resolved where they stand in the block.
        let block = e.encode(&[
            Field::Insert(Name::Literal("x-b".into()), "3".into()),
            Field::Entry("x-a".into(), "1".into()),
            Field::Insert(Name::Entry(":authority".into(), "2".into()), "4".into()),
        ]);
        assert_eq!(
            block,
            [
                0x40,
                3,
                b'x',
                b'-',
                b'b',
                1,
                b'3',
                0x80 | 64,
                0x40 | 63,
                0,
                1,
                b'4'
            ]
        );
        assert_eq!(e.index_of(":authority", "4"), 62);
    }
}
