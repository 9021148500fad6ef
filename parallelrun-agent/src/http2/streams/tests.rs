//! Connections driven through the HTTP tracker, as reassembly drives it:
//! detection, pairing by stream, losses, joining midway, and arbitrary
//! input.

use proptest::prelude::*;

use super::super::frame::tests::frame;
use super::super::hpack::tests::{insert, int};
use crate::{
    http::{HttpConfig, HttpConn, HttpTracker},
    model::{ConnKey, Direction, Exchange, LossCause, Outcome, Protocol},
    stream::{CloseReason, StreamHandler},
};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn string(s: &[u8]) -> Vec<u8> {
    let mut out = int(0, 7, s.len() as u32);
    out.extend_from_slice(s);
    out
}

/// A literal field without indexing, new name (leaves the table alone).
fn plain(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(string(name.as_bytes()));
    out.extend(string(value.as_bytes()));
    out
}

fn indexed(index: u32) -> Vec<u8> {
    int(0x80, 7, index)
}

fn block(fields: &[Vec<u8>]) -> Vec<u8> {
    fields.concat()
}

fn request_block(method: &str, path: &str) -> Vec<u8> {
    block(&[
        plain(":method", method),
        plain(":scheme", "http"),
        plain(":authority", "svc"),
        plain(":path", path),
        plain("user-agent", "test"),
    ])
}

fn status_block(status: &str) -> Vec<u8> {
    block(&[
        plain(":status", status),
        plain("content-type", "text/plain"),
    ])
}

fn headers(stream: u32, end_stream: bool, block: &[u8]) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

fn data(stream: u32, end_stream: bool, bytes: &[u8]) -> Vec<u8> {
    frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, bytes)
}

fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0])
}

fn client_start() -> Vec<u8> {
    [super::PREFACE.to_vec(), settings()].concat()
}

struct Harness {
    tracker: HttpTracker,
    conn: Option<HttpConn>,
    key: ConnKey,
    out: Vec<Outcome>,
}

impl Harness {
    fn new(cfg: HttpConfig, midstream: bool) -> Self {
        let key = ConnKey {
            client: "10.0.0.1:40000".parse().unwrap(),
            server: "10.0.0.5:50051".parse().unwrap(),
        };
        let mut tracker = HttpTracker::new(cfg);
        let conn = Some(tracker.open(&key, 0, midstream));
        Self {
            tracker,
            conn,
            key,
            out: Vec::new(),
        }
    }

    fn open() -> Self {
        Self::new(HttpConfig::default(), false)
    }

    fn send(&mut self, dir: Direction, ts: u64, bytes: &[u8]) {
        let mut conn = self.conn.take().expect("open");
        self.tracker.data(&mut conn, &self.key, dir, ts, bytes);
        self.conn = Some(conn);
        self.out.extend(self.tracker.outcomes());
    }

    fn req(&mut self, ts: u64, bytes: &[u8]) {
        self.send(Direction::Request, ts, bytes);
    }

    fn resp(&mut self, ts: u64, bytes: &[u8]) {
        self.send(Direction::Response, ts, bytes);
    }

    fn gap(&mut self, dir: Direction) {
        let mut conn = self.conn.take().expect("open");
        self.tracker.gap(&mut conn, &self.key, dir, 0, 100, false);
        self.conn = Some(conn);
        self.out.extend(self.tracker.outcomes());
    }

    /// Closes, and checks that every request has exactly one outcome.
    fn close(&mut self) {
        let conn = self.conn.take().expect("open");
        self.tracker.close(conn, &self.key, 0, CloseReason::Fin);
        self.out.extend(self.tracker.outcomes());
        let stats = self.tracker.stats();
        assert_eq!(stats.requests_seen, stats.paired + stats.lost_total());
        assert_eq!(self.out.len() as u64, stats.requests_seen);
        assert_eq!(stats.buffered_bytes, 0);
    }

    fn paired(&self) -> Vec<&Exchange> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Outcome::Paired(ex) => Some(ex),
                Outcome::Lost(_) => None,
            })
            .collect()
    }

    fn lost(&self) -> Vec<(String, LossCause)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Outcome::Lost(l) => Some((l.target.clone().unwrap_or_default(), l.cause)),
                Outcome::Paired(_) => None,
            })
            .collect()
    }
}

