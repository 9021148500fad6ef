//! Restart: keep-alive connections stay open across an agent restart.

use std::{
    net::TcpStream,
    sync::{Arc, Barrier},
    time::Duration,
};

use parallelrun_tests::app::{App, Flavor};

use crate::fixture::{Env, NEW, assert_user, get_on};

/// Keep-alive connections stay open across an agent restart: the first
/// agent accounts for what it saw; the second finds the connections already
/// established (mid-stream), resynchronises at the next request line and
/// compares every later request, correctly paired (identical versions: no
/// mismatch). Requests made while no agent ran are simply not seen.
#[test]
fn restart_while_traffic_flows_picks_up_open_connections() {
    const CONNS: usize = 4;
    const PER_PHASE: u64 = 10;
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::Old);
    // Each client thread runs three phases on one connection, between
    // barrier waits: with the first agent, with none, with the second.
    let barrier = Arc::new(Barrier::new(CONNS + 1));
    let addr = old.addr;
    let clients: Vec<_> = (0..CONNS as u64)
        .map(|c| {
            let b = Arc::clone(&barrier);
            env.pair.client.spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut buf = Vec::new();
                for phase in 0..3u64 {
                    b.wait();
                    for i in 0..PER_PHASE {
                        let id = c * 1000 + phase * 100 + i;
                        assert_user(&get_on(&mut s, &mut buf, &format!("/users/{id}")), id);
                    }
                    b.wait();
                }
            })
        })
        .collect();
    let phase = || {
        barrier.wait();
        barrier.wait();
    };
    let first = env.run("first", old.addr, &[]);
    phase();
    let d1 = first.stop();
    phase(); // no agent
    let second = env.run("second", old.addr, &[]);
    phase();
    for c in clients {
        c.join().unwrap();
    }
    let d2 = second.stop();

    let per_agent = CONNS as u64 * PER_PHASE;
    d1.stats.assert_accounted();
    assert_eq!(d1.stats.n("/requests_seen"), per_agent, "{:#}", d1.stats.0);
    assert_eq!(
        d1.stats.n("/outcomes/matched"),
        per_agent,
        "{:#}",
        d1.stats.0
    );
    d2.stats.assert_accounted();
    assert!(
        d2.stats.n("/reassembly/midstream_opened") >= CONNS as u64,
        "the second agent did not see the open connections as mid-stream: {:#}",
        d2.stats.0
    );
    assert_eq!(d2.stats.n("/requests_seen"), per_agent, "{:#}", d2.stats.0);
    assert_eq!(
        d2.stats.n("/outcomes/matched"),
        per_agent,
        "{:#}",
        d2.stats.0
    );
    assert_eq!(d2.stats.n("/outcomes/mismatched"), 0, "{:#?}", d2.log);
    assert!(d2.log.is_empty(), "{:#?}", d2.log);
    // Only what an agent saw was replayed.
    assert_eq!(new.hits("/"), 2 * per_agent);
    assert_eq!(old.hits("/"), 3 * per_agent);
}
