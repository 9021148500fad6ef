//! Property: however a real HTTP/1.1 conversation is cut into segments,
//! reordered within each direction and partly duplicated (retransmissions),
//! reassembly + HTTP pairing yield exactly the exchanges of the
//! conversation, in order, with nothing lost.
//!
//! Data segments carry no ACK flag here: an ACK from the other direction
//! would (rightly) declare not-yet-seen bytes lost, which a capture point
//! cannot produce for bytes that really were on the wire.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::net::SocketAddr;

use parallelrun_agent::{
    http::{HttpConfig, HttpTracker},
    model::{ConnKey, Direction, Outcome, TcpSegment, tcp_flags},
    reassembly::{Reassembler, ReassemblyConfig},
};
use proptest::prelude::*;

/// One request/response pair of the conversation.
#[derive(Clone, Debug)]
struct Pair {
    request: Vec<u8>,
    response: Vec<u8>,
    status: u16,
    /// The response body as the client sees it (de-chunked).
    body: Vec<u8>,
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i + seed as usize) % 26) as u8)
        .collect()
}

/// A pair of one of the kinds real services produce.
fn pair(kind: u8, len: usize, seed: u8) -> Pair {
    let b = body(len, seed);
    let get = format!("GET /item/{seed} HTTP/1.1\r\nHost: old.test\r\n\r\n").into_bytes();
    match kind % 5 {
        0 => {
            let mut response =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
            response.extend_from_slice(&b);
            Pair {
                request: get,
                response,
                status: 200,
                body: b,
            }
        }
        1 => {
            let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for chunk in b.chunks(7.max(len / 3).max(1)) {
                response.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
                response.extend_from_slice(chunk);
                response.extend_from_slice(b"\r\n");
            }
            response.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
            Pair {
                request: get,
                response,
                status: 200,
                body: b,
            }
        }
        2 => Pair {
            request: format!("HEAD /item/{seed} HTTP/1.1\r\nHost: old.test\r\n\r\n").into_bytes(),
            response: format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes(),
            status: 200,
            body: Vec::new(),
        },
        3 => Pair {
            request: format!(
                "GET /item/{seed} HTTP/1.1\r\nHost: old.test\r\nIf-None-Match: \"x\"\r\n\r\n"
            )
            .into_bytes(),
            response: b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec(),
            status: 304,
            body: Vec::new(),
        },
        _ => {
            let mut request =
                format!("POST /orders HTTP/1.1\r\nHost: old.test\r\nContent-Length: {len}\r\n\r\n")
                    .into_bytes();
            request.extend_from_slice(&b);
            Pair {
                request,
                response: b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                status: 201,
                body: b"ok".to_vec(),
            }
        }
    }
}

fn seg(
    conn: ConnKey,
    direction: Direction,
    seq: u32,
    flags: u8,
    payload: &[u8],
    ts_ns: u64,
) -> TcpSegment<'_> {
    TcpSegment {
        ts_ns,
        conn,
        direction,
        seq,
        ack: 0,
        flags,
        payload,
        missing: 0,
    }
}

/// (direction, offset in that direction's stream, length) of each piece.
type Piece = (Direction, usize, usize);

fn cut(dir: Direction, total: usize, sizes: &[usize]) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut off = 0;
    let mut i = 0;
    while off < total {
        let n = sizes[i % sizes.len()].min(total - off);
        out.push((dir, off, n));
        off += n;
        i += 1;
    }
    out
}

