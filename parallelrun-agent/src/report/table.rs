//! A [`Summary`] as a terminal table (`parallelrun report`).
//!
//! The output has three parts: a totals line and the sources (each agent
//! run, finished or still running); one row per endpoint, ranked by impact;
//! then, for the [`TOP_ENDPOINTS`] endpoints with the most impact that have
//! differences, their top differing locations.
//!
//! # Impact
//!
//! Endpoints are ranked, most impact first, by
//!
//! 1. **bad requests**, `mismatched + replay_errors + lost`: requests whose
//!    new response differed from the old one, that the new service did not
//!    answer, or that could not be compared at all (see [`impact`]);
//! 2. then a **latency regression** ([`EndpointSummary::regression`]):
//!    marked endpoints before unmarked ones;
//! 3. then **seen** requests, busier first;
//! 4. then the name, so that the order is stable.
//!
//! [`ranked`] gives that order; the HTML report ([`super::html`]) uses it
//! too.
//!
//! # Text
//!
//! Every string from the summary is shown with control characters escaped
//! (`\u{1b}` as `\u{1b}`), so a hostile endpoint name or location cannot
//! move the cursor or colour the terminal. Without colour the output holds
//! no escape codes at all. Columns are aligned by characters (East Asian
//! wide characters count as one), and endpoint names and locations longer
//! than the room left are cut with `…`.

use std::{borrow::Cow, cmp::Reverse, fmt::Write as _};

use owo_colors::{OwoColorize as _, Style};

use crate::summary::{Counts, EndpointSummary, Latency, Location, Source, Summary};

/// Width [`render`] lays the table out for.
pub const DEFAULT_WIDTH: usize = 120;
/// Endpoints whose locations are listed under the table.
pub const TOP_ENDPOINTS: usize = 5;
/// Locations listed per endpoint there.
pub const TOP_LOCATIONS: usize = 5;
/// Example ids shown per location.
pub const EXAMPLE_IDS: usize = 3;
/// The endpoint column is never cut below this many characters.
const MIN_ENDPOINT: usize = 16;
/// Nor the location column below this many.
const MIN_WHERE: usize = 16;
const GAP: &str = "  ";

/// The table for a terminal [`DEFAULT_WIDTH`] characters wide; ANSI colour
/// only when `colour`.
pub fn render(summary: &Summary, colour: bool) -> String {
    render_width(summary, colour, DEFAULT_WIDTH)
}

/// The table laid out for a terminal `width` characters wide: endpoint
/// names and locations are cut to fit, down to 16 characters; the numeric
/// columns and the regression mark never are (they need about 85).
pub fn render_width(summary: &Summary, colour: bool, width: usize) -> String {
    let mut out = String::new();
    totals(&mut out, &summary.totals, colour);
    sources(&mut out, &summary.sources, colour);
    let ranked = ranked(summary);
    out.push('\n');
    if ranked.is_empty() {
        out.push_str("no requests yet\n");
        return out;
    }
    endpoints(&mut out, &ranked, colour, width);
    differences(&mut out, &ranked, colour, width);
    out
}

/// Requests of the endpoint that went wrong: `mismatched + replay_errors +
/// lost` (the first ranking key, see the [module docs](self)).
pub fn impact(e: &EndpointSummary) -> u64 {
    let c = &e.counts;
    c.mismatched
        .saturating_add(c.replay_errors)
        .saturating_add(c.lost)
}

/// The summary's endpoints ranked by impact, most first (see the
/// [module docs](self)).
pub fn ranked(summary: &Summary) -> Vec<&EndpointSummary> {
    let mut v: Vec<&EndpointSummary> = summary.endpoints.iter().collect();
    v.sort_by(|a, b| {
        (
            Reverse(impact(a)),
            Reverse(a.regression.is_some()),
            Reverse(a.counts.seen),
            &a.endpoint,
        )
            .cmp(&(
                Reverse(impact(b)),
                Reverse(b.regression.is_some()),
                Reverse(b.counts.seen),
                &b.endpoint,
            ))
    });
    v
}

/// An endpoint with nothing wrong: no bad request and no regression.
pub fn is_clean(e: &EndpointSummary) -> bool {
    impact(e) == 0 && e.regression.is_none()
}

