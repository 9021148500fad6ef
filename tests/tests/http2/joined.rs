//! Connections that began before the agent did: the agent joins an h2c
//! connection midway, without its preface, SETTINGS or the header blocks
//! that filled the HPACK tables so far. Requests whose blocks name only
//! entries inserted since it joined are paired; the others are lost as
//! `hpack_state`, never guessed.
//!
//! The client is [`h2raw`]: its HPACK encoder does exactly what the test
//! says, so the test knows which entries each block names. The client
//! advertises SETTINGS_HEADER_TABLE_SIZE 0, so nghttpd's encoder indexes
//! nothing toward it (it announces the size 0 in its first response, before
//! the agent joins): every response the agent sees decodes with the static
//! table alone, and whether a request is paired depends on its own block
//! only. The client's encoder still uses nghttpd's table (4096 bytes; the
//! test inserts far less), as the setting is per direction.

use std::{collections::BTreeMap, net::SocketAddr, thread, time::Duration, time::Instant};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use parallelrun_tests::{
    agent::{Agent, stats},
    h2::Nghttpd,
    h2raw::{
        Client, Field, Name, Response, SETTINGS_HEADER_TABLE_SIZE,
        static_index::{AUTHORITY, METHOD_GET, PATH, SCHEME_HTTP},
    },
};
use serde_json::Value;

use crate::Rig;

/// The docroot's files and their lengths.
const FILES: &[(&str, usize)] = &[
    ("/a.txt", 100),
    ("/b.txt", 200),
    ("/c.txt", 300),
    ("/e.txt", 500),
];

fn file_len(path: &str) -> usize {
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(0, |(_, len)| *len)
}

/// `:method GET` and `:scheme http`, from the static table.
fn base() -> Vec<Field> {
    vec![Field::Indexed(METHOD_GET), Field::Indexed(SCHEME_HTTP)]
}

/// A GET on `stream` with [`base`] and `fields`, and its response.
fn exchange(c: &mut Client, stream: u32, fields: Vec<Field>) -> Response {
    c.get(stream, &[base(), fields].concat());
    c.response(stream)
}

/// The newest entry `n: v` of the client's table, by index.
fn idx(n: &str, v: &str) -> Field {
    Field::Entry(n.to_owned(), v.to_owned())
}

fn insert(name: Name, value: &str) -> Field {
    Field::Insert(name, value.to_owned())
}

