use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};

use super::*;

/// The sample line `name{labels} value` (labels may be empty), if any.
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_owned)
}

#[test]
fn discriminants_match_all() {
    for (i, r) in SkipReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
    }
}

#[test]
fn every_label_value_is_present_from_the_start() {
    let text = Metrics::new().encode();
    for r in SkipReason::ALL {
        let series = format!("parallelrun_skipped_total{{reason=\"{}\"}}", r.name());
        assert_eq!(sample(&text, &series).as_deref(), Some("0"), "{series}");
    }
    for c in LossCause::ALL {
        let series = format!("parallelrun_lost_total{{cause=\"{}\"}}", c.name());
        assert_eq!(sample(&text, &series).as_deref(), Some("0"), "{series}");
    }
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn encode_shows_increments_under_their_names() {
    let m = Metrics::new();
    m.captured();
    m.captured();
    m.replayed();
    m.matched();
    m.mismatched();
    m.noise();
    m.noise_unchecked();
    m.skipped(SkipReason::RateLimit);
    m.skipped(SkipReason::NewDown);
    m.skipped(SkipReason::NewDown);
    m.lost(LossCause::ParseError);
    m.replay_error(ReplayTarget::Secondary, "timeout");
    m.log_errors(1);
    m.set_reassembly(3, 4096);
    m.observe_old(2_000_000); // 2 ms
    m.observe_new(40_000_000_000); // 40 s: past the last bucket
    let text = m.encode();
    for (series, value) in [
        ("parallelrun_requests_captured_total", "2"),
        ("parallelrun_replayed_total", "1"),
        ("parallelrun_matched_total", "1"),
        ("parallelrun_mismatched_total", "1"),
        ("parallelrun_noise_total", "1"),
        ("parallelrun_noise_unchecked_total", "1"),
        ("parallelrun_log_errors_total", "1"),
        ("parallelrun_skipped_total{reason=\"rate_limit\"}", "1"),
        ("parallelrun_skipped_total{reason=\"new_down\"}", "2"),
        ("parallelrun_skipped_total{reason=\"method\"}", "0"),
        ("parallelrun_lost_total{cause=\"parse_error\"}", "1"),
        (
            "parallelrun_replay_errors_total{target=\"secondary\",kind=\"timeout\"}",
            "1",
        ),
        ("parallelrun_reassembly_connections", "3"),
        ("parallelrun_reassembly_buffered_bytes", "4096"),
        ("parallelrun_old_latency_seconds_bucket{le=\"0.001\"}", "0"),
        ("parallelrun_old_latency_seconds_bucket{le=\"0.0025\"}", "1"),
        ("parallelrun_old_latency_seconds_count", "1"),
        ("parallelrun_new_latency_seconds_bucket{le=\"30.0\"}", "0"),
        ("parallelrun_new_latency_seconds_bucket{le=\"+Inf\"}", "1"),
    ] {
        assert_eq!(
            sample(&text, series).as_deref(),
            Some(value),
            "{series} in\n{text}"
        );
    }
    assert!(text.contains("# TYPE parallelrun_old_latency_seconds histogram"));
    assert!(text.contains("# UNIT parallelrun_old_latency_seconds seconds"));
}

#[test]
fn kernel_totals_are_not_counted_twice() {
    let m = Metrics::new();
    let mut k = KernelCounters::default();
    k.0[KernelCounter::PacketsSeen as usize] = 10;
    k.0[KernelCounter::RingBufFull as usize] = 2;
    k.0[KernelCounter::BytesEmitted as usize] = 1500;
    m.set_kernel(&k);
    m.set_kernel(&k);
    k.0[KernelCounter::PacketsSeen as usize] = 15;
    m.set_kernel(&k);
    let text = m.encode();
    assert_eq!(
        sample(&text, "parallelrun_kernel_packets_seen_total").as_deref(),
        Some("15")
    );
    assert_eq!(
        sample(&text, "parallelrun_ring_buffer_drops_total").as_deref(),
        Some("2")
    );
    assert_eq!(
        sample(&text, "parallelrun_kernel_payload_bytes_total").as_deref(),
        Some("1500")
    );
    // Reloaded program: its counters start over at 4.
    k.0[KernelCounter::PacketsSeen as usize] = 4;
    m.set_kernel(&k);
    assert_eq!(
        sample(&m.encode(), "parallelrun_kernel_packets_seen_total").as_deref(),
        Some("19")
    );
}

#[test]
fn interface_totals_become_a_gauge_and_counters_without_double_counting() {
    let m = Metrics::new();
    let mut stats = InterfaceStats {
        attached: 2,
        attaches: 2,
        ..InterfaceStats::default()
    };
    m.set_interfaces(&stats);
    m.set_interfaces(&stats);
    stats.attached = 1;
    stats.attaches = 3;
    stats.detaches = 2;
    stats.attach_errors = 1;
    m.set_interfaces(&stats);
    let text = m.encode();
    for (series, want) in [
        ("parallelrun_interfaces_attached", "1"),
        ("parallelrun_interface_attaches_total", "3"),
        ("parallelrun_interface_detaches_total", "2"),
        ("parallelrun_interface_attach_errors_total", "1"),
    ] {
        assert_eq!(sample(&text, series).as_deref(), Some(want), "{series}");
    }
}

async fn get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("response within 5 s")
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn serves_metrics_over_http() {
    let m = Metrics::new();
    m.mismatched();
    let (tx, rx) = oneshot::channel::<()>();
    let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&m), async {
        let _ = rx.await;
    })
    .await
    .unwrap();
    assert_ne!(addr.port(), 0);

    let res = get(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = res.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {CONTENT_TYPE}"))
    );
    assert_eq!(
        sample(body, "parallelrun_mismatched_total").as_deref(),
        Some("1")
    );

    let res = get(
        addr,
        "GET /other HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 404 Not Found\r\n"), "{res}");

    let res = get(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert!(res.starts_with("HTTP/1.1 405 "), "{res}");

    tx.send(()).unwrap();
    // Stops accepting: connecting fails once the listener is closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bind_error_names_the_address_and_the_fix() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve(addr, Metrics::new(), std::future::pending())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(msg.contains("--metrics 127.0.0.1:PORT"), "{msg}");
}

/// The per-endpoint series carry the skip reasons and loss causes, and
/// `rules_info` the rules, as the summary has them.
#[test]
fn endpoint_series_carry_reasons_causes_and_rules() {
    let mut results = crate::summary::record::tests::results(10, 5);
    results.skipped("GET /a", "sample");
    results.skipped("GET /a", "sample");
    results.lost("GET /a", "timeout");
    let rules = results.rules().clone();
    let metrics = Metrics::with_endpoints(Some(Arc::new(Mutex::new(results))));
    let text = metrics.encode();
    let series = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        series(r#"parallelrun_endpoint_skipped_total{endpoint="GET /a",reason="sample"}"#),
        "2"
    );
    assert_eq!(
        series(r#"parallelrun_endpoint_lost_total{endpoint="GET /a",cause="timeout"}"#),
        "1"
    );
    let info = text
        .lines()
        .find(|l| l.starts_with("parallelrun_rules_info{"))
        .unwrap_or_else(|| panic!("no rules_info in\n{text}"));
    assert!(info.ends_with(" 1"), "{info}");
    for (k, v) in endpoints::rules_labels(&rules) {
        assert!(info.contains(&format!("{k}=\"{v}\"")), "{k}: {info}");
    }
}
