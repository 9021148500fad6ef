use super::*;
use crate::model::Header;

/// One connection driven through the StreamHandler methods.
struct Harness {
    tracker: HttpTracker,
    conn: Option<HttpConn>,
    key: ConnKey,
    out: Vec<Outcome>,
}

impl Harness {
    fn new(cfg: HttpConfig, midstream: bool) -> Self {
        let key = ConnKey {
            client: "10.0.0.1:40000".parse().unwrap(),
            server: "10.0.0.5:8080".parse().unwrap(),
        };
        let mut tracker = HttpTracker::new(cfg);
        let conn = Some(tracker.open(&key, 0, midstream));
        Self {
            tracker,
            conn,
            key,
            out: Vec::new(),
        }
    }

    fn open() -> Self {
        Self::new(HttpConfig::default(), false)
    }

    fn drain(&mut self) {
        let drained: Vec<_> = self.tracker.outcomes().collect();
        self.out.extend(drained);
    }

    fn data(&mut self, dir: Direction, ts: u64, bytes: &[u8]) {
        let mut conn = self.conn.take().expect("connection open");
        self.tracker.data(&mut conn, &self.key, dir, ts, bytes);
        self.conn = Some(conn);
        self.drain();
    }

    fn req(&mut self, ts: u64, bytes: &[u8]) {
        self.data(Direction::Request, ts, bytes);
    }

    fn resp(&mut self, ts: u64, bytes: &[u8]) {
        self.data(Direction::Response, ts, bytes);
    }

    fn gap(&mut self, dir: Direction, ts: u64, ring_drops: bool) {
        let mut conn = self.conn.take().expect("connection open");
        self.tracker
            .gap(&mut conn, &self.key, dir, ts, 100, ring_drops);
        self.conn = Some(conn);
        self.drain();
    }

    fn fin(&mut self, dir: Direction, ts: u64) {
        let mut conn = self.conn.take().expect("connection open");
        self.tracker.fin(&mut conn, &self.key, dir, ts);
        self.conn = Some(conn);
        self.drain();
    }

    /// Closes the connection and checks that every request seen has
    /// exactly one outcome.
    fn close(&mut self, reason: CloseReason) {
        let conn = self.conn.take().expect("connection open");
        self.tracker.close(conn, &self.key, 1_000, reason);
        self.drain();
        let stats = self.tracker.stats();
        assert_eq!(stats.requests_seen, stats.paired + stats.lost_total());
        assert_eq!(self.out.len() as u64, stats.requests_seen);
        assert_eq!(self.paired().len() as u64, stats.paired);
    }

    fn paired(&self) -> Vec<&Exchange> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Outcome::Paired(exchange) => Some(exchange),
                Outcome::Lost(_) => None,
            })
            .collect()
    }

    /// (cause, target) of every lost request, in order.
    fn lost(&self) -> Vec<(LossCause, String)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Outcome::Lost(lost) => Some((lost.cause, lost.target.clone().unwrap_or_default())),
                Outcome::Paired(_) => None,
            })
            .collect()
    }

    /// (target, status) of every pair, in order.
    fn pairs(&self) -> Vec<(String, u16)> {
        self.paired()
            .iter()
            .map(|e| (e.request.target.clone(), e.response.status))
            .collect()
    }

    fn stats(&self) -> &HttpStats {
        self.tracker.stats()
    }

    /// (cause, method, target) of every lost request, in order.
    fn lost_lines(&self) -> Vec<(LossCause, Option<&str>, Option<&str>)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Outcome::Lost(l) => Some((l.cause, l.method.as_deref(), l.target.as_deref())),
                Outcome::Paired(_) => None,
            })
            .collect()
    }
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: old\r\n\r\n").into_bytes()
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn lost(cause: LossCause, target: &str) -> (LossCause, String) {
    (cause, target.to_owned())
}

