//! The mismatch log: JSON Lines, one [`LogEvent`] object per line.
//!
//! # Schema
//!
//! Every line is one JSON object, written whole (see [Writing](#writing)),
//! so the file can be tailed while the agent runs:
//!
//! ```json
//! {"ts":"2024-05-01T12:00:00.123Z","id":42,"kind":"mismatch","method":"GET",
//!  "target":"/api/items?page=2&token=[redacted]","client":"10.0.0.7:51234",
//!  "old":{"status":200,"latency_ms":12.5},"new":{"status":500,"latency_ms":40.1},
//!  "differences":[{"where":"status","old":200,"new":500}],"omitted":3}
//! ```
//!
//! (shown wrapped; in the file it is a single line). Fields:
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `ts` | string | When the event was logged: RFC 3339, UTC, milliseconds ([`crate::model::timestamp`]). |
//! | `id` | integer | The exchange id, unique and increasing within one agent run. |
//! | `kind` | `"mismatch"` \| `"replay_error"` | See [`EventKind`]. |
//! | `method`, `target` | string | The request line as captured (target redacted, see [`redact`]). |
//! | `client` | string \| null | The old service's peer, `IP:PORT`, when known. |
//! | `old`, `new` | object | [`Side`]: `status` (integer \| null) and `latency_ms` (number \| null). |
//! | `secondary` | object | [`Side`] of the secondary replay; absent when there was none. |
//! | `differences` | array | [`Difference`]s: `{"where", "old", "new"}`; `null` means absent on that side. At most [`MAX_LISTED`], none of them noise. |
//! | `omitted` | integer | Differences found beyond those listed; absent when 0. |
//! | `noise_unchecked` | string | A `mismatch` whose differences were not checked for noise because the secondary gave no response: `secondary KIND`, KIND being how its replay failed (`connect`, `timeout`, `io`, `closed`, `http`, `http2`). Absent when noise was checked or no secondary is configured. |
//! | `error` | string | Why the replay failed (`replay_error` events); absent otherwise. |
//!
//! # Writing
//!
//! A write syscall per event cost the agent about a tenth of its CPU when
//! every request differed, so lines wait in a buffer and go out together:
//! - a line written [`LogConfig::flush_after`] (50 ms) or more after the
//!   last write-out takes the lines waiting out with it at once (a quiet
//!   service's events appear as they happen), as does one that brings
//!   [`FLUSH_BYTES`] waiting;
//! - the pipeline writes out what waits every second and at the end
//!   ([`MismatchLog::flush`]; dropping the log does too), so a line is in
//!   the file at most about a second after its event;
//! - each write-out is one `write` of whole lines; a failed one loses the
//!   lines waiting and says how many ([`Lost`]), so every lost event is
//!   counted.
//!
//! # Rotation
//!
//! Before a write that would take the file past [`LogConfig::max_bytes`],
//! `FILE.(keep-1)` is renamed to `FILE.keep` (replacing the oldest),
//! …, `FILE` to `FILE.1`, and a new `FILE` is started. Events are never
//! split across files; a single event larger than `max_bytes` gets a file of
//! its own. With `keep == 0` the full file is removed instead.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::redact::{REDACTED, SECRET_QUERY_WORDS, redact_query};
use crate::{
    model::Difference,
    private_file,
    redact::{cut_string, cut_value},
};

