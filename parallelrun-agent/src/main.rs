//! `parallelrun`: validate a new version of an HTTP service against the old
//! one under real production traffic, observed with a TC eBPF program.

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

mod cli;
mod exchanges;
mod live;
mod memory;
mod priority;
mod record;
mod results;
mod run;
mod summaries;
mod tail;

use clap::Parser;
use cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `verdict`'s exit codes 1 and 2 are decisions: its usage errors
            // exit 3, like its other errors.
            let verdict = std::env::args().nth(1).as_deref() == Some("verdict");
            if verdict && e.use_stderr() {
                let _ = e.print();
                return std::process::ExitCode::from(summaries::VERDICT_ERROR);
            }
            e.exit()
        }
    };
    // Offline commands that print results need no runtime.
    match cli.command {
        Command::Verdict(args) => return summaries::verdict(args),
        Command::Report(args) => {
            return match summaries::report(args) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cli.log_level())),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before the runtime too: capabilities are per thread, and new threads
    // inherit this one's.
    match parallelrun_agent::capabilities::raise_permitted() {
        Ok(raised) if !raised.is_empty() => tracing::debug!(?raised, "capabilities made effective"),
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    // Before the runtime: its threads inherit the policy of this one.
    let priority = cli.priority();
    if let Some(p) = priority
        && let Err(e) = priority::apply(p)
    {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(p) = priority {
        priority::check_threads(p);
    }
    let done = runtime.block_on(async move {
        let ok = |()| std::process::ExitCode::SUCCESS;
        match cli.command {
            Command::Record(args) => record::run(args).await.map(ok),
            Command::Run(args) => run::live(args).await,
            Command::Replay(args) => run::offline(args).await,
            Command::Tail(args) => tail::run(args).await.map(ok),
            Command::Exchanges(args) => exchanges::run(args).await.map(ok),
            Command::Report(_) | Command::Verdict(_) => Ok(std::process::ExitCode::SUCCESS),
        }
    });
    match done {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
