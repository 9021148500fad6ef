//! A [`Summary`] as one self-contained HTML page (`parallelrun report
//! --html`).
//!
//! Everything is in the one file: inline CSS, inline SVG charts and a tiny
//! inline script for the copy buttons (`navigator.clipboard`; the page reads
//! the same without it). Nothing is fetched from the network or the disk:
//! no external `src`, `href`, `url()`, font or stylesheet, and a
//! `Content-Security-Policy` of `default-src 'none'` says so to the browser
//! too, so the page can be mailed, attached to a ticket or opened offline.
//!
//! # Views
//!
//! - a header with the totals, the sources (finished or running) and the
//!   regression rule;
//! - `#mismatch-chart`: mismatch rate (mismatched ÷ compared) per endpoint,
//!   horizontal bars in impact order ([`super::table::ranked`]);
//! - `#latency-chart`: p50 and p99 of old, new and secondary per endpoint,
//!   in ms, grouped bars with a legend;
//! - `#endpoints`: the terminal table's columns ([`super::table`]), a
//!   `tr.endpoint[data-endpoint]` per endpoint, regressions marked with
//!   `.regression`;
//! - `#differences`: per endpoint its locations (`tr.difference[data-where]`:
//!   reported, rate, raw and noise counts, example ids, the first example's
//!   old and new values) and its first example request as a `.curl` block
//!   with a copy button ([`super::curl`]), aimed at the new service of the
//!   first source.
//!
//! # Bounds and escaping
//!
//! The page holds what the summary holds, which is bounded
//! (`rules.max_endpoints` × `rules.max_locations` × a few examples); the
//! charts show the [`CHART_ENDPOINTS`] endpoints with the most impact, and
//! example values are cut at [`VALUE_CHARS`] characters. Every string from
//! the summary goes through [`escape`], in text and in attributes alike
//! (attributes are always double-quoted), and none is ever put inside the
//! script or the style.

use std::fmt::Write as _;

use super::{
    curl,
    table::{
        self, cut, format_ms, impact, is_clean, more_locations, percent, ranked, rate,
        reference_p99, regression_mark,
    },
};
use crate::summary::{EndpointSummary, Latency, Location, Source, Summary};

/// Endpoints drawn in each chart (the table lists them all).
pub const CHART_ENDPOINTS: usize = 40;
/// Characters of an example value shown.
pub const VALUE_CHARS: usize = 300;
/// Characters of an endpoint name in a chart label (the full name is in
/// its tooltip).
const LABEL_CHARS: usize = 42;
/// Example ids listed per location.
const EXAMPLE_IDS: usize = 5;