#[test]
fn keep_alive_pairs_in_order_with_timestamps() {
    let mut h = Harness::open();
    h.req(10, &get("/one"));
    h.resp(15, &ok("1"));
    h.req(20, &get("/two"));
    h.resp(32, &ok("22"));
    let paired = h.paired();
    assert_eq!(paired.len(), 2);
    assert_eq!(paired[0].id + 1, paired[1].id, "ids increase in order seen");
    assert_eq!(
        (paired[0].request_ts_ns, paired[0].response_ts_ns),
        (10, 15)
    );
    assert_eq!(&paired[1].response.body[..], b"22");
    assert_eq!(paired[1].old_latency_ns(), 12);
    assert_eq!(paired[1].conn, h.key);
    h.close(CloseReason::Fin);
    assert_eq!(h.stats().paired, 2);
    assert_eq!(h.stats().lost_total(), 0);
    assert_eq!(h.stats().connections, 1);
}

#[test]
fn pipelined_requests_pair_by_position() {
    let mut h = Harness::open();
    let requests = [
        get("/a"),
        b"HEAD /b HTTP/1.1\r\n\r\n".to_vec(),
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nC\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    h.req(10, &requests);
    let responses = [
        ok("A"),
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec(),
        b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nc".to_vec(),
    ]
    .concat();
    h.resp(20, &responses);
    assert_eq!(
        h.pairs(),
        [("/a".into(), 200), ("/b".into(), 200), ("/c".into(), 201)]
    );
    let paired = h.paired();
    assert!(
        paired[1].response.body.is_empty(),
        "HEAD answer has no body"
    );
    assert_eq!(&paired[2].request.body[..], b"C");
    assert!(
        paired
            .iter()
            .all(|e| e.request_ts_ns == 10 && e.response_ts_ns == 20)
    );
    h.close(CloseReason::Fin);
}

#[test]
fn request_timestamp_is_that_of_its_first_byte() {
    let mut h = Harness::open();
    let first = b"POST /a HTTP/1.1\r\nContent-Length: 4\r\n\r\n";
    h.req(10, first);
    // The body ends and the next request begins in the same segment.
    let next = [&b"body"[..], b"GET /b HT"].concat();
    h.req(20, &next);
    h.req(30, b"TP/1.1\r\n\r\n");
    h.resp(40, &[ok("a"), ok("b")].concat());
    let paired = h.paired();
    assert_eq!(paired[0].request_ts_ns, 10);
    assert_eq!(paired[1].request_ts_ns, 20);
    assert_eq!(&paired[0].request.body[..], b"body");
    h.close(CloseReason::End);
}

#[test]
fn gap_loses_pending_requests_then_resyncs() {
    let mut h = Harness::open();
    h.req(1, &get("/before"));
    h.resp(2, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
    h.gap(Direction::Response, 3, true);
    assert_eq!(h.lost(), [lost(LossCause::RingBufferDrop, "/before")]);
    // The rest of the old response, and a response chunk that ends up
    // before any new request: skipped.
    h.resp(4, b"rest of the old body");
    h.resp(5, &ok("stale"));
    // Request side: mid-message bytes are skipped until a request line.
    h.req(6, b"Host: old\r\n\r\n");
    h.req(7, &get("/after"));
    h.resp(8, &ok("fresh"));
    assert_eq!(h.pairs(), [("/after".into(), 200)]);
    assert_eq!(&h.paired()[0].response.body[..], b"fresh");
    // The partial response (head included) dropped at the gap, then
    // what was skipped.
    let skipped = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".len()
        + b"rest of the old body".len()
        + ok("stale").len()
        + b"Host: old\r\n\r\n".len();
    assert_eq!(h.stats().resync_skipped_bytes, skipped as u64);
    h.close(CloseReason::Fin);
    assert_eq!(h.stats().lost(LossCause::RingBufferDrop), 1);
}

#[test]
fn gap_loses_a_half_parsed_request() {
    let mut h = Harness::open();
    h.req(1, b"POST /upload HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    h.gap(Direction::Request, 2, false);
    assert_eq!(h.lost(), [lost(LossCause::Gap, "/upload")]);
    h.req(3, b"defghij");
    h.req(4, &get("/next"));
    h.resp(5, &ok("n"));
    assert_eq!(h.pairs(), [("/next".into(), 200)]);
    h.close(CloseReason::Fin);
    assert_eq!(h.stats().lost(LossCause::Gap), 1);
}

#[test]
fn midstream_open_waits_for_message_starts() {
    let mut h = Harness::new(HttpConfig::default(), true);
    h.req(1, b"lo world, the end of an upload");
    // A response start before any resynced request: an older answer.
    h.resp(2, &ok("old"));
    h.req(3, &get("/fresh"));
    h.resp(4, b"ody of an older response");
    h.resp(5, &ok("new"));
    assert_eq!(h.pairs(), [("/fresh".into(), 200)]);
    assert_eq!(&h.paired()[0].response.body[..], b"new");
    assert_eq!(h.stats().unmatched_responses, 0);
    assert!(h.stats().resync_skipped_bytes > 0);
    h.close(CloseReason::Fin);
}

#[test]
fn switching_protocols_stops_following_the_connection() {
    let mut h = Harness::open();
    h.req(
        1,
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    h.resp(
        2,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
    );
    // The 101 answers its request like any response: paired, compared.
    assert_eq!(h.pairs(), [("/ws".into(), 101)]);
    let ex = h.paired()[0];
    assert_eq!(ex.response.reason, "Switching Protocols");
    assert_eq!(ex.response.headers, [Header::new("Upgrade", "websocket")]);
    assert!(ex.response.body.is_empty());
    assert_eq!((ex.request_ts_ns, ex.response_ts_ns), (1, 2));
    assert!(h.lost().is_empty());
    assert_eq!(h.stats().upgraded_connections, 1);
    h.req(3, b"\x81\x85mask-and-payload");
    h.resp(4, b"\x81\x02yo");
    h.gap(Direction::Response, 5, false);
    h.fin(Direction::Response, 6);
    h.close(CloseReason::Fin);
    assert_eq!(h.out.len(), 1, "nothing more after the upgrade");
    assert_eq!(h.stats().upgraded_bytes, (4 + 18 + 4) as u64);
}

#[test]
fn requests_pipelined_behind_an_upgrade_are_lost() {
    let mut h = Harness::open();
    let mut wire =
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec();
    wire.extend_from_slice(&get("/behind"));
    h.req(1, &wire);
    h.resp(
        2,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(h.pairs(), [("/ws".into(), 101)]);
    assert_eq!(h.lost(), [lost(LossCause::Upgrade, "/behind")]);
    h.close(CloseReason::Fin);
    assert_eq!(h.stats().upgraded_connections, 1);
}

#[test]
fn connect_answered_with_2xx_is_paired_then_not_followed() {
    let mut h = Harness::open();
    h.req(
        1,
        b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
    );
    h.resp(
        2,
        b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03",
    );
    h.req(3, b"\x16\x03\x01 tls");
    h.resp(4, b"\x16\x03\x03 more tls");
    h.close(CloseReason::Rst);
    assert_eq!(h.pairs(), [("db.internal:5432".into(), 200)]);
    assert!(
        h.paired()[0].response.body.is_empty(),
        "the tunnel is no body"
    );
    assert!(h.lost().is_empty());
    assert_eq!(h.stats().upgraded_connections, 1);
    assert_eq!(h.stats().upgraded_bytes, (3 + 7 + 12) as u64);
}

#[test]
fn connect_refused_stays_http() {
    let mut h = Harness::open();
    h.req(1, b"CONNECT db.internal:5432 HTTP/1.1\r\n\r\n");
    h.resp(2, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno");
    h.req(3, &get("/after"));
    h.resp(4, &ok("yes"));
    assert_eq!(
        h.pairs(),
        [("db.internal:5432".into(), 403), ("/after".into(), 200)]
    );
    assert_eq!(h.stats().upgraded_connections, 0);
    h.close(CloseReason::Fin);
}

#[test]
fn close_with_pending_requests_names_the_reason() {
    for (reason, cause) in [
        (CloseReason::Fin, LossCause::Closed),
        (CloseReason::Rst, LossCause::Closed),
        (CloseReason::End, LossCause::Closed),
        (CloseReason::Idle, LossCause::Timeout),
        (CloseReason::Evicted, LossCause::Evicted),
    ] {
        let mut h = Harness::open();
        h.req(1, &[get("/a"), get("/b")].concat());
        h.req(2, b"POST /c HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc");
        h.resp(3, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc");
        h.close(reason);
        assert_eq!(
            h.lost(),
            [lost(cause, "/a"), lost(cause, "/b"), lost(cause, "/c")],
            "{reason:?}"
        );
        let truncated = b"POST /c HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc".len()
            + b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc".len();
        assert_eq!(h.stats().truncated_bytes, truncated as u64);
    }
}

#[test]
fn response_without_request_is_unmatched() {
    let mut h = Harness::open();
    h.resp(
        1,
        b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(h.stats().unmatched_responses, 1);
    assert!(h.out.is_empty());
    h.req(2, &get("/x"));
    h.resp(3, &ok("x"));
    h.resp(4, &ok("extra"));
    assert_eq!(h.pairs(), [("/x".into(), 200)]);
    assert_eq!(h.stats().unmatched_responses, 2);
    h.close(CloseReason::Fin);
}

#[test]
fn too_large_request_keeps_its_place() {
    let cfg = HttpConfig {
        limits: HttpLimits {
            max_body: 16,
            ..HttpLimits::default()
        },
        ..HttpConfig::default()
    };
    let mut h = Harness::new(cfg, false);
    let big = format!(
        "POST /big HTTP/1.1\r\nContent-Length: 40\r\n\r\n{}",
        "x".repeat(40)
    );
    h.req(1, &[big.as_bytes(), &get("/next")].concat());
    assert_eq!(h.lost(), [lost(LossCause::TooLarge, "/big")]);
    h.resp(
        2,
        &[
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n".to_vec(),
            ok("n"),
        ]
        .concat(),
    );
    assert_eq!(h.pairs(), [("/next".into(), 200)]);
    assert_eq!(h.stats().unmatched_responses, 0);
    h.close(CloseReason::Fin);
}

#[test]
fn too_large_response_loses_its_request() {
    let cfg = HttpConfig {
        limits: HttpLimits {
            max_body: 16,
            ..HttpLimits::default()
        },
        ..HttpConfig::default()
    };
    let mut h = Harness::new(cfg, false);
    h.req(1, &[get("/a"), get("/b")].concat());
    h.resp(2, &ok(&"y".repeat(40)));
    assert_eq!(h.lost(), [lost(LossCause::TooLarge, "/a")]);
    h.resp(3, &ok("b"));
    assert_eq!(h.pairs(), [("/b".into(), 200)]);
    h.close(CloseReason::Fin);
}

#[test]
fn parse_error_loses_pending_and_resyncs() {
    let mut h = Harness::open();
    h.req(1, &get("/ok"));
    let garbage = b"\x16\x03\x01\x00\xa5 not http\r\n";
    h.req(2, garbage);
    assert_eq!(h.lost(), [lost(LossCause::ParseError, "/ok")]);
    assert_eq!(h.stats().resync_skipped_bytes, garbage.len() as u64);
    h.resp(3, &ok("ok"));
    h.req(4, &get("/again"));
    h.resp(5, &ok("again"));
    assert_eq!(h.pairs(), [("/again".into(), 200)]);
    h.close(CloseReason::Fin);
    assert_eq!(h.stats().lost(LossCause::ParseError), 1);
}

#[test]
fn expect_continue_with_body_pairs() {
    let mut h = Harness::open();
    h.req(
        1,
        b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    h.resp(2, b"HTTP/1.1 100 Continue\r\n\r\n");
    h.req(3, b"hello");
    h.resp(4, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    let paired = h.paired();
    assert_eq!(paired.len(), 1);
    assert_eq!(&paired[0].request.body[..], b"hello");
    assert_eq!(paired[0].response.status, 201);
    assert_eq!((paired[0].request_ts_ns, paired[0].response_ts_ns), (1, 4));
    h.close(CloseReason::Fin);
}

#[test]
fn final_status_before_the_body() {
    let head = b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    let refused = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
    // The client sends the body anyway: paired when it ends.
    let mut h = Harness::open();
    h.req(1, head);
    h.resp(2, refused);
    assert!(h.out.is_empty());
    h.req(3, b"hello");
    assert_eq!(h.pairs(), [("/f".into(), 401)]);
    assert_eq!(h.paired()[0].response_ts_ns, 2);
    h.close(CloseReason::Fin);
    // The client gives up and closes: lost.
    let mut h = Harness::open();
    h.req(1, head);
    h.resp(2, refused);
    h.fin(Direction::Request, 3);
    h.close(CloseReason::Fin);
    assert_eq!(h.lost(), [lost(LossCause::Closed, "/f")]);
}

#[test]
fn pipeline_over_the_limit_falls_out_of_step() {
    let cfg = HttpConfig {
        max_pipeline: 2,
        ..HttpConfig::default()
    };
    let mut h = Harness::new(cfg, false);
    h.req(1, &[get("/1"), get("/2"), get("/3"), get("/4")].concat());
    assert_eq!(
        h.lost(),
        [
            lost(LossCause::TooLarge, "/3"),
            lost(LossCause::TooLarge, "/1"),
            lost(LossCause::TooLarge, "/2"),
        ]
    );
    assert_eq!(h.stats().requests_seen, 3, "/4 was skipped unparsed");
    assert_eq!(
        h.stats().resync_skipped_bytes,
        (get("/3").len() + get("/4").len()) as u64
    );
    h.resp(2, &[ok("1"), ok("2")].concat());
    h.req(3, &get("/5"));
    h.resp(4, &ok("5"));
    assert_eq!(h.pairs(), [("/5".into(), 200)]);
    h.close(CloseReason::Fin);
}

#[test]
fn server_fin_ends_a_close_delimited_response() {
    let mut h = Harness::open();
    h.req(1, b"GET /legacy HTTP/1.0\r\n\r\n");
    h.resp(
        2,
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ",
    );
    h.resp(3, b"it");
    assert!(h.out.is_empty());
    h.fin(Direction::Response, 4);
    let paired = h.paired();
    assert_eq!(paired.len(), 1);
    assert_eq!(&paired[0].response.body[..], b"all of it");
    assert_eq!(paired[0].response_ts_ns, 4);
    h.close(CloseReason::Fin);
}

#[test]
fn truncated_response_at_fin_is_closed() {
    let mut h = Harness::open();
    h.req(1, &get("/cut"));
    h.resp(2, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    h.fin(Direction::Response, 3);
    assert_eq!(h.lost(), [lost(LossCause::Closed, "/cut")]);
    assert_eq!(
        h.stats().truncated_bytes,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".len() as u64
    );
    h.close(CloseReason::Fin);
}

#[test]
fn ids_are_unique_across_connections() {
    let mut tracker = HttpTracker::new(HttpConfig::default());
    let key = |port| ConnKey {
        client: format!("10.0.0.1:{port}").parse().unwrap(),
        server: "10.0.0.5:80".parse().unwrap(),
    };
    let (a, b) = (key(1000), key(2000));
    let mut ca = tracker.open(&a, 0, false);
    let mut cb = tracker.open(&b, 0, false);
    tracker.data(&mut ca, &a, Direction::Request, 1, &get("/a"));
    tracker.data(&mut cb, &b, Direction::Request, 2, &get("/b"));
    tracker.data(&mut cb, &b, Direction::Response, 3, &ok("b"));
    tracker.data(&mut ca, &a, Direction::Response, 4, &ok("a"));
    tracker.close(ca, &a, 5, CloseReason::Fin);
    tracker.close(cb, &b, 5, CloseReason::Fin);
    let ids: Vec<(String, u64)> = tracker
        .outcomes()
        .filter_map(|o| match o {
            Outcome::Paired(e) => Some((e.request.target, e.id)),
            Outcome::Lost(_) => None,
        })
        .collect();
    assert_eq!(ids, [("/b".to_owned(), 1), ("/a".to_owned(), 0)]);
    let stats = tracker.stats();
    assert_eq!(stats.requests_seen, stats.paired + stats.lost_total());
    assert_eq!(stats.connections, 2);
}

/// Half-received bodies on many connections are bounded in total: the
/// connection that pushes the total over the limit falls out of step,
/// its request is lost as too large, and its bytes are let go.
#[test]
fn unpaired_bytes_are_bounded_over_all_connections() {
    let mut tracker = HttpTracker::new(HttpConfig {
        max_total_buffered: 1000,
        ..HttpConfig::default()
    });
    let key = |port| ConnKey {
        client: format!("10.0.0.1:{port}").parse().unwrap(),
        server: "10.0.0.5:80".parse().unwrap(),
    };
    let (a, b) = (key(1000), key(2000));
    let head = b"POST /o HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
    let mut ca = tracker.open(&a, 0, false);
    let mut cb = tracker.open(&b, 0, false);
    tracker.data(&mut ca, &a, Direction::Request, 1, head);
    tracker.data(&mut ca, &a, Direction::Request, 2, &[b'x'; 600]);
    assert!(tracker.stats().buffered_bytes >= 600);
    tracker.data(&mut cb, &b, Direction::Request, 3, head);
    tracker.data(&mut cb, &b, Direction::Request, 4, &[b'y'; 600]);
    let stats = tracker.stats();
    assert_eq!(stats.shed_connections, 1);
    assert!(stats.buffered_bytes <= 1000, "{}", stats.buffered_bytes);
    assert_eq!(stats.lost(LossCause::TooLarge), 1);
    tracker.close(ca, &a, 5, CloseReason::Fin);
    tracker.close(cb, &b, 5, CloseReason::Fin);
    let stats = tracker.stats();
    assert_eq!(stats.buffered_bytes, 0);
    assert_eq!(stats.requests_seen, 2);
    assert_eq!(stats.requests_seen, stats.paired + stats.lost_total());
}

#[test]
fn stats_index_losses_like_loss_cause_all() {
    let mut stats = HttpStats::default();
    for (i, cause) in LossCause::ALL.into_iter().enumerate() {
        assert_eq!(cause_index(cause), i);
        stats.lost[i] = i as u64 + 1;
        assert_eq!(stats.lost(cause), i as u64 + 1);
    }
    assert_eq!(stats.lost_total(), 55);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["lost"].as_object().map(|m| m.len()), Some(10));
    assert_eq!(json["lost"]["too_large"], 6);
    assert_eq!(json["requests_seen"], 0);
}

/// The server's answers in zeek's `methods.pcap` (Google's front end),
/// shortened.
fn answer(status_line: &str) -> Vec<u8> {
    format!("{status_line}\r\nContent-Type: text/html\r\nContent-Length: 4\r\n\r\nbody")
        .into_bytes()
}

/// One request per connection, as in zeek's `methods.pcap`: the request
/// line, then `Host: www.google.com`, bare LF line ends.
fn probe(line: &[u8], status_line: &str) -> Harness {
    let mut h = Harness::open();
    let mut wire = line.to_vec();
    wire.extend_from_slice(b"\nHost: www.google.com\n\n");
    h.req(1, &wire);
    h.resp(2, &answer(status_line));
    h.fin(Direction::Response, 3);
    h.close(CloseReason::Fin);
    h
}

/// The one exchange of a [`probe`], checked to be `method target` parsed as
/// HTTP/1.0.
fn paired_as_http_1_0<'a>(h: &'a Harness, line: &[u8], method: &str, target: &str) -> &'a Exchange {
    let paired = h.paired();
    assert_eq!(
        paired.len(),
        1,
        "{}: {:?}",
        String::from_utf8_lossy(line),
        h.out
    );
    let ex = paired[0];
    assert_eq!(
        (ex.request.method.as_str(), ex.request.target.as_str()),
        (method, target)
    );
    assert_eq!(ex.request.version, 0);
    ex
}

#[test]
fn request_line_without_the_minor_version_is_paired_as_http_1_0() {
    for (line, method, status) in [
        (&b"GET / HTTP/1."[..], "GET", "HTTP/1.1 200 OK"),
        (
            b"CCM_POST / HTTP/1.",
            "CCM_POST",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (b"CONNECT / HTTP/1.", "CONNECT", "HTTP/1.1 400 Bad Request"),
        (b"PUT / HTTP/1.", "PUT", "HTTP/1.0 411 Length Required"),
        (b"HEAD / HTTP/1.", "HEAD", "HTTP/1.1 200 OK"),
    ] {
        let h = probe(line, status);
        let ex = paired_as_http_1_0(&h, line, method, "/");
        assert_eq!(ex.request.headers, [Header::new("Host", "www.google.com")]);
        assert!(ex.request.raw.starts_with(line));
        assert_eq!(h.stats().resync_skipped_bytes, 0);
    }
}

#[test]
fn request_line_without_a_version_is_paired_as_http_1_0() {
    for (line, method, status) in [
        (&b"GET /HTTP/1.1"[..], "GET", "HTTP/1.0 403 Forbidden"),
        (
            b"CCM_POST /HTTP/1.1",
            "CCM_POST",
            "HTTP/1.0 400 Bad Request",
        ),
        (b"CONNECT /HTTP/1.1", "CONNECT", "HTTP/1.0 400 Bad Request"),
        (b"POST /HTTP/1.1", "POST", "HTTP/1.0 411 Length Required"),
        (b"HEAD /HTTP/1.1", "HEAD", "HTTP/1.0 400 Bad Request"),
    ] {
        let h = probe(line, status);
        let ex = paired_as_http_1_0(&h, line, method, "/HTTP/1.1");
        assert_eq!(ex.response.version, 0);
        // HEAD's answer has no body, whatever its Content-Length says.
        let body: &[u8] = if method == "HEAD" { b"" } else { b"body" };
        assert_eq!(&ex.response.body[..], body);
    }
}

#[test]
fn request_line_without_a_target_is_lost_with_its_method() {
    // tshark: method OPTIONS, target "HTTP/1.1" and "". `HTTP/1.1` is where
    // the version goes, no target: nothing to replay, but the request was
    // sent and answered, so it is reported.
    for line in [&b"OPTIONS HTTP/1.1"[..], b"OPTIONS"] {
        let h = probe(line, "HTTP/1.0 400 Bad Request");
        assert!(h.paired().is_empty());
        assert_eq!(
            h.lost_lines(),
            [(LossCause::ParseError, Some("OPTIONS"), None)],
            "{}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(h.stats().requests_seen, 1);
        assert_eq!(h.stats().lost(LossCause::ParseError), 1);
        // The request and the 400 that answered it are skipped.
        let skipped = line.len() + 23 + answer("HTTP/1.0 400 Bad Request").len();
        assert_eq!(h.stats().resync_skipped_bytes, skipped as u64);
        assert_eq!(h.stats().unmatched_responses, 0);
    }
}

#[test]
fn a_rejected_request_line_keeps_what_was_readable() {
    let h = probe(
        b"GET /x?q=1 HTTP/9.9",
        "HTTP/1.1 505 HTTP Version Not Supported",
    );
    assert_eq!(
        h.lost_lines(),
        [(LossCause::ParseError, Some("GET"), Some("/x?q=1"))]
    );
    let h = probe(b"PRI * HTTP/2.0", "HTTP/1.1 400 Bad Request");
    assert_eq!(
        h.lost_lines(),
        [(LossCause::ParseError, Some("PRI"), Some("*"))]
    );
}

#[test]
fn bytes_that_are_no_request_have_no_outcome() {
    // Neither tshark nor parallelrun sees a method here (the server still
    // answered 400 or 405): the bytes are counted as skipped.
    for line in [
        &b"OPTIONSHTTP/1.1"[..],
        b"GET/ HTTP/1.1",
        b"GET/HTTP/1.1",
        b"\xc3\x83\xc2\x82\xc3\x83 / HTTP/1.",
        b"\xc3\x83\xc2\x82\xc3\x83/HTTP/1.1",
        b"Host: x",
    ] {
        let h = probe(line, "HTTP/1.0 400 Bad Request");
        assert!(
            h.out.is_empty(),
            "{}: {:?}",
            String::from_utf8_lossy(line),
            h.out
        );
        assert_eq!(h.stats().requests_seen, 0);
        let skipped = line.len() + 23 + answer("HTTP/1.0 400 Bad Request").len();
        assert_eq!(h.stats().resync_skipped_bytes, skipped as u64);
    }
}

#[test]
fn a_rejected_request_is_lost_after_those_before_it() {
    let mut h = Harness::open();
    let mut wire = get("/first");
    wire.extend_from_slice(b"GET /second HTTP/1.1\r\nBad Header\r\n\r\n");
    h.req(1, &wire);
    assert_eq!(
        h.lost_lines(),
        [
            (LossCause::ParseError, Some("GET"), Some("/first")),
            (LossCause::ParseError, Some("GET"), Some("/second")),
        ]
    );
    h.resp(2, &ok("first"));
    h.resp(3, &ok("second"));
    h.req(4, &get("/third"));
    h.resp(5, &ok("third"));
    assert_eq!(h.pairs(), [("/third".into(), 200)]);
    h.close(CloseReason::Fin);
}

#[test]
fn a_head_over_the_limit_is_lost_as_too_large() {
    let cfg = HttpConfig {
        limits: HttpLimits {
            max_head: 64,
            max_headers: 2,
            ..HttpLimits::default()
        },
        ..HttpConfig::default()
    };
    let mut h = Harness::new(cfg, false);
    h.req(
        1,
        format!("GET /big HTTP/1.1\r\nX-Long: {}", "a".repeat(80)).as_bytes(),
    );
    assert_eq!(
        h.lost_lines(),
        [(LossCause::TooLarge, Some("GET"), Some("/big"))]
    );
    h.close(CloseReason::Fin);

    let mut h = Harness::new(cfg, false);
    h.req(1, b"GET /many HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    assert_eq!(
        h.lost_lines(),
        [(LossCause::TooLarge, Some("GET"), Some("/many"))]
    );
    h.close(CloseReason::Fin);

    // A request line cut by the limit: its method is read, not its target.
    let mut h = Harness::new(cfg, false);
    h.req(1, format!("GET /{}", "a".repeat(80)).as_bytes());
    assert_eq!(h.lost_lines(), [(LossCause::TooLarge, Some("GET"), None)]);
    h.close(CloseReason::Fin);
}

#[test]
fn lenient_request_lines_keep_the_connection_in_step() {
    let mut h = Harness::open();
    let mut wire = b"GET /a HTTP/1.\r\n\r\n".to_vec();
    wire.extend_from_slice(&get("/b"));
    h.req(1, &wire);
    h.resp(2, &ok("a"));
    h.resp(3, &ok("b"));
    assert_eq!(h.pairs(), [("/a".into(), 200), ("/b".into(), 200)]);
    h.close(CloseReason::Fin);
}

#[test]
fn a_request_skipped_while_resynchronizing_is_lost() {
    let mut h = Harness::new(HttpConfig::default(), true);
    h.req(1, b"tail of a body\r\n");
    h.req(2, b"GET /h2 HTTP/2.0\r\nHost: x\r\n\r\n");
    // Text that merely starts with an upper-case word is no request.
    h.req(3, b"UPDATE users SET x = 1\n");
    // A version-less line is accepted in step, but is no resync point.
    h.req(4, b"DELETE /tmp/x\n\n");
    assert_eq!(
        h.lost_lines(),
        [(LossCause::ParseError, Some("GET"), Some("/h2"))]
    );
    h.req(5, b"GET /v HTTP/1.\r\n\r\n");
    h.resp(6, &ok("v"));
    assert_eq!(h.pairs(), [("/v".into(), 200)]);
    h.close(CloseReason::Fin);
}

/// Pieces of conversations, well-formed or not, for the property below.
const PIECES: &[&[u8]] = &[
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.\nHost: x\n\n",
    b"GET /HTTP/1.1\nHost: x\n\n",
    b"OPTIONS HTTP/1.1\nHost: x\n\n",
    b"OPTIONS\nHost: x\n\n",
    b"GET/ HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"CONNECT db:5432 HTTP/1.1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01 tls",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x00",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
];

proptest::proptest! {
    #[test]
    fn every_request_seen_has_one_outcome(
        steps in proptest::collection::vec((0..PIECES.len(), 0u8..8, 0usize..40), 0..24),
    ) {
        let cfg = HttpConfig {
            limits: HttpLimits { max_head: 48, max_headers: 3, max_body: 8 },
            max_pipeline: 3,
            ..HttpConfig::default()
        };
        let mut h = Harness::new(cfg, steps.first().is_some_and(|s| s.1 == 7));
        for (ts, (piece, op, cut)) in steps.into_iter().enumerate() {
            let bytes = PIECES[piece];
            let bytes = &bytes[..bytes.len().min(cut.max(1) + bytes.len() / 2)];
            let ts = ts as u64 + 1;
            match op {
                0..=2 => h.req(ts, bytes),
                3..=5 => h.resp(ts, bytes),
                6 => h.gap(Direction::Request, ts, false),
                _ => h.fin(Direction::Response, ts),
            }
        }
        // Asserts requests_seen == paired + lost == outcomes.
        h.close(CloseReason::Fin);
    }
}
