use std::{
    env,
    os::unix::process::ExitStatusExt as _,
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

pub use parallelrun_sandbox::is_root;

/// Runs `bin args` as root: directly when root, else through `sudo -E`.
pub fn run_as_root(bin: &Path, args: &[String]) -> Result<()> {
    let mut cmd = root_command(bin, "parallelrun needs root to load eBPF")?;
    cmd.args(args);
    status(&mut cmd)
}

/// `bin` as root: itself when root, else `sudo -E bin` (saying `why`); a
/// clear error when neither is possible.
fn root_command(bin: &Path, why: &str) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(bin));
    }
    if !on_path("sudo") {
        bail!("{why}, so it must run as root, and sudo is not installed: run this command as root");
    }
    eprintln!("xtask: {why}; running it through sudo");
    let mut c = Command::new("sudo");
    c.arg("-E").arg(bin);
    Ok(c)
}

fn on_path(bin: &str) -> bool {
    env::var_os("PATH").is_some_and(|p| env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Like [`run_as_root`] for a program the user watches and may stop with
/// Ctrl-C: xtask ignores SIGINT while it runs, so that the program can clean
/// up and finish its output before the shell prompt returns. Exits with the
/// program's status when it fails (it has said why).
pub fn run_as_root_interactive(bin: &Path, args: &[String], why: &str) -> Result<()> {
    let mut cmd = root_command(bin, why)?;
    cmd.args(args);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    // Ignored from here on (the child, started already, keeps the default)
    // until it has exited. Should that fail, Ctrl-C stops xtask too: no harm.
    let ignored = parallelrun_sandbox::signal::ignore(libc::SIGINT).ok();
    let st = child.wait();
    drop(ignored);
    let st = st.with_context(|| format!("waiting for {cmd:?}"))?;
    if !st.success() {
        let code = st.code().or_else(|| st.signal().map(|s| 128 + s));
        std::process::exit(code.unwrap_or(1));
    }
    Ok(())
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
