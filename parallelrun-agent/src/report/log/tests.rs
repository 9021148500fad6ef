use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::model::timestamp;

/// A mismatch event with a status difference, for tests here and in
/// `tail`.
pub(crate) fn event(id: u64) -> LogEvent {
    LogEvent {
        ts: timestamp(UNIX_EPOCH + Duration::from_millis(1_714_564_800_123 + id)),
        id,
        kind: EventKind::Mismatch,
        method: "GET".into(),
        target: format!("/items/{id}?page=2"),
        client: Some("10.0.0.7:51234".into()),
        old: Side::new(Some(200), Some(12_500_000)),
        new: Side::new(Some(500), Some(40_100_000)),
        secondary: None,
        differences: vec![Difference {
            location: "status".into(),
            old: json!(200),
            new: json!(500),
        }],
        omitted: 0,
        body_by_digest: false,
        noise_unchecked: None,
        error: None,
    }
}

/// Every line written at once, as these tests read the file right after.
fn config(dir: &Path) -> LogConfig {
    LogConfig {
        flush_after: Duration::ZERO,
        ..LogConfig::new(dir.join("mismatch.jsonl"))
    }
}

/// Lines written out only by `flush` (or [`FLUSH_BYTES`]).
fn buffered(dir: &Path) -> LogConfig {
    LogConfig {
        flush_after: Duration::from_secs(3600),
        ..LogConfig::new(dir.join("mismatch.jsonl"))
    }
}

fn lines(path: &Path) -> Vec<LogEvent> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(path: &Path) -> Vec<u64> {
    lines(path).iter().map(|e| e.id).collect()
}

#[test]
fn timestamps_are_rfc3339_utc_millis() {
    let t = UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
    assert_eq!(timestamp(t), "2024-05-01T12:00:00.123Z");
}

#[test]
fn side_latency_in_ms_to_the_microsecond() {
    let s = Side::new(Some(204), Some(1_234_567));
    assert_eq!(s.latency_ms, Some(1.235));
    assert_eq!(Side::new(None, None), Side::default());
}

#[test]
fn one_line_per_event_parsed_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MismatchLog::open(config(dir.path())).unwrap();
    let mut failed = event(2);
    failed.kind = EventKind::ReplayError;
    failed.new = Side::default();
    failed.secondary = Some(Side::new(Some(200), Some(3_000_000)));
    failed.differences.clear();
    failed.omitted = 7;
    failed.error = Some("connection refused by 127.0.0.1:9000".into());
    let events = [event(1), failed, event(3)];
    for ev in &events {
        log.write(ev).unwrap();
    }
    assert_eq!(log.written(), 3);
    let text = fs::read_to_string(log.path()).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(text.lines().count(), 3);
    assert_eq!(lines(log.path()), events);
    // The schema's spelling.
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "mismatch");
    assert_eq!(first["differences"][0]["where"], "status");
    assert!(first.get("omitted").is_none() && first.get("error").is_none());
    assert!(first.get("secondary").is_none());
    assert!(first.get("noise_unchecked").is_none());
    let second: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["kind"], "replay_error");
    assert_eq!(second["omitted"], 7);
    assert_eq!(second["new"], json!({"status": null, "latency_ms": null}));
}

#[test]
fn a_body_compared_by_digest_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MismatchLog::open(config(dir.path())).unwrap();
    let mut ev = event(4);
    ev.body_by_digest = true;
    ev.differences = vec![Difference {
        location: "body".into(),
        old: json!("<65536 bytes, xxh3 0123456789abcdef>"),
        new: json!("<65536 bytes, xxh3 fedcba9876543210>"),
    }];
    log.write(&event(3)).unwrap();
    log.write(&ev).unwrap();
    let text = fs::read_to_string(log.path()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines[0].get("body_by_digest").is_none(), "absent when not");
    assert_eq!(lines[1]["body_by_digest"], true);
    assert_eq!(
        lines[1]["differences"][0],
        json!({"where": "body", "old": "<65536 bytes, xxh3 0123456789abcdef>",
               "new": "<65536 bytes, xxh3 fedcba9876543210>"})
    );
    let back: LogEvent = serde_json::from_value(lines[1].clone()).unwrap();
    assert_eq!(back, ev);
}

