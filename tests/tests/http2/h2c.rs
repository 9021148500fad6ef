//! Plain HTTP/2 (h2c with prior knowledge): nghttpd as the old service,
//! the new one and the secondary; h2load and nghttp as clients. And h2c by
//! `Upgrade: h2c`: curl against a python3-h2 server, the only one here
//! that takes the upgrade. The agent
//! runs live on the server's veth end; the new service and the secondary
//! listen on the server namespace's loopback, so replays are never
//! captured.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use parallelrun_tests::{
    h2::{self, H2Stream, Nghttpd},
    netns::Family,
};
use serde_json::Value;

use crate::Rig;

const NEW: &str = "127.0.0.1:9090";
const SECONDARY: &str = "127.0.0.1:9091";
const NEW6: &str = "[::1]:9090";
const SECONDARY6: &str = "[::1]:9091";

/// The agent's default `--max-diff-body`: response bodies larger than this
/// are digested as they arrive instead of kept whole.
const MAX_DIFF_BODY: usize = 256 * 1024;

/// The docroot's file sizes: small ones, ones around and over a 16 KiB
/// DATA frame, and ones over [`MAX_DIFF_BODY`] (digested).
const SIZES: [usize; 20] = [
    50, 700, 4_000, 9_000, 16_000, 16_384, 16_385, 20_000, 33_000, 50_000, 65_537, 90_000, 120_000,
    150_000, 200_000, 240_000, 270_000, 300_000, 400_000, 600_000,
];

/// Requests of one h2load run: each file [`REQUESTS`] / 20 times.
const REQUESTS: usize = 100;

/// Of [`SIZES`], the files the new service answers differently in the
/// second run: one kept whole, one digested.
const CHANGED: [usize; 2] = [3, 18];

/// A text file of `len` bytes, lines naming the file `seed`.
fn text(len: usize, seed: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0;
    while out.len() < len {
        out.extend(format!("file {seed} line {line}: the quick brown fox\n").bytes());
        line += 1;
    }
    out.truncate(len);
    out
}

fn file_name(i: usize) -> String {
    format!("f{i}.txt")
}

/// Writes the docroot's files into `dir`, all with the same modification
/// time (nghttpd sends it as `last-modified`).
fn write_docroot(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, &len) in SIZES.iter().enumerate() {
        write_file(&dir.join(file_name(i)), &text(len, i));
    }
}

fn write_file(path: &Path, content: &[u8]) {
    std::fs::write(path, content).unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(mtime))
        .unwrap();
}

/// `h2load -n 100 -c 1 -m 100` over every file: 100 concurrent streams on
/// one connection, all answered 200 with the files' lengths.
fn load(rig: &Rig, server: &Nghttpd) {
    let urls: Vec<String> = (0..SIZES.len())
        .map(|i| server.url(&format!("/{}", file_name(i))))
        .collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = h2::h2load_with(&rig.pair.client, &urls, REQUESTS as u32, 1, 100, &[]);
    assert_eq!(run.protocol, "h2c", "{}", run.text);
    assert_eq!(
        (run.done, run.succeeded, run.status_2xx),
        (100, 100, 100),
        "{}",
        run.text
    );
    let per_file = REQUESTS / SIZES.len();
    assert_eq!(
        run.data_bytes,
        (SIZES.iter().sum::<usize>() * per_file) as u64,
        "{}",
        run.text
    );
}