/// `part / whole` as a fraction, `None` when `whole` is 0.
pub fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// A fraction as a percentage for people: `3.2%`, `0.04%`, `100%`; `-`
/// when there is none.
pub fn percent(fraction: Option<f64>) -> String {
    let Some(f) = fraction else {
        return "-".to_owned();
    };
    let p = f * 100.0;
    if p == 0.0 {
        "0%".to_owned()
    } else if p >= 99.95 {
        // Only exactly 100 % is shown as such.
        if f >= 1.0 {
            "100%".to_owned()
        } else {
            "99.9%".to_owned()
        }
    } else if p >= 10.0 {
        format!("{p:.1}%")
    } else if p >= 0.01 {
        format!("{p:.2}%")
    } else {
        "<0.01%".to_owned()
    }
}

/// Milliseconds for people: `0.42ms`, `8.3ms`, `120ms`, `12.4s`.
pub fn format_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0}ms")
    } else if ms >= 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.2}ms")
    }
}

/// A histogram's p99 for people, `-` when empty.
fn p99(l: &Latency) -> String {
    l.quantile_ms(0.99)
        .map_or_else(|| "-".to_owned(), format_ms)
}

/// What the new service's p99 is compared with: the secondary's p99 and
/// new ÷ secondary (`sec 8.80ms ×1.42`) when the secondary answered, else
/// the old service's p99 as seen on the wire (`old 8.10ms`; no ratio: the
/// old service was measured by other clients), else `-`.
pub fn reference_p99(e: &EndpointSummary) -> String {
    let l = &e.latency;
    match (l.new.quantile_ms(0.99), l.secondary.quantile_ms(0.99)) {
        (Some(new), Some(sec)) if sec > 0.0 => {
            format!("sec {} ×{:.2}", format_ms(sec), new / sec)
        }
        (None, Some(sec)) => format!("sec {}", format_ms(sec)),
        _ => match l.old.quantile_ms(0.99) {
            Some(old) => format!("old {}", format_ms(old)),
            None => "-".to_owned(),
        },
    }
}

/// The regression mark, `REGRESSION p99 ×1.52`, or empty.
pub fn regression_mark(e: &EndpointSummary) -> String {
    e.regression.as_ref().map_or_else(String::new, |r| {
        format!("REGRESSION {} ×{:.2}", clean(&r.quantile), r.ratio)
    })
}

/// `s` with control characters escaped (`\n`, `\u{1b}`): an escape
/// sequence from captured traffic must not drive the terminal.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` cut to at most `max` characters, the last one `…` when cut.
pub fn cut(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        return Cow::Borrowed(s);
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    Cow::Owned(out)
}

fn width_of(s: &str) -> usize {
    s.chars().count()
}

