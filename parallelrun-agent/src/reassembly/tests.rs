//! Unit tests of the reassembler with a handler that records every event.

use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

use super::*;
use crate::model::{ConnKey, tcp_flags::*};

const REQ: Direction = Direction::Request;
const RESP: Direction = Direction::Response;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Open {
        port: u16,
        id: u32,
        midstream: bool,
    },
    Data {
        port: u16,
        dir: Direction,
        ts: u64,
        bytes: Vec<u8>,
    },
    Gap {
        port: u16,
        dir: Direction,
        len: u64,
        ring: bool,
    },
    Fin {
        port: u16,
        dir: Direction,
    },
    Close {
        port: u16,
        id: u32,
        reason: CloseReason,
    },
}

/// Records every event; a connection's state is its open sequence number.
#[derive(Default)]
struct Rec {
    events: Vec<Ev>,
    next_id: u32,
}

impl StreamHandler for Rec {
    type Conn = u32;

    fn open(&mut self, key: &ConnKey, _ts_ns: u64, midstream: bool) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.events.push(Ev::Open {
            port: key.client.port(),
            id,
            midstream,
        });
        id
    }

    fn data(&mut self, _: &mut u32, key: &ConnKey, dir: Direction, ts_ns: u64, bytes: &[u8]) {
        assert!(!bytes.is_empty(), "empty data event");
        self.events.push(Ev::Data {
            port: key.client.port(),
            dir,
            ts: ts_ns,
            bytes: bytes.to_vec(),
        });
    }

    fn gap(&mut self, _: &mut u32, key: &ConnKey, dir: Direction, _: u64, len: u64, ring: bool) {
        assert!(len > 0, "empty gap event");
        self.events.push(Ev::Gap {
            port: key.client.port(),
            dir,
            len,
            ring,
        });
    }

    fn fin(&mut self, _: &mut u32, key: &ConnKey, dir: Direction, _: u64) {
        self.events.push(Ev::Fin {
            port: key.client.port(),
            dir,
        });
    }

    fn close(&mut self, id: u32, key: &ConnKey, _: u64, reason: CloseReason) {
        self.events.push(Ev::Close {
            port: key.client.port(),
            id,
            reason,
        });
    }
}

