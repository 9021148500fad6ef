use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn target_dir() -> Result<PathBuf> {
    Ok(match env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target"),
    })
}

/// `cargo` of the toolchain running xtask, in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// `cargo` of the nightly toolchain (for the eBPF crate).
pub fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]);
    // Keep the stable toolchain's variables out of the nightly build.
    for key in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN"] {
        cmd.env_remove(key);
    }
    cmd
}

/// Runs a command, failing with its command line when it fails.
pub fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Runs a command and returns its stdout, or None when it cannot run or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Runs `bin args` as root: directly when root, else through `sudo -E`.
pub fn run_as_root(bin: &Path, args: &[String]) -> Result<()> {
    let mut cmd = if is_root() {
        Command::new(bin)
    } else {
        eprintln!("xtask: parallelrun needs root to load eBPF; running it through sudo");
        let mut c = Command::new("sudo");
        c.arg("-E").arg(bin);
        c
    };
    cmd.args(args);
    status(&mut cmd)
}

/// When not root, re-runs `cargo xtask ARGS` through `sudo -E` (keeping PATH
/// so the same toolchain is found) and exits with its status.
pub fn ensure_root(xtask_args: &[&str], extra: Option<&str>) -> Result<()> {
    if is_root() {
        return Ok(());
    }
    eprintln!(
        "xtask: the integration tests attach eBPF programs and need root; re-running through sudo"
    );
    let path = env::var("PATH").unwrap_or_default();
    let mut cmd = Command::new("sudo");
    cmd.arg("-E")
        .arg("env")
        .arg(format!("PATH={path}"))
        .arg(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .arg("xtask")
        .args(xtask_args)
        .args(extra)
        .current_dir(workspace_root());
    let st = cmd.status().context("cannot start sudo")?;
    std::process::exit(st.code().unwrap_or(1));
}
