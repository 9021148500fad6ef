use std::{
    fs::{self, OpenOptions},
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::json;
use tokio::{sync::oneshot, task::JoinHandle};

use super::*;
use crate::{
    model::Difference,
    report::log::{LogConfig, MismatchLog, rotated_path, tests::event},
};

/// An output the test reads while `tail` writes to it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    async fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not printed; output:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn line(id: u64) -> String {
    let mut l = serde_json::to_string(&event(id)).unwrap();
    l.push('\n');
    l
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Printed event ids, in order.
fn printed_ids(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.split(" #").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

fn follow(path: &Path, out: &Shared) -> (oneshot::Sender<()>, JoinHandle<TailSummary>) {
    let (tx, rx) = oneshot::channel::<()>();
    let path = path.to_owned();
    let mut out = out.clone();
    let task = tokio::spawn(async move {
        let opts = TailOptions::default();
        let stop = async {
            let _ = rx.await;
        };
        tail(&path, &opts, &mut out, stop).await.unwrap()
    });
    (tx, task)
}

async fn stop(tx: oneshot::Sender<()>, task: JoinHandle<TailSummary>) -> TailSummary {
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("tail stops on shutdown")
        .unwrap()
}

fn sample() -> LogEvent {
    let mut ev = event(7);
    ev.differences.push(Difference {
        location: "header:x-a".into(),
        old: json!("a"),
        new: Value::Null,
    });
    ev.omitted = 2;
    ev
}

#[test]
fn formats_a_mismatch_plainly() {
    assert_eq!(
        format_event(&sample(), false),
        "2024-05-01T12:00:00.130Z #7 mismatch GET /items/7?page=2 200 → 500 \
             (12.5 ms → 40.1 ms) from 10.0.0.7:51234\n  \
             status: 200 → 500\n  \
             header:x-a: \"a\" → (absent)\n  \
             … 2 more differences"
    );
}

#[test]
fn formats_a_mismatch_whose_noise_was_not_checked() {
    let mut ev = event(7);
    ev.noise_unchecked = Some("secondary timeout".into());
    assert_eq!(
        format_event(&ev, false),
        "2024-05-01T12:00:00.130Z #7 mismatch GET /items/7?page=2 200 → 500 \
             (12.5 ms → 40.1 ms) from 10.0.0.7:51234\n  \
             status: 200 → 500\n  \
             noise not checked: secondary timeout"
    );
}

#[test]
fn formats_a_mismatch_of_digested_bodies() {
    let mut ev = event(8);
    ev.body_by_digest = true;
    assert_eq!(
        format_event(&ev, false),
        "2024-05-01T12:00:00.131Z #8 mismatch GET /items/8?page=2 200 → 500 \
             (12.5 ms → 40.1 ms) from 10.0.0.7:51234\n  \
             status: 200 → 500\n  \
             bodies compared by digest (length and XXH3, not kept)"
    );
}

#[test]
fn colour_only_adds_escape_codes() {
    let plain = format_event(&sample(), false);
    let coloured = format_event(&sample(), true);
    assert!(!plain.contains('\x1b'));
    assert!(coloured.contains("\x1b["));
    assert_eq!(strip_ansi(&coloured), plain);
}

#[test]
fn formats_a_replay_error_with_its_error() {
    let mut ev = event(3);
    ev.kind = EventKind::ReplayError;
    ev.new = Side::default();
    ev.secondary = Some(Side::new(Some(200), Some(250_000)));
    ev.client = None;
    ev.differences.clear();
    ev.error = Some("connection refused".into());
    let text = format_event(&ev, false);
    assert_eq!(
        text,
        "2024-05-01T12:00:00.126Z #3 replay_error GET /items/3?page=2 200 → - \
             (12.5 ms → -) secondary 200 (0.250 ms)\n  error: connection refused"
    );
}

#[test]
fn control_characters_are_escaped() {
    let mut ev = event(1);
    ev.target = "/\x1b[2Jx".into();
    ev.error = Some("bad\nthing".into());
    let text = format_event(&ev, false);
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("/\\u{1b}[2Jx"), "{text}");
    assert!(text.ends_with("error: bad\\nthing"), "{text}");
}

#[tokio::test]
async fn without_follow_shows_the_last_ten_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    for id in 0..15 {
        append(&path, &line(id));
    }
    let opts = TailOptions {
        follow: false,
        ..TailOptions::default()
    };
    let mut out = Vec::new();
    let summary = tail(&path, &opts, &mut out, std::future::pending())
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(printed_ids(&text), (5..15).collect::<Vec<_>>());
    assert_eq!(summary.events, 10);

    let opts = TailOptions {
        from_start: true,
        ..opts
    };
    let mut out = Vec::new();
    let summary = tail(&path, &opts, &mut out, std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.events, 15);
    assert_eq!(
        printed_ids(&String::from_utf8(out).unwrap()),
        (0..15).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn last_ten_does_not_count_an_unfinished_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    for id in 0..12 {
        append(&path, &line(id));
    }
    append(&path, "{\"ts\":");
    let opts = TailOptions {
        follow: false,
        ..TailOptions::default()
    };
    let mut out = Vec::new();
    let summary = tail(&path, &opts, &mut out, std::future::pending())
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(printed_ids(&text), (2..12).collect::<Vec<_>>());
    // At the end of a file not followed, the unfinished line is shown.
    assert_eq!(summary.invalid, 1);
    assert!(text.ends_with("{\"ts\":\n"), "{text}");
}

#[tokio::test]
async fn missing_file_without_follow_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.jsonl");
    let opts = TailOptions {
        follow: false,
        ..TailOptions::default()
    };
    let err = tail(&path, &opts, &mut Vec::new(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, TailError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("none.jsonl"), "{err}");
}

#[tokio::test]
async fn follows_new_lines_partial_lines_rotation_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let out = Shared::default();
    let (tx, task) = follow(&path, &out);

    // Waits for the file to appear.
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&path, &line(1));
    out.wait_for("#1 mismatch").await;

    // Half a line waits for the rest.
    let l2 = line(2);
    let (head, rest) = l2.split_at(30);
    append(&path, head);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!out.text().contains("#2 "), "{}", out.text());
    assert!(!out.text().contains("not a mismatch"), "{}", out.text());
    append(&path, rest);
    out.wait_for("#2 mismatch").await;

    // Rotation: a new file at the path.
    fs::rename(&path, rotated_path(&path, 1)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&path, &line(3));
    out.wait_for("#3 mismatch").await;

    // A line that is not an event is shown, with a note.
    append(&path, "not json\n");
    out.wait_for("[not a mismatch log event").await;
    assert!(out.text().contains("not json"));

    // Truncation: read again from the start.
    fs::write(&path, b"").unwrap();
    append(&path, &line(4));
    out.wait_for("#4 mismatch").await;

    let summary = stop(tx, task).await;
    assert_eq!(
        summary,
        TailSummary {
            events: 4,
            invalid: 1,
            rotations: 1,
            truncations: 1,
        }
    );
    assert_eq!(printed_ids(&out.text()), [1, 2, 3, 4]);
}