#[test]
fn redacts_secret_headers_keeping_absence() {
    let cfg = LogConfig::new("unused");
    let mut ev = event(1);
    ev.differences = vec![
        Difference {
            location: "header:Authorization".into(),
            old: json!("Bearer old-secret"),
            new: json!("Bearer new-secret"),
        },
        Difference {
            location: "header:set-cookie".into(),
            old: Value::Null,
            new: json!(["sid=1", "theme=dark"]),
        },
        Difference {
            location: "header:content-type".into(),
            old: json!("text/html"),
            new: json!("application/json"),
        },
    ];
    redact(&mut ev, &cfg);
    assert_eq!(ev.differences[0].old, json!(REDACTED));
    assert_eq!(ev.differences[0].new, json!(REDACTED));
    assert_eq!(ev.differences[1].old, Value::Null);
    assert_eq!(ev.differences[1].new, json!(REDACTED));
    assert_eq!(ev.differences[2].old, json!("text/html"));
    assert_eq!(ev.differences[2].new, json!("application/json"));
}

#[test]
fn cuts_long_values_at_char_boundaries() {
    let mut cfg = LogConfig::new("unused");
    cfg.max_value_len = 10;
    let mut ev = event(1);
    // 'é' is two bytes: byte 10 falls inside the sixth one.
    let long = "ééééééé"; // 14 bytes
    ev.differences = vec![Difference {
        location: "body:/a".into(),
        old: json!({"nested": [long]}),
        new: json!("short"),
    }];
    ev.error = Some("x".repeat(25));
    redact(&mut ev, &cfg);
    assert_eq!(
        ev.differences[0].old,
        json!({"nested": ["ééééé…(+4 bytes)"]})
    );
    assert_eq!(ev.differences[0].new, json!("short"));
    assert_eq!(ev.error.as_deref(), Some("xxxxxxxxxx…(+15 bytes)"));
}

#[test]
fn redacts_secret_query_values() {
    let cfg = LogConfig::new("unused");
    let mut ev = event(1);
    ev.target =
        "/login?user=bob&access_token=abc&API_KEY=x&my%5Fsecret=s&empty_token=&page=2#top".into();
    redact(&mut ev, &cfg);
    assert_eq!(
        ev.target,
        "/login?user=bob&access_token=[redacted]&API_KEY=[redacted]\
             &my%5Fsecret=[redacted]&empty_token=&page=2#top"
    );
    let mut plain = event(1);
    plain.target = "/search?q=rust&page=2".into();
    redact(&mut plain, &cfg);
    assert_eq!(plain.target, "/search?q=rust&page=2");
}

#[test]
fn write_applies_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MismatchLog::open(config(dir.path())).unwrap();
    let mut ev = event(1);
    ev.target = "/x?password=hunter2".into();
    ev.differences.push(Difference {
        location: "header:cookie".into(),
        old: json!("sid=1"),
        new: json!("sid=2"),
    });
    log.write(&ev).unwrap();
    let text = fs::read_to_string(log.path()).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("sid="),
        "{text}"
    );
    assert_eq!(lines(log.path())[0].target, "/x?password=[redacted]");
}

#[test]
fn appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut log = MismatchLog::open(cfg.clone()).unwrap();
    log.write(&event(1)).unwrap();
    log.write(&event(2)).unwrap();
    drop(log);
    let mut log = MismatchLog::open(cfg.clone()).unwrap();
    log.write(&event(3)).unwrap();
    assert_eq!(ids(&cfg.path), [1, 2, 3]);
}

#[test]
fn a_cut_short_last_line_does_not_swallow_the_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    fs::write(&cfg.path, "{\"ts\":\"2024-").unwrap();
    let mut log = MismatchLog::open(cfg.clone()).unwrap();
    log.write(&event(4)).unwrap();
    let text = fs::read_to_string(&cfg.path).unwrap();
    let l: Vec<&str> = text.lines().collect();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0], "{\"ts\":\"2024-");
    assert_eq!(serde_json::from_str::<LogEvent>(l[1]).unwrap(), event(4));
}