/// Default log file, in the working directory.
pub const DEFAULT_PATH: &str = "parallelrun-mismatches.jsonl";
/// Default size at which the log is rotated: 100 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 100 << 20;
/// Default number of rotated files kept (`FILE.1` … `FILE.5`).
pub const DEFAULT_KEEP: usize = 5;
/// Default length in bytes past which string values are cut.
pub const DEFAULT_MAX_VALUE_LEN: usize = 512;
/// Default [`LogConfig::flush_after`].
pub const DEFAULT_FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Bytes of lines waiting that are written out whatever the time.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Differences an event lists at most; `omitted` counts the rest.
pub const MAX_LISTED: usize = 100;
/// Headers whose values are redacted by default (lowercase).
pub const DEFAULT_REDACT_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];
/// One line of the mismatch log. See the [module documentation](self) for
/// the schema.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LogEvent {
    /// When the event was logged, as made by [`crate::model::timestamp`].
    pub ts: String,
    /// The exchange id (unique and increasing within one run).
    pub id: u64,
    pub kind: EventKind,
    pub method: String,
    /// The request target as captured, secrets in the query redacted.
    pub target: String,
    /// The old service's peer (`IP:PORT`), when known.
    pub client: Option<String>,
    /// The old service's response, as captured.
    pub old: Side,
    /// The new service's response to the replay.
    pub new: Side,
    /// The secondary replay's response, when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<Side>,
    /// The differences found, as many as the diff listed.
    #[serde(default)]
    pub differences: Vec<Difference>,
    /// How many more differences were found than `differences` lists.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
    /// The bodies were compared by length and digest, not byte by byte
    /// (binary, or over `--max-diff-body`): a `body` difference then shows
    /// `<N bytes, xxh3 PREFIX>` for each side, never body bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_by_digest: bool,
    /// Set on a mismatch whose differences were not checked for noise: a
    /// secondary is configured but gave no response (`secondary timeout`,
    /// `secondary connect`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_unchecked: Option<String>,
    /// Why the replay failed (for [`EventKind::ReplayError`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What a [`LogEvent`] reports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The new service's response differed from the old one.
    Mismatch,
    /// The replay to the new (or secondary) service failed: no response to
    /// compare; `error` says why.
    ReplayError,
}

impl EventKind {
    /// The name used in the log (`mismatch`, `replay_error`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Mismatch => "mismatch",
            EventKind::ReplayError => "replay_error",
        }
    }
}

/// One side's response: status and latency, each absent when there was no
/// response (e.g. the replay failed).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Side {
    pub status: Option<u16>,
    /// Milliseconds from the request's first byte to the response's last.
    pub latency_ms: Option<f64>,
}

impl Side {
    /// A side from a status and a latency in nanoseconds (kept to the
    /// microsecond in `latency_ms`).
    pub fn new(status: Option<u16>, latency_ns: Option<u64>) -> Self {
        Self {
            status,
            latency_ms: latency_ns.map(|ns| (ns as f64 / 1_000.0).round() / 1_000.0),
        }
    }
}

/// Where the log goes and how it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The log file. Its directory must exist.
    pub path: PathBuf,
    /// Rotate before a write would take the file past this size.
    pub max_bytes: u64,
    /// Rotated files kept: `FILE.1` (newest) … `FILE.keep` (oldest).
    pub keep: usize,
    /// String values longer than this (bytes) are cut, see [`redact`].
    pub max_value_len: usize,
    /// Header names (lowercase) whose values are never logged.
    pub redact_headers: Vec<String>,
    /// Lines wait at most this long after the previous write-out before
    /// the next line written takes them out ([`MismatchLog::write_line`]);
    /// `ZERO` writes every line at once.
    pub flush_after: Duration,
}

impl Default for LogConfig {
    /// [`LogConfig::new`] at [`DEFAULT_PATH`].
    fn default() -> Self {
        Self::new(DEFAULT_PATH)
    }
}

impl LogConfig {
    /// The defaults (100 MiB, 5 rotated files, 512-byte values,
    /// [`DEFAULT_REDACT_HEADERS`], [`DEFAULT_FLUSH_AFTER`]) for a log at
    /// `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
            redact_headers: DEFAULT_REDACT_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            flush_after: DEFAULT_FLUSH_AFTER,
        }
    }
}

/// Why events could not be logged ([`Lost`] says how many).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "cannot open the mismatch log {}: {source}; create its directory or make it writable by the agent, or choose another file with --log FILE",
        path.display()
    )]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "writing to the mismatch log {} failed: {source}; free disk space or fix the file's permissions (the events waiting were not logged, the next ones try again)",
        path.display()
    )]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "rotating the mismatch log: cannot move {} to {}: {source}; make the log directory writable, or remove the rotated files (or lower --log-keep)",
        from.display(),
        to.display()
    )]
    Rotate {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("cannot encode a mismatch log event as JSON: {0}; this is a bug, please report it")]
    Encode(serde_json::Error),
}

/// The mismatch log file, appended to one event per line (see the
/// [module docs](self#writing)).
#[derive(Debug)]
pub struct MismatchLog {
    cfg: LogConfig,
    /// `None` after an error: the next write reopens.
    file: Option<File>,
    /// Size of the current file as far as this writer knows.
    size: u64,
    /// The current file does not end with a newline (a line cut short by a
    /// crash or a failed write): the next write starts a new line first.
    needs_newline: bool,
    written: u64,
    /// Whole lines not yet written, all for the current file.
    pending: Vec<u8>,
    /// Events in `pending`.
    pending_events: u64,
    /// When `pending` was last written out.
    flushed_at: Instant,
}