/// 100 concurrent streams on one connection over files of 50 B to 600 KB
/// (DATA over several frames; bodies over `--max-diff-body`, digested):
/// 1. the new service serves the same files: each of the 100 requests is
///    seen, replayed and matched, nothing lost, skipped or unaccounted;
/// 2. the new service serves two files differently (same length): exactly
///    their requests are mismatches, each with one difference at `body`
///    (the digested file's shown as digests), the others match.
#[test]
fn concurrent_streams_are_each_compared_and_changed_files_reported_at_body() {
    let started = Instant::now();
    let rig = Rig::start();
    let (old_root, new_root) = (rig.path("old"), rig.path("new"));
    write_docroot(&old_root);
    write_docroot(&new_root);
    let ns = &rig.pair.server;
    let old = Nghttpd::start(ns, SocketAddr::new(rig.pair.server_ip, 8080), &old_root);
    let _new = Nghttpd::start(ns, NEW.parse().unwrap(), &new_root);
    let _secondary = Nghttpd::start(ns, SECONDARY.parse().unwrap(), &old_root);
    let old_addr = old.addr.to_string();

    // 1. The same files.
    let agent = rig.run("same", &old_addr, NEW, SECONDARY, &[]);
    load(&rig, &old);
    let r = rig.stop(agent, "same");
    let ctx = r.context();
    assert_eq!(r.n("/kernel/ringbuf_full_drops"), 0, "{ctx}");
    assert_eq!(r.n("/requests_seen"), REQUESTS as u64, "{ctx}");
    assert_eq!(r.n("/outcomes/replayed"), REQUESTS as u64, "{ctx}");
    assert_eq!(r.n("/outcomes/matched"), REQUESTS as u64, "{ctx}");
    assert_eq!(r.n("/outcomes/mismatched"), 0, "{ctx}");
    assert_eq!(r.n("/outcomes/noise"), 0, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/skipped"), 0, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{ctx}");
    assert_eq!(r.n("/outcomes/replay_errors"), 0, "{ctx}");
    assert_eq!(r.n("/outcomes/secondary_errors"), 0, "{ctx}");
    assert!(r.log.is_empty(), "{ctx}");
    // One HTTP/2 connection, followed from its preface, every stream paired.
    assert_eq!(r.n("/http/http2/connections"), 1, "{ctx}");
    assert_eq!(r.n("/http/http2/joined_connections"), 0, "{ctx}");
    assert_eq!(r.n("/http/paired"), REQUESTS as u64, "{ctx}");
    for p in [
        "/http/http2/malformed_frames",
        "/http/http2/header_block_errors",
        "/http/http2/hpack_errors",
        "/http/http2/hpack_unknown_entries",
        "/http/http2/resets",
        "/http/http2/unknown_stream_frames",
        "/reassembly/gaps",
    ] {
        assert_eq!(r.n(p), 0, "{p}: {ctx}");
    }
    assert!(r.n("/http/http2/frames") > 2 * REQUESTS as u64, "{ctx}");
    assert_eq!(r.summary["totals"]["seen"], REQUESTS, "{ctx}");
    assert_eq!(r.summary["totals"]["matched"], REQUESTS, "{ctx}");
    let same_took = started.elapsed();

    // 2. Two files differ on the new service: a byte in the middle.
    for i in CHANGED {
        let mut changed = text(SIZES[i], i);
        changed[SIZES[i] / 2] = b'#';
        write_file(&new_root.join(file_name(i)), &changed);
    }
    let agent = rig.run("changed", &old_addr, NEW, SECONDARY, &[]);
    load(&rig, &old);
    let r = rig.stop(agent, "changed");
    let ctx = r.context();
    let per_file = (REQUESTS / SIZES.len()) as u64;
    let mismatched = per_file * CHANGED.len() as u64;
    assert_eq!(r.n("/requests_seen"), REQUESTS as u64, "{ctx}");
    assert_eq!(r.n("/outcomes/mismatched"), mismatched, "{ctx}");
    assert_eq!(
        r.n("/outcomes/matched"),
        REQUESTS as u64 - mismatched,
        "{ctx}"
    );
    assert_eq!(r.n("/outcomes/noise"), 0, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/skipped"), 0, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{ctx}");
    assert_eq!(r.n("/outcomes/replay_errors"), 0, "{ctx}");
    let mut by_target: BTreeMap<String, u64> = BTreeMap::new();
    for ev in &r.log {
        assert_eq!(ev["kind"], "mismatch", "{ev:#}");
        let target = ev["target"].as_str().expect("a target").to_owned();
        let diffs = ev["differences"].as_array().expect("differences");
        assert_eq!(diffs.len(), 1, "{ev:#}");
        assert_eq!(diffs[0]["where"], "body", "{ev:#}");
        assert_eq!(ev["new"]["status"], 200, "{ev:#}");
        *by_target.entry(target).or_default() += 1;
    }
    let want: BTreeMap<String, u64> = CHANGED
        .iter()
        .map(|&i| (format!("/{}", file_name(i)), per_file))
        .collect();
    assert_eq!(by_target, want, "{ctx}");
    // The digested file's difference shows both sides' digests.
    let digested = format!("/{}", file_name(CHANGED[1]));
    assert!(SIZES[CHANGED[1]] > MAX_DIFF_BODY);
    let ev = r.log.iter().find(|e| e["target"] == digested).unwrap();
    let d = &ev["differences"][0];
    let digest_of = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.starts_with(&format!("<{} bytes, xxh3 ", SIZES[CHANGED[1]])))
    };
    assert!(digest_of(&d["old"]) && digest_of(&d["new"]), "{ev:#}");
    assert_ne!(d["old"], d["new"], "{ev:#}");
    eprintln!(
        "h2c live: {:?} (first run {same_took:?})",
        started.elapsed()
    );
}