#[tokio::test]
async fn follows_the_logs_own_rotation_without_losing_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let mut cfg = LogConfig::new(&path);
    cfg.max_bytes = 2 * line(10).len() as u64;
    cfg.keep = 2;
    let mut log = MismatchLog::open(cfg).unwrap();
    let out = Shared::default();
    let (tx, task) = follow(&path, &out);
    for id in 10..17 {
        log.write(&event(id)).unwrap();
        log.flush().unwrap();
        out.wait_for(&format!("#{id} mismatch")).await;
    }
    let summary = stop(tx, task).await;
    assert_eq!(printed_ids(&out.text()), (10..17).collect::<Vec<_>>());
    assert_eq!(summary.rotations, 3);
    assert_eq!(summary.invalid, 0);
}

#[tokio::test]
async fn shutdown_while_waiting_for_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Shared::default();
    let (tx, task) = follow(&dir.path().join("later.jsonl"), &out);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stop(tx, task).await, TailSummary::default());
    assert!(out.text().is_empty());
}

#[test]
fn an_overlong_line_is_skipped_and_the_next_one_shown() {
    let mut out = Vec::new();
    let mut p = Printer {
        out: &mut out,
        color: false,
        summary: TailSummary::default(),
        pending: Vec::new(),
        discarding: false,
    };
    let junk = vec![b'x'; CHUNK];
    for _ in 0..(MAX_LINE / CHUNK + 2) {
        p.feed(&junk).unwrap();
    }
    assert!(p.pending.len() <= MAX_LINE);
    p.feed(b"xxx\n").unwrap();
    p.feed(line(5).as_bytes()).unwrap();
    let summary = p.summary;
    let text = String::from_utf8(out).unwrap();
    assert_eq!(summary.invalid, 1);
    assert_eq!(summary.events, 1);
    assert!(
        text.starts_with("[skipped a line longer than 4 MiB]\n"),
        "{text}"
    );
    assert_eq!(printed_ids(&text), [5]);
}