impl Rec {
    /// Every data byte delivered for `port` in `dir`, concatenated.
    fn stream(&self, port: u16, dir: Direction) -> Vec<u8> {
        let mut out = Vec::new();
        for ev in &self.events {
            if let Ev::Data {
                port: p,
                dir: d,
                bytes,
                ..
            } = ev
                && *p == port
                && *d == dir
            {
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    fn gaps(&self, port: u16, dir: Direction) -> Vec<(u64, bool)> {
        self.events
            .iter()
            .filter_map(|ev| match ev {
                Ev::Gap {
                    port: p,
                    dir: d,
                    len,
                    ring,
                } if *p == port && *d == dir => Some((*len, *ring)),
                _ => None,
            })
            .collect()
    }

    fn fins(&self, port: u16) -> Vec<Direction> {
        self.events
            .iter()
            .filter_map(|ev| match ev {
                Ev::Fin { port: p, dir } if *p == port => Some(*dir),
                _ => None,
            })
            .collect()
    }

    fn opens(&self) -> Vec<(u16, bool)> {
        self.events
            .iter()
            .filter_map(|ev| match ev {
                Ev::Open {
                    port, midstream, ..
                } => Some((*port, *midstream)),
                _ => None,
            })
            .collect()
    }

    fn closes(&self) -> Vec<(u16, CloseReason)> {
        self.events
            .iter()
            .filter_map(|ev| match ev {
                Ev::Close { port, reason, .. } => Some((*port, *reason)),
                _ => None,
            })
            .collect()
    }
}

type R = Reassembler<Rec>;

fn key(port: u16) -> ConnKey {
    ConnKey {
        client: ([10, 0, 0, 1], port).into(),
        server: ([10, 0, 0, 2], 80).into(),
    }
}

fn seg(port: u16, dir: Direction, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> TcpSegment<'_> {
    TcpSegment {
        ts_ns: 0,
        conn: key(port),
        direction: dir,
        seq,
        ack,
        flags,
        payload,
        missing: 0,
    }
}

fn new(cfg: ReassemblyConfig) -> R {
    Reassembler::new(cfg, Rec::default())
}

/// Pushes and checks that the buffer accounting is exact.
fn push(r: &mut R, s: TcpSegment<'_>) {
    r.push(&s);
    assert_eq!(r.buffered_sum(), r.stats().buffered_bytes);
}

/// Client SYN, SYN-ACK, ACK.
fn handshake(r: &mut R, port: u16, c_isn: u32, s_isn: u32) {
    push(r, seg(port, REQ, c_isn, 0, SYN, b""));
    push(
        r,
        seg(port, RESP, s_isn, c_isn.wrapping_add(1), SYN | ACK, b""),
    );
    push(
        r,
        seg(
            port,
            REQ,
            c_isn.wrapping_add(1),
            s_isn.wrapping_add(1),
            ACK,
            b"",
        ),
    );
}

/// Request-direction data at stream offset `off` of a connection with
/// client ISN `c` and server ISN `s` (acknowledging nothing new).
fn req_at(port: u16, c: u32, s: u32, off: u32, payload: &[u8]) -> TcpSegment<'_> {
    seg(
        port,
        REQ,
        c.wrapping_add(1).wrapping_add(off),
        s.wrapping_add(1),
        ACK,
        payload,
    )
}

fn resp_at(port: u16, c: u32, s: u32, off: u32, payload: &[u8]) -> TcpSegment<'_> {
    seg(
        port,
        RESP,
        s.wrapping_add(1).wrapping_add(off),
        c.wrapping_add(1),
        ACK,
        payload,
    )
}

const C: u32 = 1_000;
const S: u32 = 50_000;

#[test]
fn in_order_both_directions() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(
        &mut r,
        TcpSegment {
            ts_ns: 10,
            ..req_at(1, C, S, 0, b"GET / HTTP/1.1\r\n")
        },
    );
    push(
        &mut r,
        TcpSegment {
            ts_ns: 11,
            ..req_at(1, C, S, 16, b"Host: a\r\n\r\n")
        },
    );
    push(
        &mut r,
        TcpSegment {
            ts_ns: 12,
            ..resp_at(1, C, S, 0, b"HTTP/1.1 200 OK\r\n")
        },
    );
    push(
        &mut r,
        TcpSegment {
            ts_ns: 13,
            ..resp_at(1, C, S, 17, b"\r\n")
        },
    );
    let h = r.handler();
    assert_eq!(h.opens(), vec![(1, false)]);
    assert_eq!(h.stream(1, REQ), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.stream(1, RESP), b"HTTP/1.1 200 OK\r\n\r\n");
    let ts: Vec<u64> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Data { ts, .. } => Some(*ts),
            _ => None,
        })
        .collect();
    assert_eq!(
        ts,
        vec![10, 11, 12, 13],
        "one data event per segment, its ts"
    );
    let st = r.stats();
    assert_eq!(st.segments, 7);
    assert_eq!(st.connections_opened, 1);
    assert_eq!(st.midstream_opened, 0);
    assert_eq!(st.out_of_order, 0);
    assert_eq!(st.retransmitted_bytes, 0);
    assert_eq!(st.gaps, 0);
    assert_eq!(st.peak_buffered_bytes, 0);
    assert_eq!(r.connections(), 1);
}

#[test]
fn out_of_order_is_buffered_then_delivered() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(
        &mut r,
        TcpSegment {
            ts_ns: 3,
            ..req_at(1, C, S, 8, b"cccc")
        },
    );
    assert!(r.handler().stream(1, REQ).is_empty());
    assert_eq!(r.stats().buffered_bytes, 4 + PIECE_OVERHEAD);
    assert_eq!(r.stats().out_of_order, 1);
    push(
        &mut r,
        TcpSegment {
            ts_ns: 4,
            ..req_at(1, C, S, 0, b"aaaa")
        },
    );
    assert_eq!(r.handler().stream(1, REQ), b"aaaa");
    push(
        &mut r,
        TcpSegment {
            ts_ns: 5,
            ..req_at(1, C, S, 4, b"bbbb")
        },
    );
    assert_eq!(r.handler().stream(1, REQ), b"aaaabbbbcccc");
    let data: Vec<(u64, Vec<u8>)> = r
        .handler()
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Data { ts, bytes, .. } => Some((*ts, bytes.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        data,
        vec![
            (4, b"aaaa".to_vec()),
            (5, b"bbbb".to_vec()),
            (3, b"cccc".to_vec())
        ],
        "buffered bytes keep the time of the segment that carried them"
    );
    let st = r.stats();
    assert_eq!(st.out_of_order, 1);
    assert_eq!(st.buffered_bytes, 0);
    assert_eq!(st.peak_buffered_bytes, 4 + PIECE_OVERHEAD);
    assert_eq!(st.gaps, 0);
}

