//! The demo's traffic: keep-alive clients in the client namespace that use
//! the old service like a shop's users would, with a mix of reads, noise,
//! the endpoints that changed, large bodies and orders (POSTs), until the
//! end of the run or a stop signal.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use parallelrun_sandbox::signal;
use parallelrun_tests::netns::Netns;

use crate::{NOISE, POST};

/// Keep-alive clients driving traffic at the old service.
pub(crate) const CLIENTS: usize = 4;

#[derive(Default)]
pub(crate) struct TrafficStats {
    pub(crate) sent: AtomicU64,
    pub(crate) posts: AtomicU64,
    /// Requests without a complete response, and the last error.
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What the clients did, once they stopped.
pub(crate) struct TrafficReport {
    pub(crate) sent: u64,
    pub(crate) errors: u64,
    pub(crate) last_error: Option<String>,
}

/// Keep-alive clients in the client namespace. Stopped (and joined) on drop.
pub(crate) struct Traffic {
    stop: Arc<AtomicBool>,
    pub(crate) stats: Arc<TrafficStats>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    pub(crate) fn start(ns: &Netns, server: SocketAddr, until: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(TrafficStats::default());
        let threads = (0..CLIENTS)
            .map(|id| {
                let stop = Arc::clone(&stop);
                let stats = Arc::clone(&stats);
                ns.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    rt.block_on(client(id, server, until, &stop, &stats));
                })
            })
            .collect();
        Self {
            stop,
            stats,
            threads,
        }
    }

    pub(crate) fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    pub(crate) fn stop(mut self) -> TrafficReport {
        self.join();
        TrafficReport {
            sent: self.stats.sent.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
            last_error: self.stats.last_error.lock().unwrap().clone(),
        }
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.join();
    }
}

/// The first requests of each client: together they make every case of the
/// verdict happen within the first second, however short the run.
const FIRST: [[&str; 2]; CLIENTS] = [
    ["/users/7", "/random"],
    ["/status", "POST"],
    ["/version", "/random"],
    ["/gzip", "POST"],
];

/// A request of the mix: mostly ordinary reads, some noise, a few endpoints
/// that changed, a few large bodies, and orders.
fn random_request() -> String {
    match rand::random_range(0..100u32) {
        0..30 => format!("/users/{}", rand::random_range(1..=12u32)),
        30..46 => NOISE.to_owned(),
        46..56 => format!("/same/{:x}", rand::random::<u16>()),
        56..63 => "/chunked".to_owned(),
        63..66 => "/big".to_owned(),
        66..73 => "/gzip".to_owned(),
        73..80 => "/status".to_owned(),
        80..87 => "/version".to_owned(),
        _ => "POST".to_owned(),
    }
}

/// One client: connections of 5 to 20 requests each, 0.3 to 1.2 s apart,
/// until `until` or `stop`.
async fn client(
    id: usize,
    server: SocketAddr,
    until: Instant,
    stop: &AtomicBool,
    stats: &TrafficStats,
) {
    let done = || stop.load(Ordering::Relaxed) || signal::received().is_some();
    let over = || done() || Instant::now() >= until;
    let mut first = FIRST[id % CLIENTS].iter().map(|s| (*s).to_owned());
    let fail = |e: String| {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        *stats.last_error.lock().unwrap() = Some(e);
    };
    while !over() {
        let stream = match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(server),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                fail(format!("connect {server}: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(_) => {
                fail(format!("connect {server}: timed out"));
                continue;
            }
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            fail("HTTP handshake failed".to_owned());
            continue;
        };
        let conn = tokio::spawn(conn);
        let requests = rand::random_range(5..=20u32);
        for _ in 0..requests {
            if over() {
                break;
            }
            let what = first.next().unwrap_or_else(random_request);
            let (method, path, body) = if what == "POST" {
                let order = format!(
                    r#"{{"item":{},"qty":{}}}"#,
                    rand::random_range(1..100u32),
                    rand::random_range(1..5u32)
                );
                (Method::POST, POST.to_owned(), Bytes::from(order))
            } else {
                (Method::GET, what, Bytes::new())
            };
            let is_post = method == Method::POST;
            let mut req = Request::builder()
                .method(method)
                .uri(&path)
                .header("host", "shop.example")
                .header("user-agent", format!("parallelrun-demo-client/{id}"));
            if is_post {
                req = req.header("content-type", "application/json");
            }
            let req = req.body(Full::new(body)).expect("valid request");
            stats.sent.fetch_add(1, Ordering::Relaxed);
            if is_post {
                stats.posts.fetch_add(1, Ordering::Relaxed);
            }
            let answered = tokio::time::timeout(Duration::from_secs(20), async {
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                resp.into_body()
                    .collect()
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .await;
            match answered {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    fail(format!("{path}: {e}"));
                    break;
                }
                Err(_) => {
                    fail(format!("{path}: no response within 20 s"));
                    break;
                }
            }
            // Think time, cut short when it is time to stop.
            let pause = Instant::now() + Duration::from_millis(rand::random_range(300..1200));
            while Instant::now() < pause && !over() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        drop(sender);
        let _ = conn.await;
    }
}
