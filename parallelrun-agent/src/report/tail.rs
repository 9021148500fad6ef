//! `parallelrun tail [FILE]`: the mismatch log for people.
//!
//! Prints each [`LogEvent`] as a readable line ([`format_event`]) and, when
//! following, behaves like `tail -F`: it waits for the file to appear,
//! follows it across rotation (a new file at the path) and truncation, and
//! only prints complete lines.

use std::{
    fmt::Write as _,
    future::Future,
    io::{self, SeekFrom, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    pin::Pin,
    time::Duration,
};

use owo_colors::Style;
use serde_json::Value;
use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncSeekExt},
};

use super::{
    log::{EventKind, LogEvent, Side},
    table::{clean, paint},
};
use crate::redact::cut_string;

/// How many events are shown first unless [`TailOptions::from_start`].
pub const LAST_EVENTS: usize = 10;
/// How often the file is checked for new lines, rotation or truncation.
pub const POLL: Duration = Duration::from_millis(200);
/// Longest line kept while waiting for its end; a longer one is skipped.
pub const MAX_LINE: usize = 4 << 20;
/// Bytes of an invalid line shown.
const SHOW_INVALID: usize = 1024;
const CHUNK: usize = 64 << 10;

/// What to show and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailOptions {
    /// Keep following the file (`tail -F`) until shutdown; otherwise stop at
    /// its end.
    pub follow: bool,
    /// Start at the beginning of the file; otherwise with its last
    /// [`LAST_EVENTS`] lines, like `tail`.
    pub from_start: bool,
    /// Colour the output (ANSI).
    pub color: bool,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self {
            follow: true,
            from_start: false,
            color: false,
        }
    }
}

/// What [`tail`] went through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailSummary {
    /// Events printed.
    pub events: u64,
    /// Lines that were not events (printed raw with a note, or skipped when
    /// longer than [`MAX_LINE`]).
    pub invalid: u64,
    /// Times a new file replaced the one being followed.
    pub rotations: u64,
    /// Times the file shrank and was read again from its start.
    pub truncations: u64,
}

/// Why [`tail`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(
        "cannot open the mismatch log {}: {source}; check the path (the agent's --log FILE), or leave out --no-follow to wait until it appears",
        path.display()
    )]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "reading the mismatch log {} failed: {source}; check that it is readable",
        path.display()
    )]
    Read { path: PathBuf, source: io::Error },
    #[error("writing the output failed: {0}")]
    Output(io::Error),
}

