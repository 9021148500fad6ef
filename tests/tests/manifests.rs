//! The Kubernetes manifests (contrib/kubernetes) and the seccomp profile
//! (contrib/seccomp) are what they claim to be.
//!
//! - Every manifest passes `kubernetes-validate --strict` (installed by
//!   `cargo xtask setup`) for the oldest and the newest Kubernetes it
//!   supports, and strict mode does catch a misspelt field.
//! - What no schema sees: the DaemonSet's selector matches its pods; the
//!   agent gets exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, everything
//!   else dropped, a read-only root and a non-root user; its seccomp
//!   profile is the shipped one; every `$(VAR)` in its arguments is a
//!   variable it defines; every ConfigMap key it reads exists; the
//!   Services the ConfigMap names exist on the port it names; Prometheus is
//!   told the port the agent serves metrics on.
//! - The seccomp profile is the container default plus `bpf` and
//!   `perf_event_open`, nothing else.
//!
//! The YAML is read by the PyYAML of kubernetes-validate's own venv, so both
//! checks read the same documents (and the workspace needs no YAML crate).

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The oldest and the newest Kubernetes of kubernetes-validate 1.37.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `kubernetes-validate`: `KUBERNETES_VALIDATE` (set by `cargo xtask test`)
/// or the venv `cargo xtask setup` makes under target/.
fn validator() -> PathBuf {
    let path = std::env::var_os("KUBERNETES_VALIDATE").map_or_else(
        || root().join("target/kubernetes-validate/bin/kubernetes-validate"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} not found: run `cargo xtask setup` (it installs kubernetes-validate)",
        path.display()
    );
    path
}

fn manifests() -> Vec<PathBuf> {
    let dir = root().join("contrib/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "manifests missing in {}", dir.display());
    files
}

fn validate(version: &str, files: &[PathBuf]) -> std::process::Output {
    Command::new(validator())
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .expect("start kubernetes-validate")
}

#[test]
fn every_manifest_passes_strict_validation_for_two_kubernetes_versions() {
    let files = manifests();
    let documents = files.iter().map(|f| documents(f).len()).sum::<usize>();
    for version in KUBERNETES_VERSIONS {
        let out = validate(version, &files);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "Kubernetes {version}:\n{text}");
        assert_eq!(
            text.matches(" passed for resource ").count(),
            documents,
            "one pass per resource, Kubernetes {version}:\n{text}"
        );
    }
}

#[test]
fn strict_validation_rejects_a_misspelt_field() {
    let daemonset = root().join("contrib/kubernetes/30-daemonset.yaml");
    let text = std::fs::read_to_string(&daemonset).unwrap();
    assert!(text.contains("hostNetwork: true"));
    let dir = tempfile::tempdir().unwrap();
    let misspelt = dir.path().join("daemonset.yaml");
    std::fs::write(&misspelt, text.replace("hostNetwork:", "hostNetwrok:")).unwrap();
    let out = validate(KUBERNETES_VERSIONS[1], &[misspelt]);
    assert!(!out.status.success(), "the misspelt manifest passed");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hostNetwrok"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The YAML documents of `file`, as JSON.
fn documents(file: &Path) -> Vec<Value> {
    let python = validator().with_file_name("python3");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(file)
        .output()
        .expect("start the venv's python3");
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON from PyYAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every resource of every manifest, by `Kind/name`.
fn resources() -> BTreeMap<String, Value> {
    manifests()
        .iter()
        .flat_map(|f| documents(f))
        .map(|d| {
            let key = format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            );
            (key, d)
        })
        .collect()
}

fn strings(v: &Value) -> BTreeSet<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn the_daemonset_runs_its_pods_with_exactly_the_three_capabilities() {
    let all = resources();
    let ds = &all["DaemonSet/parallelrun"];
    let namespace = ds["metadata"]["namespace"].as_str().unwrap();
    assert!(all.contains_key(&format!("Namespace/{namespace}")));

    // The selector picks the pods the template makes.
    let selector = ds["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(labels.get(k), Some(v), "selector {k}={v} not on the pods");
    }

    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let account = pod["serviceAccountName"].as_str().unwrap();
    assert!(all.contains_key(&format!("ServiceAccount/{account}")));
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "one container: the agent");
    let agent = &containers[0];
    let security = &agent["securityContext"];
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"].into());
    assert_eq!(
        strings(&security["capabilities"]["add"]),
        ["BPF", "NET_ADMIN", "PERFMON"].into()
    );
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_ne!(security["privileged"], true);
    for context in [&pod["securityContext"], security] {
        assert_eq!(context["runAsNonRoot"], true);
        assert_eq!(context["runAsUser"], 65532, "the image's user");
        // The shipped profile, by the name the guide copies it under.
        assert_eq!(context["seccompProfile"]["type"], "Localhost");
        let profile = context["seccompProfile"]["localhostProfile"]
            .as_str()
            .unwrap();
        let shipped = root().join("contrib/seccomp").join(profile);
        assert!(shipped.is_file(), "no {}", shipped.display());
        assert!(
            !profile.contains('/'),
            "{profile}: the guide copies it flat"
        );
    }
    // Somewhere writable for the log and the summary.
    let mounts: BTreeSet<&str> = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    let args: Vec<&str> = agent["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for flag in ["--log", "--summary"] {
        let path = flag_value(&args, flag);
        assert!(
            mounts.iter().any(|m| path.starts_with(m)),
            "{flag} {path} is on the read-only root"
        );
    }
    for limit in ["cpu", "memory"] {
        assert!(agent["resources"]["limits"][limit].is_string());
        assert!(agent["resources"]["requests"][limit].is_string());
    }
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| *a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args.get(at + 1)
        .unwrap_or_else(|| panic!("{flag} has no value"))
}

