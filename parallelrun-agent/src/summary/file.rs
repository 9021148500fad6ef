//! Reading and writing summary files: written atomically (a temporary file
//! in the same directory, then renamed), read with every invariant of the
//! [module docs](super) checked, so that a truncated, corrupt or foreign
//! file is an error naming the file and what is wrong.
//!
//! Reading checks, in order: the file is not empty; it is JSON (serde's line
//! and column otherwise); it is an object whose `format` is [`FORMAT`]
//! (checked on the bare JSON value, so that any other JSON file is "not a
//! parallelrun summary" rather than a missing field); its `version` is not
//! newer than [`VERSION`]; it has the schema's fields and no others; the
//! invariants hold. Reading never panics, whatever the bytes.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde_json::Value;

use super::{Counts, FORMAT, Summary, VERSION};
use crate::private_file;

/// Why a summary file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to do about a file that was changed after parallelrun wrote it.
const REWRITE: &str = "the file was changed after parallelrun wrote it; use the summary the agent wrote, or run it again";

/// Writes `summary` to `path` atomically, as indented JSON.
pub fn write(path: &Path, summary: &Summary) -> Result<(), SummaryError> {
    write_as(path, summary, true)
}

/// Writes `summary` to `path` atomically: a temporary file in the same
/// directory is written, synced and renamed over `path`, so that a reader
/// sees the old summary or the new one, never part of one. `pretty`:
/// indented JSON, else compact; either ends with a newline.
pub fn write_as(path: &Path, summary: &Summary, pretty: bool) -> Result<(), SummaryError> {
    let io = |source| SummaryError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = if pretty {
        serde_json::to_vec_pretty(summary)
    } else {
        serde_json::to_vec(summary)
    }
    .map_err(|e| SummaryError::Invalid {
        path: path.to_owned(),
        msg: format!("cannot encode the summary: {e}"),
    })?;
    bytes.push(b'\n');

    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| SummaryError::Invalid {
        path: path.to_owned(),
        msg: "not a file name; give --summary a file path".to_owned(),
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut f = private_file::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    // The rename is durable once the directory is synced; best effort (not
    // every file system lets a directory be opened and synced).
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads and checks one summary file.
pub fn read(path: &Path) -> Result<Summary, SummaryError> {
    let bytes = fs::read(path).map_err(|source| SummaryError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes).map_err(|msg| SummaryError::Invalid {
        path: path.to_owned(),
        msg,
    })
}

/// Parses and checks a summary file's bytes; the error says what is wrong
/// and what to do.
pub fn parse(bytes: &[u8]) -> Result<Summary, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(
            "empty file: no summary was written to it yet (an agent writes its \
                    summary every few seconds and at its end); wait, or check --summary"
                .to_owned(),
        );
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            format!(
                "truncated at line {} column {}: the file ends inside the summary; \
                 it was cut while copied or written, copy it again",
                e.line(),
                e.column()
            )
        } else {
            format!("not JSON: {e}; a summary is the JSON file `parallelrun run --summary` writes")
        }
    })?;
    let format = value.as_object().and_then(|o| o.get("format"));
    if format.and_then(Value::as_str) != Some(FORMAT) {
        return Err(format!(
            "not a parallelrun summary (no \"format\": \"{FORMAT}\"); give the file \
             `parallelrun run --summary` writes"
        ));
    }
    match value.get("version").map(|v| (v, v.as_u64())) {
        Some((_, Some(v))) if v > u64::from(VERSION) => {
            return Err(format!(
                "written by a newer parallelrun (summary version {v}, this one reads up to \
                 {VERSION}); read it with that version or a newer one"
            ));
        }
        Some((_, Some(v))) if v >= 1 => {}
        Some((v, _)) => {
            return Err(format!(
                "\"version\" is {v}, not a summary version (1 to {VERSION}); {REWRITE}"
            ));
        }
        None => return Err(format!("no \"version\"; {REWRITE}")),
    }
    // From the bytes rather than `value`, for serde's line and column.
    let summary: Summary = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a valid summary: {e}; {REWRITE}"))?;
    check(&summary).map_err(|what| format!("{what}; {REWRITE}"))?;
    Ok(summary)
}

/// Sums that may overflow on hostile input, in u128.
fn sum(values: impl IntoIterator<Item = u64>) -> u128 {
    values.into_iter().map(u128::from).sum()
}

/// The invariants of one set of counts; `whose`: `endpoint "GET /x"` or
/// `totals`.
fn check_counts(whose: &str, c: &Counts) -> Result<(), String> {
    let outcomes = sum([
        c.matched,
        c.mismatched,
        c.noise,
        c.skipped,
        c.lost,
        c.replay_errors,
    ]);
    if u128::from(c.seen) != outcomes {
        return Err(format!(
            "{whose}: seen {} is not matched {} + mismatched {} + noise {} + skipped {} + \
             lost {} + replay_errors {} = {outcomes}",
            c.seen, c.matched, c.mismatched, c.noise, c.skipped, c.lost, c.replay_errors
        ));
    }
    let compared = sum([c.matched, c.mismatched, c.noise]);
    if u128::from(c.compared) != compared {
        return Err(format!(
            "{whose}: compared {} is not matched {} + mismatched {} + noise {} = {compared}",
            c.compared, c.matched, c.mismatched, c.noise
        ));
    }
    for (name, total, by) in [
        ("skipped", c.skipped, &c.skipped_by),
        ("lost", c.lost, &c.lost_by),
    ] {
        let by_sum = sum(by.values().copied());
        if u128::from(total) != by_sum {
            return Err(format!(
                "{whose}: {name} {total} is not the sum of {name}_by, {by_sum}"
            ));
        }
    }
    Ok(())
}

/// Every invariant of the [summary](super) (the latency counts are checked
/// when decoded).
fn check(s: &Summary) -> Result<(), String> {
    let mut totals = Counts::default();
    let mut previous: Option<&str> = None;
    for e in &s.endpoints {
        let whose = format!("endpoint {:?}", e.endpoint);
        if let Some(p) = previous
            && p >= e.endpoint.as_str()
        {
            return Err(format!(
                "{whose} comes after {p:?}: endpoints are not sorted by name, or repeated"
            ));
        }
        previous = Some(&e.endpoint);
        check_counts(&whose, &e.counts)?;
        for l in &e.differences {
            if l.noise > l.raw || l.reported > l.raw {
                return Err(format!(
                    "{whose}, location {:?}: noise {} and reported {} must each be at most \
                     raw {}",
                    l.location, l.noise, l.reported, l.raw
                ));
            }
            if l.reported > e.counts.mismatched {
                return Err(format!(
                    "{whose}, location {:?}: reported {} is more than the endpoint's \
                     mismatched {}",
                    l.location, l.reported, e.counts.mismatched
                ));
            }
        }
        totals.add(&e.counts);
    }
    // Every other count of an endpoint is at most its `seen`: when the seen
    // add up without overflow, so does the rest, and the (saturating)
    // addition above is exact.
    let seen = sum(s.endpoints.iter().map(|e| e.counts.seen));
    if seen > u128::from(u64::MAX) {
        return Err(format!(
            "the endpoints' seen add up to {seen}, more than a count can hold"
        ));
    }
    check_counts("totals", &s.totals)?;
    if totals != s.totals {
        return Err(format!(
            "totals are not the sum of the endpoints' counts (seen {} vs {} summed)",
            s.totals.seen, totals.seen
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
