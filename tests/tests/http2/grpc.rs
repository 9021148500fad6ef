//! gRPC, live: a real grpcio client calls the old server (on the server's
//! veth address); the agent replays the calls `--grpc-method` allows to the
//! new version and to a secondary (another old instance), both on the
//! server namespace's loopback, and compares them message by message.
//!
//! The new version changes one nested field, [`GRPC_CHANGED_FIELD`], in
//! every Get and List answer; every flavor fills [`GRPC_RANDOM_FIELD`] at
//! random (noise). Create calls are not allowed, so never replayed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Instant,
};

use parallelrun_tests::{
    agent::Agent,
    h2::{self, GRPC_CHANGED_FIELD, GRPC_RANDOM_FIELD, GrpcFlavor, GrpcServer, H2Stream},
    tcpdump::Tcpdump,
};
use serde_json::Value;

use crate::{Results, Rig, locations};
use parallelrun_tests::netns::Family;

/// The new version's and the secondary's ports, on the server
/// namespace's loopback.
const NEW_PORT: u16 = 50052;
const SECONDARY_PORT: u16 = 50053;
/// Users per List call.
const LIST_SIZE: usize = 3;

/// The calls of the plain connection: Gets of ids 1..=3, two Lists, two
/// Creates and two Gets of id 0 (NOT_FOUND, trailers-only).
const PLAIN: [&str; 10] = [
    "--get",
    "3",
    "--list",
    "2",
    "--list-size",
    "3",
    "--create",
    "2",
    "--missing",
    "2",
];
/// The calls of the compressed connection: two Gets and a List, requests
/// and answers gzip-compressed, all started before any answer is read
/// (streams that may overlap: the server may still answer one before the
/// client sends the next).
const GZIP: [&str; 8] = [
    "--get",
    "2",
    "--list",
    "1",
    "--list-size",
    "3",
    "--gzip",
    "--concurrent",
];

/// `tests/grpc/users.proto`.
fn proto() -> String {
    std::fs::read_to_string(h2::grpc_dir().join("users.proto")).expect("users.proto")
}

/// The type and number of field `field` of message `message` in `proto`
/// (a line `TYPE NAME = NUMBER;` in the message's block).
fn field(proto: &str, message: &str, field: &str) -> (String, u32) {
    let start = proto
        .find(&format!("message {message} {{"))
        .unwrap_or_else(|| panic!("no message {message} in users.proto"));
    let block = &proto[start..];
    let block = &block[..block.find('}').expect("the message's end")];
    block
        .lines()
        .find_map(|line| {
            let (decl, number) = line.trim().strip_suffix(';')?.split_once('=')?;
            let words: Vec<&str> = decl.split_whitespace().collect();
            (words.last() == Some(&field)).then(|| {
                let ty = words[words.len() - 2].to_owned();
                (ty, number.trim().parse().expect("a field number"))
            })
        })
        .unwrap_or_else(|| panic!("no field {field} in message {message}"))
}

/// A JSON pointer into a `User`, by field name, as the same path by
/// field number, from users.proto: `/profile/address/city` → `/5/1/2`.
fn number_path(pointer: &str) -> String {
    let proto = proto();
    let mut message = "User".to_owned();
    let mut out = String::new();
    for name in pointer.split('/').skip(1) {
        let (ty, number) = field(&proto, &message, name);
        out.push_str(&format!("/{number}"));
        message = ty;
    }
    out
}

/// The location of `path` (a pointer into a message) in message `i` of
/// `count`: `grpc:PATH`, or `grpc[i]:PATH` when there are several.
fn at(count: usize, i: usize, path: &str) -> String {
    if count > 1 {
        format!("grpc[{i}]:{path}")
    } else {
        format!("grpc:{path}")
    }
}

/// The three flavors, started on the rig's server side: the old one on the
/// veth address (where the agent watches), the new version and the
/// secondary on the server namespace's loopback; stopped on drop.
struct Flavors {
    descriptor: PathBuf,
    old: SocketAddr,
    new: SocketAddr,
    secondary: SocketAddr,
    _servers: [GrpcServer; 3],
}

