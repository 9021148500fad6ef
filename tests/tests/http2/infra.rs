//! The rig alone, without the agent: what the agent's HTTP/2 tests build
//! on must hold by itself.

use std::{net::SocketAddr, time::Instant};

use parallelrun_tests::{
    body_pattern,
    h2::{self, GRPC_CHANGED_FIELD, GRPC_RANDOM_FIELD, GrpcFlavor, GrpcServer, H2Stream, Nghttpd},
    netns::Family,
    tcpdump::Tcpdump,
};
use serde_json::Value;

use crate::Rig;

const STREAMS: usize = 100;

/// The length of file `i` of the docroot: all different, most of them
/// larger than one 16 KiB DATA frame and one TCP segment.
fn file_len(i: usize) -> usize {
    1000 + 397 * i
}

/// 100 requests as 100 concurrent streams on one connection: h2load sees
/// them all succeed, and tshark finds exactly those 100 streams in
/// tcpdump's capture, each with its path, 200 and the file's length.
#[test]
fn nghttpd_serves_100_concurrent_streams_on_one_connection() {
    let started = Instant::now();
    let rig = Rig::start();
    let docroot = rig.path("docroot");
    std::fs::create_dir(&docroot).unwrap();
    for i in 0..STREAMS {
        std::fs::write(docroot.join(format!("f{i}.bin")), body_pattern(file_len(i))).unwrap();
    }
    let server = Nghttpd::start(
        &rig.pair.server,
        SocketAddr::new(rig.pair.server_ip, 8080),
        &docroot,
    );
    let mut tcpdump = rig.tcpdump("h2");

    // h2load sends its URIs in turn: one request for each file.
    let urls: Vec<String> = (0..STREAMS)
        .map(|i| server.url(&format!("/f{i}.bin")))
        .collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let run = h2::h2load_with(&rig.pair.client, &urls, 100, 1, 100, &[]);
    tcpdump.stop();

    assert_eq!(run.protocol, "h2c", "{}", run.text);
    assert_eq!(
        (run.total, run.done, run.succeeded, run.status_2xx),
        (100, 100, 100, 100),
        "{}",
        run.text
    );
    assert_eq!(
        run.data_bytes,
        (0..STREAMS).map(file_len).sum::<usize>() as u64,
        "{}",
        run.text
    );

    let streams = h2::tshark_h2_streams(tcpdump.path(), 8080);
    assert_eq!(streams.len(), STREAMS, "streams: {streams:#?}");
    let conns: std::collections::BTreeSet<_> = streams.iter().map(|s| s.conn).collect();
    assert_eq!(conns.len(), 1, "connections: {conns:?}");
    assert!(
        conns
            .iter()
            .all(|c| c.is_some_and(|c| c.ip() == rig.pair.client_ip))
    );
    let mut paths: Vec<String> = Vec::new();
    for s in &streams {
        let what = format!("stream {}", s.stream_id);
        assert_eq!(s.stream_id % 2, 1, "{what}: client-initiated ids are odd");
        assert_eq!(s.method.as_deref(), Some("GET"), "{what}");
        assert_eq!(s.status, Some(200), "{what}");
        assert!(s.request_ended && s.response_ended, "{what}: {s:?}");
        assert_eq!(s.reset, None, "{what}");
        assert_eq!(s.request_body_len(), 0, "{what}");
        let path = s.path.clone().unwrap_or_else(|| panic!("{what}: no :path"));
        let i: usize = path
            .strip_prefix("/f")
            .and_then(|p| p.strip_suffix(".bin"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what}: unexpected path {path}"));
        assert_eq!(s.response_body_len(), file_len(i), "{what} ({path})");
        assert!(
            s.response_body == body_pattern(file_len(i)),
            "{what} ({path}): body bytes"
        );
        assert_eq!(
            s.response_header("content-length"),
            Some(file_len(i).to_string().as_str()),
            "{what}"
        );
        paths.push(path);
    }
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), STREAMS, "each file once");
    // Concurrent: every request was sent before the first stream ended.
    let first_end = streams.iter().map(|s| s.last_frame).min().unwrap();
    let opened_before = streams
        .iter()
        .filter(|s| s.first_frame <= first_end)
        .count();
    assert_eq!(
        opened_before, STREAMS,
        "streams open at once (before frame {first_end} ended one)"
    );
    eprintln!("nghttpd/h2load/tshark: {:?}", started.elapsed());
}