#[test]
fn duplicate_and_overlapping_retransmissions_are_trimmed() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(&mut r, req_at(1, C, S, 0, b"hello"));
    push(&mut r, req_at(1, C, S, 0, b"hello"));
    assert_eq!(r.stats().retransmitted_bytes, 5);
    push(&mut r, req_at(1, C, S, 3, b"lo world"));
    assert_eq!(r.handler().stream(1, REQ), b"hello world");
    assert_eq!(r.stats().retransmitted_bytes, 7);
    // Overlaps between buffered ranges.
    push(&mut r, req_at(1, C, S, 15, b"5678"));
    push(&mut r, req_at(1, C, S, 13, b"3456"));
    assert_eq!(r.stats().retransmitted_bytes, 9);
    assert_eq!(r.stats().buffered_bytes, 4 + 2 + 2 * PIECE_OVERHEAD);
    push(&mut r, req_at(1, C, S, 11, b"12"));
    assert_eq!(r.handler().stream(1, REQ), b"hello world12345678");
    // A segment covering a buffered piece entirely, and one inside it.
    push(&mut r, req_at(1, C, S, 22, b"c"));
    push(&mut r, req_at(1, C, S, 21, b"bcd"));
    push(&mut r, req_at(1, C, S, 22, b"c"));
    push(&mut r, req_at(1, C, S, 19, b"9a"));
    assert_eq!(r.handler().stream(1, REQ), b"hello world123456789abcd");
    let st = r.stats();
    assert_eq!(st.retransmitted_bytes, 11);
    assert_eq!(st.conflicting_bytes, 0);
    assert_eq!(st.gaps, 0);
    assert_eq!(st.buffered_bytes, 0);
}

#[test]
fn conflicting_retransmission_keeps_first_copy() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(&mut r, req_at(1, C, S, 5, b"WORLD"));
    push(&mut r, req_at(1, C, S, 3, b"xxwORLD!"));
    assert_eq!(r.stats().conflicting_bytes, 1);
    assert_eq!(r.stats().retransmitted_bytes, 5);
    push(&mut r, req_at(1, C, S, 0, b"abc"));
    assert_eq!(r.handler().stream(1, REQ), b"abcxxWORLD!");
    // An in-order segment overlapping a buffered piece: the piece wins.
    push(&mut r, resp_at(1, C, S, 4, b"BBBB"));
    push(&mut r, resp_at(1, C, S, 0, b"aaaaXXXX"));
    assert_eq!(r.handler().stream(1, RESP), b"aaaaBBBB");
    assert_eq!(r.stats().conflicting_bytes, 5);
    assert_eq!(r.stats().buffered_bytes, 0);
}

#[test]
fn in_order_segment_spanning_buffered_pieces_is_not_copied() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(&mut r, req_at(1, C, S, 4, b"BB"));
    push(&mut r, req_at(1, C, S, 8, b"DD"));
    let peak = r.stats().peak_buffered_bytes;
    assert_eq!(peak, 2 * (2 + PIECE_OVERHEAD));
    push(&mut r, req_at(1, C, S, 0, b"aaaaXXcc__ee"));
    let h = r.handler();
    assert_eq!(h.stream(1, REQ), b"aaaaBBccDDee");
    let chunks: Vec<Vec<u8>> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Data { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(chunks, [&b"aaaa"[..], b"BB", b"cc", b"DD", b"ee"]);
    let st = r.stats();
    assert_eq!(st.retransmitted_bytes, 4);
    assert_eq!(st.conflicting_bytes, 4);
    assert_eq!(st.buffered_bytes, 0);
    assert_eq!(st.peak_buffered_bytes, peak, "nothing buffered on the way");
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut r = new(ReassemblyConfig::default());
    let (c, s) = (u32::MAX - 5, u32::MAX - 1);
    handshake(&mut r, 1, c, s);
    let req: Vec<u8> = (0..20).collect();
    for off in [8u32, 16, 0, 4, 12] {
        let chunk = &req[off as usize..off as usize + 4];
        push(&mut r, req_at(1, c, s, off, chunk));
    }
    assert_eq!(r.handler().stream(1, REQ), req);
    let resp: Vec<u8> = (100..110).collect();
    push(&mut r, resp_at(1, c, s, 3, &resp[3..]));
    // Acknowledges every request byte: nothing missing there.
    let acking = seg(
        1,
        RESP,
        s.wrapping_add(1),
        c.wrapping_add(21),
        ACK,
        &resp[..3],
    );
    push(&mut r, acking);
    assert_eq!(r.handler().stream(1, RESP), resp);
    assert_eq!(r.stats().gaps, 0);
    assert_eq!(r.stats().retransmitted_bytes, 0);
}

#[test]
fn offsets_go_beyond_four_gib() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    let half = 1u32 << 31;
    for i in 0..2u32 {
        let s = TcpSegment {
            missing: half,
            ..req_at(1, C, S, i.wrapping_mul(half), b"")
        };
        push(&mut r, s);
    }
    // Stream offset 2^32: the same sequence number as offset 0.
    push(&mut r, req_at(1, C, S, 0, b"after"));
    // A copy of the first bytes from 4 GiB ago is a retransmission, not data.
    push(&mut r, req_at(1, C, S, 0u32.wrapping_sub(2), b"xx"));
    assert_eq!(r.handler().stream(1, REQ), b"after");
    assert_eq!(
        r.handler().gaps(1, REQ),
        vec![(u64::from(half), false), (u64::from(half), false)]
    );
    assert_eq!(r.stats().gap_bytes, 1 << 32);
    assert_eq!(r.stats().retransmitted_bytes, 2);
}