/// `text` in `style` when `on`, plain otherwise.
pub(crate) fn paint(on: bool, text: &str, style: Style) -> String {
    if on {
        text.style(style).to_string()
    } else {
        text.to_owned()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// `text` padded to `width` characters (never cut: callers cut first).
fn pad(text: &str, width: usize, align: Align) -> String {
    let fill = " ".repeat(width.saturating_sub(width_of(text)));
    match align {
        Align::Left => format!("{text}{fill}"),
        Align::Right => format!("{fill}{text}"),
    }
}

/// `n skipped (reason n, …)`-style list of a by-reason map.
fn by(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{} {v}", clean(k)))
        .collect();
    format!(" ({})", parts.join(", "))
}

fn totals(out: &mut String, t: &Counts, colour: bool) {
    let mismatched = format!(
        "{} mismatched ({})",
        t.mismatched,
        percent(rate(t.mismatched, t.compared))
    );
    let mismatched = if t.mismatched > 0 {
        paint(colour, &mismatched, Style::new().red().bold())
    } else {
        paint(colour, &mismatched, Style::new().green())
    };
    let _ = writeln!(
        out,
        "{} {} seen, {} compared, {} matched, {mismatched}, {} noise, {} skipped{}, {} lost{}, {} replay errors",
        paint(colour, "totals:", Style::new().bold()),
        t.seen,
        t.compared,
        t.matched,
        t.noise,
        t.skipped,
        by(&t.skipped_by),
        t.lost,
        by(&t.lost_by),
        t.replay_errors,
    );
}

fn sources(out: &mut String, sources: &[Source], colour: bool) {
    let _ = writeln!(
        out,
        "{} {}",
        paint(colour, "sources:", Style::new().bold()),
        sources.len()
    );
    for s in sources {
        let secondary = s
            .secondary
            .as_deref()
            .map_or_else(String::new, |sec| format!(", secondary {}", clean(sec)));
        let state = if s.finished {
            paint(colour, "finished", Style::new().green())
        } else {
            paint(colour, "running", Style::new().yellow())
        };
        let _ = writeln!(
            out,
            "  {} {} → new {}{secondary}  started {}, updated {}  {state}",
            clean(&s.host),
            clean(&s.input),
            clean(&s.new),
            clean(&s.started),
            clean(&s.updated),
        );
    }
}

const HEADERS: [&str; 11] = [
    "endpoint",
    "seen",
    "compared",
    "mismatch",
    "noise",
    "skipped",
    "lost",
    "errors",
    "new p99",
    "reference p99",
    "",
];

/// One endpoint's cells (plain text), in [`HEADERS`] order.
fn cells(e: &EndpointSummary) -> [String; 11] {
    let c = &e.counts;
    [
        clean(&e.endpoint).into_owned(),
        c.seen.to_string(),
        c.compared.to_string(),
        percent(rate(c.mismatched, c.compared)),
        c.noise.to_string(),
        c.skipped.to_string(),
        c.lost.to_string(),
        c.replay_errors.to_string(),
        p99(&e.latency.new),
        reference_p99(e),
        regression_mark(e),
    ]
}

fn endpoints(out: &mut String, ranked: &[&EndpointSummary], colour: bool, width: usize) {
    let rows: Vec<[String; 11]> = ranked.iter().map(|e| cells(e)).collect();
    let mut widths: [usize; 11] = HEADERS.map(width_of);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width_of(cell));
        }
    }
    // The endpoint column gets what the others leave (the mark column is
    // last and not padded, so it does not count).
    let rest: usize = widths[1..10].iter().sum::<usize>() + GAP.len() * 10;
    widths[0] = widths[0].min(width.saturating_sub(rest).max(MIN_ENDPOINT));

    let header: Vec<String> = HEADERS
        .iter()
        .zip(widths)
        .enumerate()
        .map(|(i, (h, w))| pad(h, w, align(i)))
        .collect();
    let _ = writeln!(
        out,
        "{}",
        paint(colour, header.join(GAP).trim_end(), Style::new().bold())
    );

    for (e, row) in ranked.iter().zip(&rows) {
        let mut line = Vec::with_capacity(11);
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let text = if i == 0 {
                pad(&cut(cell, w), w, Align::Left)
            } else {
                pad(cell, w, align(i))
            };
            line.push(style_cell(colour, i, &text, e));
        }
        let _ = writeln!(out, "{}", line.join(GAP).trim_end());
    }
}

fn align(column: usize) -> Align {
    match column {
        0 | 9 | 10 => Align::Left,
        _ => Align::Right,
    }
}

/// Colours one cell: red for mismatches and regressions, green for clean
/// endpoints' names, yellow for lost and failed requests.
fn style_cell(colour: bool, column: usize, text: &str, e: &EndpointSummary) -> String {
    if !colour {
        return text.to_owned();
    }
    let c = &e.counts;
    let style = match column {
        0 if is_clean(e) => Some(Style::new().green()),
        0 if impact(e) > 0 => Some(Style::new().red()),
        3 if c.mismatched > 0 => Some(Style::new().red().bold()),
        6 if c.lost > 0 => Some(Style::new().yellow()),
        7 if c.replay_errors > 0 => Some(Style::new().yellow()),
        8 | 9 if e.regression.is_some() => Some(Style::new().red()),
        10 if e.regression.is_some() => Some(Style::new().red().bold()),
        _ => None,
    };
    match style {
        Some(s) => paint_padded(text, s),
        None => text.to_owned(),
    }
}

/// Paints a padded cell's text, not its padding.
fn paint_padded(text: &str, style: Style) -> String {
    let content = text.trim_matches(' ');
    if content.is_empty() {
        return text.to_owned();
    }
    let lead = text.len() - text.trim_start_matches(' ').len();
    let trail = text.len() - text.trim_end_matches(' ').len();
    format!(
        "{}{}{}",
        &text[..lead],
        content.style(style),
        &text[text.len() - trail..]
    )
}

