//! From live capture to HTTP exchanges: the agent reassembles the old
//! service's TCP streams and pairs requests with responses. Real clients
//! drive a real server (keep-alive, pipelining, chunked, 1 MiB, HEAD, 304)
//! in test-made namespaces; every exchange the agent reports must equal what
//! the client saw, byte for byte, and every request must be accounted for.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{collections::HashMap, net::SocketAddr, thread, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use parallelrun_tests::{
    agent::{Agent, stats},
    client::{self, Connection, Req},
    netns::{Family, Pair},
    require_root,
    server::Server,
    tcpdump::Tcpdump,
};

const KEEP_ALIVE: &[Req] = &[
    Req::get("/bytes/100"),
    Req::get("/bytes/1048576"),
    Req::get("/chunked/70000"),
    Req::head("/bytes/5000"),
    Req::get("/etag"),
    Req {
        method: "GET",
        path: "/etag",
        headers: "If-None-Match: \"v1\"\r\n",
    },
    Req::get("/nope"),
];

/// Sent in one write: the n-th response answers the n-th request.
const PIPELINED: &[Req] = &[
    Req::get("/bytes/10"),
    Req::head("/chunked/20"),
    Req::get("/chunked/3000"),
    Req {
        method: "GET",
        path: "/etag",
        headers: "If-None-Match: \"v1\"\r\n",
    },
    Req::get("/bytes/65536"),
];

fn b64(v: &serde_json::Value) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

fn headers(v: &serde_json::Value) -> Vec<(String, Vec<u8>)> {
    v.as_array()
        .expect("headers array")
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().as_bytes().to_vec(),
            )
        })
        .collect()
}

/// Every exchange in `text` (JSON Lines from `parallelrun exchanges`)
/// equals what the client saw on its connection, and none is lost. Returns
/// how many exchanges there were.
fn assert_exchanges(text: &str, conns: &[Connection]) -> u64 {
    let mut by_client: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert!(v.get("lost").is_none(), "a request was lost: {v}");
        by_client
            .entry(v["client"].as_str().unwrap().to_owned())
            .or_default()
            .push(v);
    }
    let mut total = 0;
    for conn in conns {
        let got = by_client
            .get(&conn.local.to_string())
            .unwrap_or_else(|| panic!("no exchanges for {}", conn.local));
        assert_eq!(
            got.len(),
            conn.exchanges.len(),
            "exchanges of {}",
            conn.local
        );
        for (i, (ex, seen)) in got.iter().zip(&conn.exchanges).enumerate() {
            let what = format!("{} exchange {i}", conn.local);
            assert!(
                b64(&ex["request"]["raw_b64"]) == seen.request,
                "{what}: request bytes"
            );
            assert_eq!(ex["response"]["status"], seen.status, "{what}: status");
            assert_eq!(
                headers(&ex["response"]["headers"]),
                seen.headers,
                "{what}: headers"
            );
            let body = b64(&ex["response"]["body_b64"]);
            assert!(
                body == seen.body,
                "{what}: body ({} vs {} bytes)",
                body.len(),
                seen.body.len()
            );
            assert!(ex["latency_ms"].as_f64().unwrap() >= 0.0);
        }
        total += conn.exchanges.len() as u64;
    }
    total
}

fn capture_exchanges(family: Family) {
    require_root();
    let pair = Pair::new(family);
    let server = Server::start(&pair.server, SocketAddr::new(pair.server_ip, 8080));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exchanges.jsonl");
    let stats_path = dir.path().join("stats.json");
    let old = server.addr.to_string();
    let mut agent = Agent::start(
        &pair.server,
        &[
            "exchanges",
            "--iface",
            &pair.server_if,
            "--old",
            &old,
            "--out",
            out.to_str().unwrap(),
            "--stats-json",
            stats_path.to_str().unwrap(),
        ],
    );
    let tcpdump_path = dir.path().join("tcpdump.pcap");
    let mut tcpdump = Tcpdump::start(&pair.server, &pair.server_if, &tcpdump_path);
    let addr = server.addr;
    let conns: Vec<Connection> = pair.client.run(move || {
        vec![
            client::exchanges(addr, KEEP_ALIVE, false),
            client::exchanges(addr, PIPELINED, true),
            client::exchanges(addr, KEEP_ALIVE, true),
        ]
    });
    thread::sleep(Duration::from_millis(300));
    agent.stop();

    // tcpdump's own capture of the same traffic, read back offline.
    tcpdump.stop();
    let offline = dir.path().join("offline.jsonl");
    let st = std::process::Command::new(parallelrun_tests::agent::binary())
        .args([
            "exchanges",
            "--pcap",
            tcpdump_path.to_str().unwrap(),
            "--old",
            &old,
            "--out",
        ])
        .arg(&offline)
        .output()
        .expect("run parallelrun exchanges --pcap");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let total = assert_exchanges(&std::fs::read_to_string(&out).unwrap(), &conns);
    let from_tcpdump = assert_exchanges(&std::fs::read_to_string(&offline).unwrap(), &conns);
    assert_eq!(total, from_tcpdump);
    let s = stats(&stats_path);
    assert_eq!(s["http"]["requests_seen"], total);
    assert_eq!(s["http"]["paired"], total);
    assert_eq!(s["reassembly"]["gaps"], 0);
}

#[test]
fn ipv4_exchanges_equal_what_the_client_saw() {
    capture_exchanges(Family::V4);
}

#[test]
fn ipv6_exchanges_equal_what_the_client_saw() {
    capture_exchanges(Family::V6);
}
