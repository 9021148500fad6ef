use parallelrun_common::{Direction, SAMPLE_ALL};

use super::*;
use crate::capture::{Clock, Segment, segment_tests};

/// A kernel record of each direction of one connection, as the agent turns
/// it into a segment: both give the connection the agent hashes, and that
/// hash is the one the kernel computed from the record's raw fields.
#[test]
fn agent_hash_is_the_kernels_for_both_directions() {
    let clock = Clock { offset_ns: 0 };
    for family in [4u8, 6] {
        let mut req = segment_tests::header(0);
        req.family = family;
        if family == 6 {
            req.saddr = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            req.daddr = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        }
        let mut resp = req;
        resp.direction = Direction::Response as u8;
        (resp.saddr, resp.daddr) = (req.daddr, req.saddr);
        (resp.sport, resp.dport) = (req.dport, req.sport);
        let kernel = parallelrun_common::conn_hash(&req.saddr, req.sport, &req.daddr, req.dport);
        for h in [req, resp] {
            let rec = segment_tests::record(h, b"");
            let seg = Segment::parse(&rec).unwrap().to_tcp(&clock);
            assert_eq!(seg.conn.client.port(), 40000);
            assert_eq!(conn_hash(&seg.conn), kernel, "family {family}");
        }
    }
}

#[test]
fn thresholds_of_fractions() {
    assert_eq!(sample_threshold(1.0), SAMPLE_ALL);
    assert_eq!(sample_threshold(0.5), SAMPLE_ALL / 2);
    assert_eq!(sample_threshold(0.25), SAMPLE_ALL / 4);
    assert!(sample_threshold(1e-9) < 10);
}

/// F = 1 keeps every connection, and a fraction keeps about that share of
/// the connections a load generator opens (one client, sequential ports).
#[test]
fn sampled_share_follows_the_fraction() {
    let conns: Vec<ConnKey> = (10_000..50_000u16)
        .map(|p| ConnKey {
            client: format!("10.1.0.9:{p}").parse().unwrap(),
            server: "10.1.0.1:8080".parse().unwrap(),
        })
        .collect();
    assert!(conns.iter().all(|c| conn_sampled(c, SAMPLE_ALL)));
    for f in [0.1, 0.5, 0.8] {
        let t = sample_threshold(f);
        let share = conns.iter().filter(|c| conn_sampled(c, t)).count() as f64 / 40_000.0;
        assert!((share - f).abs() < 0.015, "F={f}: {share}");
    }
}
