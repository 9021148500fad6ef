//! Summary files from anywhere: reading, merging, rendering and judging.
//!
//! Input: the bytes of a summary file.
//!
//! Checked: reading never panics and refuses what breaks an invariant; a
//! summary read merges with itself into one whose counts are doubled and
//! which reads back equal after writing; the table, the HTML page and a
//! verdict are made without panicking, and the page escapes every endpoint
//! name it shows.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use parallelrun_agent::{
    report::{html, table},
    summary::{
        file, merge,
        verdict::{self, VerdictRules},
    },
};

fuzz_target!(|data: &[u8]| {
    let Ok(summary) = file::parse(data) else {
        return;
    };
    let pair = vec![
        (PathBuf::from("a"), summary.clone()),
        (PathBuf::from("b"), summary.clone()),
    ];
    let Ok(doubled) = merge::merge(pair) else {
        // Equal rules always merge, unless a count overflows.
        return;
    };
    if let Some(seen) = summary.totals.seen.checked_mul(2) {
        assert_eq!(doubled.totals.seen, seen);
    }
    let json = serde_json::to_vec(&doubled).expect("a summary serialises");
    assert_eq!(file::parse(&json).expect("a merged summary reads back"), doubled);
    let _ = table::render(&doubled, true);
    let page = html::render(&doubled);
    assert!(!page.contains("<script>alert"), "an endpoint name was not escaped");
    let _ = verdict::decide(
        &doubled,
        &VerdictRules {
            max_mismatch_rate: 0.01,
            max_latency_ratio: Some(1.2),
            min_compared: 1,
            scope: Vec::new(),
        },
    );
});
