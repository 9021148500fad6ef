use serde_json::json;

use super::*;
use crate::report::table::tests::{endpoint, example, location, sample, spread, summary};

#[test]
fn escape_covers_markup_and_both_quotes() {
    assert_eq!(
        escape(r#"<script>alert('x')</script> & "q""#),
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
    );
    assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    assert_eq!(escape("a\0b"), "a\u{fffd}b");
}

/// A summary whose every string tries to break out of the page.
fn hostile() -> Summary {
    let evil = r#"<script>alert(1)</script>"#;
    let attr = r#""><img src=x onerror=alert(2)>"#;
    let mut e = endpoint(&format!("GET /{evil}{attr}"), 10, 5, 0, 0, 0, 0);
    let mut l = location(&format!("body:/{evil}{attr}"), 5, 0, 5, &[1]);
    l.example_old = json!(evil);
    l.example_new = json!({ "k": attr, "s": "</code></td></tr></table><script>alert(3)</script>" });
    e.differences = vec![l];
    let mut x = example(1, "POST", &format!("/{evil}?q={attr}"));
    x.headers
        .push(("X-Evil".to_owned(), format!("{evil}{attr}")));
    x.body = format!("{evil}</pre><script>alert(4)</script>");
    e.examples = vec![x];
    let mut s = summary(
        vec![e],
        vec![crate::report::table::tests::source(evil, false)],
    );
    s.sources[0].input = attr.to_owned();
    s.sources[0].new = format!("10.0.0.2:8080{evil}");
    s
}

#[test]
fn every_value_is_escaped() {
    let page = render(&hostile());
    // Only the page's own script, and no injected element at all.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("alert(1)</script>"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // Attribute values cannot be closed early.
    assert!(page.contains(
        r#"data-endpoint="GET /&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;""#
    ));
    assert!(page.contains(r#"data-where="body:/&lt;script&gt;"#));
    // The example values and the curl command are escaped too.
    assert!(page.contains("&lt;/code&gt;&lt;/td&gt;"), "{page}");
    assert!(
        page.contains("&lt;/pre&gt;&lt;script&gt;alert(4)"),
        "{page}"
    );
    assert_balanced(&page);
}

#[test]
fn stable_ids_and_classes_are_there() {
    let page = render(&sample());
    for needle in [
        r#"id="mismatch-chart""#,
        r#"id="latency-chart""#,
        r#"id="latency-legend""#,
        r#"id="endpoints""#,
        r#"id="differences""#,
        r#"id="sources""#,
        r#"class="endpoint bad" data-endpoint="GET /users/{id}""#,
        r#"class="endpoint regressed" data-endpoint="POST /orders""#,
        r#"class="endpoint clean" data-endpoint="GET /health""#,
        r#"class="difference" data-where="body:/balance""#,
        r#"class="difference" data-where="body:/items/*/price""#,
        r#"<div class="curl" data-example="11">"#,
        r#"<button type="button" class="copy" data-for="curl-0">copy</button>"#,
        r#"<span class="regression">REGRESSION p99 ×1.78</span>"#,
        r#"<g class="bar" data-endpoint="GET /users/{id}">"#,
        r#"<g class="latency-group" data-endpoint="POST /orders">"#,
        r#"data-side="secondary""#,
    ] {
        assert!(page.contains(needle), "{needle} missing");
    }
    assert_eq!(page.matches("<tr class=\"endpoint ").count(), 4);
    assert_eq!(page.matches("<tr class=\"difference\"").count(), 4);
    assert_eq!(page.matches("<div class=\"curl\"").count(), 1);
    assert_balanced(&page);
}

#[test]
fn rows_follow_the_impact_ranking_and_hold_the_table_columns() {
    let s = sample();
    let page = render(&s);
    let order: Vec<usize> = ranked(&s)
        .iter()
        .map(|e| {
            page.find(&format!("data-endpoint=\"{}\"><td", escape(&e.endpoint)))
                .unwrap()
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    let row_start = page
        .find(r#"<tr class="endpoint bad" data-endpoint="GET /users/{id}">"#)
        .unwrap();
    let row = &page[row_start..row_start + page[row_start..].find("</tr>").unwrap()];
    for cell in [
        ">1003<", ">1000<", ">6.00%<", ">40<", ">0<", ">2<", ">1<", ">39.7ms<",
    ] {
        assert!(row.contains(cell), "{cell} not in {row}");
    }
    assert!(row.contains("sec 24.8ms ×1.60"), "{row}");
    assert!(row.contains(r##"<a href="#ep-0">"##), "{row}");
}

#[test]
fn differences_show_counts_rates_ids_values_and_the_curl_command() {
    let s = sample();
    let page = render(&s);
    let at = page.find(r#"data-where="body:/balance""#).unwrap();
    let row = &page[at..at + page[at..].find("</tr>").unwrap()];
    for cell in [
        ">50<",
        ">5.00%<",
        ">70<",
        ">20<",
        ">#11 #17 #23 #31<",
        "<code>10</code>",
        "<code>12</code>",
    ] {
        assert!(row.contains(cell), "{cell} not in {row}");
    }
    assert!(page.contains("… 4 differences at locations not kept"));
    let users = s
        .endpoints
        .iter()
        .find(|e| e.endpoint == "GET /users/{id}")
        .unwrap();
    let command = curl::curl(&users.examples[0], "http://10.0.0.2:8080");
    assert!(
        page.contains(&format!("<pre id=\"curl-0\">{}</pre>", escape(&command))),
        "{page}"
    );
    assert!(command.contains("token=[redacted]") && command.contains("Authorization: [redacted]"));
}

#[test]
fn nothing_is_fetched_from_anywhere() {
    for s in [sample(), hostile(), summary(vec![], vec![])] {
        let page = render(&s);
        let lower = page.to_ascii_lowercase();
        for banned in [
            "src=",
            "url(",
            "@import",
            "@font-face",
            "<link",
            "<img",
            "<iframe",
            "<object",
            "<embed",
            "xmlns",
            "srcset",
            "fetch(",
            "xmlhttprequest",
        ] {
            // The hostile summary's text holds `src=`, escaped: look at
            // markup only, not at text and attribute values.
            assert!(!in_markup(&lower, banned), "{banned} in markup");
        }
        // Every link is to a fragment of the page itself.
        for (i, _) in lower.match_indices("href=") {
            assert!(lower[i..].starts_with("href=\"#"), "{}", &page[i..i + 40]);
        }
        // URLs appear only in the curl commands (text to copy, not loaded).
        let mut rest = lower.clone();
        while let Some(start) = rest.find("<pre id=\"curl-") {
            let end = start + rest[start..].find("</pre>").unwrap();
            rest.replace_range(start..end, "");
        }
        for scheme in ["http://", "https://", "ftp://", "file:", "//cdn", "data:"] {
            assert!(!rest.contains(scheme), "{scheme} outside a curl block");
        }
        // And the browser is told not to fetch anything.
        assert!(page.contains(
            "content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\""
        ));
    }
}

/// Whether `needle` occurs in markup: inside a tag (between `<` and `>`,
/// outside quoted attribute values) or inside the page's style or script.
fn in_markup(page: &str, needle: &str) -> bool {
    let (mut in_tag, mut in_value) = (false, false);
    let style = page.find("<style>").unwrap_or(0)..page.find("</style>").unwrap_or(0);
    let script = page.find("<script>").unwrap_or(0)..page.find("</script>").unwrap_or(0);
    for (i, b) in page.bytes().enumerate() {
        match b {
            b'<' if !in_value => in_tag = true,
            b'>' if !in_value => in_tag = false,
            b'"' if in_tag => in_value = !in_value,
            _ => {}
        }
        let markup = (in_tag && !in_value) || style.contains(&i) || script.contains(&i);
        if markup && page[i..].starts_with(needle) {
            return true;
        }
    }
    false
}

#[test]
fn an_empty_summary_still_renders_every_view() {
    let page = render(&summary(vec![], vec![]));
    for needle in [
        r#"id="mismatch-chart""#,
        r#"id="latency-chart""#,
        r#"id="endpoints""#,
        r#"id="differences""#,
        "No compared requests yet.",
        "No sources.",
    ] {
        assert!(page.contains(needle), "{needle} missing");
    }
    assert_balanced(&page);
}

#[test]
fn a_large_summary_stays_bounded() {
    let long_value = "x".repeat(10_000);
    // (Each endpoint holds three histograms of ~190 KiB: 120 are enough.)
    let endpoints: Vec<EndpointSummary> = (0..120)
        .map(|i| {
            let mut e = endpoint(&format!("GET /e{i:03}"), 100, i % 7, 0, 0, 0, 0);
            e.differences = (0..20)
                .map(|j| {
                    let mut l =
                        location(&format!("body:/f{j}"), 5, 1, 4, &[1, 2, 3, 4, 5, 6, 7, 8]);
                    l.example_old = json!(long_value);
                    l
                })
                .collect();
            e.latency.old = spread(1.0, 10.0, 50);
            e.latency.new = spread(1.0, 12.0, 50);
            e.examples = vec![example(i, "GET", "/x")];
            e
        })
        .collect();
    let s = summary(endpoints, vec![]);
    let page = render(&s);
    assert_eq!(page.matches("<g class=\"bar\"").count(), CHART_ENDPOINTS);
    assert_eq!(
        page.matches("<g class=\"latency-group\"").count(),
        CHART_ENDPOINTS
    );
    assert_eq!(page.matches("<tr class=\"endpoint ").count(), 120);
    assert_eq!(page.matches("<tr class=\"difference\"").count(), 120 * 20);
    assert!(page.contains("80 more endpoints in the table below."));
    // Values are cut: 2400 locations × ~300 characters, not × 10 000.
    assert!(!page.contains(&"x".repeat(VALUE_CHARS + 1)));
    assert!(page.len() < 3 << 20, "{} bytes", page.len());
}

#[test]
fn axes_are_round_and_bars_scale_to_them() {
    assert_eq!(nice_max(0.0), 1.0);
    assert_eq!(nice_max(0.7), 1.0);
    assert_eq!(nice_max(1.0), 1.0);
    assert_eq!(nice_max(1.2), 2.0);
    assert_eq!(nice_max(6.0), 10.0);
    assert_eq!(nice_max(39.6), 50.0);
    assert_eq!(nice_max(159.0), 200.0);
    assert_eq!(tick(12.5), "12.5");
    assert_eq!(tick(50.0), "50");
    assert_eq!(tick(0.25), "0.25");
    // The sample's worst rate is 6 %: the axis ends at 10 %, so its bar is
    // 60 % of the bar area.
    let page = render(&sample());
    assert!(page.contains(">10%</text>"), "{page}");
    let w = BAR_WIDTH * 0.6;
    assert!(
        page.contains(&format!("width=\"{w:.1}\" height=\"16\"><title>60 of 1000")),
        "{page}"
    );
}

/// Checks that the page's elements nest properly (a cheap stand-in for an
/// HTML parser: void elements and `/>` close themselves; style and script
/// contents are skipped).
fn assert_balanced(page: &str) {
    const VOID: [&str; 4] = ["meta", "br", "input", "hr"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = page;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let close = rest.find('>').expect("unclosed tag");
        let tag = &rest[..close];
        rest = &rest[close + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop();
            assert_eq!(
                top.as_deref(),
                Some(name),
                "closing {name}, open: {stack:?}"
            );
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(!name.is_empty(), "odd tag <{tag}>");
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        if name == "style" || name == "script" {
            let end = rest.find(&format!("</{name}>")).expect("unclosed raw text");
            rest = &rest[end..];
        }
        stack.push(name);
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}