/// Paths of the cross-check's GETs: every file, and five that do not exist.
fn cross_check_urls(server: &Nghttpd) -> Vec<String> {
    (0..SIZES.len())
        .map(|i| server.url(&format!("/{}", file_name(i))))
        .chain((0..5).map(|i| server.url(&format!("/missing{i}.txt"))))
        .collect()
}

/// One exchange of `parallelrun exchanges`, as comparable with tshark's
/// stream.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    client: String,
    stream: u64,
    method: String,
    path: String,
    status: u64,
    request_body: usize,
    response_body: usize,
    /// A hash of each body's bytes (the response's when it was kept).
    request_hash: u64,
    response_hash: Option<u64>,
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn from_exchange(ex: &Value) -> Seen {
    let bytes = |v: &Value| {
        STANDARD
            .decode(v.as_str().unwrap_or_else(|| panic!("no body in {ex:#}")))
            .unwrap()
    };
    let response = &ex["response"];
    let (response_body, response_hash) = match response.get("body_digest") {
        Some(d) => (d["sent_bytes"].as_u64().unwrap() as usize, None),
        None => {
            let b = bytes(&response["body_b64"]);
            (b.len(), Some(hash(&b)))
        }
    };
    let request_body = bytes(&ex["request"]["body_b64"]);
    Seen {
        client: ex["client"].as_str().unwrap().to_owned(),
        stream: ex["stream"].as_u64().unwrap_or_else(|| panic!("{ex:#}")),
        method: ex["request"]["method"].as_str().unwrap().to_owned(),
        path: ex["request"]["target"].as_str().unwrap().to_owned(),
        status: response["status"].as_u64().unwrap(),
        request_body: request_body.len(),
        response_body,
        request_hash: hash(&request_body),
        response_hash,
    }
}

fn from_tshark(s: &H2Stream) -> Seen {
    Seen {
        client: s.conn.expect("the client's end").to_string(),
        stream: u64::from(s.stream_id),
        method: s.method.clone().unwrap_or_default(),
        path: s.path.clone().unwrap_or_default(),
        status: s.status.map_or(0, u64::from),
        request_body: s.request_body_len(),
        response_body: s.response_body_len(),
        request_hash: hash(&s.request_body),
        response_hash: Some(hash(&s.response_body)),
    }
}

/// tcpdump's capture of 25 GETs as 25 concurrent streams (five of them
/// 404s) and two POSTs with bodies that nghttpd echoes (one echo over
/// `--max-diff-body`), on three connections: `parallelrun exchanges
/// --pcap` finds exactly the request streams tshark finds, each with the
/// same connection, stream id, method, path, status and bodies (lengths
/// and bytes; a digested body would compare by its `sent_bytes`); nothing
/// lost.
#[test]
fn exchanges_of_a_capture_agree_with_tshark_stream_by_stream() {
    let started = Instant::now();
    let rig = Rig::start();
    let root = rig.path("root");
    write_docroot(&root);
    let server = Nghttpd::start_with(
        &rig.pair.server,
        SocketAddr::new(rig.pair.server_ip, 8080),
        &root,
        &["--echo-upload"],
    );
    let mut tcpdump = rig.tcpdump("cross");

    let urls = cross_check_urls(&server);
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let n = urls.len() as u32;
    let run = h2::h2load_with(&rig.pair.client, &urls, n, 1, n, &[]);
    assert_eq!(
        (run.done, run.status_2xx, run.status_4xx),
        (25, 20, 5),
        "{}",
        run.text
    );
    let posts = [20_000, MAX_DIFF_BODY + 10_000];
    for (k, len) in posts.into_iter().enumerate() {
        let upload = rig.path(&format!("upload{k}.txt"));
        let body = text(len, 100 + k);
        std::fs::write(&upload, &body).unwrap();
        let url = server.url(&format!("/echo{k}"));
        let got = h2::nghttp(&rig.pair.client, &["-d", upload.to_str().unwrap(), &url]);
        assert!(got == body, "echo {k}: {} bytes of {len}", got.len());
    }
    tcpdump.stop();

    let exchanges = rig.exchanges(tcpdump.path(), &server.addr.to_string(), "exchanges");
    let lost: Vec<&Value> = exchanges
        .iter()
        .filter(|e| e.get("lost").is_some())
        .collect();
    assert!(lost.is_empty(), "lost: {lost:#?}");
    for ex in &exchanges {
        assert_eq!(ex["protocol"], "http2", "{ex:#}");
    }
    let mut ours: Vec<Seen> = exchanges.iter().map(from_exchange).collect();
    // nghttp opens idle streams with PRIORITY frames only (its priority
    // tree's anchors): no requests.
    let (streams, idle): (Vec<H2Stream>, Vec<H2Stream>) =
        h2::tshark_h2_streams(tcpdump.path(), 8080)
            .into_iter()
            .partition(|s| !s.request_headers.is_empty());
    assert!(
        idle.iter().all(|s| s.response_headers.is_empty()
            && s.request_body.is_empty()
            && s.response_body.is_empty()),
        "{idle:#?}"
    );
    let mut theirs: Vec<Seen> = streams.iter().map(from_tshark).collect();
    ours.sort_by(|a, b| (&a.client, a.stream).cmp(&(&b.client, b.stream)));
    theirs.sort_by(|a, b| (&a.client, a.stream).cmp(&(&b.client, b.stream)));
    assert_eq!(theirs.len(), 27, "tshark's streams: {theirs:#?}");
    assert_eq!(
        ours.len(),
        theirs.len(),
        "ours: {ours:#?}\ntshark's: {theirs:#?}"
    );
    for (a, b) in ours.iter().zip(&theirs) {
        let mut b = b.clone();
        if a.response_hash.is_none() {
            // Digested: compared by the length as sent.
            b.response_hash = None;
        }
        assert_eq!(*a, b, "exchanges vs tshark");
    }
    // What the traffic was, so that agreeing means something.
    let conns: std::collections::BTreeSet<&str> = ours.iter().map(|s| s.client.as_str()).collect();
    assert_eq!(conns.len(), 3, "{conns:?}");
    assert_eq!(ours.iter().filter(|s| s.status == 404).count(), 5);
    let mut post_lens: Vec<(usize, usize)> = ours
        .iter()
        .filter(|s| s.method == "POST")
        .map(|s| (s.request_body, s.response_body))
        .collect();
    post_lens.sort_unstable();
    assert_eq!(post_lens, posts.map(|l| (l, l)), "{ours:#?}");
    // `exchanges` keeps every body whole (no digests), so the bodies over
    // a run's --max-diff-body agree byte for byte too.
    assert!(
        exchanges
            .iter()
            .all(|e| e["response"].get("body_digest").is_none()),
        "a digested body"
    );
    assert!(
        ours.iter()
            .filter(|s| s.response_body > MAX_DIFF_BODY)
            .count()
            >= 4
    );
    eprintln!("exchanges vs tshark: {:?}", started.elapsed());
}