fn differences(out: &mut String, ranked: &[&EndpointSummary], colour: bool, width: usize) {
    let top: Vec<&&EndpointSummary> = ranked
        .iter()
        .filter(|e| !e.differences.is_empty())
        .take(TOP_ENDPOINTS)
        .collect();
    if top.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint(colour, "top differences", Style::new().bold())
    );
    for e in top {
        let c = &e.counts;
        let _ = writeln!(
            out,
            "  {}  {} mismatched of {} compared",
            paint(
                colour,
                &cut(&clean(&e.endpoint), width.saturating_sub(40).max(MIN_WHERE)),
                Style::new().bold()
            ),
            c.mismatched,
            c.compared
        );
        locations(out, e, colour, width);
    }
}

const LOCATION_HEADERS: [&str; 6] = ["where", "reported", "rate", "raw", "noise", "examples"];

fn location_cells(l: &Location, compared: u64) -> [String; 6] {
    let ids: Vec<String> = l
        .example_ids
        .iter()
        .take(EXAMPLE_IDS)
        .map(|id| format!("#{id}"))
        .collect();
    [
        clean(&l.location).into_owned(),
        l.reported.to_string(),
        percent(rate(l.reported, compared)),
        l.raw.to_string(),
        l.noise.to_string(),
        ids.join(" "),
    ]
}

fn locations(out: &mut String, e: &EndpointSummary, colour: bool, width: usize) {
    const INDENT: &str = "    ";
    let shown = &e.differences[..e.differences.len().min(TOP_LOCATIONS)];
    let rows: Vec<[String; 6]> = shown
        .iter()
        .map(|l| location_cells(l, e.counts.compared))
        .collect();
    let mut widths = LOCATION_HEADERS.map(width_of);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width_of(cell));
        }
    }
    let rest = INDENT.len() + widths[1..5].iter().sum::<usize>() + GAP.len() * 5 + widths[5];
    widths[0] = widths[0].min(width.saturating_sub(rest).max(MIN_WHERE));
    let header: Vec<String> = LOCATION_HEADERS
        .iter()
        .zip(widths)
        .enumerate()
        .map(|(i, (h, w))| pad(h, w, location_align(i)))
        .collect();
    let _ = writeln!(
        out,
        "{INDENT}{}",
        paint(colour, header.join(GAP).trim_end(), Style::new().dimmed())
    );
    for (l, row) in shown.iter().zip(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                let text = if i == 0 {
                    pad(&cut(cell, w), w, Align::Left)
                } else {
                    pad(cell, w, location_align(i))
                };
                match i {
                    0 if colour => paint_padded(&text, Style::new().cyan()),
                    1 if colour && l.reported > 0 => paint_padded(&text, Style::new().red()),
                    _ => text,
                }
            })
            .collect();
        let _ = writeln!(out, "{INDENT}{}", line.join(GAP).trim_end());
    }
    if let Some(note) = more_locations(e, shown.len()) {
        let _ = writeln!(
            out,
            "{INDENT}{}",
            paint(colour, &note, Style::new().dimmed())
        );
    }
}

/// What is not listed of an endpoint's locations when `shown` are: `… 3
/// more locations, 12 differences at locations not kept`, or `None`.
pub fn more_locations(e: &EndpointSummary, shown: usize) -> Option<String> {
    let hidden = e.differences.len().saturating_sub(shown);
    let mut parts = Vec::new();
    if hidden > 0 {
        parts.push(format!(
            "{hidden} more location{}",
            if hidden == 1 { "" } else { "s" }
        ));
    }
    if e.other_locations > 0 {
        parts.push(format!(
            "{} difference{} at locations not kept",
            e.other_locations,
            if e.other_locations == 1 { "" } else { "s" }
        ));
    }
    (!parts.is_empty()).then(|| format!("… {}", parts.join(", ")))
}

fn location_align(column: usize) -> Align {
    match column {
        0 | 5 => Align::Left,
        _ => Align::Right,
    }
}

#[cfg(test)]
pub(crate) mod tests;
