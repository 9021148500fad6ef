//! Lost requests are logged, with secret query values redacted.
//!
//! This binary holds one test on purpose: it installs a global `tracing`
//! subscriber. A thread-local one (`with_default`) in the library's unit
//! tests raced with the other tests' threads over tracing's process-wide
//! callsite cache and sometimes saw nothing logged.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::sync::{Arc, Mutex};

use parallelrun_agent::{
    http::{HttpConfig, HttpTracker, track::redacted},
    model::{ConnKey, Direction, Outcome},
    stream::{CloseReason, StreamHandler},
};

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn lost_requests_are_logged_with_secrets_redacted() {
    let sink = Sink::default();
    let writer = sink.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("the only subscriber in this binary");

    let key = ConnKey {
        client: "10.0.0.1:40000".parse().unwrap(),
        server: "10.0.0.5:8080".parse().unwrap(),
    };
    let mut tracker = HttpTracker::new(HttpConfig::default());
    let mut conn = tracker.open(&key, 0, false);
    let requests: [&[u8]; 2] = [
        b"GET /api?page=2&token=abc HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /x?api_key=abc HTTP/9.9\r\n\r\n",
    ];
    for (ts, bytes) in (1..).zip(requests) {
        tracker.data(&mut conn, &key, Direction::Request, ts, bytes);
    }
    tracker.close(conn, &key, 1_000, CloseReason::Rst);
    let lost = tracker
        .outcomes()
        .filter(|o| matches!(o, Outcome::Lost(_)))
        .count();
    assert_eq!(lost, 2);

    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("request lost"), "{log}");
    assert!(log.contains("/api?page=2&token=[redacted]"), "{log}");
    assert!(log.contains("/x?api_key=[redacted]"), "{log}");
    assert!(!log.contains("abc"), "{log}");
    assert_eq!(redacted("/a?b=1"), "/a?b=1");
}
