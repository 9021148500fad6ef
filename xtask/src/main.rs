//! `cargo xtask`: setup, build, run and test parallelrun.

mod bench;
mod conformance;
mod image;
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
    /// Build (optimised) and run `parallelrun ARGS` as root (through sudo
    /// when needed).
    Run {
        /// Build without optimisations instead (faster to build, several
        /// times slower to run: not for real traffic).
        #[arg(long)]
        debug: bool,
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
    /// Build the agent's container image (buildah, FROM scratch, runs as
    /// 65532:65532); see README, "Deploying on Kubernetes".
    Image {
        /// Image name and tag.
        #[arg(long, default_value_t = image::default_tag())]
        tag: String,
        /// Also write the image to this file as an OCI archive.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Package the debug build (quicker to build, much slower to run:
        /// for trying the image, not for traffic).
        #[arg(long)]
        debug: bool,
    },
    /// A first look: the agent shadows a sample service, in throwaway network
    /// namespaces, while clients use it; shows the mismatch log live, the
    /// summary and a verdict (as root, through sudo when needed).
    Demo {
        /// Seconds of live traffic.
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
    /// Benchmarks, printed as markdown tables: live production overhead,
    /// capture completeness and cost (no agent / capture only / full pipeline
    /// / nginx mirror, as root), then the capture-side pipeline's offline
    /// throughput on one core. JSON under target/bench/.
    Bench(bench::BenchArgs),
    /// Does parallelrun see what Wireshark sees? Runs every capture in a
    /// folder through `parallelrun exchanges` and compares per connection, in
    /// order, with tshark's HTTP dissection (method, target, status). Fails
    /// when a request tshark dissects has no outcome.
    Conformance {
        /// Folder of .pcap/.pcapng files (default: ../shared/realworld-pcaps
        /// beside the checkout, when it exists).
        #[arg(long, value_name = "DIR")]
        pcaps: Option<PathBuf>,
    },
    /// Run a cargo-fuzz target for a bounded time over its checked-in corpus
    /// (installs cargo-fuzz when missing).
    Fuzz {
        /// Seconds to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Target (see fuzz/Cargo.toml).
        #[arg(default_value = "reassembly_http")]
        target: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Build { release } => {
            setup::run()?;
            build(release).map(drop)
        }
        Task::Run { debug, args } => {
            setup::run()?;
            let bin = build(!debug)?;
            util::run_as_root(&bin, &args)
        }
        Task::Test { no_lint, filter } => {
            setup::run()?;
            if !no_lint {
                lint()?;
            }
            test(filter.as_deref())?;
            if filter.is_none() {
                for target in FUZZ_TARGETS {
                    fuzz(target, FUZZ_SECONDS_IN_TEST)?;
                }
            }
            Ok(())
        }
        Task::Lint => {
            setup::run()?;
            lint()
        }
        Task::Image { tag, output, debug } => {
            setup::run()?;
            let bin = build(!debug)?;
            image::build(&bin, &tag, output.as_deref())
        }
        Task::Demo { duration } => {
            setup::run()?;
            let agent = build(false)?;
            let demo = build_demo()?;
            let args = [
                "--duration".to_owned(),
                duration.to_string(),
                "--agent".to_owned(),
                agent.display().to_string(),
            ];
            util::run_as_root_interactive(
                &demo,
                &args,
                "the demo creates network namespaces and attaches eBPF",
            )
        }
        Task::Bench(args) => bench::run(&args),
        Task::Conformance { pcaps } => {
            setup::run()?;
            let dir = match pcaps {
                Some(d) => d,
                None => default_pcaps().ok_or_else(|| {
                    anyhow::anyhow!(
                        "no --pcaps DIR given and no ../shared/realworld-pcaps beside the checkout"
                    )
                })?,
            };
            let agent = build(false)?;
            conformance::run(&dir, &agent)
        }
        Task::Fuzz { seconds, target } => {
            setup::run()?;
            fuzz(&target, seconds)
        }
    }
}

/// The real-world captures shared beside the checkout, when they are there.
fn default_pcaps() -> Option<PathBuf> {
    let dir = workspace_root().join("../shared/realworld-pcaps");
    dir.is_dir().then_some(dir)
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

/// Builds the demo (`tests/src/bin/demo.rs`) and returns its path.
fn build_demo() -> Result<PathBuf> {
    util::status(cargo().args([
        "build",
        "--package",
        "parallelrun-tests",
        "--bin",
        "parallelrun-demo",
    ]))?;
    Ok(util::target_dir()?.join("debug").join("parallelrun-demo"))
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

fn test(filter: Option<&str>) -> Result<()> {
    let bin = build(false)?;
    // Integration tests attach for real: they need root. Re-run as root.
    ensure_root(&["test", "--no-lint"], filter)?;
    // The image test runs the image of the binary under test.
    image::build(&bin, TEST_IMAGE, None)?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--exclude", "parallelrun-ebpf"])
        .env("PARALLELRUN_BIN", &bin)
        .env("PARALLELRUN_IMAGE", TEST_IMAGE)
        .env("KUBERNETES_VALIDATE", setup::kubernetes_validate_bin()?)
        .env(
            "PARALLELRUN_DEMO_BIN",
            util::target_dir()?.join("debug").join("parallelrun-demo"),
        );
    if let Some(f) = filter {
        cmd.arg(f);
    }
    util::status(&mut cmd)
}

/// The image `cargo xtask test` builds from the debug agent for its tests.
const TEST_IMAGE: &str = "localhost/parallelrun:test";

/// The cargo-fuzz targets (fuzz/Cargo.toml), all run by `cargo xtask test`.
const FUZZ_TARGETS: [&str; 6] = [
    "reassembly_http",
    "http_parse",
    "diff",
    "summary",
    "http2",
    "http2_streams",
];

/// How long `cargo xtask test` fuzzes each target.
const FUZZ_SECONDS_IN_TEST: u64 = 40;

/// Runs `cargo fuzz run TARGET` on its checked-in corpus for `seconds`.
/// The fuzz crate is its own workspace, built with nightly and sanitizers;
/// the eBPF object is not needed there (AYA_BUILD_SKIP).
fn fuzz(target: &str, seconds: u64) -> Result<()> {
    setup::cargo_fuzz()?;
    let root = workspace_root();
    let corpus = root.join("fuzz/corpus").join(target);
    // New inputs go to a scratch corpus so the checked-in one stays small.
    let scratch = util::target_dir()?.join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&scratch)?;
    eprintln!("xtask: fuzzing {target} for {seconds}s");
    util::status(
        util::nightly_cargo()
            .current_dir(&root)
            .env("AYA_BUILD_SKIP", "1")
            .args(["fuzz", "run", "--fuzz-dir", "fuzz", target])
            .arg(&scratch)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=2048"),
    )
}