/// A connection opened before the agent started: of the 9 requests sent on
/// it after the agent attached, the 5 whose blocks name only entries
/// inserted since (by literals of the same requests or of earlier ones,
/// lost ones included) are paired, with their stream ids, paths and
/// statuses; the 4 that name an entry inserted before (a whole field, or
/// just a name, or an entry inserted later under such a name) are lost
/// `hpack_state`. Nothing else: 9 requests seen, 9 outcomes, one joined
/// HTTP/2 connection, 4 blocks with unknown entries, no HPACK error.
/// (With the client's table size left at 4096, every request is lost:
/// nghttpd's responses then name entries of its first responses.)
#[test]
fn requests_naming_only_new_entries_are_paired_the_others_lost_hpack_state() {
    let started = Instant::now();
    let rig = Rig::start();
    let docroot = rig.path("docroot");
    std::fs::create_dir(&docroot).unwrap();
    for (path, len) in FILES {
        std::fs::write(docroot.join(&path[1..]), vec![b'x'; *len]).unwrap();
    }
    let addr = SocketAddr::new(rig.pair.server_ip, 8080);
    let _server = Nghttpd::start(&rig.pair.server, addr, &docroot);
    let authority = addr.to_string();

    // The socket belongs to the client namespace; the test's thread uses it.
    let tcp = rig
        .pair
        .client
        .run(move || std::net::TcpStream::connect(addr).expect("connect to nghttpd"));
    let mut c = Client::handshake(tcp, &[(SETTINGS_HEADER_TABLE_SIZE, 0)]);

    // Before the agent: entries the agent will never see.
    let r = exchange(
        &mut c,
        1,
        vec![
            insert(Name::Index(AUTHORITY), &authority),
            insert(Name::Index(PATH), "/a.txt"),
            insert(Name::Literal("x-phase".into()), "before"),
        ],
    );
    assert_eq!(r.body_len, 100, "{r:?}");
    let fields = vec![
        idx(":authority", &authority),
        insert(Name::Index(PATH), "/b.txt"),
        idx("x-phase", "before"),
    ];
    let r = exchange(&mut c, 3, fields);
    assert_eq!(r.body_len, 200, "{r:?}");
    let fields = vec![
        idx(":authority", &authority),
        idx(":path", "/a.txt"),
        idx("x-phase", "before"),
    ];
    let r = exchange(&mut c, 5, fields);
    assert_eq!(r.body_len, 100, "{r:?}");
    let inserted_before = c.encoder.len();
    assert_eq!(inserted_before, 4);

    let out = rig.path("exchanges.jsonl");
    let stats_path = rig.path("stats.json");
    let mut agent = Agent::start(
        &rig.pair.server,
        &[
            "exchanges",
            "--iface",
            &rig.pair.server_if,
            "--old",
            &authority,
            "--out",
            out.to_str().unwrap(),
            "--stats-json",
            stats_path.to_str().unwrap(),
        ],
    );

    // After: (stream, fields, expected outcome: Some(path, status) when
    // paired, None when lost hpack_state).
    let mut expected: BTreeMap<u32, Option<(&str, u16)>> = BTreeMap::new();
    // Literals only, inserting a new :authority (same value), :path and
    // x-phase: paired.
    let r = exchange(
        &mut c,
        7,
        vec![
            insert(Name::Index(AUTHORITY), &authority),
            insert(Name::Index(PATH), "/c.txt"),
            insert(Name::Literal("x-phase".into()), "after"),
        ],
    );
    assert_eq!(r.body_len, 300, "{r:?}");
    expected.insert(7, Some(("/c.txt", 200)));
    // New entries by index, one more inserted: paired (404).
    let fields = vec![
        idx(":authority", &authority),
        insert(Name::Index(PATH), "/missing"),
        idx("x-phase", "after"),
    ];
    exchange(&mut c, 9, fields);
    expected.insert(9, Some(("/missing", 404)));
    // Only new entries, all indexed: paired.
    let fields = vec![
        idx(":authority", &authority),
        idx(":path", "/c.txt"),
        idx("x-phase", "after"),
    ];
    let r = exchange(&mut c, 11, fields);
    assert_eq!(r.body_len, 300, "{r:?}");
    expected.insert(11, Some(("/c.txt", 200)));
    // An old entry (x-phase: before), and an insertion: lost.
    let fields = vec![
        idx(":authority", &authority),
        insert(Name::Index(PATH), "/e.txt"),
        idx("x-phase", "before"),
    ];
    exchange(&mut c, 13, fields);
    expected.insert(13, None);
    // An old :path: lost.
    let fields = vec![idx(":authority", &authority), idx(":path", "/a.txt")];
    let r = exchange(&mut c, 15, fields);
    assert_eq!(r.body_len, 100, "{r:?}");
    expected.insert(15, None);
    // The entry the lost stream 13 inserted: paired.
    let fields = vec![
        idx(":authority", &authority),
        idx(":path", "/e.txt"),
        idx("x-phase", "after"),
    ];
    let r = exchange(&mut c, 17, fields);
    assert_eq!(r.body_len, 500, "{r:?}");
    expected.insert(17, Some(("/e.txt", 200)));
    // A new entry under an old entry's name: lost, and so is the next
    // block that names that entry.
    let fields = vec![
        idx(":authority", &authority),
        idx(":path", "/c.txt"),
        insert(
            Name::Entry("x-phase".into(), "before".into()),
            "named-before",
        ),
    ];
    exchange(&mut c, 19, fields);
    expected.insert(19, None);
    let fields = vec![
        idx(":authority", &authority),
        idx(":path", "/c.txt"),
        idx("x-phase", "named-before"),
    ];
    exchange(&mut c, 21, fields);
    expected.insert(21, None);
    // Past the unknown entry, positions still agree: paired.
    let fields = vec![
        idx(":authority", &authority),
        idx(":path", "/c.txt"),
        idx("x-phase", "after"),
    ];
    let r = exchange(&mut c, 23, fields);
    assert_eq!(r.body_len, 300, "{r:?}");
    expected.insert(23, Some(("/c.txt", 200)));
    assert_eq!(c.encoder.len(), inserted_before + 6);
    assert!(
        c.other_frames.iter().all(|f| f.kind != 0x3),
        "no RST_STREAM: {:?}",
        c.other_frames
    );

    thread::sleep(Duration::from_millis(300));
    drop(c);
    thread::sleep(Duration::from_millis(500));
    agent.stop();

    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let mut paired: BTreeMap<u32, &Value> = BTreeMap::new();
    let mut lost = Vec::new();
    for v in &lines {
        if let Some(cause) = v.get("lost") {
            assert_eq!(cause, "hpack_state", "{v}");
            lost.push(v);
        } else {
            let stream = u32::try_from(v["stream"].as_u64().expect("stream")).unwrap();
            assert!(paired.insert(stream, v).is_none(), "stream {stream} twice");
        }
    }
    let want_paired: Vec<u32> = expected.iter().filter_map(|(s, e)| e.map(|_| *s)).collect();
    assert_eq!(
        paired.keys().copied().collect::<Vec<_>>(),
        want_paired,
        "paired streams:\n{text}\n{}",
        agent.stderr()
    );
    // What could be read of the lost requests, never a guess: stream 15's
    // :path was an old entry, so it has none.
    let read: Vec<(&Value, &Value)> = lost.iter().map(|v| (&v["method"], &v["target"])).collect();
    assert_eq!(
        read,
        [
            (&Value::from("GET"), &Value::from("/e.txt")),
            (&Value::from("GET"), &Value::Null),
            (&Value::from("GET"), &Value::from("/c.txt")),
            (&Value::from("GET"), &Value::from("/c.txt")),
        ],
        "lost:\n{text}"
    );
    for (stream, v) in &paired {
        let (path, status) = expected[stream].unwrap();
        let what = format!("stream {stream}: {v}");
        assert_eq!(v["protocol"], "http2", "{what}");
        assert_eq!(v["request"]["method"], "GET", "{what}");
        assert_eq!(v["request"]["target"], path, "{what}");
        assert_eq!(v["response"]["status"], status, "{what}");
        assert_eq!(
            v["client"].as_str().unwrap().split(':').next(),
            Some(rig.pair.client_ip.to_string().as_str()),
            "{what}"
        );
        let phase: Vec<&Value> = v["request"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == "x-phase")
            .map(|h| &h[1])
            .collect();
        assert_eq!(phase, ["after"], "{what}");
        if status == 200 {
            let body = STANDARD
                .decode(v["response"]["body_b64"].as_str().expect("body kept"))
                .unwrap();
            assert_eq!(body, vec![b'x'; file_len(path)], "{what}");
        }
    }

    let s = stats(&stats_path);
    let http = &s["http"];
    assert_eq!(http["requests_seen"], 9, "{s:#}");
    assert_eq!(http["paired"], 5, "{s:#}");
    assert_eq!(http["lost"]["hpack_state"], 4, "{s:#}");
    let lost_total: u64 = http["lost"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(lost_total, 4, "only hpack_state: {s:#}");
    let h2 = &http["http2"];
    assert_eq!(h2["connections"], 1, "{s:#}");
    assert_eq!(h2["joined_connections"], 1, "{s:#}");
    assert_eq!(h2["hpack_unknown_entries"], 4, "{s:#}");
    assert_eq!(h2["hpack_errors"], 0, "{s:#}");
    assert_eq!(h2["header_block_errors"], 0, "{s:#}");
    assert_eq!(h2["malformed_frames"], 0, "{s:#}");
    assert_eq!(s["reassembly"]["gaps"], 0, "{s:#}");
    eprintln!("joined h2c connection: {:?}", started.elapsed());
}
