use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::summary::{Example, FORMAT, Latencies, Regression, RegressionRule, Rules, VERSION};

// ---- A test-only builder of summaries (shared with the HTML tests) ----

/// An endpoint with these outcome counts (seen and compared derived from
/// them) and nothing else.
pub(crate) fn endpoint(
    name: &str,
    matched: u64,
    mismatched: u64,
    noise: u64,
    skipped: u64,
    lost: u64,
    replay_errors: u64,
) -> EndpointSummary {
    let mut skipped_by = BTreeMap::new();
    if skipped > 0 {
        skipped_by.insert("method".to_owned(), skipped);
    }
    let mut lost_by = BTreeMap::new();
    if lost > 0 {
        lost_by.insert("ring_overflow".to_owned(), lost);
    }
    EndpointSummary {
        counts: Counts {
            seen: matched + mismatched + noise + skipped + lost + replay_errors,
            compared: matched + mismatched + noise,
            matched,
            mismatched,
            noise,
            skipped,
            lost,
            replay_errors,
            skipped_by,
            lost_by,
        },
        ..EndpointSummary::empty(name)
    }
}

/// A histogram of these latencies (ms).
pub(crate) fn latency(ms: &[f64]) -> Latency {
    let mut l = Latency::new();
    for m in ms {
        l.record_ns((m * 1e6) as u64);
    }
    l
}

/// `n` values spread evenly from `low` to `high` ms.
pub(crate) fn spread(low: f64, high: f64, n: usize) -> Latency {
    let v: Vec<f64> = (0..n)
        .map(|i| low + (high - low) * i as f64 / (n.max(2) - 1) as f64)
        .collect();
    latency(&v)
}

pub(crate) fn location(
    location: &str,
    raw: u64,
    noise: u64,
    reported: u64,
    ids: &[u64],
) -> Location {
    Location {
        location: location.to_owned(),
        raw,
        noise,
        reported,
        example_ids: ids.to_vec(),
        example_old: json!(10),
        example_new: json!(12),
    }
}

pub(crate) fn example(id: u64, method: &str, target: &str) -> Example {
    Example {
        id,
        method: method.to_owned(),
        target: target.to_owned(),
        headers: vec![
            ("Host".to_owned(), "shop.example".to_owned()),
            ("Authorization".to_owned(), "[redacted]".to_owned()),
            ("Content-Length".to_owned(), "2".to_owned()),
        ],
        body: "{}".to_owned(),
        body_omitted: 0,
    }
}

pub(crate) fn regression(ratio: f64) -> Regression {
    Regression {
        quantile: "p99".to_owned(),
        new_ms: 30.0 * ratio,
        secondary_ms: 30.0,
        ratio,
    }
}

pub(crate) fn source(host: &str, finished: bool) -> Source {
    Source {
        host: host.to_owned(),
        input: "iface:eth0".to_owned(),
        new: "10.0.0.2:8080".to_owned(),
        secondary: Some("10.0.0.3:8080".to_owned()),
        started: "2026-12-02T06:00:00Z".to_owned(),
        updated: "2026-12-02T06:30:00Z".to_owned(),
        finished,
    }
}

/// A summary of these endpoints (sorted by name, totals added up).
pub(crate) fn summary(mut endpoints: Vec<EndpointSummary>, sources: Vec<Source>) -> Summary {
    endpoints.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    let mut totals = Counts::default();
    for e in &endpoints {
        totals.add(&e.counts);
    }
    Summary {
        format: FORMAT.to_owned(),
        version: VERSION,
        rules: Rules {
            endpoint_patterns: vec!["/users/{id}".to_owned()],
            max_endpoints: 100,
            learn_after: 20,
            max_locations: 20,
            regression: RegressionRule {
                ratio: 1.2,
                min_delta_ms: 5.0,
                min_samples: 50,
            },
        },
        sources,
        totals,
        endpoints,
    }
}