#[test]
fn midstream_open_and_unknown_segments_ignored() {
    let mut r = new(ReassemblyConfig::default());
    push(&mut r, seg(9, REQ, 5, 7, RST, b""));
    push(&mut r, seg(9, REQ, 5, 7, FIN | ACK, b""));
    push(&mut r, seg(9, REQ, 5, 7, ACK, b""));
    assert_eq!(r.connections(), 0);
    assert_eq!(r.stats().ignored, 3);
    push(&mut r, seg(1, REQ, 777, 999, ACK | PSH, b"GET /x"));
    push(&mut r, seg(1, RESP, 999, 783, ACK | PSH, b"HTTP/1.1"));
    push(&mut r, seg(1, REQ, 783, 1007, ACK | PSH, b" HTTP/1.1"));
    let h = r.handler();
    assert_eq!(h.opens(), vec![(1, true)]);
    assert_eq!(h.stream(1, REQ), b"GET /x HTTP/1.1");
    assert_eq!(h.stream(1, RESP), b"HTTP/1.1");
    let st = r.stats();
    assert_eq!((st.connections_opened, st.midstream_opened), (1, 1));
    assert_eq!(st.gaps, 0);
    assert_eq!(st.ignored, 3);
}

#[test]
fn syn_ack_opens_when_syn_was_missed() {
    let mut r = new(ReassemblyConfig::default());
    push(&mut r, seg(1, RESP, S, C + 1, SYN | ACK, b""));
    push(&mut r, req_at(1, C, S, 0, b"GET"));
    push(&mut r, resp_at(1, C, S, 0, b"200"));
    let h = r.handler();
    assert_eq!(h.opens(), vec![(1, false)]);
    assert_eq!(h.stream(1, REQ), b"GET");
    assert_eq!(h.stream(1, RESP), b"200");
    assert_eq!(r.stats().midstream_opened, 0);
}

#[test]
fn missing_bytes_become_gaps() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    let cut = TcpSegment {
        missing: 6,
        ..req_at(1, C, S, 0, b"abcd")
    };
    push(&mut r, cut);
    assert_eq!(
        r.handler().events.last(),
        Some(&Ev::Gap {
            port: 1,
            dir: REQ,
            len: 6,
            ring: false
        })
    );
    push(&mut r, req_at(1, C, S, 10, b"efgh"));
    // Truncation is a known cause even after ring-buffer drops.
    r.note_ring_drops();
    let cut_ahead = TcpSegment {
        missing: 3,
        ..req_at(1, C, S, 30, b"zz")
    };
    push(&mut r, cut_ahead);
    assert_eq!(r.stats().buffered_bytes, 2 + 2 * PIECE_OVERHEAD);
    push(&mut r, req_at(1, C, S, 14, &[b'-'; 16]));
    push(&mut r, req_at(1, C, S, 35, b"!"));
    assert_eq!(
        r.handler().stream(1, REQ),
        b"abcdefgh----------------zz!".to_vec()
    );
    assert_eq!(r.handler().gaps(1, REQ), vec![(6, false), (3, false)]);
    assert_eq!(r.stats().gap_bytes, 9);
    assert_eq!(r.stats().buffered_bytes, 0);
}

/// On a lossless capture (live TC), once drops were noted every hole is
/// theirs, also the second hole of a direction from the same burst.
#[test]
fn lossless_capture_blames_every_hole_on_drops() {
    let mut r = new(ReassemblyConfig {
        lossless_capture: true,
        ..ReassemblyConfig::default()
    });
    handshake(&mut r, 1, C, S);
    push(&mut r, req_at(1, C, S, 0, b"GET "));
    push(&mut r, req_at(1, C, S, 8, b"TP/1"));
    // No drops noted yet: a hole is a plain gap.
    push(&mut r, seg(1, RESP, S + 1, C + 1 + 12, ACK, b"HTTP"));
    r.note_ring_drops();
    push(&mut r, req_at(1, C, S, 16, b"more"));
    push(&mut r, seg(1, RESP, S + 1 + 4, C + 1 + 20, ACK, b" 200"));
    push(&mut r, req_at(1, C, S, 24, b"again"));
    push(&mut r, seg(1, RESP, S + 1 + 8, C + 1 + 29, ACK, b" OK "));
    assert_eq!(
        r.handler().gaps(1, REQ),
        vec![(4, false), (4, true), (4, true)]
    );
}

