//! Several agents' summaries merge into exactly what one agent watching all
//! their traffic writes.
//!
//! Topology: the server namespace bridges two veths (`br` with ports `a`
//! and `b`), each to its own client namespace; the old service listens on
//! the bridge's address. Three agents run at once: one on port `a`, one on
//! port `b`, one on the bridge itself (it sees both clients' traffic).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use parallelrun_tests::{
    app::{App, Flavor},
    netns::{Netns, unique},
};

use super::{Rig, endpoint, names, numbered, parallelrun, read_summary, stop};

#[test]
fn two_agents_merged_equal_one_agent_watching_both() {
    parallelrun_tests::require_root();
    // The rig's own pair is left unused but for its server namespace,
    // which gets the bridge; its services are replaced by a bridged old one.
    let rig = Rig::start();
    let server = &rig.pair.server;
    let bridge = unique("br");
    server.ip(&["link", "add", &bridge, "type", "bridge"]);
    let bridge_ip = Ipv4Addr::new(10, 78, 0, 1);
    let clients: Vec<(Netns, String, Ipv4Addr)> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, side)| {
            let ns = Netns::new(&format!("prm{side}"));
            let port = unique(&format!("vb{side}"));
            let peer = unique(&format!("vp{side}"));
            server.add_veth(&port, &peer, &ns).unwrap();
            server.ip(&["link", "set", &port, "master", &bridge]);
            server.ip(&["link", "set", &port, "up"]);
            let ip = Ipv4Addr::new(10, 78, 0, 2 + i as u8);
            ns.address(&peer, IpAddr::V4(ip), 24).unwrap();
            (ns, port, ip)
        })
        .collect();
    server.address(&bridge, IpAddr::V4(bridge_ip), 24).unwrap();
    server.ip(&["link", "set", &bridge, "up"]);
    let old = App::start(server, SocketAddr::new(bridge_ip.into(), 8080), Flavor::Old);

    let a = rig.run_on(&clients[0].1, "a", &[]);
    let b = rig.run_on(&clients[1].1, "b", &[]);
    let both = rig.run_on(&bridge, "both", &[]);
    // Client a: users (one mismatching) and /status; client b: users and
    // /same (noise-free matches), part of the users the same as a's.
    let a_paths = {
        let mut p = numbered("/users/", 1, 120);
        p.extend(vec!["/status".to_owned(); 15]);
        p
    };
    let b_paths = {
        let mut p = numbered("/users/", 60, 120);
        p.extend(numbered("/same/", 1, 40));
        p
    };
    let ta = {
        let (paths, addr) = (a_paths.clone(), old.addr);
        clients[0].0.spawn(move || {
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            parallelrun_tests::client::keep_alive(addr, &refs)
                .body_lens
                .len()
        })
    };
    Rig::clients_from(&clients[1].0, old.addr, 2, |c| {
        b_paths[c * b_paths.len() / 2..(c + 1) * b_paths.len() / 2].to_vec()
    });
    assert_eq!(ta.join().unwrap(), a_paths.len());

    let sa = stop(a, &rig, "a");
    let sb = stop(b, &rig, "b");
    let s_both = stop(both, &rig, "both");
    assert_eq!(
        s_both["totals"]["seen"],
        (a_paths.len() + b_paths.len()) as u64,
        "{s_both:#}"
    );
    assert_eq!(sa["totals"]["seen"], a_paths.len() as u64);
    assert_eq!(sb["totals"]["seen"], b_paths.len() as u64);

    let merged_file = rig.path("merged.json");
    let out = parallelrun(&[
        "report",
        "--json",
        rig.summary_path("a").to_str().unwrap(),
        rig.summary_path("b").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&merged_file, &out.stdout).unwrap();
    let merged = read_summary(&merged_file);
    assert_eq!(merged["sources"].as_array().map(Vec::len), Some(2));
    assert_eq!(merged["totals"], s_both["totals"], "totals");
    assert_eq!(names(&merged), names(&s_both));
    for name in names(&s_both) {
        let (m, one) = (endpoint(&merged, &name), endpoint(&s_both, &name));
        assert_eq!(m["counts"], one["counts"], "{name}");
        let locations = |e: &serde_json::Value| -> Vec<(String, u64, u64, u64)> {
            e["differences"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["where"].as_str().unwrap().to_owned(),
                        l["raw"].as_u64().unwrap(),
                        l["noise"].as_u64().unwrap(),
                        l["reported"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(locations(m), locations(one), "{name}");
        for side in ["old", "new", "secondary"] {
            assert_eq!(
                m["latency"][side]["count"], one["latency"][side]["count"],
                "{name} {side}"
            );
        }
    }
    // The merged summary is itself a valid summary.
    let out = parallelrun(&["verdict", merged_file.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(3), "{out:?}");
}
