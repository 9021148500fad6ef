//! Reassembly + HTTP pairing over arbitrary segments of one connection.
//!
//! The input is a list of segments: `op:u8 seq:u16le ack:u16le len:u8`
//! followed by `len` payload bytes. `op` bit 0 is the direction (request /
//! response), bits 1..3 pick SYN, FIN, RST or plain data. Offsets are
//! relative to fixed initial sequence numbers near the u32 wrap, so
//! reordering, overlaps, gaps and wrap-around all come out of the fuzzer.
//!
//! Checked: no panic; every request seen has exactly one outcome once the
//! input ends; no bytes stay buffered.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use parallelrun_agent::{
    http::{HttpConfig, HttpTracker},
    model::{ConnKey, Direction, TcpSegment, tcp_flags},
    reassembly::{ReassemblyConfig, Reassembler},
};

const CLIENT_ISN: u32 = u32::MAX - 300;
const SERVER_ISN: u32 = 7;

fuzz_target!(|data: &[u8]| {
    let conn = ConnKey {
        client: SocketAddr::from(([10, 0, 0, 1], 40000)),
        server: SocketAddr::from(([10, 0, 0, 2], 80)),
    };
    let cfg = ReassemblyConfig {
        max_conn_buffer: 4096,
        max_total_buffer: 8192,
        ..ReassemblyConfig::default()
    };
    let mut http = HttpConfig::default();
    http.limits.max_body = 2048;
    let mut r = Reassembler::new(cfg, HttpTracker::new(http));
    let mut rest = data;
    let mut ts = 1u64;
    let mut outcomes = 0u64;
    while let [op, s0, s1, a0, a1, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let (direction, isn, peer_isn) = if op & 1 == 0 {
            (Direction::Request, CLIENT_ISN, SERVER_ISN)
        } else {
            (Direction::Response, SERVER_ISN, CLIENT_ISN)
        };
        let flags = match (op >> 1) & 7 {
            1 => tcp_flags::SYN | if op & 1 == 1 { tcp_flags::ACK } else { 0 },
            2 => tcp_flags::FIN | tcp_flags::ACK,
            3 => tcp_flags::RST,
            _ => tcp_flags::ACK | tcp_flags::PSH,
        };
        ts += 1000;
        r.push(&TcpSegment {
            ts_ns: ts,
            conn,
            direction,
            seq: isn.wrapping_add(u32::from(u16::from_le_bytes([*s0, *s1]))),
            ack: peer_isn.wrapping_add(u32::from(u16::from_le_bytes([*a0, *a1]))),
            flags,
            payload,
            missing: 0,
        });
        outcomes += r.handler_mut().outcomes().count() as u64;
    }
    r.finish(ts + 1);
    outcomes += r.handler_mut().outcomes().count() as u64;
    let stats = r.handler().stats();
    assert_eq!(stats.requests_seen, stats.paired + stats.lost_total());
    assert_eq!(stats.requests_seen, outcomes);
    assert_eq!(r.stats().buffered_bytes, 0);
});
