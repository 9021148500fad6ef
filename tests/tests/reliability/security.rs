//! Security: capabilities instead of root, metrics on localhost, redaction, replay targets, unsafe methods.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use parallelrun_tests::{
    agent::{self, Agent, attached},
    app::{self, App, Flavor},
    faults::{self, FaultServer, Incoming, Reply, response},
};

use crate::fixture::{Env, MIB, NEW, SECONDARY};

/// Name of the unprivileged user the capability test runs the agent as
/// (created with `useradd -M` when missing, and left in place: other runs
/// may use it at the same time).
const CAP_USER: &str = "prcap";

fn cap_user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, CAP_USER]).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    if id("-u").is_none() {
        // A concurrent run may have created it meanwhile: check again after.
        let _ = Command::new("useradd")
            .args(["-M", "-r", "-s", "/usr/sbin/nologin", CAP_USER])
            .output();
    }
    (
        id("-u").expect("useradd failed"),
        id("-g").expect("no group"),
    )
}

/// `BIN record --discard` on the server veth as `uid:gid`, through
/// `ip netns exec NS setpriv` (a non-root user cannot enter a namespace
/// itself; setpriv drops root before exec, so only the file's capabilities
/// count). Waits for the exit; stderr is returned with the status.
fn run_as_user(
    env: &Env,
    name: &str,
    bin: &Path,
    (uid, gid): (u32, u32),
    extra: &[&str],
    during: impl FnOnce(),
) -> (std::process::ExitStatus, String) {
    let err_path = env.dir.path().join(format!("{name}.err"));
    let err = std::fs::File::create(&err_path).unwrap();
    let mut child = env
        .pair
        .server
        .command("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin)
        .args([
            "record",
            "--iface",
            &env.pair.server_if,
            "--old",
            ":8080",
            "--discard",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&err_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if read().contains(" attached") {
            during();
            break;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    (status, read())
}

/// With CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON on the binary and no root,
/// the agent attaches and captures; without them it refuses with the
/// documented message and attaches nothing.
#[test]
fn runs_with_capabilities_instead_of_root() {
    let env = Env::new();
    let user = cap_user();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let bins = tempfile::tempdir().unwrap();
    let chmod = |p: &Path, mode: &str| {
        parallelrun_tests::netns::run(Command::new("chmod").arg(mode).arg(p));
    };
    chmod(bins.path(), "755");
    chmod(env.dir.path(), "777");
    let capped = bins.path().join("parallelrun-capped");
    let plain = bins.path().join("parallelrun-plain");
    for b in [&capped, &plain] {
        std::fs::copy(agent::binary(), b).unwrap();
        chmod(b, "755");
    }
    parallelrun_tests::netns::run(
        Command::new("setcap")
            .arg("cap_bpf,cap_net_admin,cap_perfmon+ep")
            .arg(&capped),
    );

    let stats = env.dir.path().join("capped.stats.json");
    let addr = old.addr;
    let (status, stderr) = run_as_user(
        &env,
        "capped",
        &capped,
        user,
        &["--duration", "3", "--stats-json", stats.to_str().unwrap()],
        || {
            env.client(move || faults::timed_gets(addr, &["/users/1".into(), "/users/2".into()]));
        },
    );
    assert!(
        status.success(),
        "capped agent failed ({status}):\n{stderr}"
    );
    assert!(stderr.contains(" attached"), "{stderr}");
    let s = agent::stats(&stats);
    assert!(
        agent::counter(&s, "agent", "records") > 0,
        "nothing captured: {s}"
    );
    assert_eq!(
        agent::counter(&s, "kernel", "records_emitted"),
        agent::counter(&s, "agent", "records")
    );
    // It really ran as the user: the file it wrote is theirs.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&stats).unwrap());
    assert_eq!(owner, user.0, "the agent did not run as {CAP_USER}");
    assert_eq!(attached(&env.pair.server, &env.pair.server_if), [0, 0]);

    let (status, stderr) = run_as_user(&env, "plain", &plain, user, &["--duration", "1"], || {});
    assert!(
        !status.success(),
        "agent without capabilities ran:\n{stderr}"
    );
    assert!(
        stderr.contains("not allowed to load eBPF programs"),
        "unclear error:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(attached(&env.pair.server, &env.pair.server_if), [0, 0]);
}

/// By default the metrics endpoint listens on 127.0.0.1 only: it answers
/// there, and is neither listed on another address nor reachable from the
/// peer namespace through the veth.
#[test]
fn metrics_listen_on_localhost_by_default() {
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let _new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::Old);
    // No --metrics and no --no-metrics: the default.
    let log = env.dir.path().join("m.jsonl");
    let old_addr = old.addr.to_string();
    let mut agent = Agent::start(
        &env.pair.server,
        &[
            "run",
            "--iface",
            &env.pair.server_if,
            "--old",
            &old_addr,
            "--new",
            NEW,
            "--log",
            log.to_str().unwrap(),
        ],
    );
    let listening = faults::listeners(&env.pair.server);
    let metrics: Vec<&String> = listening.iter().filter(|a| a.ends_with(":9464")).collect();
    assert_eq!(metrics, ["127.0.0.1:9464"], "listeners: {listening:?}");
    let text = env
        .pair
        .server
        .run(|| faults::http_get_text("127.0.0.1:9464".parse().unwrap(), "/metrics"))
        .expect("metrics on localhost");
    assert!(
        text.contains("parallelrun_requests_captured_total"),
        "{text}"
    );
    let remote = SocketAddr::new(env.pair.server_ip, 9464);
    let from_peer = env.client(move || TcpStream::connect_timeout(&remote, Duration::from_secs(2)));
    assert!(
        from_peer.is_err(),
        "metrics reachable from the peer namespace"
    );
    agent.stop();
}

/// Secrets never reach the mismatch log: header values of Authorization,
/// Set-Cookie, X-Api-Key and `--redact-header` names are written as
/// `[redacted]` when they differ, and secret query values (token=...) in
/// the target too, while other differences stay readable.
#[test]
fn secrets_are_redacted_in_the_log() {
    let env = Env::new();
    let serve = |tag: &'static str| {
        move |req: Option<&Incoming>| {
            let _ = req;
            let h = |v: &str| format!("{v}-{tag}SECRET").into_bytes();
            let (api, auth, cookie, session) = (h("key"), h("Bearer tok"), h("sid=ck"), h("sess"));
            let cookie = if tag == "new" {
                format!("other=ck-{tag}SECRET").into_bytes()
            } else {
                cookie
            };
            Reply::Bytes(response(
                200,
                &[
                    ("X-Api-Key", &api),
                    ("Authorization", &auth),
                    ("Set-Cookie", &cookie),
                    ("X-Session-Token", &session),
                    ("X-Plain", tag.as_bytes()),
                ],
                b"same body\n",
            ))
        }
    };
    let old = FaultServer::start(&env.pair.server, env.old_addr(8080), serve("old"));
    let _new = FaultServer::start(&env.pair.server, NEW.parse().unwrap(), serve("new"));
    let run = env.run("secret", old.addr, &["--redact-header", "X-Session-Token"]);
    let addr = old.addr;
    env.client(move || {
        faults::send_raw(
            addr,
            b"GET /account?page=2&token=QUERYSECRET&api_key=KEYSECRET HTTP/1.1\r\nHost: old.test\r\n\
              Authorization: Bearer REQUESTSECRET\r\nConnection: close\r\n\r\n",
            MIB,
        )
    });
    let d = run.stop();

    d.stats.assert_accounted();
    assert_eq!(d.log.len(), 1, "{:#?}", d.log);
    assert!(
        !d.log_text.contains("SECRET"),
        "a secret reached the log:\n{}",
        d.log_text
    );
    let ev = &d.log[0];
    assert_eq!(
        ev["target"], "/account?page=2&token=[redacted]&api_key=[redacted]",
        "{ev:#}"
    );
    let diff = |at: &str| {
        ev["differences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["where"] == at)
            .unwrap_or_else(|| panic!("no difference at {at}: {ev:#}"))
            .clone()
    };
    for h in [
        "header:x-api-key",
        "header:authorization",
        "header:set-cookie",
        "header:x-session-token",
    ] {
        let x = diff(h);
        assert_eq!(
            (&x["old"], &x["new"]),
            (&"[redacted]".into(), &"[redacted]".into()),
            "{h}"
        );
    }
    let plain = diff("header:x-plain");
    assert_eq!(
        (&plain["old"], &plain["new"]),
        (&"old".into(), &"new".into())
    );
}

/// Replays go to `--new` (and `--secondary`) only, whatever the captured
/// request names: a Host header or an absolute-form target pointing at
/// another service does not redirect the replay, and traffic to a service
/// on the same interface that is not `--old` is neither captured nor
/// replayed. Nothing is ever sent to the old service by the agent.
#[test]
fn replays_only_target_new_and_secondary() {
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::Old);
    let secondary = App::start(&env.pair.server, SECONDARY.parse().unwrap(), Flavor::Old);
    let neighbour = App::start(&env.pair.server, env.old_addr(8081), Flavor::Old);
    let named = App::start(
        &env.pair.server,
        "127.0.0.1:9092".parse().unwrap(),
        Flavor::Old,
    );
    let run = env.run("targets", old.addr, &["--secondary", SECONDARY]);
    let (o, n) = (old.addr, neighbour.addr);
    env.client(move || {
        let reqs = [
            "GET /users/1 HTTP/1.1\r\nHost: 127.0.0.1:9092\r\nConnection: close\r\n\r\n".to_owned(),
            "GET http://127.0.0.1:9092/users/2 HTTP/1.1\r\nHost: 127.0.0.1:9092\r\nConnection: close\r\n\r\n".to_owned(),
            format!("GET http://{n}/users/3 HTTP/1.1\r\nHost: {n}\r\nConnection: close\r\n\r\n"),
        ];
        for r in reqs {
            let answer = faults::send_raw(o, r.as_bytes(), MIB);
            assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        }
        for i in 0..5 {
            assert_eq!(faults::get_once(n, &format!("/direct/{i}")).0, 404);
        }
    });
    let d = run.stop();

    d.stats.assert_accounted();
    assert_eq!(d.stats.n("/requests_seen"), 3, "{:#}", d.stats.0);
    assert_eq!(d.stats.n("/outcomes/matched"), 3, "{:#}", d.stats.0);
    assert_eq!(
        old.hits("/"),
        3,
        "the old service got more than its clients sent"
    );
    assert_eq!(new.hits("/users/"), 3);
    assert_eq!(secondary.hits("/users/"), 3);
    assert_eq!(named.hits("/"), 0, "a replay followed the Host header");
    assert_eq!(neighbour.hits("/"), 5, "the neighbour got replays");
}

/// Methods with side effects are not replayed unless `--methods` names
/// them: by default POST, PUT, DELETE and PATCH are skipped (`method`),
/// with `--methods GET,POST` only POST joins GET, and the agent warns.
#[test]
fn unsafe_methods_are_replayed_only_when_named() {
    let env = Env::new();
    let old = App::start(&env.pair.server, env.old_addr(8080), Flavor::Old);
    let new = App::start(&env.pair.server, NEW.parse().unwrap(), Flavor::Old);
    let requests: &[(&str, &str, &[u8])] = &[
        ("GET", "/users/1", b""),
        ("HEAD", "/users/2", b""),
        ("OPTIONS", "/options", b""),
        ("POST", "/orders", b"{}"),
        ("PUT", "/put", b"{}"),
        ("DELETE", "/delete", b""),
        ("PATCH", "/patch", b"{}"),
    ];
    let send = || {
        let addr = old.addr;
        env.client(move || app::fetch(addr, requests).len())
    };

    let run = env.run("default", old.addr, &[]);
    assert_eq!(send(), requests.len());
    let d = run.stop();
    d.stats.assert_accounted();
    assert_eq!(d.stats.n("/outcomes/skipped/method"), 4, "{:#}", d.stats.0);
    for p in ["/orders", "/put", "/delete", "/patch"] {
        assert_eq!(new.hits(p), 0, "{p} replayed by default");
    }
    assert_eq!(new.hits("/users/"), 2);
    assert_eq!(new.hits("/options"), 1);

    let run = env.run("post", old.addr, &["--methods", "GET,POST"]);
    assert_eq!(send(), requests.len());
    let d = run.stop();
    d.stats.assert_accounted();
    assert_eq!(d.stats.n("/outcomes/skipped/method"), 5, "{:#}", d.stats.0);
    assert_eq!(
        new.hits("/orders"),
        1,
        "POST not replayed with --methods GET,POST"
    );
    for p in ["/put", "/delete", "/patch", "/options"] {
        assert!(new.hits(p) <= 1, "{p} replayed with --methods GET,POST");
    }
    assert_eq!(
        new.hits("/put") + new.hits("/delete") + new.hits("/patch"),
        0
    );
    assert!(
        d.stderr.contains("side effects"),
        "no warning for POST:\n{}",
        d.stderr
    );
}