/// Events the log lost, and why. The log stays usable: the next write
/// starts afresh, reopening the file if needed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Lost {
    /// Events of the lost lines.
    pub events: u64,
    #[source]
    pub error: LogError,
}

impl MismatchLog {
    /// Opens (or creates) the log for appending. Fails when the file cannot
    /// be opened, so a wrong path is reported at startup.
    pub fn open(cfg: LogConfig) -> Result<Self, LogError> {
        let mut log = Self {
            cfg,
            file: None,
            size: 0,
            needs_newline: false,
            written: 0,
            pending: Vec::new(),
            pending_events: 0,
            flushed_at: Instant::now(),
        };
        let file = log.open_file()?;
        log.file = Some(file);
        Ok(log)
    }

    /// Redacts a copy of `ev` ([`redact`]), then appends it as one line
    /// ([`MismatchLog::write_line`]).
    pub fn write(&mut self, ev: &LogEvent) -> Result<(), Lost> {
        let line = encode(ev, &self.cfg).map_err(|error| Lost { events: 1, error })?;
        self.write_line(&line)
    }

    /// How this log redacts and cuts events ([`encode`] them with it).
    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    /// Appends `json`, one event as [`encode`] gave it, as one line. Lines
    /// are written out together ([`MismatchLog::flush`]) once
    /// [`LogConfig::flush_after`] has passed since the last write-out or
    /// [`FLUSH_BYTES`] wait. A line that would take the file past
    /// `max_bytes` rotates it first, the lines waiting written to the old
    /// file. On an error the lines waiting, this one included, are lost
    /// and counted in [`Lost`].
    pub fn write_line(&mut self, json: &[u8]) -> Result<(), Lost> {
        let held = self.size + self.pending.len() as u64;
        let len = json.len() as u64 + 1 + u64::from(self.needs_newline);
        if held > 0 && held.saturating_add(len) > self.cfg.max_bytes {
            self.flush().map_err(|lost| Lost {
                events: lost.events + 1,
                error: lost.error,
            })?;
            self.file = None;
            self.rotate()
                .and_then(|()| self.open_file())
                .map(|file| self.file = Some(file))
                .map_err(|error| Lost { events: 1, error })?;
        }
        self.pending.extend_from_slice(json);
        self.pending.push(b'\n');
        self.pending_events += 1;
        if self.pending.len() >= FLUSH_BYTES || self.flushed_at.elapsed() >= self.cfg.flush_after {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the lines waiting to the file with one `write`, so a reader
    /// sees whole lines appear (or pieces it waits to complete, never two
    /// writers' lines interleaved). After an error nothing of them stays in
    /// the file (as far as the file system allows).
    pub fn flush(&mut self) -> Result<(), Lost> {
        self.flushed_at = Instant::now();
        if self.pending_events == 0 {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending_events);
        let res = self.write_pending();
        self.pending.clear();
        match res {
            Ok(()) => {
                self.written += events;
                Ok(())
            }
            Err(error) => Err(Lost { events, error }),
        }
    }

    fn write_pending(&mut self) -> Result<(), LogError> {
        let mut file = match self.file.take() {
            Some(file) => file,
            None => self.open_file()?,
        };
        if self.needs_newline {
            self.pending.insert(0, b'\n');
        }
        match file.write_all(&self.pending).and_then(|()| file.flush()) {
            Ok(()) => {
                self.size += self.pending.len() as u64;
                self.needs_newline = false;
                self.file = Some(file);
                Ok(())
            }
            Err(source) => {
                // Take back partly written lines so they do not run into the
                // next event; if that fails too, reopening notices the
                // missing newline.
                let _ = file.set_len(self.size);
                Err(LogError::Write {
                    path: self.cfg.path.clone(),
                    source,
                })
            }
        }
    }

    /// The log file being written.
    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    /// Events written by this value (across rotations).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Opens the log for appending, recording its size and whether it ends
    /// in the middle of a line.
    fn open_file(&mut self) -> Result<File, LogError> {
        let path = &self.cfg.path;
        let open_err = |source| LogError::Open {
            path: path.clone(),
            source,
        };
        let file = private_file::open(path, OpenOptions::new().append(true)).map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        self.size = size;
        self.needs_newline = size > 0 && !ends_with_newline(path);
        Ok(file)
    }

    /// Shifts `FILE.n` to `FILE.n+1` (dropping what passes `keep`) and
    /// `FILE` to `FILE.1`.
    fn rotate(&mut self) -> Result<(), LogError> {
        let path = &self.cfg.path;
        let keep = self.cfg.keep;
        if keep == 0 {
            return match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(LogError::Rotate {
                    from: path.clone(),
                    to: PathBuf::from("(removed)"),
                    source,
                }),
            };
        }
        // Only existing files move: count the contiguous FILE.1, FILE.2, …
        let mut top = 0;
        while top < keep && rotated_path(path, top + 1).exists() {
            top += 1;
        }
        for n in (1..=top.min(keep - 1)).rev() {
            rename(&rotated_path(path, n), &rotated_path(path, n + 1))?;
        }
        rename(path, &rotated_path(path, 1))
    }
}

impl Drop for MismatchLog {
    /// Writes out the lines still waiting (errors cannot be counted any
    /// more: the owner flushes before, see [`MismatchLog::flush`]).
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), LogError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Rotate {
            from: from.to_owned(),
            to: to.to_owned(),
            source,
        }),
    }
}