#[test]
fn peer_ack_declares_holes() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(&mut r, req_at(1, C, S, 0, b"GET "));
    // Bytes 4..8 lost by the capture.
    push(&mut r, req_at(1, C, S, 8, b"TP/1"));
    r.note_ring_drops();
    // The response acknowledges the whole request.
    push(&mut r, seg(1, RESP, S + 1, C + 1 + 12, ACK, b"HTTP"));
    assert_eq!(r.handler().stream(1, REQ), b"GET TP/1");
    assert_eq!(r.handler().gaps(1, REQ), vec![(4, true)]);
    // Another hole, no drops noted since the last gap.
    push(&mut r, req_at(1, C, S, 16, b"more"));
    push(&mut r, seg(1, RESP, S + 1 + 4, C + 1 + 20, ACK, b" 200"));
    assert_eq!(r.handler().gaps(1, REQ), vec![(4, true), (4, false)]);
    assert_eq!(r.handler().stream(1, REQ), b"GET TP/1more");
    // A lost tail with nothing buffered after it: response bytes 8..12.
    // The drops were noted after this direction's last gap report (none):
    // attributed to them.
    push(&mut r, seg(1, REQ, C + 1 + 20, S + 1 + 12, ACK, b"next"));
    assert_eq!(r.handler().gaps(1, RESP), vec![(4, true)]);
    push(&mut r, resp_at(1, C, S, 12, b" OK"));
    assert_eq!(r.handler().stream(1, RESP), b"HTTP 200 OK");
    // An acknowledgement of bytes already delivered changes nothing.
    push(&mut r, seg(1, REQ, C + 1 + 24, S + 1 + 5, ACK, b""));
    let st = r.stats();
    assert_eq!(st.gaps, 3);
    assert_eq!(st.gap_bytes, 12);
    assert_eq!(st.buffer_limit_gaps, 0);
    assert_eq!(st.buffered_bytes, 0);
}

#[test]
fn connection_buffer_limit_forces_gap() {
    let limit = 2 * (100 + PIECE_OVERHEAD) - 1;
    let mut r = new(ReassemblyConfig {
        max_conn_buffer: limit as usize,
        ..ReassemblyConfig::default()
    });
    handshake(&mut r, 1, C, S);
    let p1 = [1u8; 100];
    let p2 = [2u8; 100];
    push(&mut r, req_at(1, C, S, 10, &p1));
    assert!(r.handler().gaps(1, REQ).is_empty());
    push(&mut r, req_at(1, C, S, 200, &p2));
    assert_eq!(r.handler().gaps(1, REQ), vec![(10, false)]);
    assert_eq!(r.handler().stream(1, REQ), p1);
    assert_eq!(r.stats().buffered_bytes, 100 + PIECE_OVERHEAD);
    assert_eq!(r.stats().buffer_limit_gaps, 1);
    push(&mut r, req_at(1, C, S, 110, &[3u8; 90]));
    let mut want = p1.to_vec();
    want.extend_from_slice(&[3u8; 90]);
    want.extend_from_slice(&p2);
    assert_eq!(r.handler().stream(1, REQ), want);
    assert_eq!(r.stats().buffered_bytes, 0);
    assert_eq!(r.stats().peak_buffered_bytes, 2 * (100 + PIECE_OVERHEAD));
}

#[test]
fn total_buffer_limit_flushes_the_pushing_direction() {
    let cost = 100 + PIECE_OVERHEAD;
    let mut r = new(ReassemblyConfig {
        max_total_buffer: (2 * cost + 50) as usize,
        ..ReassemblyConfig::default()
    });
    handshake(&mut r, 1, C, S);
    handshake(&mut r, 2, C, S);
    push(&mut r, req_at(1, C, S, 10, &[1u8; 100]));
    push(&mut r, req_at(2, C, S, 10, &[2u8; 100]));
    assert_eq!(r.stats().buffered_bytes, 2 * cost);
    push(&mut r, req_at(2, C, S, 200, &[3u8; 100]));
    assert!(
        r.handler().gaps(1, REQ).is_empty(),
        "others keep their buffer"
    );
    assert_eq!(r.handler().gaps(2, REQ), vec![(10, false)]);
    assert_eq!(r.handler().stream(2, REQ), [2u8; 100]);
    assert_eq!(r.stats().buffered_bytes, 2 * cost);
    assert_eq!(r.stats().buffer_limit_gaps, 1);
    assert_eq!(r.stats().peak_buffered_bytes, 3 * cost);
}

