//! Response comparison, noise cancellation and log redaction over
//! arbitrary responses.
//!
//! Input: limits (`max_value_len`, `max_differences`, the log's value cap),
//! then three responses (old, new, secondary), each `status:u16le
//! nheaders:u8 (name:u8 len:u8 value){n} coding:u8 len:u16le body`, header
//! names from a fixed set (Content-Type, Content-Encoding, Set-Cookie,
//! Authorization, X-Api-Key, ETag, ...), `coding` bits 0..2 compressing the
//! body for real (gzip, zlib, raw deflate) and setting Content-Encoding;
//! the rest is the request target.
//!
//! Checked: no panic; at most `max_differences` differences, `omitted`
//! only when the cap was reached; a response matches itself, and `a` vs
//! `b` finds as many differences as `b` vs `a`; values are cut to their
//! limit; `cancel` partitions and a difference cancels itself; after
//! `redact` the log event holds no secret header value nor secret query
//! value, every string is cut to the log's limit, and it serialises.
#![no_main]

use std::io::Write;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parallelrun_agent::{
    diff::{self, DiffConfig, PointerPattern},
    model::{Difference, Header, Response},
    report::log::{EventKind, LogConfig, LogEvent, REDACTED, SECRET_QUERY_WORDS, Side, redact},
};
use serde_json::Value;

const NAMES: [&str; 12] = [
    "Content-Type",
    "content-encoding",
    "Set-Cookie",
    "Authorization",
    "X-Api-Key",
    "ETag",
    "Date",
    "X-Custom",
    "x-custom",
    "Cookie",
    "X-Secret",
    "Content-Length",
];

const TYPES: [&[u8]; 4] = [
    b"application/json",
    b"text/plain",
    b"application/octet-stream",
    b"application/problem+json",
];

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

fn compress(coding: u8, body: &[u8]) -> (Option<&'static str>, Vec<u8>) {
    let level = flate2::Compression::fast();
    match coding & 3 {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(body).unwrap();
            (Some("gzip"), e.finish().unwrap())
        }
        2 => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(body).unwrap();
            (Some("deflate"), e.finish().unwrap())
        }
        3 => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
            e.write_all(body).unwrap();
            (Some("deflate"), e.finish().unwrap())
        }
        _ => (None, body.to_vec()),
    }
}

fn response(inp: &mut Input<'_>) -> Response {
    let status = 100 + inp.u16() % 500;
    let mut headers = Vec::new();
    for _ in 0..inp.byte() % 7 {
        let name = NAMES[usize::from(inp.byte()) % NAMES.len()];
        let len = usize::from(inp.byte() % 40);
        let value = if name == "Content-Type" && len < TYPES.len() {
            TYPES[len].to_vec()
        } else {
            inp.take(len).to_vec()
        };
        headers.push(Header::new(name, value));
    }
    let coding = inp.byte();
    let len = usize::from(inp.u16() % 2048);
    let (encoding, body) = compress(coding, inp.take(len));
    if let Some(e) = encoding {
        headers.push(Header::new("Content-Encoding", e));
    }
    Response {
        version: 1,
        status,
        reason: "X".to_owned(),
        headers,
        body: Bytes::from(body),
        digest: None,
        trailers: Vec::new(),
    }
}

/// The longest a cut string may be: the limit, plus `…(+N bytes)`.
fn max_cut(limit: usize) -> usize {
    limit + "…(+ bytes)".len() + 20
}

