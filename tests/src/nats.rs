//! A real `nats-server` with JetStream inside a test's namespace, and what
//! its stream holds, read back with the NATS client.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use parallelrun_sandbox::Proc;

use crate::netns::Netns;

/// `nats-server -js` on `127.0.0.1:PORT` in a namespace; killed on drop.
pub struct NatsServer {
    proc: Option<Proc>,
    pub port: u16,
    pub store: PathBuf,
}

impl NatsServer {
    /// Starts the server with its JetStream store in `store` and waits
    /// until it accepts connections.
    pub fn start(ns: &Netns, port: u16, store: &Path) -> Self {
        let mut server = Self {
            proc: None,
            port,
            store: store.to_owned(),
        };
        server.restart(ns);
        server
    }

    /// Starts it again (after [`NatsServer::kill`]) on the same port and
    /// store.
    pub fn restart(&mut self, ns: &Netns) {
        assert!(self.proc.is_none(), "nats-server is running already");
        let mut cmd = ns.command("nats-server");
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(&self.store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let proc = Proc::spawn("nats-server", &mut cmd)
            .unwrap_or_else(|e| panic!("{e}: install it with `cargo xtask setup`"))
            .with_grace(Duration::ZERO);
        self.proc = Some(proc);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = ns.run(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        });
        assert!(up, "nats-server did not listen on {addr} within 10 s");
    }

    /// SIGKILL, as a crash or a lost host would; the store stays.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(libc::SIGKILL, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("stopping nats-server: {e}"));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// What a stream holds.
#[derive(Debug, Default)]
pub struct Contents {
    /// Results per subject: a summary counts one, an event message one per
    /// JSON line (events waiting together are published as one message).
    pub by_subject: BTreeMap<String, u64>,
    /// Every message's `Nats-Msg-Id`, in stream order.
    pub ids: Vec<String>,
}

impl Contents {
    /// Results on subjects starting with `prefix`.
    pub fn count(&self, prefix: &str) -> u64 {
        self.by_subject
            .iter()
            .filter(|(s, _)| s.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Runs `f` with a JetStream context on `url`, from inside `ns`.
pub fn with_jetstream<T: Send + 'static>(
    ns: &Netns,
    url: &str,
    f: impl AsyncFnOnce(jetstream::Context) -> T + Send + 'static,
) -> T {
    let url = url.to_owned();
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = async_nats::connect(url.as_str()).await.unwrap();
            f(jetstream::new(client)).await
        })
    })
}

/// Every message of `stream`, read one by one (none when it does not
/// exist yet).
pub fn contents(ns: &Netns, url: &str, stream: &str) -> Contents {
    let stream = stream.to_owned();
    with_jetstream(ns, url, async move |js| {
        // Not there yet: nothing was published.
        let Ok(mut s) = js.get_stream(&stream).await else {
            return Contents::default();
        };
        let state = s.info().await.unwrap().state.clone();
        let mut out = Contents::default();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            let Ok(m) = s.get_raw_message(seq).await else {
                continue;
            };
            let results = if m.subject.contains(".summary.") {
                1
            } else {
                m.payload.split(|&b| b == b'\n').count() as u64
            };
            *out.by_subject.entry(m.subject.to_string()).or_default() += results;
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.ids.push(id);
        }
        out
    })
}
