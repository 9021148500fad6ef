//! Three nodes publish to NATS; the fleet verdict read from NATS equals the
//! verdict of one agent watching all three replicas.

use super::{REPLICAS, Rig, json, log_lines, nats_stats, numbered, repeat, stop};

#[test]
fn fleet_verdict_from_nats_equals_one_agent_watching_all_replicas() {
    let rig = Rig::start();
    let url = rig.nats.url();
    let nodes: Vec<_> = (0..3)
        .map(|i| {
            let name = format!("node{i}");
            let agent = rig.run(
                &name,
                &[REPLICAS[i]],
                &[
                    "--nats",
                    &url,
                    "--node",
                    &name,
                    "--nats-service",
                    "users api",
                ],
            );
            (name, agent)
        })
        .collect();
    let reference = rig.run("all", &REPLICAS, &[]);

    // Replica 0: users (one differs, n = 7); replica 1: users and /status
    // (500 on the new version); replica 2: /same (noise only) and /version
    // (a header differs).
    let traffic = [
        numbered("/users/", 1, 80),
        [numbered("/users/", 40, 70), repeat("/status", 20)].concat(),
        [numbered("/same/", 1, 50), repeat("/version", 15)].concat(),
    ];
    for (i, paths) in traffic.iter().enumerate() {
        rig.traffic(i, paths);
    }
    let sent: usize = traffic.iter().map(Vec::len).sum();

    let mut mismatch_events = 0;
    for (name, agent) in nodes {
        let stats = stop(agent, &rig, &name);
        let n = nats_stats(&stats);
        assert_eq!(n["dropped"], 0, "{name}: {n}");
        let logged = log_lines(&rig.path(&format!("{name}.jsonl"))) as u64;
        // Each event and at least the final summary.
        assert!(n["published"].as_u64().unwrap() > logged, "{name}: {n}");
        mismatch_events += logged;
    }
    let all = stop(reference, &rig, "all");
    assert_eq!(all.n("/requests_seen"), sent as u64);

    let stream = parallelrun_tests::nats::contents(&rig.pair.server, &url, "PARALLELRUN");
    assert_eq!(
        stream.count("parallelrun.mismatch.users_api.")
            + stream.count("parallelrun.replay_error.users_api."),
        mismatch_events,
        "{stream:?}"
    );
    for i in 0..3 {
        assert!(
            stream
                .by_subject
                .contains_key(&format!("parallelrun.summary.users_api.node{i}")),
            "{stream:?}"
        );
    }

    // The verdicts: decision (exit code) and reasons (stdout) equal.
    let summary = rig.path("all.summary.json");
    let rules = ["--min-compared", "10"];
    let one = rig.parallelrun(&[&["verdict", summary.to_str().unwrap()], &rules[..]].concat());
    let fleet = rig.parallelrun(&[&["verdict", "--nats", &url], &rules[..]].concat());
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(one.status.code(), Some(1), "{}", text(&one));
    assert_eq!(fleet.status.code(), one.status.code(), "{fleet:?}");
    assert_eq!(text(&fleet), text(&one));
    assert!(text(&fleet).contains("GET /status"), "{}", text(&fleet));
    let one = rig.parallelrun(
        &[
            &["verdict", "--json", summary.to_str().unwrap()],
            &rules[..],
        ]
        .concat(),
    );
    let fleet = rig.parallelrun(&[&["verdict", "--json", "--nats", &url], &rules[..]].concat());
    assert_eq!(json(&fleet), json(&one));

    // The merged report: the same counts, overall and per endpoint.
    let one = json(&rig.parallelrun(&["report", "--json", summary.to_str().unwrap()]));
    let out = rig.parallelrun(&[
        "report",
        "--json",
        "--nats",
        &url,
        "--nats-service",
        "users api",
    ]);
    assert!(out.status.success(), "{out:?}");
    let fleet = json(&out);
    assert_eq!(fleet["sources"].as_array().map(Vec::len), Some(3));
    assert_eq!(fleet["totals"], one["totals"]);
    let counts = |s: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        s["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["endpoint"].as_str().unwrap().to_owned(),
                    e["counts"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(counts(&fleet), counts(&one));

    // Another service's name finds nothing: an error, verdict's exit 3.
    let none = rig.parallelrun(&["verdict", "--nats", &url, "--nats-service", "other"]);
    assert_eq!(none.status.code(), Some(3), "{none:?}");
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no summary"),
        "{none:?}"
    );
}