#[test]
fn fin_from_both_sides_closes() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(&mut r, seg(1, REQ, C + 1, S + 1, ACK | FIN, b"GET"));
    assert_eq!(r.handler().fins(1), vec![REQ]);
    push(&mut r, seg(1, RESP, S + 1, C + 5, ACK | FIN, b"OK"));
    assert_eq!(r.connections(), 0);
    // The last ACK of the close belongs to no connection.
    push(&mut r, seg(1, REQ, C + 5, S + 4, ACK, b""));
    assert_eq!(r.connections(), 0);
    let tail: Vec<Ev> = r.handler().events[1..].to_vec();
    assert_eq!(
        tail,
        vec![
            Ev::Data {
                port: 1,
                dir: REQ,
                ts: 0,
                bytes: b"GET".to_vec()
            },
            Ev::Fin { port: 1, dir: REQ },
            Ev::Data {
                port: 1,
                dir: RESP,
                ts: 0,
                bytes: b"OK".to_vec()
            },
            Ev::Fin { port: 1, dir: RESP },
            Ev::Close {
                port: 1,
                id: 0,
                reason: CloseReason::Fin
            },
        ]
    );
    let st = r.stats();
    assert_eq!(st.closed_fin, 1);
    assert_eq!(st.ignored, 1);
    assert_eq!(st.connections_opened, 1);
}

#[test]
fn fin_waits_for_the_bytes_before_it() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(&mut r, req_at(1, C, S, 0, b"ab"));
    push(&mut r, seg(1, REQ, C + 1 + 4, S + 1, ACK | FIN, b"ef"));
    assert!(r.handler().fins(1).is_empty());
    push(&mut r, req_at(1, C, S, 2, b"cd"));
    assert_eq!(r.handler().stream(1, REQ), b"abcdef");
    assert_eq!(r.handler().fins(1), vec![REQ]);
    // Bytes after a FIN contradict it.
    push(&mut r, req_at(1, C, S, 6, b"zz"));
    assert_eq!(r.stats().conflicting_bytes, 2);
    // A response FIN behind a lost segment: the client's ACK of the FIN
    // reports the hole, then the FIN.
    push(&mut r, resp_at(1, C, S, 0, b"12"));
    push(&mut r, seg(1, RESP, S + 1 + 4, C + 8, ACK | FIN, b"56"));
    assert_eq!(r.connections(), 1);
    push(&mut r, seg(1, REQ, C + 8, S + 1 + 7, ACK, b""));
    assert_eq!(r.handler().gaps(1, RESP), vec![(2, false)]);
    assert_eq!(r.handler().stream(1, RESP), b"1256");
    assert_eq!(r.handler().closes(), vec![(1, CloseReason::Fin)]);
    assert_eq!(r.stats().buffered_bytes, 0);
}

#[test]
fn buffered_bytes_after_a_later_fin_are_dropped() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(&mut r, req_at(1, C, S, 10, b"xyz"));
    push(&mut r, req_at(1, C, S, 20, b"q"));
    push(&mut r, req_at(1, C, S, 11, b"").with_flags(ACK | FIN));
    assert_eq!(r.stats().conflicting_bytes, 3);
    assert_eq!(r.stats().buffered_bytes, 1 + PIECE_OVERHEAD);
    // A second FIN elsewhere is ignored.
    push(&mut r, req_at(1, C, S, 15, b"").with_flags(ACK | FIN));
    assert_eq!(r.stats().ignored, 1);
    push(&mut r, req_at(1, C, S, 0, b"0123456789"));
    assert_eq!(r.handler().stream(1, REQ), b"0123456789x");
    assert_eq!(r.handler().fins(1), vec![REQ]);
    assert_eq!(r.stats().buffered_bytes, 0);
}

#[test]
fn rst_flushes_and_closes() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(&mut r, req_at(1, C, S, 0, b"ab"));
    push(&mut r, req_at(1, C, S, 5, b"zz"));
    push(&mut r, seg(1, RESP, S + 1, C + 3, RST | ACK, b""));
    assert_eq!(r.connections(), 0);
    let tail: Vec<Ev> = r.handler().events[2..].to_vec();
    assert_eq!(
        tail,
        vec![
            Ev::Gap {
                port: 1,
                dir: REQ,
                len: 3,
                ring: false
            },
            Ev::Data {
                port: 1,
                dir: REQ,
                ts: 0,
                bytes: b"zz".to_vec()
            },
            Ev::Close {
                port: 1,
                id: 0,
                reason: CloseReason::Rst
            },
        ]
    );
    assert_eq!(r.stats().closed_rst, 1);
    assert_eq!(r.stats().buffered_bytes, 0);
}

