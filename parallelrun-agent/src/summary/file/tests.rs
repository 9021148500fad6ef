use std::path::Path;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::summary::{
    Location,
    record::{
        Judged,
        tests::{compared, diff, request, results},
    },
};

/// A summary with some of everything (but no difference location, so that
/// it does not need the endpoint module).
fn sample() -> Summary {
    let mut r = results(5, 10);
    let req = request("/a?token=x");
    r.lost("GET /a", "gap");
    r.skipped("GET /a", "rate_limited");
    r.replay_error("POST /b");
    for id in 0..4 {
        let judged = [Judged::Matched, Judged::Mismatched][id as usize % 2];
        r.compared("GET /a", compared(id, judged, &[], &[], &req, 1 + id));
    }
    r.snapshot(true)
}

/// `sample` with a location, for the location invariants.
fn with_location(s: &mut Summary) {
    let mut loc = Location::empty("status".into());
    loc.raw = 2;
    loc.noise = 1;
    loc.reported = 1;
    loc.example_ids = vec![1];
    loc.example_old = json!(200);
    loc.example_new = json!(500);
    s.endpoints[0].differences.push(loc);
}

fn invalid(path: &Path, bytes: &[u8]) -> String {
    fs::write(path, bytes).unwrap();
    match read(path) {
        Err(e @ SummaryError::Invalid { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{}: ", path.display())),
                "names the file: {msg}"
            );
            msg
        }
        other => panic!("not refused as invalid: {other:?}"),
    }
}

fn invalid_value(path: &Path, v: &Value) -> String {
    invalid(path, &serde_json::to_vec(v).unwrap())
}

#[test]
fn written_summaries_read_back_equal_pretty_or_compact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.json");
    let mut s = sample();
    with_location(&mut s);
    write(&path, &s).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("{\n  \"format\": \"parallelrun-summary\""),
        "{text}"
    );
    assert!(text.ends_with("}\n"));
    assert_eq!(read(&path).unwrap(), s);
    // Overwritten in place, compact, and no temporary file is left behind.
    write_as(&path, &s, false).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.ends_with("}\n"));
    assert_eq!(read(&path).unwrap(), s);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["summary.json"]);
}

#[test]
fn a_file_that_cannot_be_read_or_written_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let e = read(&missing).unwrap_err();
    assert!(matches!(e, SummaryError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.json"), "{e}");
    let e = write(&dir.path().join("no/such/dir.json"), &sample()).unwrap_err();
    assert!(matches!(e, SummaryError::Io { .. }), "{e:?}");
    // The rename fails (a non-empty directory is in the way): the temporary
    // file is removed.
    let taken = dir.path().join("taken");
    fs::create_dir_all(taken.join("inside")).unwrap();
    let e = write(&taken, &sample()).unwrap_err();
    assert!(matches!(e, SummaryError::Io { .. }), "{e:?}");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["taken"]);
}

#[test]
fn empty_truncated_and_non_json_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    for empty in [&b""[..], b"  \n"] {
        assert!(invalid(&path, empty).contains("empty file"));
    }
    let full = serde_json::to_vec_pretty(&sample()).unwrap();
    let msg = invalid(&path, &full[..full.len() / 2]);
    assert!(msg.contains("truncated at line "), "{msg}");
    assert!(msg.contains(" column "), "{msg}");
    let msg = invalid(&path, b"{\"format\": parallelrun}");
    assert!(
        msg.contains("not JSON: expected value at line 1 column 12"),
        "{msg}"
    );
    let msg = invalid(&path, &[0xff, 0x00, 0x13]);
    assert!(msg.contains("not JSON"), "{msg}");
}

#[test]
fn foreign_and_newer_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    for foreign in [
        json!([1, 2]),
        json!("parallelrun-summary"),
        json!({"name": "package.json"}),
        json!({"format": "other", "version": 1}),
        json!({"format": 1}),
    ] {
        let msg = invalid_value(&path, &foreign);
        assert!(msg.contains("not a parallelrun summary"), "{msg}");
    }
    let mut v = serde_json::to_value(sample()).unwrap();
    v["version"] = json!(VERSION + 1);
    let msg = invalid_value(&path, &v);
    assert!(
        msg.contains("written by a newer parallelrun (summary version 2"),
        "{msg}"
    );
    for bad in [json!(0), json!("1"), json!(-1), json!(1.5)] {
        v["version"] = bad;
        let msg = invalid_value(&path, &v);
        assert!(msg.contains("not a summary version"), "{msg}");
    }
    v.as_object_mut().unwrap().remove("version");
    assert!(invalid_value(&path, &v).contains("no \"version\""));
}

#[test]
fn unknown_and_missing_fields_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let mut v = serde_json::to_value(sample()).unwrap();
    v["endpoints"][0]["colour"] = json!("red");
    let msg = invalid_value(&path, &v);
    assert!(msg.contains("unknown field `colour`"), "{msg}");
    assert!(msg.contains("at line 1 column"), "{msg}");
    let mut v = serde_json::to_value(sample()).unwrap();
    v.as_object_mut().unwrap().remove("totals");
    let msg = invalid_value(&path, &v);
    assert!(msg.contains("missing field `totals`"), "{msg}");
    let mut v = serde_json::to_value(sample()).unwrap();
    v["endpoints"][0]["latency"]["new"]["count"] = json!(99);
    let msg = invalid_value(&path, &v);
    assert!(msg.contains("holds 4 values but says count 99"), "{msg}");
}