fn check(
    kinds: &[(u8, usize)],
    req_sizes: &[usize],
    resp_sizes: &[usize],
    order: &[u32],
    dups: &[u16],
    isn: (u32, u32),
) -> Result<(), TestCaseError> {
    let pairs: Vec<Pair> = kinds
        .iter()
        .enumerate()
        .map(|(i, &(k, len))| pair(k, len, i as u8))
        .collect();
    let req: Vec<u8> = pairs.iter().flat_map(|p| p.request.clone()).collect();
    let resp: Vec<u8> = pairs.iter().flat_map(|p| p.response.clone()).collect();

    // Each direction cut and shuffled on its own (keys from `order`), then
    // merged as a capture point sees them: a response byte never comes
    // before the last byte of the request it answers (the server had
    // received it), but otherwise the directions interleave freely.
    let shuffle = |mut v: Vec<Piece>, salt: usize| {
        let mut keyed: Vec<(u32, Piece)> = v
            .drain(..)
            .enumerate()
            .map(|(i, p)| (order.get(i + salt).copied().unwrap_or(i as u32), p))
            .collect();
        keyed.sort_by_key(|(k, _)| *k);
        keyed.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
    };
    let req_pieces = shuffle(cut(Direction::Request, req.len(), req_sizes), 0);
    let resp_pieces = shuffle(cut(Direction::Response, resp.len(), resp_sizes), 200);
    // Where each response ends, and where its request ends.
    let mut bounds = Vec::new();
    let (mut q, mut a) = (0, 0);
    for p in &pairs {
        q += p.request.len();
        a += p.response.len();
        bounds.push((a, q));
    }
    let needs = |off: usize| {
        bounds
            .iter()
            .find(|(resp_end, _)| off < *resp_end)
            .map_or(req.len(), |(_, req_end)| *req_end)
    };
    let mut got = vec![false; req.len()];
    let mut have = 0; // request bytes delivered from the start, contiguous
    let mut pieces = Vec::new();
    let (mut qi, mut ri) = (0, 0);
    while qi < req_pieces.len() || ri < resp_pieces.len() {
        let prefer_resp = order.get(pieces.len() + 400).is_some_and(|k| k % 2 == 0);
        let resp_ok = resp_pieces
            .get(ri)
            .is_some_and(|&(_, off, n)| have >= needs(off + n - 1));
        if resp_ok && (prefer_resp || qi == req_pieces.len()) {
            pieces.push(resp_pieces[ri]);
            ri += 1;
        } else if let Some(&(d, off, n)) = req_pieces.get(qi) {
            pieces.push((d, off, n));
            got[off..off + n].iter_mut().for_each(|b| *b = true);
            while have < got.len() && got[have] {
                have += 1;
            }
            qi += 1;
        } else {
            pieces.push(resp_pieces[ri]);
            ri += 1;
        }
    }
    for d in dups {
        if let Some(p) = pieces.get(*d as usize % pieces.len().max(1)).copied() {
            pieces.push(p);
        }
    }

    let conn = ConnKey {
        client: SocketAddr::from(([10, 0, 0, 1], 40000)),
        server: SocketAddr::from(([10, 0, 0, 2], 80)),
    };
    let (c_isn, s_isn) = isn;
    let mut r = Reassembler::new(
        ReassemblyConfig::default(),
        HttpTracker::new(HttpConfig::default()),
    );

    r.push(&seg(
        conn,
        Direction::Request,
        c_isn,
        tcp_flags::SYN,
        &[],
        1,
    ));
    let mut syn_ack = seg(
        conn,
        Direction::Response,
        s_isn,
        tcp_flags::SYN | tcp_flags::ACK,
        &[],
        2,
    );
    syn_ack.ack = c_isn.wrapping_add(1);
    r.push(&syn_ack);
    let mut ts = 10;
    for (dir, off, n) in pieces {
        let (stream, isn) = match dir {
            Direction::Request => (&req, c_isn),
            Direction::Response => (&resp, s_isn),
        };
        ts += 1;
        let seq = isn.wrapping_add(1).wrapping_add(off as u32);
        r.push(&seg(
            conn,
            dir,
            seq,
            tcp_flags::PSH,
            &stream[off..off + n],
            ts,
        ));
    }
    r.push(&seg(
        conn,
        Direction::Request,
        c_isn.wrapping_add(1).wrapping_add(req.len() as u32),
        tcp_flags::FIN,
        &[],
        ts + 1,
    ));
    r.push(&seg(
        conn,
        Direction::Response,
        s_isn.wrapping_add(1).wrapping_add(resp.len() as u32),
        tcp_flags::FIN,
        &[],
        ts + 2,
    ));
    r.finish(ts + 3);

    let outcomes: Vec<Outcome> = r.handler_mut().outcomes().collect();
    if outcomes.len() != pairs.len() {
        eprintln!("reassembly {:?}\nhttp {:?}", r.stats(), r.handler().stats());
    }
    prop_assert_eq!(outcomes.len(), pairs.len());
    for (o, p) in outcomes.iter().zip(&pairs) {
        let Outcome::Paired(ex) = o else {
            return Err(TestCaseError::fail(format!("lost: {o:?}")));
        };
        prop_assert!(ex.request.raw[..] == p.request[..], "request bytes");
        prop_assert_eq!(ex.response.status, p.status);
        prop_assert!(ex.response.body[..] == p.body[..], "response body");
    }
    prop_assert_eq!(r.stats().gaps, 0);
    prop_assert_eq!(r.stats().buffered_bytes, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_segmentation_yields_the_same_exchanges(
        kinds in prop::collection::vec((0u8..5, 0usize..3000), 1..8),
        req_sizes in prop::collection::vec(1usize..300, 1..6),
        resp_sizes in prop::collection::vec(1usize..1500, 1..6),
        order in prop::collection::vec(any::<u32>(), 0..800),
        dups in prop::collection::vec(any::<u16>(), 0..10),
        isn in (any::<u32>(), any::<u32>()),
    ) {
        check(&kinds, &req_sizes, &resp_sizes, &order, &dups, isn)?;
    }
}

#[test]
fn in_order_small_segments() {
    check(
        &[(0, 0), (3, 0), (0, 0)],
        &[1, 9, 1],
        &[2],
        &[],
        &[],
        (1000, 5000),
    )
    .unwrap();
}

#[test]
fn regression_reordered_304() {
    check(
        &[(0, 0), (3, 0), (0, 0)],
        &[1, 9, 1],
        &[2],
        &[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3786315351, 1103861317,
            3021817309, 735292117, 3425067011, 2048196844, 2763936524, 3755917657, 3397094133,
            778053448, 259663363, 3033570942, 2405376990, 122458777, 3524273633, 2466646768,
            363121379, 2247520087, 1188407691, 3325701403, 1298621830, 710855793, 2450479597,
            3194699489, 1986226357, 1569093668, 2150193438, 578589390, 2258555924, 3785546420,
            1925630891, 2123051832, 741721857, 2257665190, 1116221711, 1817286129,
        ],
        &[27702, 48288, 44065, 23094, 61462, 33299, 12510, 6053],
        (1287168841, 2304038971),
    )
    .unwrap();
}