/// A request body over several DATA frames (and flow-control windows):
/// nghttpd echoes it, and tshark sees it whole both ways.
#[test]
fn nghttp_posts_a_body_that_nghttpd_echoes() {
    let rig = Rig::start();
    let docroot = rig.path("docroot");
    std::fs::create_dir(&docroot).unwrap();
    let body = body_pattern(100_000);
    let upload = rig.path("upload.bin");
    std::fs::write(&upload, &body).unwrap();
    let server = Nghttpd::start_with(
        &rig.pair.server,
        SocketAddr::new(rig.pair.server_ip, 8080),
        &docroot,
        &["--echo-upload"],
    );
    let mut tcpdump = rig.tcpdump("post");
    let url = server.url("/echo");
    let got = h2::nghttp(&rig.pair.client, &["-d", upload.to_str().unwrap(), &url]);
    tcpdump.stop();
    assert!(got == body, "echoed {} bytes of {}", got.len(), body.len());

    let streams = h2::tshark_h2_streams(tcpdump.path(), 8080);
    let posts: Vec<&H2Stream> = streams
        .iter()
        .filter(|s| s.method.as_deref() == Some("POST"))
        .collect();
    assert_eq!(posts.len(), 1, "streams: {streams:#?}");
    let s = posts[0];
    assert_eq!(s.path.as_deref(), Some("/echo"), "{s:?}");
    assert_eq!(s.status, Some(200), "{s:?}");
    assert!(s.request_body == body, "request body: {s:?}");
    assert!(s.response_body == body, "response body: {s:?}");
    assert!(s.request_ended && s.response_ended, "{s:?}");
}

/// `user` without the random field.
fn without_noise(user: &Value) -> Value {
    let mut u = user.clone();
    u.as_object_mut()
        .expect("a user object")
        .remove(GRPC_RANDOM_FIELD)
        .unwrap_or_else(|| panic!("no {GRPC_RANDOM_FIELD} in {user}"));
    u
}

/// Every user of a client summary, in call order.
fn users(summary: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = summary["get"].as_array().unwrap().clone();
    for l in summary["list"].as_array().unwrap() {
        out.extend(l.as_array().unwrap().iter().cloned());
    }
    out.extend(summary["create"].as_array().unwrap().iter().cloned());
    out
}

fn assert_counts(summary: &Value, get: u64, list: u64, items: u64, create: u64) {
    let c = &summary["counts"];
    assert_eq!(
        (
            c["get"].as_u64(),
            c["list"].as_u64(),
            c["list_items"].as_u64(),
            c["create"].as_u64()
        ),
        (Some(get), Some(list), Some(items), Some(create)),
        "counts of {summary:#}"
    );
}

/// The gRPC streams tshark found, each answered with grpc-status 0 and
/// as many response messages as the method sends.
fn assert_grpc_streams(streams: &[&H2Stream], list_size: usize) {
    for s in streams {
        let what = format!("stream {} of {:?}", s.stream_id, s.conn);
        assert_eq!(s.method.as_deref(), Some("POST"), "{what}");
        assert_eq!(s.status, Some(200), "{what}");
        assert_eq!(s.grpc_status, Some(0), "{what}: {s:?}");
        assert_eq!(
            s.request_header("content-type"),
            Some("application/grpc"),
            "{what}"
        );
        assert_eq!(s.request_messages.len(), 1, "{what}: {s:?}");
        let expected = if s.path.as_deref() == Some(h2::grpc_path("List").as_str()) {
            list_size
        } else {
            1
        };
        assert_eq!(s.response_messages.len(), expected, "{what}: {s:?}");
        assert_eq!(
            s.response_body_len(),
            s.response_messages.iter().map(|m| 5 + m.len).sum::<usize>(),
            "{what}: body is whole gRPC messages"
        );
    }
}

