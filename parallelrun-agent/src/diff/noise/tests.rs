use serde_json::{Value, json};

use super::*;

fn d(location: &str) -> Difference {
    Difference {
        location: location.into(),
        old: json!(1),
        new: json!(2),
    }
}

fn locations(ds: &[Difference]) -> Vec<&str> {
    ds.iter().map(|d| d.location.as_str()).collect()
}

#[test]
fn cancel_exact_location() {
    let (reported, noise) = cancel(
        vec![d("header:x-a"), d("body:/t"), d("status")],
        &[d("body:/t"), d("header:x-b")],
    );
    assert_eq!(locations(&reported), ["header:x-a", "status"]);
    assert_eq!(locations(&noise), ["body:/t"]);
}

#[test]
fn cancel_by_pointer_prefix() {
    let (reported, noise) = cancel(
        vec![
            d("body:/items/3/id"),
            d("body:/items"),
            d("body:/itemsCount"),
            d("body:/x"),
        ],
        &[d("body:/items")],
    );
    assert_eq!(locations(&reported), ["body:/itemsCount", "body:/x"]);
    assert_eq!(locations(&noise), ["body:/items/3/id", "body:/items"]);
    // A deeper noise location does not cover its parent.
    let (reported, _) = cancel(vec![d("body:/a")], &[d("body:/a/b")]);
    assert_eq!(locations(&reported), ["body:/a"]);
}

#[test]
fn cancel_grpc_message_locations() {
    let (reported, noise) = cancel(
        vec![
            d("grpc[1]:/2/3"),
            d("grpc[1]:/4[0]/1"),
            d("grpc[1]:/4"),
            d("grpc[2]:/2/3"),
            d("grpc[3]"),
            d("grpc:/5"),
            d("grpc-status"),
        ],
        &[d("grpc[1]:/2"), d("grpc[1]:/4"), d("grpc[3]:/1"), d("grpc")],
    );
    assert_eq!(
        locations(&reported),
        ["grpc[2]:/2/3", "grpc[3]", "grpc-status"]
    );
    assert_eq!(
        locations(&noise),
        ["grpc[1]:/2/3", "grpc[1]:/4[0]/1", "grpc[1]:/4", "grpc:/5"]
    );
    // `[` is no boundary in a JSON body.
    let (reported, _) = cancel(vec![d("body:/a[0]")], &[d("body:/a")]);
    assert_eq!(locations(&reported), ["body:/a[0]"]);
}

#[test]
fn cancel_whole_body() {
    let (reported, noise) = cancel(
        vec![d("body"), d("body:/a/0"), d("header:body"), d("status")],
        &[d("body")],
    );
    assert_eq!(locations(&reported), ["header:body", "status"]);
    assert_eq!(locations(&noise), ["body", "body:/a/0"]);
    // Header noise does not cover the body.
    let (reported, _) = cancel(vec![d("body")], &[d("header:x")]);
    assert_eq!(locations(&reported), ["body"]);
}

#[test]
fn random_field_is_noise_and_regression_is_reported() {
    let mut stats = EndpointNoise::new(NoiseThresholds::default());
    let ep = "GET /users/{id}".to_owned();
    for i in 0..100 {
        // A random token differs on (almost) every request on both
        // sides; a price regressed on every request; a timestamp only
        // sometimes differs, and as often old ↔ secondary.
        let mut raw = vec![d("body:/token"), d("body:/price")];
        let mut noise = vec![d("body:/token")];
        if i % 3 == 0 {
            raw.push(d("body:/ts"));
        }
        if i % 3 == 1 {
            noise.push(d("body:/ts"));
        }
        stats.observe(&ep, &raw, &noise);
    }
    assert_eq!(stats.requests(&ep), 100);
    assert!(stats.is_noise(&ep, &d("body:/token")));
    assert!(stats.is_noise(&ep, &d("body:/ts")));
    assert!(!stats.is_noise(&ep, &d("body:/price")), "never noise");
    assert!(
        !stats.is_noise("GET /other", &d("body:/token")),
        "other endpoint"
    );
    let (reported, noise) = stats.split(&ep, vec![d("body:/token"), d("body:/price")]);
    assert_eq!(locations(&reported), ["body:/price"]);
    assert_eq!(locations(&noise), ["body:/token"]);
}

#[test]
fn field_more_frequent_in_raw_than_noise_is_reported() {
    let mut stats = EndpointNoise::new(NoiseThresholds::default());
    for i in 0..100 {
        // Differs on every request old ↔ new, but only on every tenth
        // old ↔ secondary: the new version made it worse.
        let noise = if i % 10 == 0 {
            vec![d("body:/f")]
        } else {
            vec![]
        };
        stats.observe("GET /f", &[d("body:/f")], &noise);
    }
    assert!(!stats.is_noise("GET /f", &d("body:/f")));

    // 100 raw vs 90 noise: within the relative threshold.
    let mut close = EndpointNoise::new(NoiseThresholds::default());
    for i in 0..100 {
        let noise = if i % 10 == 0 {
            vec![]
        } else {
            vec![d("body:/f")]
        };
        close.observe("GET /f", &[d("body:/f")], &noise);
    }
    assert!(close.is_noise("GET /f", &d("body:/f")));
}