fn line_len() -> u64 {
    serde_json::to_vec(&event(10)).unwrap().len() as u64 + 1
}

#[test]
fn rotation_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_bytes = 3 * line_len() + 10;
    cfg.keep = 100;
    let mut log = MismatchLog::open(cfg.clone()).unwrap();
    for id in 10..40 {
        log.write(&event(id)).unwrap();
    }
    let mut all = Vec::new();
    for n in (1..=cfg.keep).rev() {
        let p = rotated_path(&cfg.path, n);
        if p.exists() {
            assert!(fs::metadata(&p).unwrap().len() <= cfg.max_bytes);
            all.extend(ids(&p));
        }
    }
    all.extend(ids(&cfg.path));
    assert_eq!(all, (10..40).collect::<Vec<_>>());
    assert!(rotated_path(&cfg.path, 9).exists());
    assert_eq!(log.written(), 30);
}

/// `cfg` rotating every two lines, keeping `keep` files, and its log.
fn two_lines_a_file(mut cfg: LogConfig, keep: usize) -> (LogConfig, MismatchLog) {
    cfg.max_bytes = 2 * line_len();
    cfg.keep = keep;
    let log = MismatchLog::open(cfg.clone()).unwrap();
    (cfg, log)
}

#[test]
fn rotation_keeps_at_most_keep_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, mut log) = two_lines_a_file(config(dir.path()), 2);
    for id in 10..30 {
        log.write(&event(id)).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["mismatch.jsonl", "mismatch.jsonl.1", "mismatch.jsonl.2"]
    );
    // Newest last, consecutive: nothing was dropped between the kept files.
    assert_eq!(ids(&rotated_path(&cfg.path, 2)), [24, 25]);
    assert_eq!(ids(&rotated_path(&cfg.path, 1)), [26, 27]);
    assert_eq!(ids(&cfg.path), [28, 29]);
}

#[test]
fn keep_zero_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_bytes = line_len();
    cfg.keep = 0;
    let mut log = MismatchLog::open(cfg.clone()).unwrap();
    for id in 10..13 {
        log.write(&event(id)).unwrap();
    }
    assert_eq!(ids(&cfg.path), [12]);
    assert!(!rotated_path(&cfg.path, 1).exists());
}

#[test]
fn an_event_larger_than_max_bytes_gets_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_bytes = 10;
    let mut log = MismatchLog::open(cfg.clone()).unwrap();
    log.write(&event(1)).unwrap();
    log.write(&event(2)).unwrap();
    assert_eq!(ids(&rotated_path(&cfg.path, 1)), [1]);
    assert_eq!(ids(&cfg.path), [2]);
}

#[test]
fn unopenable_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("mismatch.jsonl");
    let err = MismatchLog::open(LogConfig::new(&path)).unwrap_err();
    assert!(matches!(err, LogError::Open { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("directory"), "{msg}");
}

#[test]
fn recovers_once_the_path_is_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("logs");
    fs::create_dir(&sub).unwrap();
    let mut cfg = config(&sub);
    cfg.max_bytes = line_len(); // every write rotates, so reopens
    let mut log = MismatchLog::open(cfg.clone()).unwrap();
    log.write(&event(1)).unwrap();

    // A file where the directory was: unwritable even for root.
    fs::remove_dir_all(&sub).unwrap();
    fs::write(&sub, b"not a directory").unwrap();
    assert!(log.write(&event(2)).is_err());
    let err = log.write(&event(3)).unwrap_err();
    assert!(err.to_string().contains("mismatch.jsonl"), "{err}");

    fs::remove_file(&sub).unwrap();
    fs::create_dir(&sub).unwrap();
    log.write(&event(4)).unwrap();
    log.write(&event(5)).unwrap();
    assert_eq!(ids(&cfg.path), [5]);
    assert_eq!(ids(&rotated_path(&cfg.path, 1)), [4]);
    assert_eq!(log.written(), 3);
}

