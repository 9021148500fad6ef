use std::process::Command;

use super::*;

fn example(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Example {
    Example {
        id: 7,
        method: method.to_owned(),
        target: target.to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.to_owned(),
        body_omitted: 0,
    }
}

const BASE: &str = "http://10.0.0.2:8080";

/// What `sh` hands the program for `command`'s arguments (the command with
/// `curl` replaced by a printer of its arguments).
fn words_seen_by_sh(command: &str) -> Vec<String> {
    let rest = command.strip_prefix("curl ").expect(command);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\0' {rest}"))
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    let mut words: Vec<String> = s.split('\0').map(str::to_owned).collect();
    assert_eq!(words.pop().as_deref(), Some(""));
    words
}

#[test]
fn quoting_survives_hostile_values_through_a_real_shell() {
    let hostile = [
        "it's",
        "'",
        "''",
        "a'\\''b",
        "$(touch /tmp/pwned-by-curl-test)",
        "`id`",
        "${HOME}",
        "line one\nline two\r\n",
        "!! !$ * ? [a-z] ~ # ; & | < > \\ \"",
        "héllo wörld ✓",
        "",
        "--data-binary",
    ];
    for h in hostile {
        let e = example(
            h,
            &format!("/search?q={h}"),
            &[("X-Hostile", h), ("Content-Type", "text/plain")],
            h,
        );
        let line = curl(&e, BASE);
        assert!(!line.contains('\0'));
        assert_eq!(words_seen_by_sh(&line), args(&e, BASE), "{line}");
    }
    assert!(!std::path::Path::new("/tmp/pwned-by-curl-test").exists());
}

#[test]
fn quote_writes_embedded_quotes_as_close_escape_reopen() {
    assert_eq!(quote("a'b"), r"'a'\''b'");
    assert_eq!(quote(""), "''");
    assert_eq!(quote("$(x)"), "'$(x)'");
}

#[test]
fn a_typical_request() {
    let e = example(
        "POST",
        "/orders?id=3",
        &[
            ("Host", "shop.example"),
            ("Content-Type", "application/json"),
            ("Content-Length", "13"),
            ("Authorization", "[redacted]"),
            ("Accept", "*/*"),
            ("User-Agent", "app/1.0"),
        ],
        r#"{"qty": "2'"}"#,
    );
    assert_eq!(
        curl(&e, "http://10.0.0.2:8080/"),
        r#"curl -sS -X 'POST' 'http://10.0.0.2:8080/orders?id=3' -H 'Host: shop.example' -H 'Content-Type: application/json' -H 'Authorization: [redacted]' -H 'Accept: */*' -H 'User-Agent: app/1.0' --data-binary '{"qty": "2'\''"}'"#
    );
}

#[test]
fn framing_and_hop_by_hop_headers_are_dropped_and_host_kept() {
    let e = example(
        "PUT",
        "/x",
        &[
            ("host", "api.example:8443"),
            ("Transfer-Encoding", "chunked"),
            ("content-length", "5"),
            ("Connection", "keep-alive, X-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("x-hop", "1"),
            ("TE", "trailers"),
            ("Expect", "100-continue"),
            ("Upgrade", "h2c"),
            ("X-Kept", "yes"),
            ("Bad Name", "no"),
            ("X-Empty", ""),
            ("X-Multi", "a\r\nInjected: 1"),
        ],
        "hello",
    );
    let a = args(&e, BASE);
    let headers: Vec<&str> = a
        .iter()
        .zip(a.iter().skip(1))
        .filter(|(f, _)| *f == "-H")
        .map(|(_, h)| h.as_str())
        .collect();
    assert_eq!(
        headers,
        [
            "host: api.example:8443",
            "X-Kept: yes",
            "X-Empty;",
            "X-Multi: a  Injected: 1",
            "Accept:",
            "User-Agent:",
            "Content-Type:",
        ]
    );
    assert_eq!(a.last().map(String::as_str), Some("hello"));
}

#[test]
fn redacted_values_stay_redacted_and_are_not_globbed() {
    let e = example(
        "GET",
        "/login?user=al&token=[redacted]",
        &[("Cookie", "[redacted]")],
        "",
    );
    let line = curl(&e, BASE);
    assert!(line.starts_with("curl -sS -g -X 'GET' "), "{line}");
    assert!(line.contains("'http://10.0.0.2:8080/login?user=al&token=[redacted]'"));
    assert!(line.contains("-H 'Cookie: [redacted]'"), "{line}");
    // No body, so no data flag and no content type.
    assert!(!line.contains("--data"), "{line}");
    assert!(!line.contains("Content-Type"), "{line}");
}

#[test]
fn odd_targets_methods_and_bodies() {
    // HEAD is --head; curl would wait for a body after -X HEAD.
    let line = curl(&example("HEAD", "/", &[], ""), BASE);
    assert_eq!(
        line,
        "curl -sS --head 'http://10.0.0.2:8080/' -H 'Accept:' -H 'User-Agent:'"
    );
    // Absolute form keeps its path, on the new service.
    let a = args(
        &example("GET", "http://old.example:80/p?q=1", &[], ""),
        BASE,
    );
    assert!(
        a.contains(&"http://10.0.0.2:8080/p?q=1".to_owned()),
        "{a:?}"
    );
    let a = args(&example("GET", "https://old.example", &[], ""), BASE);
    assert!(a.contains(&"http://10.0.0.2:8080/".to_owned()), "{a:?}");
    // Asterisk form.
    let a = args(&example("OPTIONS", "*", &[], ""), BASE);
    let i = a.iter().position(|x| x == "--request-target").unwrap();
    assert_eq!(a[i + 1], "*");
    // Dot segments are kept as sent.
    let line = curl(&example("GET", "/a/../etc/passwd", &[], ""), BASE);
    assert!(line.contains("--path-as-is"), "{line}");
    let line = curl(&example("GET", "/a/b.c/..d", &[], ""), BASE);
    assert!(!line.contains("--path-as-is"), "{line}");
    // A body starting with @ is data, not a file to read.
    let line = curl(&example("POST", "/", &[], "@/etc/passwd"), BASE);
    assert!(line.ends_with("--data-raw '@/etc/passwd'"), "{line}");
    // Accepting an encoding decodes the response for the terminal.
    let line = curl(
        &example("GET", "/", &[("Accept-Encoding", "gzip")], ""),
        BASE,
    );
    assert!(line.contains("--compressed"), "{line}");
}

#[test]
fn an_incomplete_body_is_said_in_a_comment() {
    let mut e = example("POST", "/upload", &[("Content-Type", "image/png")], "");
    e.body_omitted = 4096;
    let line = curl(&e, BASE);
    assert!(
        line.ends_with(
            "--data-binary '' # 4096 body bytes were not kept: the body sent is incomplete"
        ),
        "{line}"
    );
    // The comment changes nothing the shell passes.
    assert_eq!(words_seen_by_sh(&line), args(&e, BASE));

    let e = example("POST", "/", &[], "a\0b");
    let line = curl(&e, BASE);
    assert!(line.contains("--data-binary 'ab' # NUL bytes"), "{line}");
    assert_eq!(words_seen_by_sh(&line), args(&e, BASE));
}

#[test]
fn an_http2_request_goes_over_h2c_with_its_authority_as_host() {
    let e = example(
        "GET",
        "/users/7",
        &[
            (":authority", "svc.internal:50051"),
            (":scheme", "http"),
            ("accept", "application/json"),
            ("user-agent", "grpc-go/1.60"),
        ],
        "",
    );
    assert_eq!(
        curl(&e, "http://10.0.0.2:8080"),
        "curl -sS -X 'GET' 'http://10.0.0.2:8080/users/7' --http2-prior-knowledge -H \
         'Host: svc.internal:50051' -H 'accept: application/json' -H 'user-agent: grpc-go/1.60'"
    );
}
