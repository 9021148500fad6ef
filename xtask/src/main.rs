//! `cargo xtask`: setup, build, run and test parallelrun.

mod setup;
mod util;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::util::{cargo, ensure_root, workspace_root};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for parallelrun")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing to build the eBPF program (idempotent):
    /// llvm-<N>-dev, bpf-linker built against it, rust-src for nightly.
    Setup,
    /// Build the agent (and, through its build script, the eBPF program).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run `parallelrun ARGS` as root (through sudo when needed).
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for parallelrun, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Format check, clippy, unit tests and the integration tests that attach
    /// for real (as root, through sudo when needed).
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// `cargo fmt --check` and `cargo clippy -D warnings` over the workspace.
    Lint,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Build { release } => {
            setup::run()?;
            build(release).map(drop)
        }
        Task::Run { release, args } => {
            setup::run()?;
            let bin = build(release)?;
            util::run_as_root(&bin, &args)
        }
        Task::Test { no_lint, filter } => {
            setup::run()?;
            if !no_lint {
                lint()?;
            }
            test(filter)
        }
        Task::Lint => {
            setup::run()?;
            lint()
        }
    }
}

/// Builds the agent binary and returns its path.
fn build(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "parallelrun-agent"]);
    if release {
        cmd.arg("--release");
    }
    util::status(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(util::target_dir()?.join(profile).join("parallelrun"))
}

fn lint() -> Result<()> {
    util::status(cargo().args(["fmt", "--all", "--check"]))?;
    util::status(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "parallelrun-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate only builds for the bpf target.
    util::status(
        util::nightly_cargo()
            .current_dir(workspace_root().join("parallelrun-ebpf"))
            .args([
                "clippy",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--",
                "-D",
                "warnings",
            ]),
    )
}

fn test(filter: Option<String>) -> Result<()> {
    let bin = build(false)?;
    // Integration tests attach for real: they need root. Re-run as root.
    ensure_root(&["test", "--no-lint"], filter.as_deref())?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--exclude", "parallelrun-ebpf"])
        .env("PARALLELRUN_BIN", &bin);
    if let Some(f) = &filter {
        cmd.arg(f);
    }
    util::status(&mut cmd)
}
