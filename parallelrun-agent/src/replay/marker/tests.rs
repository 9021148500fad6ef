use super::*;

fn suffixed(host: &str) -> String {
    let marker = ShadowMarker {
        header: None,
        host_suffix: true,
    };
    String::from_utf8(
        marker
            .host(Some(host.as_bytes()), None)
            .unwrap()
            .into_owned(),
    )
    .unwrap()
}

#[test]
fn the_suffix_goes_after_the_name_before_the_port() {
    assert_eq!(suffixed("api.example"), "api.example-shadow");
    assert_eq!(suffixed("api.example:8080"), "api.example-shadow:8080");
    assert_eq!(suffixed("10.0.0.1:80"), "10.0.0.1-shadow:80");
    // No name to suffix: left valid.
    assert_eq!(suffixed("[fd00::1]:8080"), "[fd00::1]:8080");
    assert_eq!(suffixed("[fd00::1]"), "[fd00::1]");
    // An unbracketed IPv6 literal has no port to tell apart.
    assert_eq!(suffixed("fd00::1"), "fd00::1-shadow");
    assert_eq!(suffixed("host:"), "host-shadow:");
}

#[test]
fn the_override_is_suffixed_and_without_a_host_there_is_none() {
    let marker = ShadowMarker {
        header: None,
        host_suffix: true,
    };
    let host = marker.host(Some(b"captured"), Some("new.internal:81"));
    assert_eq!(host.as_deref(), Some(&b"new.internal-shadow:81"[..]));
    assert_eq!(marker.host(None, None), None);
    // Without the suffix the host is borrowed as it is.
    let plain = ShadowMarker::default_header();
    assert!(matches!(
        plain.host(Some(b"captured"), None),
        Some(Cow::Borrowed(b"captured"))
    ));
}

#[test]
fn headers_parse_like_curl_dash_h_and_bad_ones_say_why() {
    let h: MarkerHeader = " X-Shadow :  replay 1 ".parse().unwrap();
    assert_eq!(
        (h.name.as_str(), h.value.as_str()),
        ("X-Shadow", "replay 1")
    );
    assert_eq!(h.to_string(), "X-Shadow: replay 1");
    assert_eq!(h.lowercase_name(), "x-shadow");
    let empty: MarkerHeader = "X-Shadow:".parse().unwrap();
    assert_eq!(empty.value, "");
    assert_eq!(
        "X-Shadow".parse::<MarkerHeader>(),
        Err(MarkerError::NoColon)
    );
    assert!(matches!(
        "Bad Name: 1".parse::<MarkerHeader>(),
        Err(MarkerError::BadName(_))
    ));
    assert_eq!(
        "X-Shadow: a\rb".parse::<MarkerHeader>(),
        Err(MarkerError::BadValue)
    );
    for reserved in [
        "Content-Length: 0",
        "host: x",
        "HTTP2-Settings: AAA",
        "TE: trailers",
    ] {
        assert!(
            matches!(
                reserved.parse::<MarkerHeader>(),
                Err(MarkerError::Reserved(_))
            ),
            "{reserved}"
        );
    }
    assert!(MarkerError::NoColon.to_string().contains(DEFAULT_HEADER));
}

#[test]
fn the_marker_replaces_captured_fields_of_its_name_only() {
    let marker = ShadowMarker::default_header();
    assert!(marker.replaces("x-parallelrun-shadow"));
    assert!(marker.replaces("X-PARALLELRUN-SHADOW"));
    assert!(!marker.replaces("x-other"));
    assert!(!ShadowMarker::none().replaces("x-parallelrun-shadow"));
}
