//! HTTP/2 connections through the HTTP tracker: detection, streams to
//! exchanges, HPACK across blocks, resets, gaps, limits, over arbitrary
//! chunks of both directions.
//!
//! Input: `mode:u8`, then chunks `op:u8 len:u8` followed by `len` bytes.
//! `mode` bit 0: the connection was joined midway (else its start was seen
//! and the client preface is sent first); bit 1: small limits (2 streams,
//! 512-byte bodies, 256-byte header lists). `op` bit 0 is the direction
//! (request / response); bit 1 reports a gap in that direction before the
//! chunk; bit 2 sends the chunk one byte at a time.
//!
//! Checked: no panic; nothing held beyond the bounds between calls; once
//! the connection closes every request seen has exactly one outcome and
//! nothing stays buffered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parallelrun_agent::{
    http::{HttpConfig, HttpTracker},
    http2::frame::PREFACE,
    model::{ConnKey, Direction, Outcome},
    stream::{CloseReason, StreamHandler},
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let key = ConnKey {
        client: ([10, 0, 0, 1], 40000).into(),
        server: ([10, 0, 0, 2], 50051).into(),
    };
    let mut cfg = HttpConfig::default();
    if mode & 2 != 0 {
        cfg.http2.max_streams = 2;
        cfg.limits.max_body = 512;
        cfg.http2.max_header_list = 256;
    }
    let bound = 2 * (9 + 16_384)
        + 2 * cfg.http2.block.max_block
        + cfg.http2.max_streams * 2 * cfg.http2.max_body
        + 64 * 1024;
    let mut tracker = HttpTracker::new(cfg);
    let midstream = mode & 1 != 0;
    let mut conn = tracker.open(&key, 0, midstream);
    let mut outcomes = 0u64;
    if !midstream {
        tracker.data(&mut conn, &key, Direction::Request, 1, PREFACE);
    }
    let mut ts = 2;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let dir = if op & 1 == 0 {
            Direction::Request
        } else {
            Direction::Response
        };
        if op & 2 != 0 {
            tracker.gap(&mut conn, &key, dir, ts, 10, false);
        }
        if op & 4 != 0 {
            for byte in chunk.chunks(1) {
                tracker.data(&mut conn, &key, dir, ts, byte);
            }
        } else {
            tracker.data(&mut conn, &key, dir, ts, chunk);
        }
        ts += 1;
        outcomes += tracker.outcomes().count() as u64;
        let held = tracker.stats().buffered_bytes as usize;
        assert!(held <= bound, "{held} bytes held, bound {bound}");
    }
    tracker.close(conn, &key, ts, CloseReason::End);
    outcomes += tracker
        .outcomes()
        .filter(|o| matches!(o, Outcome::Paired(_) | Outcome::Lost(_)))
        .count() as u64;
    let stats = tracker.stats();
    assert_eq!(stats.requests_seen, stats.paired + stats.lost_total());
    assert_eq!(outcomes, stats.requests_seen);
    assert_eq!(stats.buffered_bytes, 0);
});
