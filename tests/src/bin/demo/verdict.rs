//! The demo's verdict: what the agent's mismatch log, its final counters and
//! the services' hit counts say, as checks of what the sample service's
//! deliberate differences call for; and the agent's summary and warnings,
//! read from its stderr.

use std::path::Path;

use parallelrun_tests::app::App;
use serde_json::Value;

use crate::{EXPECTED, NOISE, POST, traffic::TrafficReport};

pub(crate) struct Check {
    pub(crate) ok: bool,
    pub(crate) text: String,
    /// Lines shown under it.
    pub(crate) details: Vec<String>,
}

impl Check {
    pub(crate) fn new(ok: bool, text: impl Into<String>) -> Self {
        Self {
            ok,
            text: text.into(),
            details: Vec::new(),
        }
    }

    pub(crate) fn fail(text: impl Into<String>) -> Self {
        Self::new(false, text)
    }
}

/// The three services, to count what reached each.
pub(crate) struct Hits<'a> {
    pub(crate) old: &'a App,
    pub(crate) new: &'a App,
    pub(crate) secondary: &'a App,
}

pub(crate) fn read_log(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the mismatch log {}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad log line {l:?}: {e}")))
        .collect()
}

pub(crate) fn read_stats(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the agent's stats {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("bad stats JSON: {e}"))
}

