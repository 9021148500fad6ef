//! Interfaces disappear: one given by name stops the agent, those matched
//! by a pattern are followed as they come and go.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use parallelrun_sandbox::is_gone;
use parallelrun_tests::{
    agent::{Agent, Stats},
    app::{App, Flavor},
    faults,
    netns::{Netns, unique},
    tun::TunLink,
};

use crate::fixture::{Env, NEW, assert_user, get_on};

/// Deleting the interface the agent is attached to stops it within a few
/// seconds with a clear message and a non-zero exit; the summary and the
/// final counters of what it saw until then are still written.
#[test]
fn interface_removed_while_attached_stops_the_agent() {
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let _new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::Old);
    let mut run = env.run("gone", old.addr, &[]);
    let addr = old.addr;
    env.client(move || faults::timed_gets(addr, &["/users/1".into(), "/users/2".into()]));
    thread::sleep(Duration::from_millis(300));
    env.pair.server.ip(&["link", "del", &env.pair.server_if]);
    let deleted = Instant::now();
    // Signal 0: nothing is sent, only the exit is awaited.
    let status = run.agent.stop_with(0);
    let took = deleted.elapsed();
    let d = run.done();

    assert!(!status.success(), "agent exited 0:\n{}", d.stderr);
    assert!(took < Duration::from_secs(5), "took {took:?} to notice");
    assert!(
        d.stderr.contains("was removed"),
        "no clear message:\n{}",
        d.stderr
    );
    d.stats.assert_accounted();
    assert_eq!(d.stats.n("/requests_seen"), 2, "{:#}", d.stats.0);
}

/// `record` and `exchanges` attach like `run`: when their interface is
/// deleted they must stop too (with the same message and a non-zero exit)
/// rather than run on, capturing nothing, until someone notices.
#[test]
fn interface_removed_stops_record_and_exchanges_too() {
    for command in ["record", "exchanges"] {
        let env = Env::new();
        let out = env.dir.path().join("out");
        let out = out.to_str().unwrap();
        let args: &[&str] = match command {
            "record" => &["record", "--discard"],
            _ => &["exchanges", "--out", out],
        };
        let mut args = args.to_vec();
        args.extend(["--iface", &env.pair.server_if, "--old", ":8080"]);
        let mut agent = Agent::start(&env.pair.server, &args);
        env.pair.server.ip(&["link", "del", &env.pair.server_if]);
        let deleted = Instant::now();
        while !is_gone(agent.pid()) && deleted.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(50));
        }
        let gone = is_gone(agent.pid());
        let status = agent.stop_with(libc::SIGTERM);
        let stderr = agent.stderr();
        assert!(
            gone,
            "{command} still running 5 s after its interface was removed:\n{stderr}"
        );
        assert!(!status.success(), "{command} exited 0:\n{stderr}");
        assert!(stderr.contains("was removed"), "{command}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{command}:\n{stderr}");
    }
}

/// One app behind a host-side veth (or tun device) of the node: its own
/// namespace, the old service in it, the link's host end (named `host_if`)
/// in the node.
struct NodeApp {
    host_if: String,
    old: App,
    _tun: Option<TunLink>,
    _ns: Netns,
}

impl NodeApp {
    /// App number `n` (1..) behind a veth, on the subnet 10.91.n.0/24.
    fn start(node: &Netns, host_if: String, n: u8) -> Self {
        let ns = Netns::new("pra");
        let peer = unique("pp");
        node.add_veth(&host_if, &peer, &ns)
            .unwrap_or_else(|e| panic!("{e}"));
        Self::serve(node, host_if, ns, &peer, n, None)
    }

    /// App number `n` behind a raw IP link (tun devices) instead.
    fn start_tun(node: &Netns, host_if: String, n: u8) -> Self {
        let ns = Netns::new("pra");
        let peer = unique("pt");
        let tun = TunLink::new(node, &host_if, &ns, &peer);
        Self::serve(node, host_if, ns, &peer, n, Some(tun))
    }

    fn serve(
        node: &Netns,
        host_if: String,
        ns: Netns,
        peer: &str,
        n: u8,
        tun: Option<TunLink>,
    ) -> Self {
        let ip = |host| IpAddr::V4(Ipv4Addr::new(10, 91, n, host));
        node.address(&host_if, ip(2), 24)
            .unwrap_or_else(|e| panic!("{e}"));
        ns.address(peer, ip(1), 24)
            .unwrap_or_else(|e| panic!("{e}"));
        let old = App::start(&ns, SocketAddr::new(ip(1), 8080), Flavor::Old);
        Self {
            host_if,
            old,
            _tun: tun,
            _ns: ns,
        }
    }

    /// `count` GETs from the node through the veth, each answered right.
    fn traffic(&self, node: &Netns, first: u64, count: u64) {
        let addr = self.old.addr;
        let ids: Vec<u64> = (first..first + count).collect();
        let paths: Vec<String> = ids.iter().map(|i| format!("/users/{i}")).collect();
        let (_, replies) = node.run(move || faults::timed_gets(addr, &paths));
        for (r, id) in replies.iter().zip(&ids) {
            assert_user(r, *id);
        }
    }
}

