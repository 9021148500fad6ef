//! The container image (`cargo xtask image`), run as the deployment guide
//! runs it: podman on runc, every capability dropped but CAP_BPF,
//! CAP_PERFMON and CAP_NET_ADMIN, the shipped seccomp profile, a read-only
//! root, its own non-root user, in the network namespace of the old service.
//! Inside, `parallelrun run` must compare every request the test sends and
//! report exactly the difference the new version has; without CAP_BPF it
//! must say so and exit, not panic. And as containerd and CRI-O run it,
//! which give a non-root user no ambient capabilities: the binary's own
//! (permitted) file capabilities, within the bounding set, must suffice.
//!
//! The image is `PARALLELRUN_IMAGE`, which `cargo xtask test` builds from
//! the agent under test before the tests run. Topology as in replay.rs: the
//! old service on the server end of a veth pair, the new one and the
//! secondary on the server namespace's loopback (never captured).

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use parallelrun_tests::{
    agent::{Agent, Stats},
    app::{App, Flavor, fetch},
    netns::{Family, Netns, Pair, unique},
    require_root,
};
use serde_json::Value;

/// The image's user and its writable directory (xtask/src/image.rs).
const USER: &str = "65532:65532";
const UID: u32 = 65532;
const DATA: &str = "/var/lib/parallelrun";
/// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
const THREE_CAPS: u64 = (1 << 12) | (1 << 38) | (1 << 39);

/// A second of `record` on `lo`, discarding: enough to load and attach,
/// which is what the capability tests look at.
const RECORD_BRIEFLY: &[&str] = &[
    "record",
    "--iface",
    "lo",
    "--old",
    ":80",
    "--discard",
    "--duration",
    "1",
];

fn image() -> String {
    std::env::var("PARALLELRUN_IMAGE").unwrap_or_else(|_| {
        panic!(
            "PARALLELRUN_IMAGE is not set: run the tests with `cargo xtask test` (it builds the image), or build one with `cargo xtask image` and name it in PARALLELRUN_IMAGE"
        )
    })
}

fn seccomp_profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/seccomp/parallelrun.json")
}

/// A container by name, removed on drop even if podman was killed.
struct Container(String);

impl Container {
    fn new() -> Self {
        Self(unique("primg"))
    }

    /// `podman run` of the image in `ns` with only `caps`, `data` as its
    /// writable directory, and the agent's `args`.
    fn run(&self, ns: &Netns, caps: &str, data: &Path, args: &[&str]) -> Command {
        let mut cmd = self.podman(ns, caps, data);
        cmd.arg(image()).args(args);
        cmd
    }

    /// `podman run` and its options, up to the image.
    fn podman(&self, ns: &Netns, caps: &str, data: &Path) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(["run", "--rm", "--name", &self.0])
            // crun refuses this host's hybrid cgroups; runc does not.
            .args(["--runtime", "runc"])
            // Within the host's hard limits, which podman's defaults exceed.
            .args([
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
            ])
            .args(["--cap-drop", "ALL", "--cap-add", caps])
            .arg("--security-opt")
            .arg(format!("seccomp={}", seccomp_profile().display()))
            .args(["--security-opt", "no-new-privileges"])
            .args(["--read-only", "--user", USER])
            .arg("--network")
            .arg(format!("ns:{}", ns.path().display()))
            .arg("--volume")
            .arg(format!("{}:{DATA}", data.display()))
            .args(["--env", "RUST_LOG=info"]);
        cmd
    }

    /// The host pid of the container's process.
    fn pid(&self) -> i32 {
        let out = Command::new("podman")
            .args(["inspect", "--format", "{{.State.Pid}}", &self.0])
            .output()
            .expect("start podman inspect");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pid for {}: {out:?}", self.0))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.0])
            .output();
    }
}

/// A directory for the container's output, writable by its user.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(UID), Some(UID)).unwrap();
    dir
}

/// A field of /proc/PID/status, e.g. `CapEff`.
fn status_field(pid: i32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in the status of {pid}"))
        .trim()
        .to_owned()
}

