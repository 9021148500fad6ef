use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

fn pattern(s: &str) -> Pattern {
    match Pattern::parse(s) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The endpoint of one request, with what it folded.
fn classify(e: &mut Endpoints, method: &str, target: &str) -> (String, Vec<String>) {
    let c = e.classify(method, target);
    (c.endpoint.to_owned(), c.folded)
}

fn name(e: &mut Endpoints, method: &str, target: &str) -> String {
    let (name, folded) = classify(e, method, target);
    assert_eq!(folded, Vec::<String>::new(), "{method} {target} folded");
    name
}

#[test]
fn numeric_ids_are_one_endpoint() {
    let mut e = Endpoints::new(Vec::new(), 100, 20);
    let names: HashSet<String> = (0..1000)
        .map(|n| name(&mut e, "GET", &format!("/users/{n}")))
        .collect();
    assert_eq!(names, HashSet::from(["GET /users/{id}".to_owned()]));
    assert_eq!(
        name(&mut e, "GET", "/users/7/orders/12"),
        "GET /users/{id}/orders/{id}"
    );
    assert_eq!(name(&mut e, "POST", "/users/7"), "POST /users/{id}");
}

#[test]
fn query_fragment_and_absolute_form_are_ignored() {
    let mut e = Endpoints::new(Vec::new(), 100, 20);
    assert_eq!(name(&mut e, "GET", "/search?q=1"), "GET /search");
    assert_eq!(name(&mut e, "GET", "/search?q=2&page=3"), "GET /search");
    assert_eq!(name(&mut e, "GET", "/search#top"), "GET /search");
    assert_eq!(name(&mut e, "GET", "/search?next=/a/b"), "GET /search");
    assert_eq!(
        name(&mut e, "GET", "http://example.com/search?q=4"),
        "GET /search"
    );
    assert_eq!(
        name(&mut e, "GET", "https://example.com:8443/users/5"),
        "GET /users/{id}"
    );
    assert_eq!(name(&mut e, "GET", "http://example.com"), "GET /");
    assert_eq!(name(&mut e, "GET", "http://example.com?q"), "GET /");
    assert_eq!(name(&mut e, "OPTIONS", "*"), "OPTIONS *");
    assert_eq!(
        name(&mut e, "CONNECT", "example.com:443"),
        "CONNECT example.com:443"
    );
    assert_eq!(target_path("/a/b?c"), "/a/b");
    assert_eq!(target_path("/a/http://x"), "/a/http://x");
}

#[test]
fn uuid_hex_and_token_ids() {
    let mut e = Endpoints::new(Vec::new(), 100, 20);
    for id in [
        "123e4567-e89b-12d3-a456-426614174000",
        "123E4567-E89B-12D3-A456-426614174000",
        "deadbeefdeadbeef",
        "0123456789abcdef0123456789abcdef",
        "aB3dE5fG7hI9jK1lM3nO",
        "user_2fXk9Lm-Qp81ZzTt0a",
    ] {
        assert_eq!(
            name(&mut e, "GET", &format!("/things/{id}/x")),
            "GET /things/{id}/x",
            "{id}"
        );
    }
    for literal in [
        "deadbeef",                   // short hex
        "123e4567-e89b",              // a piece of a UUID
        "user_profile_settings_page", // no digit
        "abc1",                       // short
        "aB3dE5fG7hI9jK1lM3n.",       // not a token character
    ] {
        assert_eq!(
            name(&mut e, "GET", &format!("/things/{literal}")),
            format!("GET /things/{literal}"),
            "{literal}"
        );
    }
}

#[test]
fn high_cardinality_position_is_learned() {
    let learn_after = 5;
    let mut e = Endpoints::new(Vec::new(), 100, learn_after);
    let users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
    let mut earlier = Vec::new();
    for user in &users[..learn_after] {
        let n = name(&mut e, "GET", &format!("/users/{user}"));
        assert_eq!(n, format!("GET /users/{user}"));
        // Seen again: the same value, still literal.
        assert_eq!(name(&mut e, "GET", &format!("/users/{user}?again")), n);
        earlier.push(n);
    }
    earlier.sort();
    let (n, folded) = classify(&mut e, "GET", &format!("/users/{}", users[learn_after]));
    assert_eq!(n, "GET /users/{param}");
    assert_eq!(folded, earlier);
    for user in &users {
        assert_eq!(
            name(&mut e, "GET", &format!("/users/{user}")),
            "GET /users/{param}"
        );
    }
    // Another method is another parent: not learned.
    assert_eq!(
        name(&mut e, "DELETE", "/users/alice"),
        "DELETE /users/alice"
    );
}

#[test]
fn learning_keeps_the_segments_after() {
    let mut e = Endpoints::new(Vec::new(), 100, 2);
    assert_eq!(
        name(&mut e, "GET", "/users/alice/orders"),
        "GET /users/alice/orders"
    );
    assert_eq!(name(&mut e, "GET", "/users/bob"), "GET /users/bob");
    // The third user learns the position: /users/bob goes to the template
    // of this request, /users/alice/orders waits for its own.
    let (n, folded) = classify(&mut e, "GET", "/users/carol");
    assert_eq!(n, "GET /users/{param}");
    assert_eq!(folded, ["GET /users/bob"]);
    let (n, folded) = classify(&mut e, "GET", "/users/dave/orders");
    assert_eq!(n, "GET /users/{param}/orders");
    assert_eq!(folded, ["GET /users/alice/orders"]);
    assert_eq!(
        name(&mut e, "GET", "/users/alice/orders"),
        "GET /users/{param}/orders"
    );
}

#[test]
fn learning_under_a_folded_parent_is_carried() {
    let mut e = Endpoints::new(Vec::new(), 100, 2);
    // Position 2 learned under /a/x.
    for leaf in ["p", "q", "r"] {
        classify(&mut e, "GET", &format!("/a/x/{leaf}"));
    }
    assert_eq!(name(&mut e, "GET", "/a/x/s"), "GET /a/x/{param}");
    // Position 1 learned under /a: /a/x/{param} folds into
    // /a/{param}/{param}, and position 2 stays learned.
    name(&mut e, "GET", "/a/y");
    let (n, folded) = classify(&mut e, "GET", "/a/z");
    assert_eq!(n, "GET /a/{param}");
    assert_eq!(folded, ["GET /a/y"]);
    let (n, folded) = classify(&mut e, "GET", "/a/w/new");
    assert_eq!(n, "GET /a/{param}/{param}");
    assert_eq!(folded, ["GET /a/x/{param}"]);
}

#[test]
fn low_cardinality_positions_stay_apart() {
    let mut e = Endpoints::new(Vec::new(), 100, 20);
    for _ in 0..100 {
        assert_eq!(name(&mut e, "GET", "/api/v1/health"), "GET /api/v1/health");
        assert_eq!(name(&mut e, "GET", "/api/v2/health"), "GET /api/v2/health");
        assert_eq!(name(&mut e, "GET", "/api/v1/users"), "GET /api/v1/users");
    }
}

#[test]
fn patterns_win_and_are_never_folded() {
    let patterns = vec![pattern("GET /users/{name}"), pattern("/static/{path*}")];
    let mut e = Endpoints::new(patterns, 100, 2);
    assert_eq!(name(&mut e, "GET", "/users/alice"), "GET /users/{name}");
    assert_eq!(name(&mut e, "GET", "/users/7"), "GET /users/{name}");
    assert_eq!(
        name(&mut e, "HEAD", "/static/css/a.css?v=3"),
        "* /static/{path*}"
    );
    assert_eq!(name(&mut e, "GET", "/static"), "* /static/{path*}");
    // Not matched by a pattern: inferred and learned.
    for user in ["a", "b"] {
        assert_eq!(
            name(&mut e, "POST", &format!("/users/{user}")),
            format!("POST /users/{user}")
        );
    }
    let (n, folded) = classify(&mut e, "POST", "/users/c");
    assert_eq!(n, "POST /users/{param}");
    assert_eq!(folded, ["POST /users/a", "POST /users/b"]);
    // First segments are never learned: top-level names stay apart, more
    // of them than learn_after.
    for first in ["x", "y", "z"] {
        assert_eq!(
            name(&mut e, "GET", &format!("/{first}")),
            format!("GET /{first}")
        );
    }
    assert_eq!(name(&mut e, "GET", "/users/bob"), "GET /users/{name}");
    assert_eq!(name(&mut e, "GET", "/static/x"), "* /static/{path*}");
}

#[test]
fn the_bound_sends_new_names_to_other() {
    let mut e = Endpoints::new(vec![pattern("GET /health")], 3, 20);
    assert_eq!(name(&mut e, "GET", "/a"), "GET /a");
    assert_eq!(name(&mut e, "GET", "/b"), "GET /b");
    // The pattern's place is kept for it.
    assert_eq!(name(&mut e, "GET", "/c"), OTHER);
    assert_eq!(name(&mut e, "GET", "/health"), "GET /health");
    assert_eq!(name(&mut e, "GET", "/d/1"), OTHER);
    assert_eq!(name(&mut e, "GET", "/a?x"), "GET /a");
    assert_eq!(name(&mut e, "GET", "/b"), "GET /b");
}

#[test]
fn folding_frees_names() {
    let mut e = Endpoints::new(Vec::new(), 3, 3);
    for user in ["a", "b", "c"] {
        assert_eq!(
            name(&mut e, "GET", &format!("/u/{user}")),
            format!("GET /u/{user}")
        );
    }
    assert_eq!(name(&mut e, "PUT", "/other"), OTHER);
    let (n, folded) = classify(&mut e, "GET", "/u/d");
    assert_eq!(n, "GET /u/{param}");
    assert_eq!(folded, ["GET /u/a", "GET /u/b", "GET /u/c"]);
    assert_eq!(name(&mut e, "POST", "/v"), "POST /v");
    assert_eq!(name(&mut e, "POST", "/w"), "POST /w");
    assert_eq!(name(&mut e, "POST", "/x"), OTHER);
    assert_eq!(name(&mut e, "GET", "/u/e"), "GET /u/{param}");
}

#[test]
fn no_endpoints_at_all() {
    let mut e = Endpoints::new(vec![pattern("GET /a")], 0, 0);
    assert_eq!(name(&mut e, "GET", "/a"), OTHER);
    assert_eq!(name(&mut e, "GET", "/b"), OTHER);
}

#[test]
fn learn_after_zero_learns_every_literal() {
    let mut e = Endpoints::new(Vec::new(), 10, 0);
    assert_eq!(name(&mut e, "GET", "/a/b"), "GET /a/{param}");
    assert_eq!(name(&mut e, "GET", "/a/"), "GET /a/");
}

#[test]
fn empty_and_placeholder_segments_are_kept() {
    let mut e = Endpoints::new(Vec::new(), 100, 20);
    assert_eq!(name(&mut e, "GET", "/"), "GET /");
    assert_eq!(name(&mut e, "GET", "/a/"), "GET /a/");
    assert_eq!(name(&mut e, "GET", "/a//b"), "GET /a//b");
    assert_eq!(name(&mut e, "GET", "/x/{id}"), "GET /x/{id}");
    assert_eq!(name(&mut e, "GET", "/x/{user}"), "GET /x/{user}");
    assert_eq!(name(&mut e, "GET", ""), "GET ");
    assert_eq!(name(&mut e, "", "/"), " /");
}

#[test]
fn pattern_display_normalises() {
    for (given, shown) in [
        ("GET /users/{id}", "GET /users/{id}"),
        ("/users/{id}", "* /users/{id}"),
        ("*   /users/{id}", "* /users/{id}"),
        ("  POST\t/a/{rest*}  ", "POST /a/{rest*}"),
        ("/", "* /"),
        ("M-SEARCH /x/", "M-SEARCH /x/"),
    ] {
        assert_eq!(pattern(given).to_string(), shown);
        assert_eq!(pattern(shown), pattern(given));
    }
}

#[test]
fn pattern_parse_errors() {
    for (given, says) in [
        ("", "empty"),
        ("   ", "empty"),
        ("GET", "no path"),
        ("*", "no path"),
        ("users/{id}", "must start with `/`: write `/users/{id}`"),
        ("GET users", "must start with `/`"),
        ("get /users", "write `GET`"),
        ("G.T /users", "not a method"),
        ("GET /a b", "spaces"),
        ("GET /a?x=1", "write `/a`"),
        ("GET /a#f", "not a query or fragment"),
        ("GET /a/{id", "whole segment"),
        ("GET /a/id}", "whole segment"),
        ("GET /a/x{id}", "whole segment"),
        ("GET /a/{{id}}", "whole segment"),
        ("GET /a/{}", "no name"),
        ("GET /a/{*}", "no name"),
        ("GET /a/{user-id}", "letters, digits and `_`"),
        ("GET /a/{rest*}/b", "must be the last segment"),
    ] {
        match Pattern::parse(given) {
            Ok(p) => panic!("{given:?} parsed as {p}"),
            Err(e) => {
                assert_eq!(e.pattern, given);
                assert!(e.why.contains(says), "{given:?}: {e}");
            }
        }
    }
}

#[test]
fn pattern_matches_requests() {
    let p = pattern("GET /users/{id}/orders");
    assert!(p.matches("GET", "/users/7/orders"));
    assert!(p.matches("GET", "/users/alice/orders?x=1"));
    assert!(p.matches("GET", "http://h/users/alice/orders"));
    assert!(!p.matches("POST", "/users/7/orders"));
    assert!(!p.matches("get", "/users/7/orders"));
    assert!(!p.matches("GET", "/users//orders"));
    assert!(!p.matches("GET", "/users/7/orders/1"));
    assert!(!p.matches("GET", "/users/7"));
    assert!(!p.matches("GET", "*"));
    let rest = pattern("/files/{path*}");
    for target in ["/files", "/files/", "/files/a", "/files/a/b/c?d"] {
        assert!(rest.matches("PUT", target), "{target}");
    }
    assert!(!rest.matches("PUT", "/filesx"));
    assert!(!rest.matches("PUT", "/"));
    let root = pattern("GET /");
    assert!(root.matches("GET", "/"));
    assert!(root.matches("GET", "/?q"));
    assert!(!root.matches("GET", "/a"));
}

#[test]
fn pattern_matches_endpoints() {
    let p = pattern("GET /users/{id}/orders");
    assert!(p.matches_endpoint("GET /users/{id}/orders"));
    assert!(p.matches_endpoint("GET /users/{param}/orders"));
    assert!(p.matches_endpoint("GET /users/7/orders"));
    assert!(!p.matches_endpoint("POST /users/{id}/orders"));
    assert!(!p.matches_endpoint("* /users/{id}/orders"));
    assert!(!p.matches_endpoint("GET /users/{rest*}/orders"));
    assert!(!p.matches_endpoint("GET /users/{id}"));
    assert!(!p.matches_endpoint(OTHER));
    let literal = pattern("* /users/me");
    assert!(literal.matches_endpoint("GET /users/me"));
    assert!(literal.matches_endpoint("* /users/me"));
    assert!(!literal.matches_endpoint("GET /users/{id}"));
    let rest = pattern("/static/{path*}");
    assert!(rest.matches_endpoint("* /static/{path*}"));
    assert!(rest.matches_endpoint("GET /static/{id}/a.css"));
    assert!(rest.matches_endpoint("GET /static"));
    assert!(!rest.matches_endpoint("CONNECT example.com:443"));
    // A name from a pattern falls under that pattern.
    for s in ["GET /users/{id}", "* /a/{b}/c/{d*}", "/"] {
        let p = pattern(s);
        assert!(p.matches_endpoint(&p.to_string()), "{s}");
    }
}

#[test]
fn locations_are_generalised() {
    for (given, shown) in [
        ("body:/items/3/price", "body:/items/*/price"),
        ("body:/0", "body:/*"),
        ("body:/items/3/tags/12", "body:/items/*/tags/*"),
        ("body:/items/3a/b", "body:/items/3a/b"),
        ("body:/a~1b/2", "body:/a~1b/*"),
        ("body:/", "body:/"),
        ("body:", "body:"),
        ("body", "body"),
        ("status", "status"),
        ("header:x-request-id", "header:x-request-id"),
        ("header:42", "header:42"),
        ("grpc", "grpc"),
        ("grpc:/2/1[0]/3", "grpc:/2/1[*]/3"),
        ("grpc[12]:/2/1[3]", "grpc[*]:/2/1[*]"),
        ("grpc[1]", "grpc[*]"),
        ("grpc:/item/related/0", "grpc:/item/related/0"),
        ("grpc:/a[b]/c[", "grpc:/a[b]/c["),
        ("grpc-status", "grpc-status"),
    ] {
        assert_eq!(generalise_location(given), shown, "{given}");
    }
}

#[test]
fn deep_positions_are_not_learned() {
    let mut e = Endpoints::new(Vec::new(), 100, 1);
    // The last position learned, and the first not (under another method,
    // not to count `x` at position 15 of `GET`).
    let shallow = "/x".repeat(MAX_LEARNED_DEPTH - 1);
    let deep = "/x".repeat(MAX_LEARNED_DEPTH);
    assert_eq!(
        name(&mut e, "GET", &format!("{shallow}/v1")),
        format!("GET {shallow}/v1")
    );
    let (n, folded) = classify(&mut e, "GET", &format!("{shallow}/v2"));
    assert_eq!(n, format!("GET {shallow}/{{param}}"));
    assert_eq!(folded, [format!("GET {shallow}/v1")]);
    for v in ["v1", "v2", "v3"] {
        assert_eq!(
            name(&mut e, "PUT", &format!("{deep}/{v}")),
            format!("PUT {deep}/{v}")
        );
    }
}

#[test]
fn the_parent_bound_stops_learning_and_folds_wait_for_their_template() {
    // One endpoint: four parents (the first segment is never one).
    let mut e = Endpoints::new(Vec::new(), 1, 1);
    assert_eq!(name(&mut e, "GET", "/o/p/q/r/s/t"), "GET /o/p/q/r/s/t");
    assert_eq!(e.parents.len(), 4);
    // The fifth parent (`GET /o/p/q/r/s`) is not tracked: not learned.
    assert_eq!(name(&mut e, "GET", "/o/p/q/r/s/u"), OTHER);
    assert_eq!(e.parents.len(), 4);
    // Position 4 is learned under `GET /o/p/q/r`: the name handed out waits
    // for a request of its template, and keeps its place till then.
    assert_eq!(name(&mut e, "GET", "/o/p/q/r/v"), OTHER);
    let (n, folded) = classify(&mut e, "GET", "/o/p/q/r/w/t");
    assert_eq!(n, "GET /o/p/q/r/{param}/t");
    assert_eq!(folded, ["GET /o/p/q/r/s/t"]);
    assert_eq!(
        name(&mut e, "GET", "/o/p/q/r/s/t"),
        "GET /o/p/q/r/{param}/t"
    );
}

#[test]
fn huge_targets_do_not_hurt() {
    let mut e = Endpoints::new(Vec::new(), 10, 2);
    let deep = "/a".repeat(50_000);
    let n = name(&mut e, "GET", &deep);
    assert_eq!(n.len(), "GET ".len() + deep.len());
    let long = format!("/{}", "x".repeat(100_000));
    assert_eq!(name(&mut e, "GET", &long).len(), "GET ".len() + long.len());
    assert_eq!(name(&mut e, "GET", "/a"), "GET /a");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_requests_are_bounded(
        requests in prop::collection::vec(
            (
                prop_oneof![Just("GET".to_owned()), Just(String::new()), any::<String>()],
                prop_oneof![
                    "(/[a-c0-9{}]{0,3}){0,4}",
                    "http://h(/[ab]{0,2}){0,3}\\?[a/]*",
                    any::<String>(),
                ],
            ),
            0..150,
        ),
        max_endpoints in 0usize..8,
        learn_after in 0usize..4,
        with_pattern in any::<bool>(),
    ) {
        let patterns = if with_pattern { vec![pattern("GET /a/{x}")] } else { Vec::new() };
        let mut e = Endpoints::new(patterns, max_endpoints, learn_after);
        let mut live: HashSet<String> = HashSet::new();
        // Folded names stop existing: no request is named with one again.
        let mut dead: HashSet<String> = HashSet::new();
        for (method, target) in &requests {
            let c = e.classify(method, target);
            prop_assert!(!dead.contains(c.endpoint), "{} named again", c.endpoint);
            for old in &c.folded {
                prop_assert!(live.remove(old), "{old} folded but not live");
                prop_assert_ne!(old.as_str(), c.endpoint);
                dead.insert(old.clone());
            }
            live.insert(c.endpoint.to_owned());
            prop_assert!(live.len() <= max_endpoints + 1, "{live:?}");
            prop_assert!(e.names.len() <= max_endpoints);
            prop_assert!(e.parents.len() <= 4 * max_endpoints);
        }
        // The same requests again: still bounded, still no panic.
        for (method, target) in &requests {
            let c = e.classify(method, target);
            prop_assert!(!dead.contains(c.endpoint), "{} named again", c.endpoint);
            for old in &c.folded {
                prop_assert!(live.remove(old));
                dead.insert(old.clone());
            }
            live.insert(c.endpoint.to_owned());
            prop_assert!(live.len() <= max_endpoints + 1);
        }
    }

    #[test]
    fn arbitrary_patterns_and_locations_do_not_panic(s in any::<String>()) {
        if let Ok(p) = Pattern::parse(&s) {
            let shown = p.to_string();
            prop_assert_eq!(Pattern::parse(&shown), Ok(p.clone()));
            prop_assert!(p.matches_endpoint(&shown));
            let _ = p.matches("GET", &s);
        }
        let _ = generalise_location(&s);
        let _ = generalise_location(&format!("body:/{s}"));
    }
}