impl Flavors {
    fn start(rig: &Rig) -> Self {
        let descriptor = h2::compile_proto(rig.dir());
        let ns = &rig.pair.server;
        let old = SocketAddr::new(rig.pair.server_ip, 50051);
        let loopback: IpAddr = if rig.pair.server_ip.is_ipv6() {
            Ipv6Addr::LOCALHOST.into()
        } else {
            Ipv4Addr::LOCALHOST.into()
        };
        let new = SocketAddr::new(loopback, NEW_PORT);
        let secondary = SocketAddr::new(loopback, SECONDARY_PORT);
        let servers = [
            GrpcServer::start(ns, old, GrpcFlavor::Old, &descriptor),
            GrpcServer::start(ns, new, GrpcFlavor::New, &descriptor),
            GrpcServer::start(ns, secondary, GrpcFlavor::Secondary, &descriptor),
        ];
        Self {
            descriptor,
            old,
            new,
            secondary,
            _servers: servers,
        }
    }

    /// The agent on the rig, replaying to these flavors, with `args`.
    fn run(&self, rig: &Rig, name: &str, args: &[&str]) -> Agent {
        let (old, new, secondary) = (
            self.old.to_string(),
            self.new.to_string(),
            self.secondary.to_string(),
        );
        rig.run(name, &old, &new, &secondary, args)
    }

    fn descriptor(&self) -> &str {
        self.descriptor.to_str().expect("a UTF-8 temp path")
    }
}

/// One live run against the three flavors: the plain and the compressed
/// connection, with `--grpc-method` allowing Get and List, and `extra`
/// options. Returns the results, and tshark's streams of the old service
/// (veth) and of the new one (the server namespace's loopback).
fn grpc_run(rig: &Rig, name: &str, extra: &[&str]) -> (Results, Vec<H2Stream>, Vec<H2Stream>) {
    let flavors = Flavors::start(rig);
    let ns = &rig.pair.server;
    let mut on_veth = rig.tcpdump(name);
    let mut on_lo = Tcpdump::start(ns, "lo", &rig.path(&format!("{name}-lo.pcap")));
    let mut args = vec![
        "--grpc-method",
        "/shadow.users.v1.Users/Get",
        "--grpc-method",
        "/shadow.users.v1.Users/List",
    ];
    args.extend_from_slice(extra);
    let agent = flavors.run(rig, name, &args);
    let (old, descriptor) = (flavors.old.to_string(), &flavors.descriptor);

    let plain = h2::grpc_client(&rig.pair.client, &old, descriptor, &PLAIN);
    assert_eq!(plain["counts"]["missing"], 2, "{plain:#}");
    assert_eq!(plain["counts"]["create"], 2, "{plain:#}");
    let gzip = h2::grpc_client(&rig.pair.client, &old, descriptor, &GZIP);
    assert_eq!(gzip["counts"]["get"], 2, "{gzip:#}");
    let r = rig.stop(agent, name);
    on_veth.stop();
    on_lo.stop();
    let old_streams = h2::tshark_h2_streams(on_veth.path(), 50051);
    let new_streams = h2::tshark_h2_streams(on_lo.path(), NEW_PORT);
    (r, old_streams, new_streams)
}