/// `FILE.n`.
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Whether a non-empty file's last byte is a newline. When it cannot be
/// read, assume it is (the file is not ours to judge).
fn ends_with_newline(path: &Path) -> bool {
    let check = || -> io::Result<bool> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::End(-1))?;
        let mut b = [0u8; 1];
        f.read_exact(&mut b)?;
        Ok(b[0] == b'\n')
    };
    check().unwrap_or(true)
}

/// `ev` as one line of the log, without its newline: a copy redacted and
/// cut by `cfg` ([`redact`]), as JSON. What the log writes and what
/// [`crate::publish`] sends are these same bytes.
pub fn encode(ev: &LogEvent, cfg: &LogConfig) -> Result<Vec<u8>, LogError> {
    let mut ev = ev.clone();
    redact(&mut ev, cfg);
    serde_json::to_vec(&ev).map_err(LogError::Encode)
}

/// Makes an event safe and small enough to log. Exactly:
///
/// 1. A difference whose `where` is `header:NAME`, with NAME (ASCII
///    case-insensitively) in `cfg.redact_headers`, gets `old` and `new`
///    replaced by `"[redacted]"`; a `null` (absent) side stays `null`.
/// 2. In `target`, each query parameter (`&`-separated, after the first `?`,
///    before any `#`) whose name, percent-decoded and ASCII-lowercased,
///    contains one of [`SECRET_QUERY_WORDS`] (`token`, `password`, `passwd`,
///    `secret`, `key`, `auth`, `session`, `signature`) and has a non-empty
///    value gets the value `[redacted]`: `?api_key=abc` becomes
///    `?api_key=[redacted]`. Everything else in the target is kept as sent.
/// 3. Every string longer than `cfg.max_value_len` bytes, in `old` and `new`
///    of each difference (at any depth of a JSON value), in `where`,
///    `method`, `target`, `client` and `error`, is cut at the last char
///    boundary at or before `max_value_len` and `…(+N bytes)` is appended,
///    N being the number of bytes cut.
pub fn redact(ev: &mut LogEvent, cfg: &LogConfig) {
    let max = cfg.max_value_len;
    for d in &mut ev.differences {
        if let Some(name) = d.location.strip_prefix("header:")
            && cfg
                .redact_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
        {
            for v in [&mut d.old, &mut d.new] {
                if !v.is_null() {
                    *v = Value::String(REDACTED.to_owned());
                }
            }
        }
        cut_string(&mut d.location, max);
        cut_value(&mut d.old, max);
        cut_value(&mut d.new, max);
    }
    if let Some(target) = redact_query(&ev.target) {
        ev.target = target;
    }
    cut_string(&mut ev.target, max);
    cut_string(&mut ev.method, max);
    if let Some(client) = &mut ev.client {
        cut_string(client, max);
    }
    if let Some(error) = &mut ev.error {
        cut_string(error, max);
    }
}

#[cfg(test)]
pub(crate) mod tests;