fn assert_bounded(v: &Value, limit: usize) {
    match v {
        Value::String(s) => assert!(
            s.len() <= max_cut(limit),
            "{} bytes > {limit}: {s:?}",
            s.len()
        ),
        Value::Array(a) => a.iter().for_each(|x| assert_bounded(x, limit)),
        Value::Object(o) => o.values().for_each(|x| assert_bounded(x, limit)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn is_secret_name(name: &str) -> bool {
    SECRET_QUERY_WORDS.iter().any(|w| name.contains(w))
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mut cfg = DiffConfig {
        max_value_len: 4 + usize::from(inp.byte() % 64),
        max_differences: 1 + usize::from(inp.byte() % 8),
        max_decoded_body: 4096,
        ignore_pointers: ["/a/*", "/b/**"]
            .iter()
            .map(|p| p.parse::<PointerPattern>().unwrap())
            .collect(),
        ..DiffConfig::default()
    };
    cfg.ignore_headers.push("x-ignored");
    let log_max = 8 + usize::from(inp.byte() % 64);
    let old = response(&mut inp);
    let new = response(&mut inp);
    let secondary = response(&mut inp);
    let target = String::from_utf8_lossy(inp.0).into_owned();

    let raw = diff::compare(&cfg, &old, &new);
    assert!(raw.differences.len() <= cfg.max_differences);
    if raw.omitted > 0 {
        assert_eq!(raw.differences.len(), cfg.max_differences);
    }
    for d in &raw.differences {
        assert_bounded(&d.old, cfg.max_value_len);
        assert_bounded(&d.new, cfg.max_value_len);
    }
    assert!(
        diff::compare(&cfg, &old, &old).is_match(),
        "a response differs from itself"
    );
    let back = diff::compare(&cfg, &new, &old);
    assert_eq!(
        raw.differences.len() + raw.omitted,
        back.differences.len() + back.omitted,
        "old->new and new->old count different differences: {raw:?} vs {back:?}"
    );
    assert_eq!(raw.is_match(), back.is_match(), "compare is not symmetric");

    let noise: Vec<Difference> = diff::compare(&cfg, &old, &secondary).differences;
    let (reported, suppressed) = diff::cancel(raw.differences.clone(), &noise);
    assert_eq!(reported.len() + suppressed.len(), raw.differences.len());
    let (left, _) = diff::cancel(noise.clone(), &noise);
    assert!(
        left.is_empty(),
        "a difference does not cancel itself: {left:?}"
    );

    let mut log = LogConfig::new("/dev/null");
    log.max_value_len = log_max;
    log.redact_headers.push("x-secret".to_owned());
    let mut ev = LogEvent {
        ts: "2026-01-01T00:00:00.000Z".to_owned(),
        id: 1,
        kind: EventKind::Mismatch,
        method: "GET".to_owned(),
        target: target.clone(),
        client: Some("10.0.0.1:40000".to_owned()),
        old: Side::new(Some(old.status), Some(1_000)),
        new: Side::new(Some(new.status), Some(2_000)),
        secondary: None,
        differences: reported,
        omitted: raw.omitted,
        body_by_digest: raw.body_by_digest,
        noise_unchecked: None,
        error: None,
    };
    redact(&mut ev, &log);
    for d in &ev.differences {
        assert!(d.location.len() <= max_cut(log_max));
        assert_bounded(&d.old, log_max);
        assert_bounded(&d.new, log_max);
        if let Some(name) = d.location.strip_prefix("header:")
            && log
                .redact_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
        {
            for v in [&d.old, &d.new] {
                assert!(v.is_null() || v == REDACTED, "{name} not redacted: {v}");
            }
        }
    }
    assert!(ev.target.len() <= max_cut(log_max));
    // Secret query values are gone: checked on parameters whose names need
    // no decoding, when the target was not cut.
    if !ev.target.contains("…(+")
        && let Some((_, query)) = ev.target.split_once('?')
    {
        let query = query.split('#').next().unwrap_or_default();
        for param in query.split('&') {
            if let Some((name, value)) = param.split_once('=')
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && is_secret_name(name)
            {
                assert!(
                    value.is_empty() || value == REDACTED,
                    "{name}={value} in {:?}",
                    ev.target
                );
            }
        }
    }
    serde_json::to_string(&ev).expect("the event serialises");
});