#[test]
fn idle_connections_expire_least_recent_first() {
    let mut r = new(ReassemblyConfig {
        idle_timeout_ns: 1_000,
        ..ReassemblyConfig::default()
    });
    handshake(&mut r, 1, C, S);
    push(
        &mut r,
        TcpSegment {
            ts_ns: 500,
            ..seg(2, REQ, C, 0, SYN, b"")
        },
    );
    push(
        &mut r,
        TcpSegment {
            ts_ns: 500,
            ..req_at(2, C, S, 3, b"late")
        },
    );
    push(
        &mut r,
        TcpSegment {
            ts_ns: 600,
            ..req_at(1, C, S, 0, b"x")
        },
    );
    push(
        &mut r,
        TcpSegment {
            ts_ns: 700,
            ..seg(3, REQ, C + 1, S + 1, ACK | PSH | FIN, b"q")
        },
    );
    r.expire(1_500);
    assert_eq!(r.connections(), 3);
    r.expire(1_550);
    assert_eq!(r.handler().closes(), vec![(2, CloseReason::Idle)]);
    // What it buffered was reported before the close.
    assert_eq!(r.handler().gaps(2, REQ), vec![(3, false)]);
    assert_eq!(r.handler().stream(2, REQ), b"late");
    r.expire(1_600);
    assert_eq!(
        r.connections(),
        2,
        "idle exactly the timeout is not expired"
    );
    r.expire(1_601);
    r.expire(1_701);
    assert_eq!(
        r.handler().closes(),
        vec![
            (2, CloseReason::Idle),
            (1, CloseReason::Idle),
            (3, CloseReason::Fin)
        ],
        "a half-closed connection that goes idle closes with Fin"
    );
    let st = r.stats();
    assert_eq!((st.closed_idle, st.closed_fin), (2, 1));
    assert_eq!(st.buffered_bytes, 0);
    assert_eq!(r.connections(), 0);
}

#[test]
fn connection_limit_evicts_least_recently_active() {
    let mut r = new(ReassemblyConfig {
        max_connections: 2,
        ..ReassemblyConfig::default()
    });
    push(&mut r, seg(1, REQ, C, 0, SYN, b""));
    push(&mut r, seg(2, REQ, C, 0, SYN, b""));
    push(&mut r, req_at(1, C, S, 0, b"a"));
    push(&mut r, seg(3, REQ, C, 0, SYN, b""));
    assert_eq!(r.handler().closes(), vec![(2, CloseReason::Evicted)]);
    assert_eq!(r.connections(), 2);
    push(&mut r, seg(4, REQ, C, 0, SYN, b""));
    assert_eq!(
        r.handler().closes(),
        vec![(2, CloseReason::Evicted), (1, CloseReason::Evicted)]
    );
    assert_eq!(r.stats().evicted, 2);
    assert_eq!(r.connections(), 2);
    assert_eq!(r.handler().stream(1, REQ), b"a");
}

#[test]
fn new_syn_on_a_known_connection_starts_a_new_one() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    push(&mut r, req_at(1, C, S, 0, b"old"));
    // A retransmitted SYN changes nothing.
    push(&mut r, seg(1, REQ, C, 0, SYN, b""));
    assert!(r.handler().closes().is_empty());
    let (c2, s2) = (9_000_000, 7);
    handshake(&mut r, 1, c2, s2);
    push(&mut r, req_at(1, c2, s2, 0, b"new"));
    let h = r.handler();
    assert_eq!(h.opens(), vec![(1, false), (1, false)]);
    assert!(h.events.contains(&Ev::Close {
        port: 1,
        id: 0,
        reason: CloseReason::End
    }));
    assert_eq!(h.stream(1, REQ), b"oldnew");
    assert_eq!(h.gaps(1, REQ), vec![]);
    assert_eq!(r.stats().closed_end, 1);
    assert_eq!(r.stats().connections_opened, 2);
    assert_eq!(r.connections(), 1);
}

#[test]
fn finish_flushes_and_closes_everything() {
    let mut r = new(ReassemblyConfig::default());
    handshake(&mut r, 1, C, S);
    handshake(&mut r, 2, C, S);
    push(&mut r, resp_at(1, C, S, 4, b"tail"));
    r.finish(99);
    assert_eq!(
        r.handler().closes(),
        vec![(2, CloseReason::End), (1, CloseReason::End)],
        "least recently active first"
    );
    assert_eq!(r.handler().gaps(1, RESP), vec![(4, false)]);
    assert_eq!(r.handler().stream(1, RESP), b"tail");
    assert_eq!(r.connections(), 0);
    assert_eq!(r.stats().closed_end, 2);
    assert_eq!(r.stats().buffered_bytes, 0);
    let h = r.into_handler();
    assert!(matches!(h.events.last(), Some(Ev::Close { port: 1, .. })));
}

/// A stream cut into segments: (offset, length).
fn cut(len: usize, rng: &mut StdRng) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < len {
        let n = rng.random_range(1..=300).min(len - off);
        out.push((off, n));
        off += n;
    }
    out
}

/// Random retransmissions with arbitrary boundaries.
fn duplicates(len: usize, rng: &mut StdRng) -> Vec<(usize, usize)> {
    if len == 0 {
        return Vec::new();
    }
    (0..rng.random_range(0..=len / 50 + 1))
        .map(|_| {
            let off = rng.random_range(0..len);
            (off, rng.random_range(1..=300).min(len - off))
        })
        .collect()
}

fn isn() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (u32::MAX - 3_000)..=u32::MAX]
}