#[test]
fn interleaved_streams_pair_by_stream_id() {
    let mut h = Harness::open();
    h.req(1, &client_start());
    h.req(2, &headers(1, true, &request_block("GET", "/a")));
    h.req(
        3,
        &[
            headers(3, false, &request_block("POST", "/b")),
            data(3, false, b"hel"),
            data(3, true, b"lo"),
        ]
        .concat(),
    );
    h.resp(4, &settings());
    h.resp(
        5,
        &[
            headers(3, false, &status_block("201")),
            headers(1, false, &status_block("200")),
            data(1, false, b"A"),
            data(3, true, b"made"),
        ]
        .concat(),
    );
    h.resp(6, &data(1, true, b"A"));
    h.close();
    let paired = h.paired();
    assert_eq!(paired.len(), 2);
    // Stream 3 completed first; ids follow the order requests were seen.
    let (b, a) = (paired[0], paired[1]);
    assert_eq!((b.stream_id, b.id, b.protocol), (3, 1, Protocol::Http2));
    assert_eq!((a.stream_id, a.id), (1, 0));
    assert_eq!(b.request.method, "POST");
    assert_eq!(&b.request.body[..], b"hello");
    assert_eq!(b.response.status, 201);
    assert_eq!(&b.response.body[..], b"made");
    assert_eq!(&a.response.body[..], b"AA");
    assert_eq!((a.request_ts_ns, a.response_ts_ns), (2, 6));
    let names: Vec<&str> = a.request.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, [":authority", ":scheme", "user-agent"]);
    assert_eq!(a.request.target, "/a");
    assert!(a.request.raw.is_empty());
    assert_eq!(h.tracker.stats().http2.connections, 1);
}

/// The same conversation, cut into chunks of every size from 1 byte.
#[test]
fn frames_split_anywhere_give_the_same_exchanges() {
    let client = [
        client_start(),
        headers(1, false, &request_block("PUT", "/k")),
        data(1, true, &[7u8; 300]),
    ]
    .concat();
    let server = [
        settings(),
        headers(1, false, &status_block("200")),
        data(1, false, &[1u8; 100]),
        frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &plain("grpc-status", "0"),
        ),
    ]
    .concat();
    for size in [1, 2, 5, 9, 10, 17, 64, 1000] {
        let mut h = Harness::open();
        for chunk in client.chunks(size) {
            h.req(1, chunk);
        }
        for chunk in server.chunks(size) {
            h.resp(2, chunk);
        }
        h.close();
        let paired = h.paired();
        assert_eq!(paired.len(), 1, "chunks of {size}");
        assert_eq!(paired[0].request.body.len(), 300);
        assert_eq!(paired[0].response.body.len(), 100);
        assert_eq!(paired[0].response.trailers[0].name, "grpc-status");
    }
}