/// `s` safe in HTML text and in double- or single-quoted attribute values:
/// `&`, `<`, `>`, `"` and `'` as character references.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // NUL is not allowed in HTML; the parser would replace it.
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The page.
pub fn render(summary: &Summary) -> String {
    let ranked = ranked(summary);
    let mut out = String::with_capacity(64 << 10);
    out.push_str(HEAD);
    header(&mut out, summary);
    mismatch_chart(&mut out, &ranked);
    latency_chart(&mut out, &ranked);
    endpoint_table(&mut out, &ranked);
    differences(&mut out, summary, &ranked);
    out.push_str(TAIL);
    out
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>parallelrun report</title>
<style>
:root { --fg: #1d2330; --muted: #5d6675; --line: #d9dde4; --bg: #ffffff; --panel: #f5f7fa;
  --bad: #c62828; --bad-bg: #fdecea; --good: #2e7d32; --warn: #b26a00;
  --old: #7a8699; --new: #e0701b; --sec: #1f8a8a; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
.muted { color: var(--muted); }
.totals { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; padding: 0; }
.totals div { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.totals dt { font-size: 12px; color: var(--muted); }
.totals dd { margin: 0; font-size: 20px; font-weight: 600; }
.totals .bad dd { color: var(--bad); }
.totals .good dd { color: var(--good); }
.totals .by { font-size: 11.5px; color: var(--muted); font-weight: 400; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: var(--panel); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.endpoint.bad td.name { color: var(--bad); font-weight: 600; }
tr.endpoint.clean td.name { color: var(--good); }
td.name { word-break: break-all; }
td.name a { color: inherit; }
.mismatch-rate.nonzero { color: var(--bad); font-weight: 600; }
.regression { display: inline-block; color: #fff; background: var(--bad); border-radius: 4px; padding: 0 6px; font-size: 12px; font-weight: 700; white-space: nowrap; }
.state-finished { color: var(--good); }
.state-running { color: var(--warn); }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", sans-serif; fill: var(--fg); }
svg .axis text { fill: var(--muted); font-size: 11px; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .track { fill: var(--panel); }
svg .bar-mismatch { fill: var(--bad); }
svg .bar-zero { fill: var(--good); }
svg .old { fill: var(--old); } svg .new { fill: var(--new); } svg .secondary { fill: var(--sec); }
svg .p99 { opacity: 0.45; }
.legend { display: flex; gap: 16px; flex-wrap: wrap; margin: 4px 0 8px; font-size: 12.5px; color: var(--muted); }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -2px; margin-right: 5px; }
.swatch.old { background: var(--old); } .swatch.new { background: var(--new); } .swatch.secondary { background: var(--sec); }
.swatch.p99 { opacity: 0.45; }
.endpoint-differences { border: 1px solid var(--line); border-radius: 6px; padding: 4px 14px 12px; margin: 14px 0; }
tr.difference td.where { word-break: break-all; }
td.value { max-width: 320px; word-break: break-all; }
td.value.old code { color: var(--bad); }
td.value.new code { color: var(--good); }
.curl { margin-top: 10px; background: #1d2330; color: #e8ecf2; border-radius: 6px; padding: 8px 12px; }
.curl .curl-head { display: flex; justify-content: space-between; align-items: center; font-size: 12px; color: #aab3c0; gap: 12px; }
.curl pre { margin: 6px 0 0; white-space: pre-wrap; word-break: break-all; }
button.copy { display: none; font: inherit; font-size: 12px; padding: 2px 10px; border-radius: 4px; border: 1px solid #aab3c0; background: transparent; color: inherit; cursor: pointer; }
.js button.copy { display: inline-block; }
.note { font-size: 12.5px; color: var(--muted); margin: 6px 0; }
</style>
</head>
<body>
"#;

const TAIL: &str = r#"<script>
document.documentElement.classList.add('js');
document.addEventListener('click', function (ev) {
  var b = ev.target.closest ? ev.target.closest('button.copy') : null;
  if (!b) { return; }
  var pre = document.getElementById(b.getAttribute('data-for'));
  if (!pre) { return; }
  var show = function (msg) { b.textContent = msg; setTimeout(function () { b.textContent = 'copy'; }, 1500); };
  var select = function () { var r = document.createRange(); r.selectNodeContents(pre); var s = window.getSelection(); s.removeAllRanges(); s.addRange(r); };
  if (navigator.clipboard && navigator.clipboard.writeText) {
    navigator.clipboard.writeText(pre.textContent).then(function () { show('copied'); }, function () { select(); show('press Ctrl+C'); });
  } else { select(); show('press Ctrl+C'); }
});
</script>
</body>
</html>
"#;

fn header(out: &mut String, s: &Summary) {
    let t = &s.totals;
    out.push_str("<header>\n<h1>parallelrun report</h1>\n");
    let _ = writeln!(
        out,
        "<div class=\"muted\">{} endpoint{}, {} source{}</div>",
        s.endpoints.len(),
        plural(s.endpoints.len() as u64),
        s.sources.len(),
        plural(s.sources.len() as u64),
    );
    out.push_str("<dl class=\"totals\" id=\"totals\">\n");
    let rate = percent(rate(t.mismatched, t.compared));
    let cards: [(&str, String, &str, String); 8] = [
        ("seen", t.seen.to_string(), "", String::new()),
        ("compared", t.compared.to_string(), "", String::new()),
        (
            "matched",
            t.matched.to_string(),
            if t.matched > 0 { "good" } else { "" },
            String::new(),
        ),
        (
            "mismatched",
            t.mismatched.to_string(),
            if t.mismatched > 0 { "bad" } else { "good" },
            format!("{rate} of compared"),
        ),
        ("noise", t.noise.to_string(), "", String::new()),
        ("skipped", t.skipped.to_string(), "", by(&t.skipped_by)),
        (
            "lost",
            t.lost.to_string(),
            if t.lost > 0 { "bad" } else { "" },
            by(&t.lost_by),
        ),
        (
            "replay errors",
            t.replay_errors.to_string(),
            if t.replay_errors > 0 { "bad" } else { "" },
            String::new(),
        ),
    ];
    for (name, value, class, note) in cards {
        let _ = write!(
            out,
            "<div class=\"{class}\" data-total=\"{}\"><dt>{name}</dt><dd>{value}",
            name.replace(' ', "-")
        );
        if !note.is_empty() {
            let _ = write!(out, " <span class=\"by\">{}</span>", escape(&note));
        }
        out.push_str("</dd></div>\n");
    }
    out.push_str("</dl>\n");
    sources(out, &s.sources);
    let r = &s.rules.regression;
    let _ = writeln!(
        out,
        "<p class=\"note\">A latency regression: new above {}× the secondary and at least {} ms more, at p50 or p99, with at least {} samples on both sides. Endpoints are ranked by mismatched + replay errors + lost requests, then regressions, then requests seen.</p>",
        r.ratio, r.min_delta_ms, r.min_samples
    );
    out.push_str("</header>\n");
}

fn by(map: &std::collections::BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn sources(out: &mut String, sources: &[Source]) {
    if sources.is_empty() {
        out.push_str("<p class=\"note\" id=\"sources\">No sources.</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"sources\" class=\"sources\">\n<thead><tr><th>host</th><th>input</th><th>new</th><th>secondary</th><th>started</th><th>updated</th><th>state</th></tr></thead>\n<tbody>\n",
    );
    for s in sources {
        let (class, state) = if s.finished {
            ("state-finished", "finished")
        } else {
            ("state-running", "running")
        };
        let _ = writeln!(
            out,
            "<tr class=\"source\"><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{state}</td></tr>",
            escape(&s.host),
            escape(&s.input),
            escape(&s.new),
            s.secondary
                .as_deref()
                .map_or_else(|| "-".to_owned(), escape),
            escape(&s.started),
            escape(&s.updated),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// A round upper bound for an axis: 1, 2 or 5 × 10ⁿ at or above `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= max * 0.999_999 {
            return m * mag;
        }
    }
    10.0 * mag
}

/// An axis label: `12.5` without trailing zeros.
fn tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

const CHART_WIDTH: f64 = 960.0;
const LABEL_WIDTH: f64 = 320.0;
const BAR_WIDTH: f64 = 420.0;

fn axis(out: &mut String, top: f64, bottom: f64, max: f64, unit: &str) {
    out.push_str("<g class=\"axis\">");
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let x = LABEL_WIDTH + BAR_WIDTH * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}{unit}</text>",
            top - 6.0,
            tick(v)
        );
    }
    out.push_str("</g>\n");
}

fn label(out: &mut String, name: &str, y: f64) {
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\"><title>{}</title>{}</text>",
        LABEL_WIDTH - 10.0,
        escape(name),
        escape(&cut(name, LABEL_CHARS)),
    );
}

fn mismatch_chart(out: &mut String, ranked: &[&EndpointSummary]) {
    out.push_str("<section id=\"mismatch\">\n<h2>Mismatch rate per endpoint</h2>\n");
    let shown: Vec<&&EndpointSummary> = ranked
        .iter()
        .filter(|e| e.counts.compared > 0)
        .take(CHART_ENDPOINTS)
        .collect();
    if shown.is_empty() {
        out.push_str(
            "<p class=\"note\" id=\"mismatch-chart\">No compared requests yet.</p>\n</section>\n",
        );
        return;
    }
    let max_rate = shown
        .iter()
        .filter_map(|e| rate(e.counts.mismatched, e.counts.compared))
        .fold(0.0, f64::max);
    let max = nice_max(max_rate * 100.0).min(100.0);
    const ROW: f64 = 24.0;
    const TOP: f64 = 28.0;
    let height = TOP + ROW * shown.len() as f64 + 8.0;
    let _ = writeln!(
        out,
        "<svg id=\"mismatch-chart\" role=\"img\" aria-label=\"mismatch rate per endpoint\" viewBox=\"0 0 {CHART_WIDTH} {height:.0}\" width=\"{CHART_WIDTH}\" height=\"{height:.0}\">"
    );
    axis(out, TOP, height - 8.0, max, "%");
    for (i, e) in shown.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let c = &e.counts;
        let r = rate(c.mismatched, c.compared).unwrap_or(0.0);
        let w = (r * 100.0 / max * BAR_WIDTH).clamp(0.0, BAR_WIDTH);
        let _ = write!(
            out,
            "<g class=\"bar\" data-endpoint=\"{}\">",
            escape(&e.endpoint)
        );
        label(out, &e.endpoint, y + 15.0);
        let _ = write!(
            out,
            "<rect class=\"track\" x=\"{LABEL_WIDTH}\" y=\"{:.1}\" width=\"{BAR_WIDTH}\" height=\"16\"/>",
            y + 3.0
        );
        let class = if c.mismatched > 0 {
            "bar-mismatch"
        } else {
            "bar-zero"
        };
        // A zero rate still gets a sliver, so the row does not look empty.
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{LABEL_WIDTH}\" y=\"{:.1}\" width=\"{:.1}\" height=\"16\"><title>{} of {} compared mismatched</title></rect>",
            y + 3.0,
            w.max(2.0),
            c.mismatched,
            c.compared
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{} <tspan class=\"muted\">({} of {})</tspan></text></g>",
            LABEL_WIDTH + BAR_WIDTH + 10.0,
            y + 15.0,
            escape(&percent(Some(r))),
            c.mismatched,
            c.compared
        );
    }
    out.push_str("</svg>\n");
    more_note(
        out,
        ranked.iter().filter(|e| e.counts.compared > 0).count(),
        shown.len(),
    );
    out.push_str("</section>\n");
}

fn more_note(out: &mut String, all: usize, shown: usize) {
    if all > shown {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} more endpoint{} in the table below.</p>",
            all - shown,
            plural((all - shown) as u64)
        );
    }
}

fn has_latency(e: &EndpointSummary) -> bool {
    let l = &e.latency;
    l.old.count() > 0 || l.new.count() > 0 || l.secondary.count() > 0
}

/// An endpoint's three histograms, by the class and name they are drawn
/// with.
fn sides(e: &EndpointSummary) -> [(&'static str, &Latency); 3] {
    [
        ("old", &e.latency.old),
        ("new", &e.latency.new),
        ("secondary", &e.latency.secondary),
    ]
}

/// A side's name in a bar label (`sec` for the secondary, to fit).
fn short(side: &str) -> &str {
    if side == "secondary" { "sec" } else { side }
}

fn latency_chart(out: &mut String, ranked: &[&EndpointSummary]) {
    out.push_str("<section id=\"latency\">\n<h2>Latency per endpoint</h2>\n");
    let shown: Vec<&&EndpointSummary> = ranked
        .iter()
        .filter(|e| has_latency(e))
        .take(CHART_ENDPOINTS)
        .collect();
    if shown.is_empty() {
        out.push_str(
            "<p class=\"note\" id=\"latency-chart\">No latencies recorded yet.</p>\n</section>\n",
        );
        return;
    }
    out.push_str(
        "<div class=\"legend\" id=\"latency-legend\"><span><span class=\"swatch old\"></span>old (as seen on the wire)</span><span><span class=\"swatch new\"></span>new (replayed)</span><span><span class=\"swatch secondary\"></span>secondary (replayed)</span><span><span class=\"swatch new\"></span>p50 &nbsp;<span class=\"swatch new p99\"></span>p99</span></div>\n",
    );
    let max_ms = shown
        .iter()
        .flat_map(|e| sides(e))
        .filter_map(|(_, l)| l.quantile_ms(0.99))
        .fold(0.0, f64::max);
    let max = nice_max(max_ms);
    const BAR: f64 = 10.0;
    const STEP: f64 = 13.0;
    const GROUP: f64 = STEP * 3.0 + 12.0;
    const TOP: f64 = 28.0;
    let height = TOP + GROUP * shown.len() as f64 + 4.0;
    let _ = writeln!(
        out,
        "<svg id=\"latency-chart\" role=\"img\" aria-label=\"latency per endpoint, ms\" viewBox=\"0 0 {CHART_WIDTH} {height:.0}\" width=\"{CHART_WIDTH}\" height=\"{height:.0}\">"
    );
    axis(out, TOP, height - 4.0, max, " ms");
    for (i, e) in shown.iter().enumerate() {
        let y0 = TOP + GROUP * i as f64 + 4.0;
        let _ = write!(
            out,
            "<g class=\"latency-group\" data-endpoint=\"{}\">",
            escape(&e.endpoint)
        );
        label(out, &e.endpoint, y0 + STEP + BAR);
        for (j, (name, l)) in sides(e).into_iter().enumerate() {
            let y = y0 + STEP * j as f64;
            let (Some(p50), Some(p99)) = (l.quantile_ms(0.5), l.quantile_ms(0.99)) else {
                let _ = write!(
                    out,
                    "<text class=\"muted\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{name}: no data</text>",
                    LABEL_WIDTH + 4.0,
                    y + BAR
                );
                continue;
            };
            let scale = |ms: f64| (ms / max * BAR_WIDTH).clamp(1.0, BAR_WIDTH);
            let _ = write!(
                out,
                "<g class=\"latency-bar\" data-side=\"{name}\"><rect class=\"{name} p99\" x=\"{LABEL_WIDTH}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR}\"/><rect class=\"{name} p50\" x=\"{LABEL_WIDTH}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR}\"/><title>{name}: p50 {}, p99 {} ({} samples)</title><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10.5\">{} p50 {} · p99 {}</text></g>",
                scale(p99),
                scale(p50),
                format_ms(p50),
                format_ms(p99),
                l.count(),
                LABEL_WIDTH + BAR_WIDTH + 10.0,
                y + BAR - 1.0,
                short(name),
                format_ms(p50),
                format_ms(p99),
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    more_note(
        out,
        ranked.iter().filter(|e| has_latency(e)).count(),
        shown.len(),
    );
    out.push_str("</section>\n");
}

fn endpoint_table(out: &mut String, ranked: &[&EndpointSummary]) {
    out.push_str("<section id=\"endpoints-section\">\n<h2>Endpoints</h2>\n");
    if ranked.is_empty() {
        out.push_str("<p class=\"note\" id=\"endpoints\">No requests yet.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table id=\"endpoints\">\n<thead><tr><th>endpoint</th><th class=\"num\">seen</th><th class=\"num\">compared</th><th class=\"num\">mismatch</th><th class=\"num\">noise</th><th class=\"num\">skipped</th><th class=\"num\">lost</th><th class=\"num\">errors</th><th class=\"num\">new p99</th><th>reference p99</th><th></th></tr></thead>\n<tbody>\n",
    );
    for (i, e) in ranked.iter().enumerate() {
        let c = &e.counts;
        let class = if is_clean(e) {
            "clean"
        } else if impact(e) > 0 {
            "bad"
        } else {
            "regressed"
        };
        let name = if e.differences.is_empty() && e.examples.is_empty() {
            escape(&e.endpoint)
        } else {
            format!("<a href=\"#ep-{i}\">{}</a>", escape(&e.endpoint))
        };
        let mark = if e.regression.is_some() {
            format!(
                "<span class=\"regression\">{}</span>",
                escape(&regression_mark(e))
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<tr class=\"endpoint {class}\" data-endpoint=\"{}\"><td class=\"name mono\">{name}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num mismatch-rate{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"mono\">{}</td><td>{mark}</td></tr>",
            escape(&e.endpoint),
            c.seen,
            c.compared,
            if c.mismatched > 0 { " nonzero" } else { "" },
            escape(&percent(rate(c.mismatched, c.compared))),
            c.noise,
            c.skipped,
            c.lost,
            c.replay_errors,
            e.latency
                .new
                .quantile_ms(0.99)
                .map_or_else(|| "-".to_owned(), format_ms),
            escape(&reference_p99(e)),
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn base_url(summary: &Summary) -> String {
    summary.sources.first().map_or_else(
        || "http://NEW-SERVICE".to_owned(),
        |s| format!("http://{}", s.new),
    )
}

fn differences(out: &mut String, summary: &Summary, ranked: &[&EndpointSummary]) {
    out.push_str("<section id=\"differences\">\n<h2>Top differing fields</h2>\n");
    let base = base_url(summary);
    let mut any = false;
    for (i, e) in ranked.iter().enumerate() {
        if e.differences.is_empty() && e.examples.is_empty() && e.other_locations == 0 {
            continue;
        }
        any = true;
        let c = &e.counts;
        let _ = write!(
            out,
            "<div class=\"endpoint-differences\" id=\"ep-{i}\" data-endpoint=\"{}\">\n<h3><span class=\"mono\">{}</span> <span class=\"muted\">{} mismatched of {} compared ({})</span>",
            escape(&e.endpoint),
            escape(&e.endpoint),
            c.mismatched,
            c.compared,
            escape(&percent(rate(c.mismatched, c.compared)))
        );
        if e.regression.is_some() {
            let _ = write!(
                out,
                " <span class=\"regression\">{}</span>",
                escape(&regression_mark(e))
            );
        }
        out.push_str("</h3>\n");
        if !e.differences.is_empty() {
            out.push_str(
                "<table class=\"differences\">\n<thead><tr><th>where</th><th class=\"num\">reported</th><th class=\"num\">rate</th><th class=\"num\">raw</th><th class=\"num\">noise</th><th>example ids</th><th>old</th><th>new</th></tr></thead>\n<tbody>\n",
            );
            for l in &e.differences {
                location_row(out, l, c.compared);
            }
            out.push_str("</tbody>\n</table>\n");
        }
        if let Some(note) = more_locations(e, e.differences.len()) {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(&note));
        }
        if let Some(x) = e.examples.first() {
            let _ = writeln!(
                out,
                "<div class=\"curl\" data-example=\"{}\"><div class=\"curl-head\"><span>copy as curl: request #{} sent to the new service, {}</span><button type=\"button\" class=\"copy\" data-for=\"curl-{i}\">copy</button></div><pre id=\"curl-{i}\">{}</pre></div>",
                x.id,
                x.id,
                escape(base.trim_start_matches("http://")),
                escape(&curl::curl(x, &base))
            );
        }
        out.push_str("</div>\n");
    }
    if !any {
        out.push_str("<p class=\"note\">No differences.</p>\n");
    }
    out.push_str("</section>\n");
}

fn location_row(out: &mut String, l: &Location, compared: u64) {
    let ids: Vec<String> = l
        .example_ids
        .iter()
        .take(EXAMPLE_IDS)
        .map(|id| format!("#{id}"))
        .collect();
    let _ = writeln!(
        out,
        "<tr class=\"difference\" data-where=\"{}\"><td class=\"where mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"mono\">{}</td><td class=\"value old\"><code>{}</code></td><td class=\"value new\"><code>{}</code></td></tr>",
        escape(&l.location),
        escape(&l.location),
        l.reported,
        escape(&percent(rate(l.reported, compared))),
        l.raw,
        l.noise,
        ids.join(" "),
        escape(&value(&l.example_old)),
        escape(&value(&l.example_new)),
    );
}

/// A value as JSON (so `"10"` and `10` differ, as they do in the
/// comparison), cut.
fn value(v: &serde_json::Value) -> String {
    table::cut(&v.to_string(), VALUE_CHARS).into_owned()
}

#[cfg(test)]
mod tests;
