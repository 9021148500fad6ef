//! The demo's terminal output: styles (only on a terminal), aligned items,
//! long commands wrapped, the verdict as check marks, and `parallelrun tail`
//! printing the mismatch log live.

use std::{
    fmt::Display,
    io::{self, IsTerminal as _},
    path::Path,
    process::{Command, Stdio},
};

use parallelrun_sandbox::Proc;

use crate::{Outcome, supervise::signal_name, verdict::Check};

pub(crate) fn stopped_early(ui: &Ui, sig: i32) -> Outcome {
    println!(
        "{}",
        ui.yellow(format!(
            "Interrupted ({}): stopped early, no verdict. Cleaning up.",
            signal_name(sig)
        ))
    );
    Outcome::Interrupted(sig)
}

pub(crate) fn item(ui: &Ui, what: &str, text: impl Display) {
    println!("  {} {text}", ui.bold(format!("{what:<10}")));
}

/// `program args…` as lines of at most `width` characters (when words
/// allow), continued with ` \`.
pub(crate) fn wrap_command(program: &str, args: &[&str], width: usize) -> Vec<String> {
    // Flags stay with their values.
    let mut words: Vec<String> = vec![program.to_owned()];
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if a.starts_with("--") && i + 1 < args.len() && !args[i + 1].starts_with("--") {
            words.push(format!("{a} {}", args[i + 1]));
            i += 2;
        } else {
            words.push(a.to_owned());
            i += 1;
        }
    }
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for w in words {
        if !cur.is_empty() && cur.len() + 1 + w.len() + 2 > width {
            lines.push(format!("{cur} \\"));
            cur = format!("    {w}");
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(&w);
        }
    }
    lines.push(cur);
    lines
}

pub(crate) fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints the checks, then whether the demo passed; returns whether it did.
pub(crate) fn checks(ui: &Ui, checks: &[Check]) -> bool {
    println!("{}", ui.bold("Demo verdict:"));
    for c in checks {
        let mark = if c.ok { ui.green("✓") } else { ui.red("✗") };
        println!("  {mark} {}", c.text);
        for d in &c.details {
            println!("      {d}");
        }
    }
    let ok = checks.iter().all(|c| c.ok);
    if ok {
        println!(
            "{}",
            ui.green(ui.bold("Demo passed: parallelrun found what changed, and only that."))
        );
        println!("Try it on your own service:");
        println!(
            "  cargo xtask run -- run --iface IFACE --old IP:PORT --new IP:PORT --secondary IP:PORT"
        );
        println!("  parallelrun tail    # in another terminal: the mismatch log, live");
    } else {
        println!(
            "{}",
            ui.red(
                ui.bold("Demo FAILED: the agent did not report what it should have (see ✗ above).")
            )
        );
    }
    ok
}

/// `parallelrun tail --from-start LOG`, printing to the demo's stdout; it
/// gets SIGTERM if the demo dies, and is stopped on drop (SIGTERM, then
/// SIGKILL after 3 s).
pub(crate) fn tail(bin: &Path, log: &Path, color: bool) -> parallelrun_sandbox::Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.args(["tail", "--from-start", "--color"])
        .arg(if color { "always" } else { "never" })
        .arg(log)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    Proc::spawn("parallelrun tail", &mut cmd)
}

/// ANSI styles, only when stdout is a terminal (and NO_COLOR is not set).
pub(crate) struct Ui {
    pub(crate) color: bool,
}

impl Ui {
    pub(crate) fn new() -> Self {
        Self {
            color: io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, text: impl Display) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub(crate) fn bold(&self, t: impl Display) -> String {
        self.paint("1", t)
    }
    pub(crate) fn dim(&self, t: impl Display) -> String {
        self.paint("2", t)
    }
    pub(crate) fn red(&self, t: impl Display) -> String {
        self.paint("31", t)
    }
    pub(crate) fn green(&self, t: impl Display) -> String {
        self.paint("32", t)
    }
    pub(crate) fn yellow(&self, t: impl Display) -> String {
        self.paint("33", t)
    }
    pub(crate) fn cyan(&self, t: impl Display) -> String {
        self.paint("36", t)
    }
}

/// What `parallelrun report` made of the run's summary.
pub(crate) struct Report {
    /// The terminal table.
    pub(crate) table: String,
    /// The summary as the report read it (`--json`).
    pub(crate) json: serde_json::Value,
}

/// `parallelrun report` of `summary`: the table (coloured like the demo),
/// the JSON, and the HTML page written to `html`.
pub(crate) fn report(
    agent_bin: &Path,
    summary: &Path,
    html: &Path,
    color: bool,
) -> Result<Report, String> {
    let run = |args: &[&std::ffi::OsStr]| -> Result<Vec<u8>, String> {
        let out = std::process::Command::new(agent_bin)
            .arg("report")
            .args(args)
            .arg(summary)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", agent_bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "parallelrun report failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(out.stdout)
    };
    let when = if color { "always" } else { "never" };
    let table = run(&["--color".as_ref(), when.as_ref()])?;
    let json = run(&["--json".as_ref()])?;
    if let Some(dir) = html.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    run(&["--html".as_ref(), html.as_os_str()])?;
    Ok(Report {
        table: String::from_utf8_lossy(&table).into_owned(),
        json: serde_json::from_slice(&json).map_err(|e| format!("report --json: {e}"))?,
    })
}