/// Segments of both directions, shuffled: (direction, offset, length).
fn plan(
    req: usize,
    resp: usize,
    rng: &mut StdRng,
    keep: impl Fn(&mut StdRng) -> bool,
) -> Vec<(Direction, usize, usize)> {
    let mut segs = Vec::new();
    for (dir, len) in [(REQ, req), (RESP, resp)] {
        for (off, n) in cut(len, rng) {
            if keep(rng) {
                segs.push((dir, off, n));
            }
        }
        for (off, n) in duplicates(len, rng) {
            segs.push((dir, off, n));
        }
    }
    segs.shuffle(rng);
    segs
}

fn push_plan(r: &mut R, plan: &[(Direction, usize, usize)], streams: [&[u8]; 2], c: u32, s: u32) {
    for &(dir, off, n) in plan {
        let (data, at) = match dir {
            REQ => (
                streams[0],
                req_at as fn(u16, u32, u32, u32, &[u8]) -> TcpSegment<'_>,
            ),
            RESP => (
                streams[1],
                resp_at as fn(u16, u32, u32, u32, &[u8]) -> TcpSegment<'_>,
            ),
        };
        push(r, at(1, c, s, off as u32, &data[off..off + n]));
    }
}

fn fin_both(r: &mut R, c: u32, s: u32, req: usize, resp: usize) {
    let (req, resp) = (req as u32, resp as u32);
    push(r, req_at(1, c, s, req, b"").with_flags(ACK | FIN));
    push(r, resp_at(1, c, s, resp, b"").with_flags(ACK | FIN));
}

impl TcpSegment<'_> {
    fn with_flags(self, flags: u8) -> Self {
        Self { flags, ..self }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every byte arrives at least once, in any order, with duplicates:
    /// the handler sees exactly the original streams, no gap.
    #[test]
    fn shuffled_duplicated_segments_reassemble(
        req in proptest::collection::vec(any::<u8>(), 0..3_000),
        resp in proptest::collection::vec(any::<u8>(), 0..3_000),
        c in isn(),
        s in isn(),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let plan = plan(req.len(), resp.len(), &mut rng, |_| true);
        let mut r = new(ReassemblyConfig::default());
        handshake(&mut r, 1, c, s);
        push_plan(&mut r, &plan, [&req, &resp], c, s);
        fin_both(&mut r, c, s, req.len(), resp.len());
        let h = r.handler();
        prop_assert_eq!(h.stream(1, REQ), req);
        prop_assert_eq!(h.stream(1, RESP), resp);
        prop_assert_eq!(h.gaps(1, REQ), vec![]);
        prop_assert_eq!(h.gaps(1, RESP), vec![]);
        prop_assert_eq!(h.fins(1).len(), 2);
        prop_assert_eq!(h.closes(), vec![(1, CloseReason::Fin)]);
        prop_assert_eq!(r.stats().buffered_bytes, 0);
        prop_assert_eq!(r.stats().conflicting_bytes, 0);
        prop_assert_eq!(r.connections(), 0);
    }

    /// Segments lost, tight buffer limits: every byte delivered is the
    /// original byte at its place (gaps counted in), and the stream ends at
    /// its FIN.
    #[test]
    fn lossy_streams_stay_aligned(
        req in proptest::collection::vec(any::<u8>(), 0..3_000),
        resp in proptest::collection::vec(any::<u8>(), 0..3_000),
        c in isn(),
        s in isn(),
        seed in any::<u64>(),
        loss in 0u32..50,
        max_conn_buffer in 0usize..2_000,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let plan = plan(req.len(), resp.len(), &mut rng, |rng| rng.random_range(0..100) >= loss);
        let mut r = new(ReassemblyConfig { max_conn_buffer, ..ReassemblyConfig::default() });
        handshake(&mut r, 1, c, s);
        push_plan(&mut r, &plan, [&req, &resp], c, s);
        fin_both(&mut r, c, s, req.len(), resp.len());
        r.finish(0);
        let h = r.handler();
        for (dir, want) in [(REQ, &req), (RESP, &resp)] {
            let mut pos = 0usize;
            for ev in &h.events {
                match ev {
                    Ev::Data { dir: d, bytes, .. } if *d == dir => {
                        prop_assert_eq!(want.get(pos..pos + bytes.len()), Some(&bytes[..]));
                        pos += bytes.len();
                    }
                    Ev::Gap { dir: d, len, .. } if *d == dir => pos += *len as usize,
                    _ => {}
                }
            }
            prop_assert_eq!(pos, want.len());
        }
        prop_assert_eq!(h.fins(1).len(), 2);
        prop_assert_eq!(h.closes().len(), 1);
        prop_assert_eq!(r.stats().buffered_bytes, 0);
        prop_assert_eq!(r.stats().conflicting_bytes, 0);
    }
}