/// A summary with a bit of everything: mismatches with locations and
/// examples, a regression, a clean endpoint, losses and replay errors.
pub(crate) fn sample() -> Summary {
    let mut users = endpoint("GET /users/{id}", 900, 60, 40, 0, 2, 1);
    users.differences = vec![
        location("body:/balance", 70, 20, 50, &[11, 17, 23, 31]),
        location("header:etag", 12, 2, 10, &[12]),
        location("status", 3, 0, 3, &[40]),
    ];
    users.other_locations = 4;
    users.latency = Latencies {
        old: spread(2.0, 20.0, 200),
        new: spread(3.0, 40.0, 200),
        secondary: spread(2.0, 25.0, 200),
    };
    users.examples = vec![example(11, "GET", "/users/7?token=[redacted]")];

    let mut orders = endpoint("POST /orders", 300, 0, 0, 20, 0, 0);
    orders.latency = Latencies {
        old: spread(10.0, 80.0, 100),
        new: spread(10.0, 160.0, 100),
        secondary: spread(10.0, 90.0, 100),
    };
    orders.regression = Some(regression(1.78));

    let mut health = endpoint("GET /health", 5000, 0, 0, 0, 0, 0);
    health.latency.old = spread(0.1, 0.5, 100);
    health.latency.new = spread(0.1, 0.6, 100);

    let mut items = endpoint("GET /items/{id}/price", 100, 5, 0, 0, 0, 0);
    items.differences = vec![location("body:/items/*/price", 9, 4, 5, &[101, 102])];
    items.latency.old = spread(1.0, 9.0, 100);
    items.latency.new = spread(1.0, 9.5, 100);

    summary(
        vec![users, orders, health, items],
        vec![source("agent-a", true), source("agent-b", false)],
    )
}

// ---- The table ----

fn names(s: &Summary) -> Vec<&str> {
    ranked(s).iter().map(|e| e.endpoint.as_str()).collect()
}