/// Waits until the agent's log has a line with all of `words`.
fn await_log(agent: &Agent, words: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = agent.stderr();
        if log.lines().any(|l| words.iter().all(|w| l.contains(w))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {words:?} within 10 s:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// One agent for the node, started with a pattern before any matching
/// interface exists: it waits, attaches to each matching veth as it
/// appears (two, then a third after one is deleted), detaches from the
/// deleted one without stopping, and every request through any of them is
/// replayed and compared, an app behind a raw IP link (tun) included (a
/// second program and ring for it); the stats count 4 attaches and 1
/// detach, and
/// nothing goes unaccounted, a connection left open on the deleted veth
/// included.
#[test]
fn a_pattern_follows_interfaces_as_they_come_and_go() {
    let env = Env::new();
    let node = Netns::new("prn");
    let prefix = unique("pf");
    let pattern = format!("{prefix}*");
    let _new = App::start(&node, NEW.parse().unwrap(), Flavor::Old);
    let stats = env.dir.path().join("node.stats.json");
    let log = env.dir.path().join("node.jsonl");
    let mut agent = Agent::start_until(
        &node,
        &[
            "run",
            "--iface",
            &pattern,
            "--old",
            ":8080",
            "--new",
            NEW,
            "--stats-json",
            stats.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--no-metrics",
        ],
        "waiting for one to appear",
    );

    let a = NodeApp::start(&node, format!("{prefix}a"), 1);
    let b = NodeApp::start(&node, format!("{prefix}b"), 2);
    for app in [&a, &b] {
        await_log(&agent, &[" attached", &format!("iface={}", app.host_if)]);
    }
    a.traffic(&node, 0, 5);
    b.traffic(&node, 100, 5);
    // A connection still open when its veth goes: its request is answered
    // and compared, the connection itself expires unseen.
    let addr = b.old.addr;
    let mut open = node.run(move || TcpStream::connect(addr).unwrap());
    let mut buf = Vec::new();
    assert_user(&get_on(&mut open, &mut buf, "/users/200"), 200);
    thread::sleep(Duration::from_millis(300));
    node.ip(&["link", "del", &b.host_if]);
    await_log(&agent, &["detached", &format!("iface={}", b.host_if)]);
    drop(open);

    let c = NodeApp::start(&node, format!("{prefix}c"), 3);
    await_log(&agent, &[" attached", &format!("iface={}", c.host_if)]);
    c.traffic(&node, 300, 5);
    // An app behind a raw IP link: no link-layer header, so a second
    // program with its own ring is loaded for it.
    let d = NodeApp::start_tun(&node, format!("{prefix}u"), 4);
    await_log(&agent, &[" attached", &format!("iface={}", d.host_if)]);
    d.traffic(&node, 500, 5);
    a.traffic(&node, 400, 5);
    thread::sleep(Duration::from_millis(300));
    agent.stop();

    let s = Stats::read(&stats);
    let stderr = agent.stderr();
    s.assert_accounted();
    assert_eq!(s.n("/requests_seen"), 26, "{:#}\n{stderr}", s.0);
    assert_eq!(s.n("/outcomes/matched"), 26, "{:#}\n{stderr}", s.0);
    assert_eq!(s.n("/interfaces/attaches"), 4, "{:#}", s.0);
    assert_eq!(s.n("/interfaces/detaches"), 1, "{:#}", s.0);
    assert_eq!(s.n("/interfaces/attached"), 3, "{:#}", s.0);
    assert_eq!(s.n("/interfaces/attach_errors"), 0, "{:#}", s.0);
    assert!(stderr.contains("loading a second program"), "{stderr}");
    assert_eq!(s.n("/kernel/ringbuf_full_drops"), 0, "{:#}", s.0);
    assert!(!stderr.contains("was removed"), "{stderr}");
}

/// A plain name must exist at start (the clear error of a single
/// interface), even next to a pattern; an invalid pattern is refused by the
/// flag parser before anything is loaded.
#[test]
fn a_missing_name_or_a_bad_pattern_fails_clearly() {
    let env = Env::new();
    let run = |iface: &[&str]| {
        let mut cmd = env.pair.server.command(parallelrun_tests::agent::binary());
        let log = env.dir.path().join("log.jsonl");
        cmd.args([
            "run",
            "--old",
            ":8080",
            "--new",
            NEW,
            "--no-metrics",
            "--log",
        ])
        .arg(log);
        for i in iface {
            cmd.args(["--iface", i]);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{iface:?} exited 0");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["nosuch0", "pf*"]);
    assert!(err.contains("interface 'nosuch0' not found"), "{err}");
    let err = run(&["pf/*"]);
    assert!(
        err.contains("not a valid interface name or pattern"),
        "{err}"
    );
}