fn counter(stats: &Value, pointer: &str) -> u64 {
    stats.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

fn wheres(event: &Value) -> Vec<String> {
    event["differences"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .filter_map(|d| d["where"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn target(event: &Value) -> &str {
    event["target"].as_str().unwrap_or_default()
}

/// What the log, the agent's counters and the services' hit counts say,
/// as checks of what the sample service's differences call for.
pub(crate) fn verdict(
    log: &Result<Vec<Value>, String>,
    stats: Result<&Value, &String>,
    hits: &Hits<'_>,
    traffic: &TrafficReport,
) -> Vec<Check> {
    let (log, stats) = match (log, stats) {
        (Ok(log), Ok(stats)) => (log, stats),
        (Err(e), _) | (_, Err(e)) => return vec![Check::fail(e.clone())],
    };
    let mut checks = vec![deliberate(log, hits)];

    // Noise: the nonce of /random differs on the secondary too, so those
    // requests are counted as noise and never logged.
    let noise = counter(stats, "/outcomes/noise");
    let random_replayed = hits.new.hits(NOISE);
    let random_logged = log.iter().filter(|e| target(e) == NOISE).count();
    checks.push(if random_replayed > 0 && noise > 0 && random_logged == 0 {
        Check::new(
            true,
            format!(
                "noise suppressed: {noise} (the {random_replayed} {NOISE} responses differ on \
                 the secondary too; none logged)"
            ),
        )
    } else {
        Check::fail(format!(
            "noise suppressed: {noise}, but {random_replayed} {NOISE} replayed and \
             {random_logged} logged as mismatches"
        ))
    });

    // The POST reached the old service only.
    let posts = hits.old.hits(POST);
    let replayed = hits.new.hits(POST) + hits.secondary.hits(POST);
    checks.push(match (posts, replayed) {
        (0, _) => Check::fail(format!("POST replayed: ? (no POST {POST} was sent)")),
        (_, 0) => Check::new(
            true,
            format!(
                "POST replayed: no (the new service and the secondary got none of the \
                 {posts} POST {POST})"
            ),
        ),
        _ => Check::fail(format!(
            "POST replayed: YES ({replayed} of the {posts} POST {POST} reached the new service \
             or the secondary)"
        )),
    });

    // Nothing else: no other mismatch, no replay error, and the agent
    // accounted for every request the old service served.
    let others: Vec<String> = log
        .iter()
        .filter(|e| e["kind"] != "mismatch" || !EXPECTED.iter().any(|(t, _)| *t == target(e)))
        .map(|e| {
            let what = e["error"]
                .as_str()
                .map_or_else(|| wheres(e).join(", "), str::to_owned);
            format!(
                "{} {}: {what}",
                e["kind"].as_str().unwrap_or("?"),
                target(e)
            )
        })
        .collect();
    let served = hits.old.hits("/");
    let seen = counter(stats, "/requests_seen");
    let unaccounted = stats["unaccounted"].as_i64().unwrap_or(0);
    if others.is_empty() && seen == served && unaccounted == 0 {
        checks.push(Check::new(
            true,
            format!(
                "nothing else reported ({} matched), and all {served} requests the old \
                 service served were seen",
                counter(stats, "/outcomes/matched")
            ),
        ));
    } else {
        let mut c = Check::fail("something else went wrong:");
        if !others.is_empty() {
            c.details
                .push(format!("{} unexpected log events:", others.len()));
            c.details
                .extend(others.iter().take(5).map(|o| format!("  {o}")));
        }
        if seen != served {
            c.details.push(format!(
                "the agent saw {seen} requests; the old service served {served}"
            ));
        }
        if unaccounted != 0 {
            c.details
                .push(format!("{unaccounted} requests without an outcome"));
        }
        checks.push(c);
    }
    if traffic.errors > 0 {
        checks.push(Check::fail(format!(
            "{} of the {} client requests failed (last: {})",
            traffic.errors,
            traffic.sent,
            traffic.last_error.as_deref().unwrap_or("?")
        )));
    }
    checks
}

/// Each deliberate difference: every request to it that was replayed is
/// reported, at exactly its places.
fn deliberate(log: &[Value], hits: &Hits<'_>) -> Check {
    let mut details = Vec::new();
    let mut ok = true;
    for (t, expected) in EXPECTED {
        let replayed = hits.new.hits(t);
        let events: Vec<&Value> = log
            .iter()
            .filter(|e| e["kind"] == "mismatch" && target(e) == t)
            .collect();
        let mut want: Vec<&str> = expected.to_vec();
        want.sort_unstable();
        let elsewhere = events
            .iter()
            .filter(|e| {
                let mut w = wheres(e);
                w.sort();
                w != want
            })
            .count();
        let good = replayed > 0 && events.len() as u64 == replayed && elsewhere == 0;
        ok &= good;
        let mut line = format!(
            "{t:<10} {:<18} {} of {replayed} replayed",
            expected.join(" + "),
            events.len()
        );
        if elsewhere > 0 {
            line.push_str(&format!(", {elsewhere} at other places"));
        }
        if !good {
            line.push_str("  ✗");
        }
        details.push(line);
    }
    let mut c = Check::new(
        ok,
        if ok {
            "deliberate differences reported, each time and at exactly their place:"
        } else {
            "deliberate differences NOT all reported as expected:"
        },
    );
    c.details = details;
    c
}

/// The summary the agent prints on exit: from its `parallelrun: N requests
/// seen` line on, without log lines.
pub(crate) fn agent_summary(stderr: &str) -> Vec<&str> {
    let lines: Vec<&str> = stderr.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with("parallelrun: ")) else {
        return Vec::new();
    };
    lines[start..]
        .iter()
        .filter(|l| l.starts_with("parallelrun: ") || l.starts_with("  "))
        .copied()
        .collect()
}

/// The agent's warning and error log lines.
pub(crate) fn agent_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.starts_with("error:"))
        .collect()
}

/// [`EXPECTED`]'s locations, array indices generalised as the report groups
/// them.
const EXPECTED_IN_REPORT: [&str; 5] = [
    "body:/plan",
    "status",
    "body",
    "header:x-version",
    "body:/items/*",
];

/// The per-endpoint report holds each deliberate difference (array indices
/// generalised, as the report groups them) under some endpoint.
pub(crate) fn report_check(summary: Result<&Value, &String>) -> Check {
    let summary = match summary {
        Ok(s) => s,
        Err(e) => return Check::fail(format!("per-endpoint report: {e}")),
    };
    let locations: Vec<&str> = summary["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["differences"].as_array().into_iter().flatten())
        .filter_map(|d| d["where"].as_str())
        .collect();
    // EXPECTED's locations as the report groups them: array indices
    // generalised (`body:/items/2` under `body:/items/*`).
    let missing: Vec<&str> = EXPECTED_IN_REPORT
        .iter()
        .filter(|w| !locations.contains(w))
        .copied()
        .collect();
    let endpoints = summary["endpoints"].as_array().map_or(0, Vec::len);
    let mut c = Check::new(
        missing.is_empty(),
        format!(
            "per-endpoint report: {endpoints} endpoints, every deliberate difference among their \
             top differing fields"
        ),
    );
    c.details = missing
        .into_iter()
        .map(|m| format!("missing: {m}"))
        .collect();
    c
}
