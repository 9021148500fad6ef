//! `cargo xtask setup`: make this machine able to build the eBPF program.
//! Idempotent: each step checks first and says what it found or did.

use std::{env, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{is_root, output, status};

/// Debian packages the build, the integration tests and `cargo xtask
/// conformance` (tshark) need, besides LLVM: the results tests start a real
/// Prometheus server (and check the shipped rules with its `promtool`) and
/// open the HTML report in headless Chromium (with a font to draw it). The
/// HTTP/2 tests drive nghttpd, nghttp and h2load (nghttp2), and a real gRPC
/// server and client in Debian's Python (grpcio, protobuf) with descriptor
/// sets compiled by protoc. `cargo xtask image` builds with buildah (and
/// setcap, for the agent's file capabilities); its test runs the image with
/// podman on runc. The manifests' validator lives in a venv of Debian's
/// Python.
const PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "tcpdump",
    "tshark",
    "prometheus",
    "chromium",
    "fonts-dejavu-core",
    "nghttp2-server",
    "nghttp2-client",
    "python3-grpcio",
    "python3-h2",
    "python3-protobuf",
    "protobuf-compiler",
    "nats-server",
    "buildah",
    "podman",
    "runc",
    "libcap2-bin",
    "python3-venv",
];

pub fn run() -> Result<()> {
    let llvm = nightly_llvm_major()?;
    rust_src()?;
    let mut packages: Vec<String> = PACKAGES.iter().map(|p| p.to_string()).collect();
    packages.push(format!("llvm-{llvm}-dev"));
    apt(&packages)?;
    bpf_linker(llvm)?;
    kubernetes_validate()?;
    Ok(())
}

/// The version of `kubernetes-validate` (PyPI) the manifests are checked
/// with; it bundles the schemas of Kubernetes 1.25 to 1.37.
const KUBERNETES_VALIDATE: &str = "1.37.0";

/// Path of the `kubernetes-validate` command, in a venv under target/.
pub fn kubernetes_validate_bin() -> Result<std::path::PathBuf> {
    Ok(crate::util::target_dir()?.join("kubernetes-validate/bin/kubernetes-validate"))
}

/// Installs `kubernetes-validate` into its venv when missing or of another
/// version (Debian's Python, so that it does not depend on the user's).
fn kubernetes_validate() -> Result<()> {
    let bin = kubernetes_validate_bin()?;
    let installed = output(Command::new(&bin).arg("--version"));
    if installed.as_deref().map(str::trim) == Some(KUBERNETES_VALIDATE) {
        say(
            "kubernetes-validate",
            &format!("present ({KUBERNETES_VALIDATE})"),
        );
        return Ok(());
    }
    let venv = bin
        .parent()
        .and_then(|b| b.parent())
        .context("the kubernetes-validate path has no venv directory")?;
    say(
        "kubernetes-validate",
        "missing; installing it from PyPI into a venv",
    );
    status(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(venv),
    )
    .context("cannot make a Python venv: install python3-venv")?;
    status(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .arg(format!("kubernetes-validate=={KUBERNETES_VALIDATE}")),
    )
    .context("pip could not install kubernetes-validate: is PyPI reachable?")?;
    say("kubernetes-validate", "installed");
    Ok(())
}

fn say(what: &str, state: &str) {
    eprintln!("setup: {what:<22} {state}");
}

/// The LLVM major version of the nightly toolchain: bpf-linker must match it.
fn nightly_llvm_major() -> Result<u32> {
    let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"])).context(
        "the nightly toolchain is missing: install it with `rustup toolchain install nightly --component rust-src`",
    )?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .context("cannot read the LLVM version of `rustc +nightly -vV`")?;
    say("nightly LLVM", &format!("{major}"));
    Ok(major)
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        say("rust-src (nightly)", "present");
        return Ok(());
    }
    status(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    say("rust-src (nightly)", "installed");
    Ok(())
}

fn apt(packages: &[String]) -> Result<()> {
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        say("apt packages", "present");
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    let sudo = |args: &[&str]| {
        let mut c = if is_root() {
            Command::new(args[0])
        } else {
            let mut c = Command::new("sudo");
            c.arg(args[0]);
            c
        };
        c.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    say("apt packages", &format!("installing {}", names.join(" ")));
    status(&mut sudo(&["apt-get", "update", "-qq"]))?;
    let mut install = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&names);
    status(&mut sudo(&install)).context(
        "apt-get could not install the packages above; on a non-Debian system install LLVM's development files of the same major version as `rustc +nightly -vV` reports",
    )?;
    say("apt packages", "installed");
    Ok(())
}

fn bpf_linker(llvm: u32) -> Result<()> {
    let linked = which("bpf-linker").and_then(|path| output(Command::new("ldd").arg(path)));
    if let Some(ldd) = &linked {
        if ldd.contains(&format!("libLLVM.so.{llvm}")) || ldd.contains(&format!("libLLVM-{llvm}")) {
            say("bpf-linker", &format!("present (LLVM {llvm})"));
            return Ok(());
        }
        say(
            "bpf-linker",
            &format!("built against another LLVM; rebuilding for LLVM {llvm}"),
        );
    } else {
        say(
            "bpf-linker",
            &format!("missing; building it against LLVM {llvm} (about a minute)"),
        );
    }
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "install",
        "--force",
        "bpf-linker",
        "--no-default-features",
        "--features",
        &format!("llvm-{llvm}"),
    ])
    .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}"))
    // Build it with the toolchain running xtask, not one a rust-toolchain file picks.
    .current_dir(env::temp_dir());
    status(&mut cmd)?;
    if which("bpf-linker").is_none() {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    say("bpf-linker", "installed");
    Ok(())
}

fn which(bin: &str) -> Option<String> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// Installs cargo-fuzz when missing (used by `cargo xtask fuzz` and `test`).
pub fn cargo_fuzz() -> Result<()> {
    if which("cargo-fuzz").is_some() {
        say("cargo-fuzz", "present");
        return Ok(());
    }
    say("cargo-fuzz", "missing; installing it (about a minute)");
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["install", "--locked", "cargo-fuzz"])
        .current_dir(env::temp_dir());
    status(&mut cmd)?;
    say("cargo-fuzz", "installed");
    Ok(())
}

/// Installs what `cargo xtask bench` drives when missing: wrk and nginx
/// (apt; Debian's nginx has the `mirror` module built in) and oha (crates.io:
/// fixed-rate load with latency percentiles; wrk2 is not packaged).
/// Returns the path of oha.
pub fn bench_tools() -> Result<std::path::PathBuf> {
    apt(&["wrk".to_owned(), "nginx".to_owned()])?;
    let cargo_bin = env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .map(|d| d.join("bin/oha"));
    let found = which("oha")
        .map(std::path::PathBuf::from)
        .or_else(|| cargo_bin.clone().filter(|p| p.is_file()));
    if let Some(path) = found {
        say("oha", "present");
        return Ok(path);
    }
    say("oha", "missing; installing it with cargo (a few minutes)");
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["install", "--locked", "oha"])
        .current_dir(env::temp_dir());
    status(&mut cmd)?;
    let path = which("oha")
        .map(std::path::PathBuf::from)
        .or_else(|| cargo_bin.filter(|p| p.is_file()))
        .context("oha was installed but is not on PATH: add ~/.cargo/bin to PATH")?;
    say("oha", "installed");
    Ok(path)
}