#[test]
fn noise_unchecked_is_written_only_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MismatchLog::open(config(dir.path())).unwrap();
    let mut unchecked = event(1);
    unchecked.noise_unchecked = Some("secondary timeout".into());
    log.write(&unchecked).unwrap();
    log.write(&event(2)).unwrap();
    let text = fs::read_to_string(log.path()).unwrap();
    let values: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(values[0]["noise_unchecked"], "secondary timeout");
    assert!(values[1].get("noise_unchecked").is_none());
    assert_eq!(lines(log.path()), [unchecked, event(2)]);
}

#[test]
fn lines_wait_for_the_write_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MismatchLog::open(buffered(dir.path())).unwrap();
    for id in 1..=3 {
        log.write(&event(id)).unwrap();
    }
    assert_eq!(fs::read(log.path()).unwrap(), b"");
    assert_eq!(log.written(), 0);
    log.flush().unwrap();
    assert_eq!(ids(log.path()), [1, 2, 3]);
    assert_eq!(log.written(), 3);
    // Nothing waiting: a write-out writes nothing.
    log.flush().unwrap();
    assert_eq!(ids(log.path()), [1, 2, 3]);
}

#[test]
fn a_line_after_a_quiet_spell_goes_out_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = buffered(dir.path());
    cfg.flush_after = Duration::from_millis(20);
    let mut log = MismatchLog::open(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    log.write(&event(1)).unwrap();
    // Within the 20 ms of that write-out: it waits.
    log.write(&event(2)).unwrap();
    assert_eq!(ids(log.path()), [1]);
    std::thread::sleep(Duration::from_millis(30));
    log.write(&event(3)).unwrap();
    assert_eq!(ids(log.path()), [1, 2, 3]);
}

#[test]
fn a_full_buffer_goes_out_whatever_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MismatchLog::open(buffered(dir.path())).unwrap();
    // The first id whose line brings FLUSH_BYTES waiting.
    let mut waiting = 0;
    let lines = (1..)
        .find(|&id| {
            waiting += serde_json::to_vec(&event(id)).unwrap().len() + 1;
            waiting >= FLUSH_BYTES
        })
        .unwrap();
    for id in 1..lines {
        log.write(&event(id)).unwrap();
    }
    assert_eq!(log.written(), 0);
    log.write(&event(lines)).unwrap();
    assert_eq!(log.written(), lines);
    assert_eq!(ids(log.path()), (1..=lines).collect::<Vec<_>>());
}

#[test]
fn waiting_lines_stay_in_the_file_they_were_written_for() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, mut log) = two_lines_a_file(buffered(dir.path()), 10);
    for id in 1..=5 {
        log.write(&event(id)).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(ids(&cfg.path), [5]);
    assert_eq!(ids(&rotated_path(&cfg.path, 1)), [3, 4]);
    assert_eq!(ids(&rotated_path(&cfg.path, 2)), [1, 2]);
    assert_eq!(log.written(), 5);
}

#[test]
fn a_failed_write_out_counts_every_line_it_loses() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MismatchLog::open(buffered(dir.path())).unwrap();
    log.write(&event(1)).unwrap();
    log.flush().unwrap();
    // A handle that cannot write: the write-out fails.
    log.file = Some(File::open(log.path()).unwrap());
    for id in 2..=4 {
        log.write(&event(id)).unwrap();
    }
    let lost = log.flush().unwrap_err();
    assert_eq!(lost.events, 3);
    assert!(lost.to_string().contains("mismatch.jsonl"), "{lost}");
    assert_eq!(ids(log.path()), [1]);
    // The next write-out reopens the file.
    log.file = None;
    log.write(&event(5)).unwrap();
    log.flush().unwrap();
    assert_eq!(ids(log.path()), [1, 5]);
    assert_eq!(log.written(), 2);
}

#[test]
fn dropping_the_log_writes_out_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = buffered(dir.path());
    let mut log = MismatchLog::open(cfg.clone()).unwrap();
    log.write(&event(1)).unwrap();
    drop(log);
    assert_eq!(ids(&cfg.path), [1]);
}
