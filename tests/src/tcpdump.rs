//! tcpdump writing every TCP packet of an interface to a pcap file, as a
//! witness independent of the agent.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use parallelrun_sandbox::Proc;

use crate::netns::Netns;

/// tcpdump on `iface` in a namespace, writing whole packets (`-s 0`) to a
/// file as they come (`-U`). Killed on drop; [`Tcpdump::stop`] flushes.
pub struct Tcpdump {
    proc: Proc,
    path: PathBuf,
    /// What tcpdump printed on stderr.
    said: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Tcpdump {
    /// Starts tcpdump and waits until it has opened the interface (it says
    /// "listening on" on stderr), so that the test's first packet is caught.
    pub fn start(ns: &Netns, iface: &str, path: &Path) -> Self {
        let mut cmd = ns.command("tcpdump");
        // --immediate-mode: each packet as it comes, not when a ring block
        // fills or times out (which could leave the tail unwritten at stop).
        cmd.args([
            "-i",
            iface,
            "-s",
            "0",
            "-B",
            "65536",
            "--immediate-mode",
            "-U",
            "-w",
        ])
        .arg(path)
        .arg("tcp")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut proc = Proc::spawn("tcpdump", &mut cmd)
            .unwrap_or_else(|e| panic!("{e} (cargo xtask setup installs tcpdump)"))
            .with_grace(Duration::ZERO);
        let pipe = proc.take_stderr().expect("tcpdump's stderr is piped");
        let (tx, rx) = mpsc::channel();
        let said = Arc::new(Mutex::new(String::new()));
        let log = said.clone();
        // Reads stderr to the end, so tcpdump never blocks on it.
        let reader = thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on") {
                    let _ = tx.send(Ok(()));
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
            let _ = tx.send(Err(log.lock().unwrap().clone()));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(said)) => panic!("tcpdump exited before listening on {iface}:\n{said}"),
            Err(_) => panic!("tcpdump did not start listening on {iface} within 10 s"),
        }
        Self {
            proc,
            path: path.to_owned(),
            said,
            reader: Some(reader),
        }
    }

    /// The pcap file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops tcpdump once it has written everything: SIGINT makes it exit
    /// without reading what is still queued, so wait until the file stops
    /// growing first. Panics when tcpdump reports packets dropped by the
    /// kernel (the capture would be incomplete).
    pub fn stop(&mut self) {
        let size = || std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = size();
        loop {
            thread::sleep(Duration::from_millis(500));
            let now = size();
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        // SIGINT makes tcpdump flush and exit.
        if let Err(e) = self.proc.stop(libc::SIGINT, Duration::from_secs(10)) {
            panic!("{e}");
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let said = self.said.lock().unwrap().clone();
        let dropped = said
            .lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert_eq!(
            dropped,
            Some(0),
            "tcpdump's capture {} is incomplete:\n{said}",
            self.path.display()
        );
    }
}