/// A change that breaks an invariant.
type Breaks = fn(&mut Summary);

#[test]
fn broken_invariants_are_refused_naming_the_endpoint_and_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let mut good = sample();
    with_location(&mut good);
    let cases: Vec<(Breaks, &str)> = vec![
        (
            |s| s.endpoints[0].counts.seen += 1,
            "endpoint \"GET /a\": seen 7 is not matched 2 + mismatched 2 + noise 0 + \
             skipped 1 + lost 1 + replay_errors 0 = 6",
        ),
        (
            |s| s.endpoints[0].counts.compared = 3,
            "endpoint \"GET /a\": compared 3 is not matched 2 + mismatched 2 + noise 0 = 4",
        ),
        (
            |s| {
                s.endpoints[0].counts.skipped_by.insert("x".into(), 1);
            },
            "endpoint \"GET /a\": skipped 1 is not the sum of skipped_by, 2",
        ),
        (
            |s| {
                s.endpoints[0].counts.lost_by.clear();
            },
            "endpoint \"GET /a\": lost 1 is not the sum of lost_by, 0",
        ),
        (
            |s| s.totals.replay_errors = 0,
            "totals: seen 7 is not matched 2",
        ),
        (
            |s| {
                s.totals.seen += 1;
                s.totals.matched += 1;
                s.totals.compared += 1;
            },
            "totals are not the sum of the endpoints' counts (seen 8 vs 7 summed)",
        ),
        (
            |s| s.endpoints[0].differences[0].noise = 3,
            "endpoint \"GET /a\", location \"status\": noise 3 and reported 1 must each be \
             at most raw 2",
        ),
        (
            |s| {
                let l = &mut s.endpoints[0].differences[0];
                l.raw = 5;
                l.reported = 3;
            },
            "endpoint \"GET /a\", location \"status\": reported 3 is more than the \
             endpoint's mismatched 2",
        ),
        (
            |s| {
                for e in &mut s.endpoints {
                    let c = &mut e.counts;
                    let others = c.seen - c.replay_errors;
                    c.seen = u64::MAX;
                    c.replay_errors = u64::MAX - others;
                }
                s.totals = Counts {
                    seen: u64::MAX,
                    replay_errors: u64::MAX,
                    ..s.totals.clone()
                };
            },
            "the endpoints' seen add up to 36893488147419103230",
        ),
        (
            |s| s.endpoints.swap(0, 1),
            "endpoint \"GET /a\" comes after \"POST /b\"",
        ),
    ];
    for (breaks, expected) in cases {
        let mut s = good.clone();
        breaks(&mut s);
        let msg = invalid_value(&path, &serde_json::to_value(&s).unwrap());
        assert!(msg.contains(expected), "{msg}\nexpected: {expected}");
        assert!(msg.contains(REWRITE), "says what to do: {msg}");
    }
}

#[test]
fn every_prefix_of_a_summary_is_refused() {
    let mut s = sample();
    with_location(&mut s);
    for pretty in [true, false] {
        let full = if pretty {
            serde_json::to_vec_pretty(&s).unwrap()
        } else {
            serde_json::to_vec(&s).unwrap()
        };
        for end in 0..full.len() {
            assert!(
                parse(&full[..end]).is_err(),
                "prefix of {end} bytes accepted"
            );
        }
        assert_eq!(parse(&full).unwrap(), s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever byte is changed, reading returns (never panics).
    #[test]
    fn corrupt_bytes_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = serde_json::to_vec(&sample()).unwrap();
        let at = at.index(bytes.len());
        bytes[at] = byte;
        let _ = parse(&bytes);
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert!(parse(&bytes).is_err());
    }
}

// Depends on `crate::endpoint::generalise_location`.
#[test]
fn a_snapshot_with_locations_reads_back() {
    let mut r = results(5, 10);
    let req = request("/a");
    let d = [diff("status", json!(200), json!(500))];
    r.compared("GET /a", compared(1, Judged::Mismatched, &d, &d, &req, 1));
    let s = r.snapshot(false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    write(&path, &s).unwrap();
    assert_eq!(read(&path).unwrap(), s);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A corrupt latency histogram (valid base64 of a changed V2 payload)
    /// is refused, never a panic. The length field (bytes 4..8) is left
    /// alone: hdrhistogram allocates the length it says before reading, so
    /// a changed one costs up to 4 GiB (see the latency module).
    #[test]
    fn corrupt_histograms_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut v = serde_json::to_value(sample()).unwrap();
        let hdr = v["endpoints"][0]["latency"]["new"]["hdr"].as_str().unwrap().to_owned();
        let mut bytes = b64.decode(hdr).unwrap();
        let at = match at.index(bytes.len() - 4) {
            i if i < 4 => i,
            i => i + 4,
        };
        bytes[at] = byte;
        v["endpoints"][0]["latency"]["new"]["hdr"] = b64.encode(bytes).into();
        let _ = parse(&serde_json::to_vec(&v).unwrap());
    }
}