/// What both gRPC tests check, `changed` and `random` being the changed
/// and the random field's paths in a message (by name or by number).
fn assert_grpc(r: &Results, old: &[H2Stream], new: &[H2Stream], changed: &str, random: &str) {
    let ctx = r.context();
    // Calls: 3 + 2 + 2 + 2 plain, 2 + 1 compressed.
    let (gets, lists, creates, missing) = (3 + 2, 2 + 1, 2, 2);
    let calls = gets + lists + creates + missing;
    assert_eq!(r.n("/kernel/ringbuf_full_drops"), 0, "{ctx}");
    assert_eq!(r.n("/requests_seen"), calls, "{ctx}");
    // Create is not allowed: skipped as `method`, nothing else skipped.
    assert_eq!(r.n("/outcomes/skipped/method"), creates, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/skipped"), creates, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{ctx}");
    assert_eq!(r.n("/outcomes/replay_errors"), 0, "{ctx}");
    assert_eq!(r.n("/outcomes/secondary_errors"), 0, "{ctx}");
    assert_eq!(r.n("/outcomes/replayed"), calls - creates, "{ctx}");
    // Every Get and List answer differs in the changed field; the
    // NOT_FOUND calls (trailers-only on every side) match.
    assert_eq!(r.n("/outcomes/mismatched"), gets + lists, "{ctx}");
    assert_eq!(r.n("/outcomes/matched"), missing, "{ctx}");
    assert_eq!(r.n("/outcomes/noise"), 0, "{ctx}");
    // The random field of every message answered, cancelled as noise.
    let messages = gets + lists * LIST_SIZE as u64;
    assert_eq!(r.n("/outcomes/noise_differences"), messages, "{ctx}");
    assert_eq!(r.n("/http/http2/connections"), 2, "{ctx}");

    // The log: one mismatch per Get or List call, at the changed field of
    // each message and nowhere else (not the random field, not from
    // compression).
    assert_eq!(r.log.len() as u64, gets + lists, "{ctx}");
    let (mut logged_gets, mut logged_lists) = (0, 0);
    for ev in &r.log {
        assert_eq!(ev["kind"], "mismatch", "{ev:#}");
        assert!(ev.get("noise_unchecked").is_none(), "{ev:#}");
        let count = if ev["target"] == h2::grpc_path("Get") {
            logged_gets += 1;
            1
        } else if ev["target"] == h2::grpc_path("List") {
            logged_lists += 1;
            LIST_SIZE
        } else {
            panic!("a mismatch of another method: {ev:#}")
        };
        let diffs = ev["differences"].as_array().expect("differences");
        let wheres: Vec<&str> = diffs.iter().map(|d| d["where"].as_str().unwrap()).collect();
        let want: Vec<String> = (0..count).map(|i| at(count, i, changed)).collect();
        assert_eq!(wheres, want, "{ev:#}");
        for d in diffs {
            let (o, n) = (d["old"].to_string(), d["new"].to_string());
            assert!(n.contains("(new)") && !o.contains("(new)"), "{d:#}");
        }
    }
    assert_eq!((logged_gets, logged_lists), (gets, lists), "{ctx}");

    // The random field: a raw difference of every compared message,
    // cancelled as noise each time, never reported.
    for (method, count, answered) in [("Get", 1, gets), ("List", LIST_SIZE, lists)] {
        let ep = r.endpoint(&format!("POST {}", h2::grpc_path(method)));
        let total = if method == "Get" {
            gets + missing
        } else {
            lists
        };
        assert_eq!(ep["counts"]["compared"], total, "{ep:#}");
        // The summary folds message indexes: `grpc[*]:PATH`, counted once
        // per request.
        let place = |path: &str| {
            if count > 1 {
                format!("grpc[*]:{path}")
            } else {
                format!("grpc:{path}")
            }
        };
        let loc = |path: &str| {
            let place = place(path);
            locations(ep)
                .into_iter()
                .find(|l| l["where"] == place.as_str())
                .unwrap_or_else(|| panic!("no location {place} in {ep:#}"))
        };
        let noise = loc(random);
        assert_eq!(noise["raw"], answered, "{noise:#}");
        assert_eq!(noise["noise"], answered, "{noise:#}");
        assert_eq!(noise["reported"], 0, "{noise:#}");
        let change = loc(changed);
        assert_eq!(change["raw"], answered, "{change:#}");
        assert_eq!(change["reported"], answered, "{change:#}");
        assert_eq!(change["noise"], 0, "{change:#}");
        assert_eq!(locations(ep).len(), 2, "{ep:#}");
    }

    // The old service got every call; the new one all but the Creates.
    let paths = |streams: &[H2Stream], method: &str| {
        streams
            .iter()
            .filter(|s| s.path.as_deref() == Some(h2::grpc_path(method).as_str()))
            .count() as u64
    };
    assert_eq!(old.len() as u64, calls, "old: {old:#?}");
    assert_eq!(new.len() as u64, calls - creates, "new: {new:#?}");
    assert_eq!(paths(old, "Create"), creates);
    assert_eq!(paths(new, "Create"), 0, "new: {new:#?}");
    assert_eq!(paths(new, "Get"), gets + missing, "new: {new:#?}");
    assert_eq!(paths(new, "List"), lists, "new: {new:#?}");
    // The NOT_FOUND calls reached the new service, answered trailers-only.
    let not_found: Vec<&H2Stream> = new.iter().filter(|s| s.grpc_status == Some(5)).collect();
    assert_eq!(not_found.len() as u64, missing, "new: {new:#?}");
    assert!(
        not_found
            .iter()
            .all(|s| s.response_messages.is_empty() && s.trailers.is_empty())
    );
    // The compressed calls' answers were compressed on the wire, by the
    // old service and by the new one. (Requests this small gRPC sends
    // uncompressed: compressing would not shrink them.)
    for (side, streams) in [("old", old), ("new", new)] {
        let gzipped: Vec<&H2Stream> = streams
            .iter()
            .filter(|s| s.request_header("grpc-encoding") == Some("gzip"))
            .collect();
        assert_eq!(gzipped.len(), 3, "{side}: {streams:#?}");
        for s in gzipped {
            assert!(
                !s.response_messages.is_empty() && s.response_messages.iter().all(|m| m.compressed),
                "{side}: {s:?}"
            );
        }
    }
}