#[test]
fn resets_and_goaway_lose_streams() {
    let mut h = Harness::open();
    h.req(1, &client_start());
    h.req(2, &headers(1, true, &request_block("GET", "/cancelled")));
    h.req(3, &headers(3, true, &request_block("GET", "/refused")));
    h.req(4, &headers(5, true, &request_block("GET", "/beyond")));
    h.req(5, &frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    h.resp(6, &frame(RST_STREAM, 0, 3, &7u32.to_be_bytes()));
    let mut goaway = 3u32.to_be_bytes().to_vec();
    goaway.extend(0u32.to_be_bytes());
    h.resp(7, &frame(GOAWAY, 0, 0, &goaway));
    h.close();
    assert_eq!(
        h.lost(),
        [
            ("/cancelled".into(), LossCause::Reset),
            ("/refused".into(), LossCause::Reset),
            ("/beyond".into(), LossCause::Reset),
        ]
    );
    assert_eq!(h.tracker.stats().http2.resets, 2);
}

#[test]
fn a_response_then_a_reset_from_the_client_pairs() {
    let mut h = Harness::open();
    h.req(1, &client_start());
    h.req(2, &headers(1, false, &request_block("POST", "/early")));
    h.resp(3, &headers(1, true, &status_block("413")));
    h.req(4, &frame(RST_STREAM, 0, 1, &0u32.to_be_bytes()));
    h.close();
    assert_eq!(h.paired()[0].response.status, 413);
}

#[test]
fn joined_midway_decodes_what_it_saw_inserted() {
    let mut h = Harness::new(HttpConfig::default(), true);
    // A block that names dynamic entry 62, inserted before the agent joined.
    let unknown = block(&[
        plain(":method", "GET"),
        plain(":scheme", "http"),
        plain(":path", "/old"),
        indexed(62),
    ]);
    h.req(1, &headers(7, true, &unknown));
    // One that inserts its own entries, then one that names them.
    let inserting = block(&[
        plain(":method", "GET"),
        plain(":scheme", "http"),
        insert(":path", "/new"),
        insert("x-tenant", "t1"),
    ]);
    h.req(2, &headers(9, true, &inserting));
    // Dynamic table: 62 = x-tenant, 63 = :path /new.
    let naming = block(&[
        plain(":method", "GET"),
        plain(":scheme", "http"),
        indexed(63),
        indexed(62),
    ]);
    h.req(3, &headers(11, true, &naming));
    // The server side joins at its first chunk of frames.
    h.resp(4, b"\x00\x00\x00\x00 not a frame boundary");
    h.resp(5, &headers(9, true, &status_block("200")));
    h.resp(6, &headers(11, true, &status_block("200")));
    h.resp(7, &headers(7, true, &status_block("200")));
    h.close();
    let paired = h.paired();
    let targets: Vec<&str> = paired.iter().map(|e| e.request.target.as_str()).collect();
    assert_eq!(targets, ["/new", "/new"]);
    assert_eq!(paired[1].request.headers.last().unwrap().name, "x-tenant");
    assert_eq!(h.lost(), [("/old".into(), LossCause::HpackState)]);
    let stats = &h.tracker.stats().http2;
    assert_eq!(stats.joined_connections, 1);
    assert_eq!(stats.hpack_unknown_entries, 1);
    // The response to the lost request finds no stream.
    assert!(stats.unknown_stream_frames >= 1);
    assert!(stats.skipped_bytes > 0);
}

#[test]
fn a_gap_loses_the_streams_waiting_on_that_direction() {
    let mut h = Harness::open();
    h.req(1, &client_start());
    h.req(2, &headers(1, true, &request_block("GET", "/in-gap")));
    h.req(
        3,
        &headers(3, false, &request_block("POST", "/still-sending")),
    );
    h.resp(4, &headers(1, false, &status_block("200")));
    h.gap(Direction::Response);
    // Back in step at a chunk that begins with a frame.
    h.resp(5, &data(1, true, b"tail"));
    h.req(6, &data(3, true, b"x"));
    h.req(7, &headers(5, true, &request_block("GET", "/after")));
    h.resp(8, &headers(3, true, &status_block("204")));
    h.resp(9, &headers(5, true, &status_block("200")));
    h.close();
    let mut lost = h.lost();
    lost.sort();
    assert_eq!(
        lost,
        [
            ("/in-gap".into(), LossCause::Gap),
            ("/still-sending".into(), LossCause::Gap),
        ]
    );
    let targets: Vec<&str> = h
        .paired()
        .iter()
        .map(|e| e.request.target.as_str())
        .collect();
    assert_eq!(targets, ["/after"]);
}

#[test]
fn streams_beyond_the_limit_are_too_large() {
    let mut cfg = HttpConfig::default();
    cfg.http2.max_streams = 2;
    let mut h = Harness::new(cfg, false);
    h.req(1, &client_start());
    for (i, stream) in [1u32, 3, 5].into_iter().enumerate() {
        let path = format!("/{i}");
        h.req(2, &headers(stream, true, &request_block("GET", &path)));
    }
    for stream in [1u32, 3, 5] {
        h.resp(3, &headers(stream, true, &status_block("200")));
    }
    h.close();
    assert_eq!(h.paired().len(), 2);
    assert_eq!(h.lost(), [("/2".into(), LossCause::TooLarge)]);
}

#[test]
fn bodies_over_the_limit_are_too_large_and_freed() {
    let mut cfg = HttpConfig::default();
    cfg.limits.max_body = 1000;
    let mut h = Harness::new(cfg, false);
    h.req(1, &client_start());
    h.req(2, &headers(1, true, &request_block("GET", "/big")));
    h.resp(3, &headers(1, false, &status_block("200")));
    for _ in 0..5 {
        h.resp(4, &data(1, false, &[0u8; 400]));
    }
    assert_eq!(h.tracker.stats().buffered_bytes, 0);
    h.resp(5, &data(1, true, b""));
    h.close();
    assert_eq!(h.lost(), [("/big".into(), LossCause::TooLarge)]);
    assert_eq!(h.tracker.stats().http2.unknown_stream_frames, 0);
}

#[test]
fn server_settings_before_the_client_preface_are_kept() {
    let mut h = Harness::open();
    h.resp(1, &settings());
    h.req(2, &client_start());
    h.req(3, &headers(1, true, &request_block("GET", "/")));
    h.resp(4, &headers(1, true, &status_block("200")));
    h.close();
    assert_eq!(h.paired().len(), 1);
    assert_eq!(h.tracker.stats().unmatched_responses, 0);
}

#[test]
fn http1_is_not_taken_for_http2() {
    let mut h = Harness::open();
    h.req(1, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    h.resp(2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    h.close();
    assert_eq!(h.paired()[0].protocol, Protocol::Http1);
    assert_eq!(h.tracker.stats().http2.connections, 0);
    assert!(!super::looks_like_frames(b"GET / HTTP/1.1\r\n"));
    assert!(!super::looks_like_frames(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    ));
    assert!(super::looks_like_frames(&settings()));
    assert!(!super::looks_like_frames(&headers(1, true, b"\x82")[..5]));
}

#[test]
fn streams_that_end_in_flight_are_closed() {
    let mut h = Harness::open();
    h.req(1, &client_start());
    h.req(2, &headers(1, true, &request_block("GET", "/pending")));
    h.resp(3, &headers(1, false, &status_block("200")));
    h.resp(4, &data(1, false, &[0u8; 10]));
    assert!(h.tracker.stats().buffered_bytes >= 10);
    h.close();
    assert_eq!(h.lost(), [("/pending".into(), LossCause::Closed)]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the bytes, in whatever chunks: no panic, every request one
    /// outcome, and nothing held beyond the bounds.
    #[test]
    fn arbitrary_input_is_accounted_and_bounded(
        chunks in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..40),
        midstream in any::<bool>(),
        prefix in any::<bool>(),
    ) {
        let mut cfg = HttpConfig::default();
        cfg.http2.max_streams = 4;
        cfg.limits.max_body = 256;
        let mut h = Harness::new(cfg, midstream);
        if prefix {
            h.req(0, &client_start());
        }
        for (i, (request, bytes)) in chunks.iter().enumerate() {
            let dir = if *request { Direction::Request } else { Direction::Response };
            // Make frames more likely than random bytes alone would.
            let framed = if i % 2 == 0 {
                frame(bytes.first().copied().unwrap_or(0) % 10, bytes.get(1).copied().unwrap_or(0),
                    u32::from(bytes.get(2).copied().unwrap_or(1)), bytes)
            } else {
                bytes.clone()
            };
            h.send(dir, i as u64, &framed);
            let held = h.tracker.stats().buffered_bytes;
            // Two pending frames, two blocks, and 4 streams of 2 bodies.
            prop_assert!(held <= 2 * (9 + 16_384) + 2 * 64 * 1024 + 4 * 2 * 256 + 64 * 1024);
        }
        h.close();
    }
}

#[test]
fn an_upgrade_to_h2c_makes_the_request_stream_one() {
    let mut h = Harness::open();
    // HTTP2-Settings: HEADER_TABLE_SIZE 8192, base64url without padding.
    h.req(
        1,
        b"GET /up HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAEAACAA\r\n\r\n\
          GET /pipelined HTTP/1.1\r\nHost: svc\r\n\r\n",
    );
    let first_frames = [settings(), headers(1, false, &status_block("200"))].concat();
    let mut resp =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    resp.extend(&first_frames);
    h.resp(2, &resp);
    h.req(3, &client_start());
    h.req(4, &headers(3, true, &request_block("GET", "/next")));
    h.resp(5, &data(1, true, b"upgraded"));
    h.resp(6, &headers(3, true, &status_block("204")));
    h.close();
    let paired = h.paired();
    assert_eq!(paired.len(), 2);
    let up = paired[0];
    assert_eq!(
        (up.stream_id, up.protocol, up.request.target.as_str()),
        (1, Protocol::Http2, "/up")
    );
    assert_eq!(&up.response.body[..], b"upgraded");
    let names: Vec<&str> = up.request.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, [":authority", ":scheme"]);
    assert_eq!(paired[1].request.target, "/next");
    assert_eq!(h.lost(), [("/pipelined".into(), LossCause::Upgrade)]);
    assert_eq!(h.tracker.stats().http2.upgraded_connections, 1);
    assert_eq!(h.tracker.stats().upgraded_connections, 0);
}

/// Rapid reset (CVE-2023-44487's pattern): streams opened and reset at
/// once, many thousands; each is one lost request, and nothing stays held.
#[test]
fn rapid_resets_are_each_counted_and_hold_nothing() {
    let mut h = Harness::open();
    h.req(1, &client_start());
    let mut burst = Vec::new();
    for i in 0..5_000u32 {
        let stream = 2 * i + 1;
        burst.extend(headers(stream, false, &request_block("GET", "/r")));
        burst.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    h.req(2, &burst);
    assert_eq!(h.tracker.stats().buffered_bytes, 0);
    h.close();
    assert_eq!(h.lost().len(), 5_000);
    assert!(h.lost().iter().all(|(_, c)| *c == LossCause::Reset));
    assert_eq!(h.tracker.stats().http2.resets, 5_000);
}

/// Streams opened and never finished stay bounded by the stream limit;
/// the ones beyond are lost at once instead of held.
#[test]
fn idle_streams_are_bounded() {
    let mut h = Harness::open();
    h.req(1, &client_start());
    for i in 0..1_000u32 {
        h.req(
            2,
            &headers(2 * i + 1, false, &request_block("POST", "/idle")),
        );
        h.req(2, &data(2 * i + 1, false, b"x"));
    }
    let stats = h.tracker.stats();
    assert_eq!(stats.requests_seen, 1_000);
    let limit = HttpConfig::default().http2.max_streams;
    assert_eq!(stats.lost(LossCause::TooLarge), 1_000 - limit as u64);
    assert!(stats.buffered_bytes <= limit as u64);
    h.close();
    assert_eq!(h.tracker.stats().lost(LossCause::Closed), limit as u64);
}