/// The same over IPv6: the old service on the veth's v6 address, the agent
/// capturing v6, replaying to the new service and secondary on the v6
/// loopback (nghttpd cannot bind 127.0.0.1 where no other address is
/// IPv4): 100 concurrent streams, each seen, compared and matched.
#[test]
fn concurrent_streams_over_ipv6_are_each_compared() {
    let started = Instant::now();
    let rig = Rig::start_with(Family::V6);
    let root = rig.path("root");
    write_docroot(&root);
    let ns = &rig.pair.server;
    let old = Nghttpd::start(ns, SocketAddr::new(rig.pair.server_ip, 8080), &root);
    let _new = Nghttpd::start(ns, NEW6.parse().unwrap(), &root);
    let _secondary = Nghttpd::start(ns, SECONDARY6.parse().unwrap(), &root);
    let agent = rig.run("v6", &old.addr.to_string(), NEW6, SECONDARY6, &[]);
    load(&rig, &old);
    let r = rig.stop(agent, "v6");
    let ctx = r.context();
    assert_eq!(r.n("/kernel/ringbuf_full_drops"), 0, "{ctx}");
    assert_eq!(r.n("/requests_seen"), REQUESTS as u64, "{ctx}");
    assert_eq!(r.n("/outcomes/matched"), REQUESTS as u64, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/skipped"), 0, "{ctx}");
    assert_eq!(r.n("/http/http2/connections"), 1, "{ctx}");
    assert!(r.log.is_empty(), "{ctx}");
    eprintln!("h2c over IPv6: {:?}", started.elapsed());
}

/// Request bodies: 20 concurrent POSTs of 100 KB (h2load `-d`: DATA over
/// many frames and flow-control windows) and one of 300 KB, to nghttpd
/// `--echo-upload` on every side. With `--methods GET,POST` each is
/// replayed with its body, which comes back echoed: every request matched.
#[test]
fn posted_bodies_are_replayed_whole() {
    let started = Instant::now();
    let rig = Rig::start();
    let root = rig.path("root");
    write_docroot(&root);
    let ns = &rig.pair.server;
    let echo = ["--echo-upload"];
    let old = Nghttpd::start_with(ns, SocketAddr::new(rig.pair.server_ip, 8080), &root, &echo);
    let _new = Nghttpd::start_with(ns, NEW.parse().unwrap(), &root, &echo);
    let _secondary = Nghttpd::start_with(ns, SECONDARY.parse().unwrap(), &root, &echo);
    let agent = rig.run(
        "posts",
        &old.addr.to_string(),
        NEW,
        SECONDARY,
        &["--methods", "GET,POST"],
    );
    let upload = rig.path("upload.txt");
    std::fs::write(&upload, text(100_000, 7)).unwrap();
    let url = old.url("/echo");
    let run = h2::h2load_with(
        &rig.pair.client,
        &[&url],
        20,
        1,
        20,
        &["-d", upload.to_str().unwrap()],
    );
    assert_eq!((run.succeeded, run.status_2xx), (20, 20), "{}", run.text);
    assert_eq!(run.data_bytes, 20 * 100_000, "{}", run.text);
    let big = rig.path("big.txt");
    let body = text(300_000, 8);
    std::fs::write(&big, &body).unwrap();
    let got = h2::nghttp(&rig.pair.client, &["-d", big.to_str().unwrap(), &url]);
    assert!(got == body, "echoed {} bytes", got.len());
    let r = rig.stop(agent, "posts");
    let ctx = r.context();
    assert_eq!(r.n("/kernel/ringbuf_full_drops"), 0, "{ctx}");
    assert_eq!(r.n("/requests_seen"), 21, "{ctx}");
    assert_eq!(r.n("/outcomes/replayed"), 21, "{ctx}");
    assert_eq!(r.n("/outcomes/matched"), 21, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{ctx}");
    assert!(r.log.is_empty(), "{ctx}");
    let ep = r.endpoint("POST /echo");
    assert_eq!(ep["counts"]["matched"], 21, "{ep:#}");
    eprintln!("h2c POST bodies: {:?}", started.elapsed());
}

/// `Upgrade: h2c` (RFC 7540 §3.2): curl upgrades a connection to a real
/// HTTP/2 server (python3-h2; nghttpd, nginx and grpcio do not take the
/// upgrade) and sends a second request on it as HTTP/2. The upgrading
/// request is stream 1, answered in HTTP/2; both are replayed over h2c to
/// nghttpd and compared.
#[test]
fn an_upgraded_connection_is_followed_and_compared() {
    let started = Instant::now();
    let rig = Rig::start();
    let root = rig.path("www");
    std::fs::create_dir_all(&root).expect("docroot");
    std::fs::write(root.join("a.txt"), text(3_000, 1)).expect("file");
    std::fs::write(root.join("b.txt"), text(40_000, 2)).expect("file");
    let ns = &rig.pair.server;
    let old = h2::UpgradeServer::start(ns, SocketAddr::new(rig.pair.server_ip, 8080), &root);
    let _new = Nghttpd::start(ns, NEW.parse().unwrap(), &root);
    let _secondary = Nghttpd::start(ns, SECONDARY.parse().unwrap(), &root);
    let old_addr = old.addr.to_string();
    let agent = rig.run("upgrade", &old_addr, NEW, SECONDARY, &[]);
    let out = rig
        .pair
        .client
        .command("curl")
        .args(["-sS", "--http2", "-o", "/dev/null", "-o", "/dev/null"])
        .args(["-w", "%{http_version} %{http_code}\\n"])
        .arg(format!("http://{old_addr}/a.txt"))
        .arg(format!("http://{old_addr}/b.txt"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200\n2 200\n");
    let r = rig.stop(agent, "upgrade");
    let ctx = r.context();
    assert_eq!(r.n("/requests_seen"), 2, "{ctx}");
    assert_eq!(r.n("/outcomes/replayed"), 2, "{ctx}");
    // The old service is another implementation than nghttpd (the new one
    // and the secondary): its one header difference (nghttpd's `server`)
    // shows with the secondary too, so each exchange is noise; the bodies,
    // one of several DATA frames, are the same.
    assert_eq!(r.n("/outcomes/noise"), 2, "{ctx}");
    assert_eq!(r.n("/outcomes/noise_differences"), 2, "{ctx}");
    assert_eq!(r.n("/outcomes/mismatched"), 0, "{ctx}");
    assert_eq!(r.stats.sum("/outcomes/lost"), 0, "{ctx}");
    assert_eq!(r.n("/http/paired"), 2, "{ctx}");
    assert_eq!(r.n("/http/http2/upgraded_connections"), 1, "{ctx}");
    assert_eq!(r.n("/http/upgraded_connections"), 0, "{ctx}");
    assert!(r.log.is_empty(), "{ctx}");
    eprintln!("h2c upgrade: {:?}", started.elapsed());
}