/// The gRPC rig: a real server in each flavor, answering a real client on
/// one connection; answers depend on the request only, but for the random
/// field in every flavor and the deliberate change in `new`; gzip works
/// both ways; tshark sees each call as a stream with grpc-status 0.
#[test]
fn grpc_flavors_answer_as_documented_and_tshark_sees_each_call() {
    let started = Instant::now();
    let rig = Rig::start();
    let descriptor = h2::compile_proto(rig.dir());
    let server_ns = &rig.pair.server;
    let old_addr = SocketAddr::new(rig.pair.server_ip, 50051);
    let _old = GrpcServer::start(server_ns, old_addr, GrpcFlavor::Old, &descriptor);
    let _new = GrpcServer::start(
        server_ns,
        "127.0.0.1:50052".parse().unwrap(),
        GrpcFlavor::New,
        &descriptor,
    );
    // The secondary compresses every answer by itself.
    let _secondary = GrpcServer::start_with(
        server_ns,
        "127.0.0.1:50053".parse().unwrap(),
        GrpcFlavor::Secondary,
        &descriptor,
        &["--gzip"],
    );
    let mut tcpdump = rig.tcpdump("grpc");
    // The server namespace's loopback: the secondary's own compression.
    let mut tcpdump_lo = Tcpdump::start(server_ns, "lo", &rig.path("grpc-lo.pcap"));

    let calls = [
        "--get",
        "3",
        "--list",
        "2",
        "--list-size",
        "4",
        "--create",
        "2",
    ];
    let target = old_addr.to_string();
    let mut with_missing = calls.to_vec();
    with_missing.extend(["--missing", "1"]);
    let old = h2::grpc_client(&rig.pair.client, &target, &descriptor, &with_missing);
    let mut gzip_calls = calls.to_vec();
    gzip_calls.push("--gzip");
    let old_gzip = h2::grpc_client(&rig.pair.client, &target, &descriptor, &gzip_calls);
    let new = h2::grpc_client(server_ns, "127.0.0.1:50052", &descriptor, &calls);
    let secondary = h2::grpc_client(server_ns, "127.0.0.1:50053", &descriptor, &calls);
    tcpdump.stop();
    tcpdump_lo.stop();

    // The answers, from the request.
    for s in [&old, &old_gzip, &new, &secondary] {
        assert_counts(s, 3, 2, 8, 2);
    }
    assert_eq!(old["counts"]["missing"], 1, "{old:#}");
    assert_eq!(old["missing"][0]["code"], "NOT_FOUND", "{old:#}");
    assert_eq!(old["missing"][0]["value"], 5, "{old:#}");
    for (i, u) in old["get"].as_array().unwrap().iter().enumerate() {
        assert_eq!(u["id"], i + 1, "Get {i}: {u}");
        assert_eq!(u["name"], format!("user-{}", i + 1), "Get {i}: {u}");
        assert!(u["profile"]["address"]["city"].is_string(), "nested: {u}");
        assert!(!u["tags"].as_array().unwrap().is_empty(), "repeated: {u}");
    }
    for l in old["list"].as_array().unwrap() {
        let ids: Vec<u64> = l
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [1, 2, 3, 4], "List: {l}");
    }
    for (i, u) in old["create"].as_array().unwrap().iter().enumerate() {
        assert_eq!(u["name"], format!("new-{}", i + 1), "Create {i}: {u}");
        assert_eq!(
            u["tags"],
            serde_json::json!([format!("k{}", i + 1)]),
            "Create {i}: {u}"
        );
    }

    // Old, gzip and secondary differ in the random field only, and it does differ.
    let old_users = users(&old);
    for (name, other) in [("gzip", &old_gzip), ("secondary", &secondary)] {
        let other_users = users(other);
        assert_eq!(old_users.len(), other_users.len());
        for (a, b) in old_users.iter().zip(&other_users) {
            assert_eq!(without_noise(a), without_noise(b), "old vs {name}");
            assert_ne!(
                a[GRPC_RANDOM_FIELD], b[GRPC_RANDOM_FIELD],
                "old vs {name}: {a} {b}"
            );
        }
    }
    // New differs in the deliberate field too, in Get and List; Create is the same.
    let new_users = users(&new);
    let created = old["create"].as_array().unwrap().len();
    for (i, (a, b)) in old_users.iter().zip(&new_users).enumerate() {
        let (mut a, mut b) = (without_noise(a), without_noise(b));
        let changed = i < old_users.len() - created;
        let (ca, cb) = (
            a.pointer(GRPC_CHANGED_FIELD).cloned(),
            b.pointer(GRPC_CHANGED_FIELD).cloned(),
        );
        if changed {
            assert_ne!(ca, cb, "old vs new, user {i}: {GRPC_CHANGED_FIELD}");
            *a.pointer_mut(GRPC_CHANGED_FIELD).unwrap() = Value::Null;
            *b.pointer_mut(GRPC_CHANGED_FIELD).unwrap() = Value::Null;
        }
        assert_eq!(a, b, "old vs new, user {i}: nothing else differs");
    }

    // tshark: the old server's two connections (in the order they were
    // made), one stream per call.
    let streams = h2::tshark_h2_streams(tcpdump.path(), 50051);
    let mut conns: Vec<_> = streams.iter().map(|s| s.conn).collect();
    conns.dedup();
    assert_eq!(conns.len(), 2, "one connection per client run: {conns:?}");
    let calls_in_order = ["Get", "Get", "Get", "List", "List", "Create", "Create"];
    for (conn, gzip) in conns.iter().zip([false, true]) {
        let mut on: Vec<&H2Stream> = streams.iter().filter(|s| s.conn == *conn).collect();
        let mut want: Vec<String> = calls_in_order.iter().map(|m| h2::grpc_path(m)).collect();
        if !gzip {
            // The NOT_FOUND call, last: trailers only, no message back.
            let missing = on.pop().unwrap_or_else(|| panic!("no streams on {conn:?}"));
            assert_eq!(missing.path.as_deref(), Some(h2::grpc_path("Get").as_str()));
            assert_eq!(missing.status, Some(200), "{missing:?}");
            assert_eq!(missing.grpc_status, Some(5), "{missing:?}");
            assert!(missing.response_messages.is_empty(), "{missing:?}");
            assert_eq!(missing.response_header("grpc-message"), Some("no user 0"));
            want.truncate(calls_in_order.len());
        }
        let paths: Vec<&str> = on.iter().map(|s| s.path.as_deref().unwrap()).collect();
        assert_eq!(paths, want, "calls in order on {conn:?}: {on:#?}");
        assert_grpc_streams(&on, 4);
        for s in &on {
            let what = format!("stream {} on {conn:?}", s.stream_id);
            if gzip {
                assert_eq!(s.request_header("grpc-encoding"), Some("gzip"), "{what}");
                assert_eq!(s.response_header("grpc-encoding"), Some("gzip"), "{what}");
                assert!(
                    s.response_messages.iter().all(|m| m.compressed),
                    "{what}: answers compressed: {s:?}"
                );
            } else {
                assert!(
                    s.response_messages.iter().all(|m| !m.compressed),
                    "{what}: answers plain: {s:?}"
                );
            }
        }
    }
    // The secondary (`--gzip`) compressed its answers to a plain client.
    let on_lo = h2::tshark_h2_streams(tcpdump_lo.path(), 50053);
    assert_eq!(on_lo.len(), 7, "the secondary's streams: {on_lo:#?}");
    assert_grpc_streams(&on_lo.iter().collect::<Vec<_>>(), 4);
    for s in &on_lo {
        assert_eq!(s.request_header("grpc-encoding"), None, "{s:?}");
        assert_eq!(s.response_header("grpc-encoding"), Some("gzip"), "{s:?}");
        assert!(s.response_messages.iter().all(|m| m.compressed), "{s:?}");
    }
    eprintln!("gRPC rig: {:?}", started.elapsed());
}