/// With the descriptor: the change is reported by field name
/// ([`GRPC_CHANGED_FIELD`]) in each Get and each List message; the random
/// field is noise, counted and never reported; Creates are skipped as
/// `method` and never reach the new service; the gzip calls compare like
/// the plain ones; NOT_FOUND calls match.
#[test]
fn grpc_calls_are_compared_by_field_name_with_a_descriptor() {
    let started = Instant::now();
    let rig = Rig::start();
    let descriptor = rig.path("users.desc");
    let (r, old, new) = grpc_run(
        &rig,
        "named",
        &["--proto-descriptor", descriptor.to_str().unwrap()],
    );
    assert_grpc(
        &r,
        &old,
        &new,
        GRPC_CHANGED_FIELD,
        &format!("/{GRPC_RANDOM_FIELD}"),
    );
    // By name, the values are the proto's strings.
    let get = r
        .log
        .iter()
        .find(|e| e["target"] == h2::grpc_path("Get"))
        .unwrap();
    let d = &get["differences"][0];
    let old_city = d["old"].as_str().unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(d["new"], Value::from(format!("{old_city} (new)")), "{d:#}");
    eprintln!("gRPC by name: {:?}", started.elapsed());
}

/// Without the descriptor: the same, the change reported by field number
/// (the path derived from users.proto).
#[test]
fn grpc_calls_are_compared_by_field_number_without_a_descriptor() {
    let started = Instant::now();
    let changed = number_path(GRPC_CHANGED_FIELD);
    assert_eq!(changed, "/5/1/2");
    let random = number_path(&format!("/{GRPC_RANDOM_FIELD}"));
    let rig = Rig::start();
    let (r, old, new) = grpc_run(&rig, "numbered", &[]);
    assert_grpc(&r, &old, &new, &changed, &random);
    eprintln!("gRPC by number: {:?}", started.elapsed());
}

/// The same over IPv6, with the descriptor: the old server on the veth's
/// v6 address, the new one and the secondary on `::1`.
#[test]
fn grpc_calls_over_ipv6_are_compared_by_field_name() {
    let started = Instant::now();
    let rig = Rig::start_with(Family::V6);
    let descriptor = rig.path("users.desc");
    let (r, old, new) = grpc_run(
        &rig,
        "v6",
        &["--proto-descriptor", descriptor.to_str().unwrap()],
    );
    assert_grpc(
        &r,
        &old,
        &new,
        GRPC_CHANGED_FIELD,
        &format!("/{GRPC_RANDOM_FIELD}"),
    );
    eprintln!("gRPC over IPv6: {:?}", started.elapsed());
}