/// Prints the mismatch log at `path` to `out` until `shutdown` resolves or,
/// when not following, until its end. A closed output (broken pipe, as with
/// `| head`) ends it without error.
pub async fn tail(
    path: &Path,
    opts: &TailOptions,
    out: &mut (impl Write + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<TailSummary, TailError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut printer = Printer {
        out,
        color: opts.color,
        summary: TailSummary::default(),
        pending: Vec::new(),
        discarding: false,
    };
    match run(path, opts, &mut printer, shutdown.as_mut()).await {
        Ok(()) => Ok(printer.summary),
        Err(TailError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(printer.summary),
        Err(e) => Err(e),
    }
}

/// The file being read.
struct Followed {
    file: File,
    /// (device, inode) of the open file.
    id: (u64, u64),
    /// Bytes read so far.
    offset: u64,
}

async fn open(path: &Path) -> io::Result<(Followed, u64)> {
    let file = File::open(path).await?;
    let meta = file.metadata().await?;
    Ok((
        Followed {
            file,
            id: (meta.dev(), meta.ino()),
            offset: 0,
        },
        meta.len(),
    ))
}

async fn run<W: Write + Send>(
    path: &Path,
    opts: &TailOptions,
    p: &mut Printer<'_, W>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<(), TailError> {
    let read_err = |source| TailError::Read {
        path: path.to_owned(),
        source,
    };
    let mut cur = match open(path).await {
        Ok((mut f, len)) => {
            if !opts.from_start {
                let start = start_of_last_lines(&mut f.file, len, LAST_EVENTS)
                    .await
                    .map_err(read_err)?;
                f.file
                    .seek(SeekFrom::Start(start))
                    .await
                    .map_err(read_err)?;
                f.offset = start;
            }
            Some(f)
        }
        Err(e) if opts.follow && e.kind() == io::ErrorKind::NotFound => {
            tracing::info!("waiting for {} to appear", path.display());
            None
        }
        Err(source) => {
            return Err(TailError::Open {
                path: path.to_owned(),
                source,
            });
        }
    };

    loop {
        if let Some(f) = cur.as_mut()
            && drain(path, f, p, shutdown.as_mut()).await?
        {
            return Ok(());
        }
        if !opts.follow {
            return p.end_of_file();
        }
        match tokio::fs::metadata(path).await {
            Ok(meta) => {
                let id = (meta.dev(), meta.ino());
                match cur.as_mut() {
                    Some(f) if f.id == id => {
                        if meta.len() < f.offset {
                            tracing::warn!("{} was truncated; reading it again", path.display());
                            f.file.seek(SeekFrom::Start(0)).await.map_err(read_err)?;
                            f.offset = 0;
                            p.pending.clear();
                            p.discarding = false;
                            p.summary.truncations += 1;
                            continue;
                        }
                    }
                    _ => {
                        // A new file at the path (or the first one). Finish
                        // the old file: lines written just before the switch.
                        if let Some(f) = cur.as_mut() {
                            if drain(path, f, p, shutdown.as_mut()).await? {
                                return Ok(());
                            }
                            p.end_of_file()?;
                            p.summary.rotations += 1;
                        }
                        match open(path).await {
                            Ok((f, _)) => {
                                cur = Some(f);
                                continue;
                            }
                            // Replaced again or removed meanwhile: next poll.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => cur = None,
                            Err(source) => {
                                return Err(TailError::Open {
                                    path: path.to_owned(),
                                    source,
                                });
                            }
                        }
                    }
                }
            }
            // Rotated away and not yet recreated: keep waiting.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_err(e)),
        }
        tokio::select! {
            () = shutdown.as_mut() => return Ok(()),
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Reads `f` to its current end, printing complete lines. `Ok(true)` when
/// shutdown came first.
async fn drain<W: Write + Send>(
    path: &Path,
    f: &mut Followed,
    p: &mut Printer<'_, W>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<bool, TailError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ok(true),
            n = f.file.read(&mut buf) => n.map_err(|source| TailError::Read {
                path: path.to_owned(),
                source,
            })?,
        };
        if n == 0 {
            p.flush()?;
            return Ok(false);
        }
        f.offset += n as u64;
        p.feed(&buf[..n])?;
    }
}

/// Offset just after the newline that precedes the last `n` complete lines
/// (0 if the file has fewer). A last line without its newline yet is not
/// counted: it is read, and waited for, after them.
async fn start_of_last_lines(file: &mut File, len: u64, n: usize) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = len;
    let mut newlines = 0;
    while pos > 0 {
        let take = pos.min(CHUNK as u64) as usize;
        pos -= take as u64;
        file.seek(SeekFrom::Start(pos)).await?;
        file.read_exact(&mut buf[..take]).await?;
        for i in (0..take).rev() {
            if buf[i] == b'\n' {
                newlines += 1;
                if newlines > n {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
    }
    Ok(0)
}

/// Splits bytes into lines and prints them.
struct Printer<'a, W> {
    out: &'a mut W,
    color: bool,
    summary: TailSummary,
    /// The start of a line whose end has not been read yet.
    pending: Vec<u8>,
    /// Skipping the rest of a line longer than [`MAX_LINE`].
    discarding: bool,
}

impl<W: Write> Printer<'_, W> {
    fn feed(&mut self, mut data: &[u8]) -> Result<(), TailError> {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(nl);
            data = &rest[1..];
            if self.discarding {
                self.discarding = false;
            } else if self.pending.is_empty() {
                self.line(line)?;
            } else {
                let mut whole = std::mem::take(&mut self.pending);
                whole.extend_from_slice(line);
                self.line(&whole)?;
            }
        }
        if !data.is_empty() && !self.discarding {
            if self.pending.len() + data.len() > MAX_LINE {
                self.pending = Vec::new();
                self.discarding = true;
                self.summary.invalid += 1;
                let note = format!("[skipped a line longer than {} MiB]", MAX_LINE >> 20);
                writeln!(self.out, "{}", paint(self.color, &note, note_style()))
                    .map_err(TailError::Output)?;
            } else {
                self.pending.extend_from_slice(data);
            }
        }
        Ok(())
    }

    /// The file ends (or is left) here: an unfinished last line is shown as
    /// it is.
    fn end_of_file(&mut self) -> Result<(), TailError> {
        self.discarding = false;
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.line(&line)?;
        }
        self.flush()
    }

    fn line(&mut self, raw: &[u8]) -> Result<(), TailError> {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.trim_ascii().is_empty() {
            return Ok(());
        }
        let text = match serde_json::from_slice::<LogEvent>(raw) {
            Ok(ev) => {
                self.summary.events += 1;
                format_event(&ev, self.color)
            }
            Err(e) => {
                self.summary.invalid += 1;
                let mut shown = String::from_utf8_lossy(raw).into_owned();
                cut_string(&mut shown, SHOW_INVALID);
                let note = format!("[not a mismatch log event: {e}]");
                format!(
                    "{} {}",
                    paint(self.color, &note, note_style()),
                    clean(&shown)
                )
            }
        };
        writeln!(self.out, "{text}").map_err(TailError::Output)
    }

    fn flush(&mut self) -> Result<(), TailError> {
        self.out.flush().map_err(TailError::Output)
    }
}

fn note_style() -> Style {
    Style::new().yellow().italic()
}

fn status(s: &Side) -> String {
    s.status.map_or_else(|| "-".to_owned(), |st| st.to_string())
}

fn latency(s: &Side) -> String {
    match s.latency_ms {
        Some(ms) if ms >= 100.0 => format!("{ms:.0} ms"),
        Some(ms) if ms >= 1.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{ms:.3} ms"),
        None => "-".to_owned(),
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::Null => "(absent)".to_owned(),
        // Compact JSON: strings quoted and escaped, so always one line.
        v => v.to_string(),
    }
}

/// One event as text: a first line
/// `TIME #ID KIND METHOD TARGET OLD → NEW (OLD_LATENCY → NEW_LATENCY)`,
/// then `secondary STATUS (LATENCY)` and `from CLIENT` when known; then
/// each difference on its own line `  where: old → new` (values as compact
/// JSON, `(absent)` for null), `  … N more differences` when some were
/// omitted, `  bodies compared by digest (length and XXH3, not kept)` when
/// they were, `  noise not checked: secondary KIND` when the secondary gave
/// no response, and `  error: …` for a replay error. No trailing newline.
/// ANSI colours only when `color`; control characters are always escaped.
pub fn format_event(ev: &LogEvent, color: bool) -> String {
    let bold = Style::new().bold();
    let kind_style = match ev.kind {
        EventKind::Mismatch => Style::new().yellow().bold(),
        EventKind::ReplayError => Style::new().red().bold(),
    };
    let status_style = if ev.old.status == ev.new.status {
        Style::new().green()
    } else {
        Style::new().red().bold()
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "{} #{} {} {} {} {} → {} ({} → {})",
        paint(color, &clean(&ev.ts), Style::new().dimmed()),
        ev.id,
        paint(color, ev.kind.name(), kind_style),
        paint(color, &clean(&ev.method), bold),
        paint(color, &clean(&ev.target), bold),
        status(&ev.old),
        paint(color, &status(&ev.new), status_style),
        latency(&ev.old),
        latency(&ev.new),
    );
    if let Some(sec) = &ev.secondary {
        let _ = write!(s, " secondary {} ({})", status(sec), latency(sec));
    }
    if let Some(client) = &ev.client {
        let _ = write!(
            s,
            " from {}",
            paint(color, &clean(client), Style::new().dimmed())
        );
    }
    for d in &ev.differences {
        let _ = write!(
            s,
            "\n  {}: {} → {}",
            paint(color, &clean(&d.location), Style::new().cyan()),
            paint(color, &value(&d.old), Style::new().red()),
            paint(color, &value(&d.new), Style::new().green()),
        );
    }
    if ev.omitted > 0 {
        let _ = write!(s, "\n  … {} more differences", ev.omitted);
    }
    if ev.body_by_digest {
        let _ = write!(
            s,
            "\n  {}",
            paint(
                color,
                "bodies compared by digest (length and XXH3, not kept)",
                Style::new().dimmed()
            )
        );
    }
    if let Some(why) = &ev.noise_unchecked {
        let _ = write!(
            s,
            "\n  {} {}",
            paint(color, "noise not checked:", Style::new().yellow()),
            clean(why)
        );
    }
    if let Some(error) = &ev.error {
        let _ = write!(
            s,
            "\n  {} {}",
            paint(color, "error:", Style::new().red().bold()),
            clean(error)
        );
    }
    s
}

#[cfg(test)]
mod tests;