/// The same helpers over IPv6: the server binds the veth's v6 address, and
/// tshark reports the client's v6 end.
#[test]
fn grpc_and_h2load_work_over_ipv6() {
    let rig = Rig::start_with(Family::V6);
    let descriptor = h2::compile_proto(rig.dir());
    let grpc_addr = SocketAddr::new(rig.pair.server_ip, 50051);
    let _grpc = GrpcServer::start(&rig.pair.server, grpc_addr, GrpcFlavor::Old, &descriptor);
    let docroot = rig.path("docroot");
    std::fs::create_dir(&docroot).unwrap();
    std::fs::write(docroot.join("f.bin"), body_pattern(5000)).unwrap();
    let web = Nghttpd::start(
        &rig.pair.server,
        SocketAddr::new(rig.pair.server_ip, 8080),
        &docroot,
    );
    let mut tcpdump = rig.tcpdump("v6");
    let answers = h2::grpc_client(
        &rig.pair.client,
        &grpc_addr.to_string(),
        &descriptor,
        &["--get", "2", "--list", "1", "--concurrent"],
    );
    let run = h2::h2load(&rig.pair.client, &web.url("/f.bin"), 10, 1, 10);
    tcpdump.stop();
    assert_counts(&answers, 2, 1, 3, 0);
    assert_eq!((run.succeeded, run.status_2xx), (10, 10), "{}", run.text);

    let grpc = h2::tshark_h2_streams(tcpdump.path(), 50051);
    assert_eq!(grpc.len(), 3, "{grpc:#?}");
    assert_grpc_streams(&grpc.iter().collect::<Vec<_>>(), 3);
    let web_streams = h2::tshark_h2_streams(tcpdump.path(), 8080);
    assert_eq!(web_streams.len(), 10, "{web_streams:#?}");
    for s in grpc.iter().chain(&web_streams) {
        let conn = s.conn.unwrap_or_else(|| panic!("no client end: {s:?}"));
        assert_eq!(conn.ip(), rig.pair.client_ip, "{s:?}");
    }
    assert!(
        web_streams
            .iter()
            .all(|s| s.status == Some(200) && s.response_body_len() == 5000)
    );
}