#[test]
fn ranking_is_by_bad_requests_then_regression_then_seen_then_name() {
    let mut reg = endpoint("GET /slow", 10, 0, 0, 0, 0, 0);
    reg.regression = Some(regression(2.0));
    let s = summary(
        vec![
            endpoint("GET /b-clean", 1000, 0, 0, 0, 0, 0),
            endpoint("GET /a-clean", 1000, 0, 0, 0, 0, 0),
            endpoint("GET /busy-clean", 5000, 0, 0, 0, 0, 0),
            endpoint("GET /lost", 10, 0, 0, 0, 7, 0),
            endpoint("GET /errors", 10, 0, 0, 0, 0, 3),
            endpoint("GET /mismatch", 10, 5, 0, 0, 0, 0),
            reg,
            // Noise and skipped requests are not bad.
            endpoint("GET /noisy", 10, 0, 500, 500, 0, 0),
        ],
        vec![],
    );
    assert_eq!(
        names(&s),
        [
            "GET /lost",
            "GET /mismatch",
            "GET /errors",
            "GET /slow",
            "GET /busy-clean",
            "GET /noisy",
            "GET /a-clean",
            "GET /b-clean",
        ]
    );
    // The table lists them in that order.
    let out = render(&s, false);
    let positions: Vec<usize> = names(&s)
        .iter()
        .map(|n| out.find(&format!("{n} ")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{out}");
}

#[test]
fn plain_output_has_no_escape_codes_and_colour_has_some() {
    let mut s = sample();
    // Even a name with an escape sequence in it.
    s.endpoints[0].endpoint = "GET /\u{1b}[31mred\u{1b}[0m".to_owned();
    let plain = render(&s, false);
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    assert!(plain.contains(r"GET /\u{1b}[31mred"), "{plain}");
    let coloured = render(&s, true);
    assert!(coloured.contains("\u{1b}["), "{coloured:?}");
    // Colour changes nothing but the escape codes.
    assert_eq!(strip_ansi(&coloured), plain);
}

/// `s` without ANSI SGR sequences (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn colours_mismatches_red_and_clean_endpoints_green() {
    let out = render(&sample(), true);
    let health = out.lines().find(|l| l.contains("GET /health")).unwrap();
    let green = format!("{}", "GET /health".style(Style::new().green()));
    assert!(health.starts_with(&format!("{green}  ")), "{health:?}");
    let orders = out.lines().find(|l| l.contains("POST /orders")).unwrap();
    assert!(
        orders.contains(&format!(
            "{}",
            "REGRESSION p99 ×1.78".style(Style::new().red().bold())
        )),
        "{orders:?}"
    );
    let users = out.lines().find(|l| l.contains("GET /users/{id}")).unwrap();
    let red = format!("{}", "GET /users/{id}".style(Style::new().red()));
    assert!(users.starts_with(&red), "{users:?}");
    let red_bold = format!("{}", "6.00%".style(Style::new().red().bold()));
    assert!(users.contains(&red_bold), "{users:?}");
}

#[test]
fn columns_hold_counts_rates_latencies_and_the_mark() {
    let out = render(&sample(), false);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("totals: 6428 seen, 6405 compared"),
        "{out}"
    );
    assert!(lines[0].contains("65 mismatched (1.01%)"), "{out}");
    assert!(lines[0].contains("20 skipped (method 20)"), "{out}");
    assert!(lines[0].contains("2 lost (ring_overflow 2)"), "{out}");
    assert!(lines[1].starts_with("sources: 2"), "{out}");
    assert!(out.contains("agent-a iface:eth0 → new 10.0.0.2:8080, secondary 10.0.0.3:8080"));
    let a = lines.iter().find(|l| l.contains("agent-a")).unwrap();
    let b = lines.iter().find(|l| l.contains("agent-b")).unwrap();
    assert!(a.ends_with("finished") && b.ends_with("running"), "{out}");

    let header = lines.iter().find(|l| l.starts_with("endpoint")).unwrap();
    for h in HEADERS.iter().filter(|h| !h.is_empty()) {
        assert!(header.contains(h), "{header}");
    }
    let users = lines
        .iter()
        .find(|l| l.starts_with("GET /users/{id}"))
        .unwrap();
    let cols: Vec<&str> = users.split_whitespace().collect();
    // name (2 words), seen, compared, mismatch, noise, skipped, lost, errors.
    assert_eq!(
        cols[2..9],
        ["1003", "1000", "6.00%", "40", "0", "2", "1"],
        "{users}"
    );
    assert!(users.contains("sec ") && users.contains('×'), "{users}");

    let orders = lines
        .iter()
        .find(|l| l.starts_with("POST /orders"))
        .unwrap();
    assert!(orders.ends_with("REGRESSION p99 ×1.78"), "{orders}");
    // No secondary data: the old p99, and no ratio.
    let health = lines.iter().find(|l| l.starts_with("GET /health")).unwrap();
    assert!(health.contains("old 0.49ms"), "{health}");
    assert!(!health.contains('×'), "{health}");

    // Numeric columns are right-aligned: every row ends its `seen` cell at
    // the same column as the header's.
    let end_of = |line: &str, cell: &str| line.find(cell).map(|i| i + cell.len());
    let seen_end = end_of(header, "seen").unwrap();
    assert_eq!(end_of(users, " 1003"), Some(seen_end), "{out}");
    assert_eq!(end_of(orders, " 320"), Some(seen_end), "{out}");
}

#[test]
fn top_differences_list_locations_with_rates_and_example_ids() {
    let out = render(&sample(), false);
    let at = out.find("top differences").expect(&out);
    let tail = &out[at..];
    // Ranked: users (63 bad) before items (5 bad); orders has no locations.
    let users = tail
        .find("GET /users/{id}  60 mismatched of 1000 compared")
        .unwrap();
    let items = tail
        .find("GET /items/{id}/price  5 mismatched of 105 compared")
        .unwrap();
    assert!(users < items, "{tail}");
    assert!(!tail.contains("POST /orders"), "{tail}");
    let balance = tail.lines().find(|l| l.contains("body:/balance")).unwrap();
    let cols: Vec<&str> = balance.split_whitespace().collect();
    // where, reported, rate = reported / compared, raw, noise, ids (3).
    assert_eq!(
        cols,
        [
            "body:/balance",
            "50",
            "5.00%",
            "70",
            "20",
            "#11",
            "#17",
            "#23"
        ]
    );
    assert!(
        tail.contains("… 4 differences at locations not kept"),
        "{tail}"
    );
}

