//! The cutover verdict's exit codes on three prepared runs, its errors, and
//! `--until-verdict`.

use super::{Rig, numbered, parallelrun, stop};

/// Three runs against the same services: 150 users answered alike (ready,
/// exit 0), 150 `/status` answered 500 by the new version (not ready,
/// exit 1, naming the endpoint and the rule), 20 users (not enough data,
/// exit 2). A truncated summary, a foreign JSON file and a missing one are
/// errors naming the file (exit 3), never a verdict.
#[test]
fn verdicts_exit_0_1_2_and_bad_summaries_exit_3() {
    let rig = Rig::start();
    let runs: [(&str, Vec<String>); 3] = [
        ("ready", numbered("/users/", 1000, 150)),
        ("broken", vec!["/status".to_owned(); 150]),
        ("short", numbered("/users/", 2000, 20)),
    ];
    for (name, paths) in &runs {
        let agent = rig.run(name, &[]);
        let paths = paths.clone();
        rig.clients(1, move |_| paths.clone());
        stop(agent, &rig, name);
    }
    let verdict = |name: &str| {
        let file = rig.summary_path(name);
        let out = parallelrun(&["verdict", file.to_str().unwrap(), "--min-compared", "100"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text)
    };
    let (code, text) = verdict("ready");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("ready"), "{text}");
    let (code, text) = verdict("broken");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("GET /status"), "{text}");
    assert!(text.contains("max_mismatch_rate"), "{text}");
    let (code, text) = verdict("short");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("min_compared"), "{text}");
    // All three merged: the broken endpoint decides.
    let files: Vec<String> = ["ready", "broken", "short"]
        .iter()
        .map(|n| rig.summary_path(n).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["verdict", "--min-compared", "100"];
    args.extend(files.iter().map(String::as_str));
    assert_eq!(parallelrun(&args).status.code(), Some(1));

    // Bad input: exit 3 and the file named, for each kind.
    let good = std::fs::read(rig.summary_path("ready")).unwrap();
    let truncated = rig.path("truncated.json");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let foreign = rig.path("foreign.json");
    std::fs::write(&foreign, br#"{"name": "something else", "version": 1}"#).unwrap();
    let missing = rig.path("missing.json");
    for (file, says) in [
        (&truncated, "truncated"),
        (&foreign, "not a parallelrun summary"),
        (&missing, "No such file"),
    ] {
        let out = parallelrun(&["verdict", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{}: {err}", file.display());
        assert!(err.contains(file.to_str().unwrap()), "{err}");
        assert!(
            err.to_lowercase().contains(&says.to_lowercase()),
            "{says}: {err}"
        );
    }
    // A bad flag is exit 3 too (1 and 2 are decisions).
    let file = rig.summary_path("ready");
    let out = parallelrun(&[
        "verdict",
        file.to_str().unwrap(),
        "--max-mismatch-rate",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

/// `run --until-verdict` stops by itself once the verdict is decided and
/// exits with its code: here 1, the new version failing every `/status`.
#[test]
fn run_until_verdict_stops_on_a_decision() {
    let rig = Rig::start();
    let mut agent = rig.run(
        "until",
        &[
            "--until-verdict",
            "--min-compared",
            "50",
            "--duration",
            "60",
        ],
    );
    rig.clients(1, |_| vec!["/status".to_owned(); 100]);
    let started = std::time::Instant::now();
    let status = agent.stop_with(0);
    assert_eq!(status.code(), Some(1), "{}", agent.stderr());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the agent did not stop on the verdict"
    );
    assert!(
        agent.stderr().contains("verdict decided"),
        "{}",
        agent.stderr()
    );
}
