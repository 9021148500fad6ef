//! conn_hash: one value per connection whatever the direction, well spread,
//! so that a threshold keeps about the fraction it stands for.

extern crate std;

use std::{collections::HashSet, vec::Vec};

use super::*;

/// A small deterministic generator (xorshift64*), so the tests need no
/// dependency and always see the same tuples.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn v4(&mut self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&(self.next() as u32).to_be_bytes());
        a
    }

    fn v6(&mut self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.next().to_be_bytes());
        a[8..].copy_from_slice(&self.next().to_be_bytes());
        a
    }
}

fn addr(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&v4);
    a
}

/// The hash as each direction computes it: for a request the client is the
/// source, for a response the destination. Both must agree.
#[test]
fn both_directions_of_a_connection_agree() {
    let mut rng = Rng(0x1234_5678);
    for _ in 0..1000 {
        let (client, server) = (rng.v4(), rng.v4());
        let (cport, sport) = (rng.next() as u16, 8080);
        // Request: src = client, dst = server.
        let (src, sp, dst, dp) = (client, cport, server, sport);
        let request = conn_hash(&src, sp, &dst, dp);
        // Response: src = server, dst = client; the client is the destination.
        let (src, sp, dst, dp) = (server, sport, client, cport);
        let response = conn_hash(&dst, dp, &src, sp);
        assert_eq!(request, response);
    }
}

/// The roles matter: swapping client and server is another connection, and
/// so is any other client port.
#[test]
fn distinct_tuples_hash_apart() {
    let c = addr([10, 0, 0, 1]);
    let s = addr([10, 0, 0, 2]);
    assert_ne!(conn_hash(&c, 40000, &s, 80), conn_hash(&s, 80, &c, 40000));
    let hashes: HashSet<u32> = (1024..=u16::MAX)
        .map(|p| conn_hash(&c, p, &s, 80))
        .collect();
    // 64k sequential client ports of one client: a 32-bit hash as good as
    // random collides about n^2 / 2^33 = 0.5 times here; a weak fold of
    // the ports (e.g. a plain xor) would collide in thousands.
    let n = usize::from(u16::MAX) - 1024 + 1;
    assert!(n - hashes.len() <= 3, "{} collisions", n - hashes.len());
}

fn kept(tuples: &[([u8; 16], u16, [u8; 16], u16)], threshold: u64) -> usize {
    tuples
        .iter()
        .filter(|(c, cp, s, sp)| sampled(conn_hash(c, *cp, s, *sp), threshold))
        .count()
}

fn tuples(n: usize, v6: bool) -> Vec<([u8; 16], u16, [u8; 16], u16)> {
    let mut rng = Rng(0xdead_beef);
    (0..n)
        .map(|_| {
            let (c, s) = if v6 {
                (rng.v6(), rng.v6())
            } else {
                (rng.v4(), rng.v4())
            };
            (c, rng.next() as u16, s, 443)
        })
        .collect()
}

/// Over many random connections the kept share is close to the fraction
/// (binomial: 100k tuples, F = 0.1 .. 0.9, standard deviation <= 0.0016,
/// so 0.01 is more than six of them).
#[test]
fn kept_share_is_close_to_the_fraction() {
    for v6 in [false, true] {
        let t = tuples(100_000, v6);
        for f in [0.1, 0.25, 0.5, 0.9] {
            let threshold = (f * SAMPLE_ALL as f64) as u64;
            let share = kept(&t, threshold) as f64 / t.len() as f64;
            assert!((share - f).abs() < 0.01, "v6={v6} F={f}: kept {share}");
        }
    }
}

/// Sequential client ports of one client (what a load generator opens)
/// spread as well as random tuples.
#[test]
fn sequential_ports_spread_too() {
    let c = addr([192, 168, 1, 7]);
    let s = addr([192, 168, 1, 1]);
    let t: Vec<_> = (20_000..60_000u16).map(|p| (c, p, s, 8080)).collect();
    let share = kept(&t, SAMPLE_ALL / 2) as f64 / t.len() as f64;
    assert!((share - 0.5).abs() < 0.01, "kept {share}");
}

#[test]
fn full_threshold_keeps_everything_and_zero_nothing() {
    let t = tuples(10_000, false);
    assert_eq!(kept(&t, SAMPLE_ALL), t.len());
    assert_eq!(kept(&t, 0), 0);
    assert!(sampled(u32::MAX, SAMPLE_ALL));
    assert!(!sampled(u32::MAX, SAMPLE_ALL - 1));
}

#[test]
fn port_bitmap_sets_and_reads_single_bits() {
    let mut map = [0u8; PORT_BITMAP_LEN];
    for p in [0, 7, 8, 80, 8080, u16::MAX] {
        set_port(&mut map, p);
    }
    for p in 0..=u16::MAX {
        assert_eq!(
            has_port(&map, p),
            [0, 7, 8, 80, 8080, u16::MAX].contains(&p),
            "port {p}"
        );
    }
}