#[test]
fn the_agent_arguments_name_only_what_the_manifests_define() {
    let all = resources();
    let ds = &all["DaemonSet/parallelrun"];
    let pod = &ds["spec"]["template"];
    let agent = &pod["spec"]["containers"][0];
    let env: BTreeMap<&str, &Value> = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    let args: Vec<&str> = agent["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    // Kubernetes leaves an undefined $(VAR) as it is: the agent would get
    // the text "$(VAR)".
    for arg in &args {
        let mut rest = *arg;
        while let Some(at) = rest.find("$(") {
            let name = &rest[at + 2..];
            let end = name.find(')').expect("closed $(");
            assert!(
                env.contains_key(&name[..end]),
                "{arg}: no env {}",
                &name[..end]
            );
            rest = &name[end..];
        }
    }
    // Each ConfigMap key read exists.
    let mut config: BTreeMap<&str, &str> = BTreeMap::new();
    for e in env.values() {
        let Some(key_ref) = e.pointer("/valueFrom/configMapKeyRef") else {
            continue;
        };
        let map = &all[&format!("ConfigMap/{}", key_ref["name"].as_str().unwrap())];
        let key = key_ref["key"].as_str().unwrap();
        let value = map["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap has no key {key}"));
        config.insert(e["name"].as_str().unwrap(), value);
    }
    // The Services replayed to exist, on the port given.
    for var in ["NEW", "SECONDARY"] {
        let target = config[var];
        let (host, port) = target.rsplit_once(':').unwrap();
        let mut parts = host.split('.');
        let (name, namespace) = (parts.next().unwrap(), parts.next().unwrap());
        let service = &all[&format!("Service/{name}")];
        assert_eq!(service["metadata"]["namespace"], namespace, "{target}");
        let ports: Vec<String> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].to_string())
            .collect();
        assert!(ports.iter().any(|p| p == port), "{target}: ports {ports:?}");
    }
    // Prometheus scrapes the port the agent serves metrics on.
    let metrics_port = flag_value(&args, "--metrics").rsplit_once(':').unwrap().1;
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], metrics_port);
    let declared = agent["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(declared["containerPort"].to_string(), metrics_port);
}

/// The container default (Debian's containers-common, installed with
/// podman), when this machine has it.
const DEFAULT_SECCOMP: &str = "/usr/share/containers/seccomp.json";

#[test]
fn the_seccomp_profile_is_the_default_plus_bpf_and_perf_event_open() {
    let read =
        |p: &Path| -> Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let shipped = read(&root().join("contrib/seccomp/parallelrun.json"));
    let added = ["bpf", "perf_event_open"];
    // Allowed whatever the capabilities, by a rule of its own.
    let allowing: Vec<&Value> = shipped["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| strings(&r["names"]).iter().any(|n| added.contains(n)))
        .collect();
    assert_eq!(allowing.len(), 1, "{allowing:?}");
    assert_eq!(strings(&allowing[0]["names"]), added.into());
    assert_eq!(allowing[0]["action"], "SCMP_ACT_ALLOW");
    assert_eq!(allowing[0]["includes"], serde_json::json!({}));
    assert_eq!(shipped["defaultAction"], "SCMP_ACT_ERRNO");

    let default = Path::new(DEFAULT_SECCOMP);
    assert!(
        default.is_file(),
        "{DEFAULT_SECCOMP} missing: run `cargo xtask setup` (it installs podman)"
    );
    // Take the two out of the shipped profile and out of the default: the
    // rest is identical.
    let without = |mut p: Value| -> Value {
        let rules = p["syscalls"].as_array_mut().unwrap();
        for rule in rules.iter_mut() {
            let names = rule["names"].as_array_mut().unwrap();
            names.retain(|n| !added.contains(&n.as_str().unwrap()));
        }
        rules.retain(|r| !r["names"].as_array().unwrap().is_empty());
        p
    };
    assert_eq!(without(shipped), without(read(default)));
}
