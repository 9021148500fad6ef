//! Supervision: the demo runs as a worker child in a process group of its
//! own, under a supervisor that passes on the signals it gets; stop signals
//! only set a flag; a failure is a panic that unwinds through the guards;
//! and the worker checks at the end that every namespace it made is gone.

use std::{
    io::{self, Write as _},
    os::unix::process::ExitStatusExt as _,
    panic::{self, AssertUnwindSafe},
    path::Path,
    process::{Command, ExitCode},
    thread,
    time::Duration,
};

use parallelrun_sandbox::{Proc, signal};

use crate::{Args, Outcome, output::Ui, run};

/// Runs the demo as a child (`--worker`) in its own process group and
/// passes it the signals this process gets.
///
/// A Ctrl-C goes to the terminal's whole foreground process group. Were the
/// demo in it, so would be its children: an `ip netns add` killed half-way
/// leaves a namespace no guard knows of, and an agent killed before it
/// attached looks like a failure. In its own group the worker alone gets the
/// signal (from here) and stops in order: traffic, agent (which prints its
/// summary), tail, services, namespaces. If this process dies, even by
/// SIGKILL, the worker gets SIGTERM (PR_SET_PDEATHSIG) and cleans up too.
pub(crate) fn supervise(duration: u64, agent: &Path) -> ExitCode {
    if let Err(e) = signal::install_stop_handlers() {
        eprintln!("parallelrun-demo: {e}");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("parallelrun-demo: cannot find its own executable: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cmd = Command::new(exe);
    cmd.args(["--worker", "--duration", &duration.to_string(), "--agent"])
        .arg(agent);
    let mut child = match Proc::spawn_own_group("the demo", &mut cmd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("parallelrun-demo: {e}");
            return ExitCode::from(2);
        }
    };
    loop {
        if let Some(sig) = signal::take() {
            child.signal(sig);
        }
        if let Some(st) = child.exited() {
            let code = st.code().or_else(|| st.signal().map(|s| 128 + s));
            return ExitCode::from(code.unwrap_or(2) as u8);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The demo itself (`--worker`, started by [`supervise`]).
pub(crate) fn worker(args: &Args) -> ExitCode {
    let ui = Ui::new();
    let Some(agent) = args.agent.clone() else {
        eprintln!("parallelrun-demo: --worker needs --agent");
        return ExitCode::from(2);
    };
    // The helpers start the agent from PARALLELRUN_BIN.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("PARALLELRUN_BIN", &agent) };
    if let Err(e) = signal::install_stop_handlers() {
        eprintln!("parallelrun-demo: {e}");
        return ExitCode::from(2);
    }
    // Not the terminal's foreground group: write to it even with `stty
    // tostop`. Children inherit the ignored disposition.
    let _tostop = signal::ignore(libc::SIGTTOU).ok();
    install_panic_hook();

    let mut made = Made::default();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(args, &agent, &ui, &mut made)));
    // Everything `run` made has been dropped by now, on every path.
    let left: Vec<&String> = made
        .namespaces
        .iter()
        .filter(|n| Path::new("/run/netns").join(n).exists())
        .collect();
    if !left.is_empty() {
        for n in &left {
            eprintln!(
                "parallelrun-demo: could not remove the network namespace {n}: \
                 remove it with `ip netns del {n}`"
            );
        }
        return ExitCode::from(2);
    }
    let cleaned = "Removed everything the demo made: namespaces, veths, services, agent, \
                   temporary files.";
    let code = match (outcome, signal::received()) {
        (Ok(Outcome::Passed), _) => 0,
        (Ok(Outcome::Failed), _) => 1,
        (Ok(Outcome::Interrupted(sig)), _) | (Err(_), Some(sig)) => 128 + sig as u8,
        (Err(_), None) => {
            eprintln!("parallelrun-demo: stopped by the error above. {cleaned}");
            return ExitCode::from(2);
        }
    };
    println!("{}", ui.dim(cleaned));
    ExitCode::from(code)
}

/// Names of what was made, so [`worker`] can check they are gone.
#[derive(Default)]
pub(crate) struct Made {
    pub(crate) namespaces: Vec<String>,
}

pub(crate) fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT, Ctrl-C".to_owned(),
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        s => format!("signal {s}"),
    }
}

/// Failures in the helpers are panics: say what failed plainly. Unwinding
/// then drops, and so removes, everything made so far. (Never `eprintln!`
/// here: a panic in the hook, e.g. with the terminal gone, would abort
/// without cleaning up.)
fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let text = match signal::received() {
            // A command or child that died of the same signal: no error.
            Some(sig) => format!(
                "\nparallelrun-demo: interrupted ({}) while: {msg}\n",
                signal_name(sig)
            ),
            None => {
                let at = info
                    .location()
                    .map(|l| format!(" [{}:{}]", l.file(), l.line()))
                    .unwrap_or_default();
                format!("\nparallelrun-demo: error: {msg}{at}\n")
            }
        };
        let _ = io::stderr().write_all(text.as_bytes());
    }));
}