#[test]
fn the_image_with_only_three_capabilities_compares_live_traffic() {
    require_root();
    let pair = Pair::new(Family::V4);
    let old = App::start(
        &pair.server,
        SocketAddr::new(pair.server_ip, 8080),
        Flavor::Old,
    );
    let new = App::start(&pair.server, "127.0.0.1:9090".parse().unwrap(), Flavor::New);
    let secondary = App::start(&pair.server, "127.0.0.1:9091".parse().unwrap(), Flavor::Old);
    let data = data_dir();
    let container = Container::new();
    let old_addr = old.addr.to_string();
    let log = format!("{DATA}/mismatches.jsonl");
    let stats = format!("{DATA}/stats.json");
    // The new version by name, as a Kubernetes Service would be named: the
    // agent resolves it in the image (glibc, no nsswitch.conf).
    let new_name = format!("candidate.test:{}", new.addr.port());
    let mut cmd = container.podman(&pair.server, "BPF,PERFMON,NET_ADMIN", data.path());
    cmd.arg("--add-host")
        .arg(format!("candidate.test:{}", new.addr.ip()))
        .arg(image())
        .args([
            "run",
            "--iface",
            &pair.server_if,
            "--old",
            &old_addr,
            "--new",
            &new_name,
            "--secondary",
            &secondary.addr.to_string(),
            "--log",
            &log,
            "--stats-json",
            &stats,
            "--no-metrics",
        ]);
    let mut agent = Agent::spawn(cmd);

    // The agent runs as the image's user with the three capabilities
    // effective, and could not gain more.
    let pid = container.pid();
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some("65532")
    );
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let caps = u64::from_str_radix(&status_field(pid, set), 16).unwrap();
        assert_eq!(caps, THREE_CAPS, "{set} of the agent: {caps:#x}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2", "filtered by the profile");

    // One keep-alive connection; /users/7 is where the new version differs.
    let addr = old.addr;
    let replies = pair.client.run(move || {
        let requests: Vec<(&str, &str, &[u8])> = ["/users/1", "/users/7", "/users/2", "/users/3"]
            .into_iter()
            .map(|p| ("GET", p, &b""[..]))
            .collect();
        fetch(addr, &requests)
    });
    assert_eq!(replies.len(), 4);
    thread::sleep(Duration::from_millis(500));
    agent.stop();

    let stats = Stats::read(&data.path().join("stats.json"));
    stats.assert_accounted();
    assert_eq!(stats.n("/requests_seen"), 4, "{:#}", stats.0);
    assert_eq!(stats.n("/outcomes/matched"), 3, "{:#}", stats.0);
    assert_eq!(stats.n("/outcomes/mismatched"), 1, "{:#}", stats.0);
    assert_eq!(new.hits("/users/"), 4);
    assert_eq!(secondary.hits("/users/"), 4);
    let text = std::fs::read_to_string(data.path().join("mismatches.jsonl")).unwrap();
    let mismatches: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "mismatch")
        .collect();
    assert_eq!(mismatches.len(), 1, "{text}");
    assert_eq!(mismatches[0]["target"], "/users/7");
    let wheres: Vec<&str> = mismatches[0]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["where"].as_str().unwrap())
        .collect();
    assert_eq!(wheres, ["body:/plan"], "{text}");
}

#[test]
fn without_cap_bpf_the_image_says_what_is_missing() {
    require_root();
    let ns = Netns::new("primg");
    let data = data_dir();
    let container = Container::new();
    let out = container
        .run(&ns, "PERFMON,NET_ADMIN", data.path(), RECORD_BRIEFLY)
        .output()
        .expect("start podman");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not allowed to load eBPF programs") && stderr.contains("missing CAP_BPF"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_image_is_the_agent_alone_as_an_unprivileged_user() {
    let out = Command::new("podman")
        .args(["image", "inspect", &image()])
        .output()
        .expect("start podman image inspect");
    assert!(out.status.success(), "{out:?}");
    let inspect: Value = serde_json::from_slice(&out.stdout).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], USER);
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/bin/parallelrun"])
    );
    assert_eq!(config["WorkingDir"], DATA);
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"],
        "parallelrun"
    );
    require_root();
    let ns = Netns::new("primg");
    let data = data_dir();
    let container = Container::new();
    let out = container
        .run(&ns, "NET_ADMIN", data.path(), &["--version"])
        .output()
        .expect("start podman");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("parallelrun "));
    // FROM scratch: no shell to run anything else with.
    let out = container
        .podman(&ns, "NET_ADMIN", data.path())
        .args(["--entrypoint", "/bin/sh"])
        .arg(image())
        .output()
        .expect("start podman");
    assert!(!out.status.success(), "the image has a shell: {out:?}");
}

/// The image's root filesystem, mounted on the host; unmounted on drop.
struct Mounted(String);

impl Mounted {
    fn new() -> Self {
        let out = Command::new("podman")
            .args(["image", "mount", &image()])
            .output()
            .expect("start podman image mount");
        assert!(out.status.success(), "{out:?}");
        Self(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["image", "unmount", &image()])
            .output();
    }
}

/// The image's agent started as uid 65532 with no ambient and no
/// inheritable capabilities, no_new_privs, and `bounding` as its bounding
/// set: what containerd does for `capabilities.add` and a non-root user.
fn as_containerd_runs_it(ns: &Netns, rootfs: &str, bounding: &str) -> std::process::Output {
    ns.command("setpriv")
        .args(["--reuid", "65532", "--regid", "65532", "--clear-groups"])
        .args(["--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"])
        .arg(format!("--bounding-set=-all,{bounding}"))
        .arg(format!("{rootfs}/usr/bin/parallelrun"))
        .args(RECORD_BRIEFLY)
        .env("RUST_LOG", "info")
        .output()
        .expect("start setpriv")
}

#[test]
fn without_ambient_capabilities_the_file_capabilities_suffice() {
    require_root();
    let ns = Netns::new("primg");
    let rootfs = Mounted::new();
    let out = as_containerd_runs_it(&ns, &rootfs.0, "+bpf,+perfmon,+net_admin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(" attached"), "{stderr}");
    // A bounding set without CAP_BPF: the exec still succeeds (the file
    // capabilities have no effective bit), and the agent names what is missing.
    let out = as_containerd_runs_it(&ns, &rootfs.0, "+perfmon,+net_admin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("missing CAP_BPF"), "{stderr}");
}