/// A server-streaming call of 1,000 users (about 590 KB of answer: DATA
/// over many frames and flow-control windows) compared message by message:
/// one mismatch, its differences the changed field of each message (as
/// many as the log lists), the random field noise.
///
/// The answer is larger than the default `--max-diff-body` (256 KiB): a
/// gRPC body is kept whole all the same (were it digested, the random field
/// alone would make the old service and the secondary differ at the same
/// place as the new version does, and the whole call would be noise).
#[test]
fn a_long_server_stream_is_compared_message_by_message() {
    const USERS: usize = 1000;
    let started = Instant::now();
    let rig = Rig::start();
    let flavors = Flavors::start(&rig);
    let old = flavors.old.to_string();
    let agent = flavors.run(
        &rig,
        "long",
        &[
            "--grpc-method",
            "/shadow.users.v1.Users/*",
            "--proto-descriptor",
            flavors.descriptor(),
        ],
    );
    let size = USERS.to_string();
    let got = h2::grpc_client(
        &rig.pair.client,
        &old,
        &flavors.descriptor,
        &["--list", "1", "--list-size", &size],
    );
    assert_eq!(got["counts"]["list_items"], USERS, "{}", got["counts"]);
    let r = rig.stop(agent, "long");
    let ctx = r.context();
    assert_eq!(r.n("/requests_seen"), 1, "{ctx}");
    assert_eq!(r.n("/outcomes/mismatched"), 1, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{ctx}");
    assert_eq!(r.n("/outcomes/noise_differences"), USERS as u64, "{ctx}");
    assert_eq!(r.log.len(), 1, "{ctx}");
    let diffs = r.log[0]["differences"].as_array().expect("differences");
    assert!(!diffs.is_empty() && diffs.len() <= USERS, "{ctx}");
    for (i, d) in diffs.iter().enumerate() {
        assert_eq!(d["where"], at(USERS, i, GRPC_CHANGED_FIELD), "{d:#}");
    }
    let ep = r.endpoint(&format!("POST {}", h2::grpc_path("List")));
    let wheres: Vec<&Value> = locations(ep).iter().map(|l| &l["where"]).collect();
    assert_eq!(
        wheres,
        [
            &Value::from(format!("grpc[*]:{GRPC_CHANGED_FIELD}")),
            &Value::from(format!("grpc[*]:/{GRPC_RANDOM_FIELD}"))
        ],
        "{ep:#}"
    );
    eprintln!("a long gRPC stream: {:?}", started.elapsed());
}

/// Client-streaming (`GetMany`: ids in, one list out) and bidirectional
/// (`Chat`: a user answered per id) calls: the whole captured request
/// stream is replayed, and the whole answer compared message by message.
#[test]
fn client_and_bidi_streaming_calls_are_replayed_whole_and_compared() {
    let started = Instant::now();
    let rig = Rig::start();
    let flavors = Flavors::start(&rig);
    let old = flavors.old.to_string();
    let agent = flavors.run(
        &rig,
        "streaming",
        &[
            "--grpc-method",
            "/shadow.users.v1.Users/GetMany",
            "--grpc-method",
            "/shadow.users.v1.Users/Chat",
            "--proto-descriptor",
            flavors.descriptor(),
        ],
    );
    let got = h2::grpc_client(
        &rig.pair.client,
        &old,
        &flavors.descriptor,
        &["--get-many", "3", "--chat", "4"],
    );
    assert_eq!(got["counts"]["get_many"], 3, "{}", got["counts"]);
    assert_eq!(got["counts"]["chat"], 4, "{}", got["counts"]);
    let r = rig.stop(agent, "streaming");
    let ctx = r.context();
    assert_eq!(r.n("/requests_seen"), 2, "{ctx}");
    assert_eq!(r.n("/outcomes/replayed"), 2, "{ctx}");
    assert_eq!(r.n("/outcomes/mismatched"), 2, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{ctx}");
    // One random trace_id per user answered: noise, never reported.
    assert_eq!(r.n("/outcomes/noise_differences"), 3 + 4, "{ctx}");
    let wheres = |method: &str| -> Vec<String> {
        let ev = r
            .log
            .iter()
            .find(|e| e["target"] == h2::grpc_path(method))
            .unwrap_or_else(|| panic!("no mismatch of {method}: {ctx}"));
        ev["differences"]
            .as_array()
            .expect("differences")
            .iter()
            .map(|d| d["where"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let many: Vec<String> = (0..3)
        .map(|i| format!("grpc:/users/{i}{GRPC_CHANGED_FIELD}"))
        .collect();
    assert_eq!(wheres("GetMany"), many, "{ctx}");
    let chat: Vec<String> = (0..4).map(|i| at(4, i, GRPC_CHANGED_FIELD)).collect();
    assert_eq!(wheres("Chat"), chat, "{ctx}");
    eprintln!("client and bidi streaming: {:?}", started.elapsed());
}