#[test]
fn more_locations_than_shown_are_counted() {
    let mut e = endpoint("GET /x", 0, 10, 0, 0, 0, 0);
    e.differences = (0..8)
        .map(|i| location(&format!("body:/f{i}"), 1, 0, 1, &[i]))
        .collect();
    let out = render(&summary(vec![e], vec![]), false);
    assert!(
        out.contains("body:/f4") && !out.contains("body:/f5"),
        "{out}"
    );
    assert!(out.contains("… 3 more locations\n"), "{out}");
}

#[test]
fn long_names_are_cut_to_the_width_with_an_ellipsis() {
    let long = format!("GET /{}", "very-long-segment/".repeat(10));
    let mut e = endpoint(&long, 10, 1, 0, 0, 0, 0);
    e.differences = vec![location(
        &format!("body:/{}", "deep/".repeat(30)),
        1,
        0,
        1,
        &[1],
    )];
    let s = summary(vec![e, endpoint("GET /short", 10, 0, 0, 0, 0, 0)], vec![]);
    for width in [100, 120, 160] {
        let out = render_width(&s, false, width);
        for line in out
            .lines()
            .filter(|l| l.starts_with("GET") || l.contains("body:/deep"))
        {
            assert!(line.chars().count() <= width, "{width}: {line:?}");
        }
        let row = out.lines().find(|l| l.starts_with("GET /very")).unwrap();
        assert!(row.contains('…'), "{row}");
        assert!(!row.contains(&long), "{row}");
        // Still aligned with the uncut rows.
        let short = out.lines().find(|l| l.starts_with("GET /short")).unwrap();
        let column_of = |line: &str, cell: &str| line.find(cell).map(|i| line[..i].chars().count());
        assert_eq!(column_of(row, " 11 "), column_of(short, " 10 "), "{out}");
    }
    // Even a tiny width keeps a readable part of the name.
    for width in [10, 80] {
        let out = render_width(&s, false, width);
        assert!(out.contains("GET /very-long-…  "), "{out}");
    }
}

#[test]
fn cut_and_clean_count_characters_not_bytes() {
    assert_eq!(cut("héllo wörld", 20), "héllo wörld");
    assert_eq!(cut("héllo wörld", 6), "héllo…");
    assert_eq!(cut("héllo", 5), "héllo");
    assert_eq!(clean("a\nb\u{1b}c"), "a\\nb\\u{1b}c");
    assert!(matches!(clean("plain"), Cow::Borrowed(_)));
}

#[test]
fn figures_are_readable() {
    assert_eq!(percent(None), "-");
    assert_eq!(percent(Some(0.0)), "0%");
    assert_eq!(percent(Some(1.0)), "100%");
    assert_eq!(percent(Some(0.9999)), "99.9%");
    assert_eq!(percent(Some(0.25)), "25.0%");
    assert_eq!(percent(Some(0.0123)), "1.23%");
    assert_eq!(percent(Some(0.00001)), "<0.01%");
    assert_eq!(format_ms(0.4219), "0.42ms");
    assert_eq!(format_ms(12.34), "12.3ms");
    assert_eq!(format_ms(123.4), "123ms");
    assert_eq!(format_ms(12_345.0), "12.3s");
}

#[test]
fn an_empty_summary_says_so() {
    let out = render(&summary(vec![], vec![]), false);
    assert!(out.starts_with("totals: 0 seen"), "{out}");
    assert!(out.contains("sources: 0"), "{out}");
    assert!(out.ends_with("no requests yet\n"), "{out}");
}