#[test]
fn absolute_threshold_applies() {
    let t = NoiseThresholds {
        absolute: 0.5,
        ..NoiseThresholds::default()
    };
    let mut stats = EndpointNoise::new(t);
    for i in 0..100 {
        // raw 30, noise 1: relatively clear, but only 29% of requests.
        let raw = if i < 30 { vec![d("body:/f")] } else { vec![] };
        let noise = if i == 0 { vec![d("body:/f")] } else { vec![] };
        stats.observe("GET /f", &raw, &noise);
    }
    assert!(stats.is_noise("GET /f", &d("body:/f")));
}

#[test]
fn too_few_requests_is_not_noise() {
    let mut stats = EndpointNoise::new(NoiseThresholds::default());
    for _ in 0..19 {
        stats.observe("GET /", &[d("body:/t")], &[d("body:/t")]);
    }
    assert!(!stats.is_noise("GET /", &d("body:/t")));
    stats.observe("GET /", &[d("body:/t")], &[d("body:/t")]);
    assert!(stats.is_noise("GET /", &d("body:/t")));
}

#[test]
fn array_indices_share_statistics_and_count_once_per_request() {
    let mut stats = EndpointNoise::new(NoiseThresholds {
        min_requests: 1,
        ..NoiseThresholds::default()
    });
    stats.observe(
        "GET /l",
        &[d("body:/items/0/ts"), d("body:/items/1/ts")],
        &[d("body:/items/5/ts")],
    );
    assert!(stats.is_noise("GET /l", &d("body:/items/9/ts")));
    assert!(!stats.is_noise("GET /l", &d("body:/items/9/id")));
    assert_eq!(generalise_location("body:/a/12/b~1c/3"), "body:/a/*/b~1c/*");
    assert_eq!(generalise_location("header:x-1"), "header:x-1");
    assert_eq!(generalise_location("body"), "body");
}

#[test]
fn memory_is_bounded() {
    let mut stats = EndpointNoise::new(NoiseThresholds {
        max_endpoints: 2,
        max_fields: 2,
        ..NoiseThresholds::default()
    });
    for ep in ["GET /a", "GET /b", "GET /c", "GET /c"] {
        stats.observe(ep, &[d("body:/x")], &[]);
    }
    assert_eq!(stats.endpoints(), 2);
    assert_eq!(stats.untracked_requests(), 2);
    assert_eq!(stats.requests("GET /c"), 0);

    stats.observe(
        "GET /a",
        &[d("body:/y"), d("body:/z"), d("body:/w")],
        &[d("body:/x")],
    );
    assert_eq!(stats.untracked_fields(), 2);
    assert_eq!(stats.requests("GET /a"), 2);
}

#[test]
fn difference_values_do_not_matter_for_cancel() {
    let noise = Difference {
        location: "body:/t".into(),
        old: Value::Null,
        new: json!("other"),
    };
    let (reported, _) = cancel(vec![d("body:/t")], &[noise]);
    assert!(reported.is_empty());
}

/// The pairwise rule `cancel` implements with a set lookup.
fn covers(noise: &str, raw: &str) -> bool {
    if noise == raw {
        return true;
    }
    if noise == "body" {
        return raw.starts_with("body:");
    }
    match (noise.strip_prefix("body:"), raw.strip_prefix("body:")) {
        (Some(n), Some(r)) => r.strip_prefix(n).is_some_and(|rest| rest.starts_with('/')),
        _ => false,
    }
}

#[test]
fn cancel_agrees_with_the_pairwise_rule() {
    let all = [
        "status",
        "header:x",
        "header:body",
        "body",
        "body:",
        "body:/",
        "body:/a",
        "body:/a/",
        "body:/a//x",
        "body:/a/b",
        "body:/a/b/c",
        "body:/ab",
        "body:/a~1b",
        "body:/a~1b/c",
        "body:/items/3/id",
    ];
    for n in all {
        for r in all {
            let (reported, noise) = cancel(vec![d(r)], &[d("header:other"), d(n)]);
            assert_eq!(
                noise.len() == 1,
                covers(n, r),
                "noise {n:?} raw {r:?}: reported {reported:?}"
            );
        }
    }
}

#[test]
fn cancel_is_fast_on_thousands_of_differences() {
    let raw: Vec<Difference> = (0..10_000)
        .map(|i| d(&format!("body:/items/{i}/ts")))
        .collect();
    let noise = raw.clone();
    let start = std::time::Instant::now();
    let (reported, suppressed) = cancel(raw, &noise);
    assert!(reported.is_empty());
    assert_eq!(suppressed.len(), 10_000);
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}
