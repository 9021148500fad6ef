//! `parallelrun tail`: follow the mismatch log, one readable entry per event.

use std::io::IsTerminal as _;

use parallelrun_agent::{
    report::tail::{TailOptions, tail as follow},
    shutdown::Shutdown,
};

use crate::cli::TailArgs;

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let color = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    let opts = TailOptions {
        follow: !args.no_follow,
        from_start: args.from_start,
        color,
    };
    let mut shutdown = Shutdown::new(None)?;
    let mut out = std::io::stdout();
    follow(&args.file, &opts, &mut out, async move {
        shutdown.wait().await;
    })
    .await?;
    Ok(())
}
