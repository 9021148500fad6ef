use clap::CommandFactory;

use super::*;

#[test]
fn cli_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn default_ring_size_is_the_shared_constant() {
    assert_eq!(
        parse_size("32MiB"),
        Ok(parallelrun_common::DEFAULT_RING_BYTES)
    );
}

#[test]
fn sizes() {
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("64k"), Ok(65536));
    assert_eq!(parse_size("16MiB"), Ok(16 << 20));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    for bad in ["", "abc", "3000", "12MiB", "1T", "4GiB", "-1"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_bytes("100MiB"), Ok(100 << 20));
    assert_eq!(parse_bytes("3000"), Ok(3000));
    for bad in ["0", "", "x", "2T"] {
        assert!(parse_bytes(bad).is_err(), "{bad}");
    }
}

#[test]
fn seconds() {
    assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
    for bad in ["0", "-3", "nan", "inf", "x"] {
        assert!(parse_secs(bad).is_err(), "{bad}");
    }
}

#[test]
fn methods_fractions_and_prefixes() {
    assert_eq!(parse_method("post"), Ok("POST".into()));
    assert!(parse_method("GE T").is_err());
    assert!(parse_fraction("0").is_err());
    assert!(parse_fraction("1.5").is_err());
    assert_eq!(parse_fraction("0.5"), Ok(0.5));
    assert!(parse_path_prefix("api").is_err());
}

#[test]
fn run_defaults_replay_only_safe_methods() {
    let args = run_args(&[]).unwrap();
    assert_eq!(args.pipeline.methods, ["GET", "HEAD", "OPTIONS"]);
    assert_eq!(args.pipeline.metrics.to_string(), "127.0.0.1:9464");
}

#[test]
fn record_requires_an_old_service() {
    let err =
        Cli::try_parse_from(["parallelrun", "record", "--iface", "lo", "--pcap", "x"]).unwrap_err();
    assert!(err.to_string().contains("--old"));
}

#[test]
fn bad_service_address_is_a_usage_error() {
    let err = Cli::try_parse_from([
        "parallelrun",
        "record",
        "--iface",
        "lo",
        "--pcap",
        "x",
        "--old",
        "nonsense",
    ])
    .unwrap_err();
    assert!(err.to_string().contains("IP:PORT"), "{err}");
}

fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
    let mut argv = vec![
        "parallelrun",
        "run",
        "--iface",
        "lo",
        "--old",
        ":80",
        "--new",
        "127.0.0.1:81",
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv)?.command {
        Command::Run(args) => Ok(args),
        other => panic!("not run: {other:?}"),
    }
}

#[test]
fn sample_is_by_connection_unless_asked() {
    let args = run_args(&[]).unwrap();
    assert_eq!(args.pipeline.sample, 1.0);
    assert_eq!(args.pipeline.sample_by, SampleBy::Connection);
    let args = run_args(&["--sample", "0.25"]).unwrap();
    assert_eq!(args.pipeline.sample, 0.25);
    assert_eq!(args.pipeline.sample_by, SampleBy::Connection);
    let args = run_args(&["--sample", "0.25", "--sample-by", "request"]).unwrap();
    assert_eq!(args.pipeline.sample_by, SampleBy::Request);
}

#[test]
fn bad_sample_flags_are_usage_errors() {
    for bad in ["0", "1.5", "-0.5", "nan", "half"] {
        let flag = format!("--sample={bad}");
        let err = run_args(&[&flag]).unwrap_err().to_string();
        assert!(err.contains("--sample"), "{bad}: {err}");
    }
    let err = run_args(&["--sample-by", "packet"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("connection") && err.contains("request"),
        "{err}"
    );
    let err = Cli::try_parse_from([
        "parallelrun",
        "record",
        "--iface",
        "lo",
        "--old",
        ":80",
        "--discard",
        "--sample",
        "0",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("above 0 and at most 1"), "{err}");
}

#[test]
fn live_commands_default_to_idle_priority_and_offline_ones_run_as_started() {
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("parallelrun").chain(args.iter().copied()))
            .unwrap()
            .priority()
    };
    let live = ["--iface", "lo", "--old", ":80"];
    let run = [&live[..], &["--new", "127.0.0.1:81"]].concat();
    assert_eq!(parse(&[&["run"], &run[..]].concat()), Some(Priority::Idle));
    assert_eq!(
        parse(&[&["record", "--discard"], &live[..]].concat()),
        Some(Priority::Idle)
    );
    assert_eq!(
        parse(&[&["exchanges", "--out", "x"], &live[..]].concat()),
        Some(Priority::Idle)
    );
    assert_eq!(
        parse(&[&["run", "--priority", "normal"], &run[..]].concat()),
        Some(Priority::Normal)
    );
    assert_eq!(
        parse(&["exchanges", "--pcap", "p", "--old", ":80", "--out", "x"]),
        None
    );
    assert_eq!(
        parse(&[
            "replay",
            "--pcap",
            "p",
            "--old",
            ":80",
            "--new",
            "127.0.0.1:81"
        ]),
        None
    );
    let err = Cli::try_parse_from(
        ["parallelrun", "record", "--discard", "--priority", "high"]
            .into_iter()
            .chain(live),
    )
    .unwrap_err();
    assert!(err.to_string().contains("idle"), "{err}");
}

#[test]
fn iface_is_repeatable_and_takes_patterns() {
    let args = run_args(&["--iface", "veth*", "--iface", "tun?"]).unwrap();
    assert_eq!(args.capture.iface, ["lo", "veth*", "tun?"]);
    for bad in ["a/b*", "name with space", "muchtoolongname*"] {
        let err = run_args(&["--iface", bad]).unwrap_err().to_string();
        assert!(
            err.contains("not a valid interface name or pattern"),
            "{bad}: {err}"
        );
    }
    let Command::Exchanges(args) = Cli::try_parse_from([
        "parallelrun",
        "exchanges",
        "--iface",
        "veth*",
        "--iface",
        "eth0",
        "--old",
        ":80",
        "--out",
        "x",
    ])
    .unwrap()
    .command
    else {
        panic!("not exchanges");
    };
    assert_eq!(args.iface, ["veth*", "eth0"]);
}

#[test]
fn new_and_secondary_take_a_host_name_resolved_at_start() {
    let args = run_args(&["--secondary", "localhost:8081"]).unwrap();
    let secondary = args.pipeline.secondary.expect("--secondary given");
    assert!(secondary.ip().is_loopback(), "{secondary}");
    assert_eq!(secondary.port(), 8081);
    assert_eq!(parse_host_port("[::1]:82"), Ok("[::1]:82".parse().unwrap()));
}

#[test]
fn a_new_service_without_a_port_or_unresolvable_is_a_usage_error() {
    for bad in ["localhost", "no-such-host.invalid:80", ":80", "host:99999"] {
        let err = parse_host_port(bad).unwrap_err();
        assert!(err.contains("IP:PORT"), "{bad}: {err}");
    }
}
