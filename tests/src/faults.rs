//! Fault injection for the reliability tests: a scripted raw HTTP/1.1
//! server that can be slow, reset connections, stream without end or answer
//! garbage; load clients that time each request; a SYN flooder; and readers
//! for the agent's memory use (its final counters are [`crate::agent`]'s).
//!
//! Like the rest of this crate, every helper panics on a surprise and
//! cleans up on drop.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    client::{self, header, owned_headers},
    netns::Netns,
    server::Background,
};

// ---------------------------------------------------------------------------
// The agent's memory.

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`, ...).
pub fn proc_kib(pid: i32, field: &str) -> u64 {
    parallelrun_sandbox::status_kib(pid, field).unwrap_or_else(|e| panic!("{e}"))
}

/// Peak resident set of process `pid`, in MiB.
pub fn peak_rss_mib(pid: i32) -> u64 {
    proc_kib(pid, "VmHWM") / 1024
}

/// Current resident set of process `pid`, in MiB.
pub fn rss_mib(pid: i32) -> u64 {
    proc_kib(pid, "VmRSS") / 1024
}

/// Raises this process's open-file limit to its hard limit (floods hold
/// thousands of sockets on both ends in this one process).
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// Percentile `p` (0..=100) of `samples`, which it sorts.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * p / 100.0).round() as usize;
    samples[i]
}

// ---------------------------------------------------------------------------
// A scripted HTTP/1.1 server.

/// A request as the scripted server parsed it.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Content-Length body (a chunked request body is not read: see
    /// [`Incoming::chunked`]).
    pub body: Vec<u8>,
    /// The request declared a chunked body; what follows is left to the
    /// reply ([`Reply::Drain`] reads it away).
    pub chunked: bool,
}

/// What the scripted server does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Write these bytes; the connection stays open for the next request
    /// (unless the request said `Connection: close`).
    Bytes(Vec<u8>),
    /// Write these bytes, then close.
    BytesThenClose(Vec<u8>),
    /// Wait, then do the rest.
    After(Duration, Box<Reply>),
    /// Close at once with a RST (SO_LINGER 0).
    Reset,
    /// Write `head`, then `chunk` over and over until `total` bytes were
    /// written or the peer goes away; then close.
    Stream {
        head: Vec<u8>,
        chunk: Vec<u8>,
        total: u64,
    },
    /// Read and discard everything until the peer closes.
    Drain,
}

/// Decides the reply to each request; `None` for bytes that are not an
/// HTTP/1.x request head (the connection is closed after that reply).
pub type Handler = Arc<dyn Fn(Option<&Incoming>) -> Reply + Send + Sync>;

/// A complete response with a Content-Length.
pub fn response(status: u16, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

#[derive(Default)]
struct Counters {
    hits: Mutex<BTreeMap<String, u64>>,
    malformed: AtomicU64,
    accepted: AtomicU64,
    /// Bytes written by [`Reply::Stream`] and read by [`Reply::Drain`].
    streamed: AtomicU64,
}

/// A running scripted server; stopped on drop (every connection it holds
/// is closed then).
pub struct FaultServer {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    _background: Background,
}

impl FaultServer {
    /// Starts a server in `ns` on `addr` (port 0 picks one) that answers
    /// each request as `handler` says.
    pub fn start(
        ns: &Netns,
        addr: SocketAddr,
        handler: impl Fn(Option<&Incoming>) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let handler: Handler = Arc::new(handler);
        let counters = Arc::<Counters>::default();
        let shared = Arc::clone(&counters);
        let background = Background::start(ns, addr, move |stream| {
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            let handler = Arc::clone(&handler);
            let counters = Arc::clone(&shared);
            tokio::spawn(async move {
                let _ = connection(stream, handler, counters).await;
            });
        });
        Self {
            addr: background.addr,
            counters,
            _background: background,
        }
    }

    /// Requests parsed whose target starts with `prefix` (`"/"`: all).
    pub fn hits(&self, prefix: &str) -> u64 {
        self.counters
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Inputs that were not a request head.
    pub fn malformed(&self) -> u64 {
        self.counters.malformed.load(Ordering::Relaxed)
    }

    /// Connections accepted.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Bytes streamed out or drained in.
    pub fn streamed(&self) -> u64 {
        self.counters.streamed.load(Ordering::Relaxed)
    }
}

/// What the start of a buffer holds.
enum Parsed {
    Request(Incoming, usize),
    Partial,
    Invalid,
}

/// Request heads larger than this are answered as invalid.
const MAX_HEAD: usize = 1 << 20;

fn parse_request(buf: &[u8]) -> Parsed {
    let mut hs = vec![httparse::EMPTY_HEADER; 1024];
    let mut req = httparse::Request::new(&mut hs);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Invalid,
    };
    let headers = owned_headers(req.headers);
    let chunked = header(&headers, "transfer-encoding").is_some_and(|te| te.contains("chunked"));
    let len: usize = if chunked {
        0
    } else {
        match header(&headers, "content-length").map(|v| v.parse()) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return Parsed::Invalid,
        }
    };
    if buf.len() < head + len {
        return Parsed::Partial;
    }
    Parsed::Request(
        Incoming {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            headers,
            body: buf[head..head + len].to_vec(),
            chunked,
        },
        head + len,
    )
}

async fn connection(
    mut s: tokio::net::TcpStream,
    handler: Handler,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (reply, last) = match parse_request(&buf) {
            Parsed::Request(req, used) => {
                buf.drain(..used);
                *counters
                    .hits
                    .lock()
                    .unwrap()
                    .entry(req.target.clone())
                    .or_default() += 1;
                let close = req.headers.iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case(b"close")
                });
                match handler(Some(&req)) {
                    // The client asked to close after this exchange.
                    Reply::Bytes(b) if close => (Reply::BytesThenClose(b), true),
                    reply => (reply, false),
                }
            }
            Parsed::Invalid => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                (handler(None), true)
            }
            Parsed::Partial => {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
        };
        if !act(&mut s, reply, &counters).await? || last {
            return Ok(());
        }
    }
}

/// Carries out `reply`; false when the connection is finished.
async fn act(
    s: &mut tokio::net::TcpStream,
    mut reply: Reply,
    counters: &Counters,
) -> std::io::Result<bool> {
    loop {
        match reply {
            Reply::After(d, rest) => {
                tokio::time::sleep(d).await;
                reply = *rest;
            }
            Reply::Bytes(b) => {
                s.write_all(&b).await?;
                return Ok(true);
            }
            Reply::BytesThenClose(b) => {
                s.write_all(&b).await?;
                s.shutdown().await?;
                // Let the peer read it all before the socket goes.
                let mut sink = [0u8; 4096];
                while s.read(&mut sink).await? > 0 {}
                return Ok(false);
            }
            Reply::Reset => {
                s.set_zero_linger()?;
                return Ok(false);
            }
            Reply::Stream { head, chunk, total } => {
                s.write_all(&head).await?;
                let mut sent = 0u64;
                while sent < total {
                    s.write_all(&chunk).await?;
                    sent += chunk.len() as u64;
                    counters
                        .streamed
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                return Ok(false);
            }
            Reply::Drain => {
                let mut sink = vec![0u8; 256 * 1024];
                loop {
                    let n = s.read(&mut sink).await?;
                    if n == 0 {
                        return Ok(false);
                    }
                    counters.streamed.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Clients.

/// Sends `GET path` for each path on one keep-alive connection and times
/// each exchange (from writing the request to the response's last byte);
/// returns the latencies and the parsed responses. The last request asks
/// for `Connection: close`. Runs in the calling thread's namespace.
pub fn timed_gets(server: SocketAddr, paths: &[String]) -> (Vec<Duration>, Vec<client::Parsed>) {
    timed_gets_paced(server, paths, Duration::ZERO)
}

/// [`timed_gets`] with a pause of `pace` between one response and the next
/// request (an open-loop-like steady rate rather than a saturating one).
pub fn timed_gets_paced(
    server: SocketAddr,
    paths: &[String],
    pace: Duration,
) -> (Vec<Duration>, Vec<client::Parsed>) {
    let mut s = client::connect(server);
    s.set_nodelay(true).expect("TCP_NODELAY");
    let mut buf = Vec::new();
    let mut times = Vec::with_capacity(paths.len());
    let mut replies = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let close = if i + 1 == paths.len() {
            "Connection: close\r\n"
        } else {
            ""
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: old.test\r\n{close}\r\n");
        if i > 0 && !pace.is_zero() {
            thread::sleep(pace);
        }
        let start = Instant::now();
        s.write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: send: {e}"));
        let parsed = client::read_response(&mut s, &mut buf, "GET", path);
        times.push(start.elapsed());
        replies.push(parsed);
    }
    let _ = s.read_to_end(&mut buf);
    (times, replies)
}

/// One request on its own connection (`Connection: close`); the response's
/// status and de-chunked body. Runs in the calling thread's namespace.
pub fn get_once(server: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = client::connect(server);
    let req = format!("GET {path} HTTP/1.1\r\nHost: old.test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{path}: send: {e}"));
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, (status, _, body)) = client::parse(&buf, "GET")
        .unwrap_or_else(|| panic!("{path}: incomplete response ({} bytes)", buf.len()));
    (status, body)
}

/// Writes `bytes` on a new connection and reads until the server closes
/// (or `max_read` bytes, or 10 s); returns what was read. For hostile
/// inputs whose answer is not HTTP the client could parse.
pub fn send_raw(server: SocketAddr, bytes: &[u8], max_read: usize) -> Vec<u8> {
    let mut s = client::connect(server);
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    // The server may answer and close before reading everything: a write
    // error then is part of the scenario.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    while out.len() < max_read {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    out
}

/// Opens `n` connections and writes `bytes(i)` on the i-th, leaving each
/// open; the sockets are returned so the caller decides when they close.
pub fn hold_open(server: SocketAddr, n: usize, bytes: impl Fn(usize) -> Vec<u8>) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {server} (#{i}): {e}"));
            s.write_all(&bytes(i))
                .unwrap_or_else(|e| panic!("send on #{i}: {e}"));
            s
        })
        .collect()
}

// ---------------------------------------------------------------------------
// SYN flood.

/// Sends `count` TCP SYNs to `dst` from random addresses of `src_net`
/// (`/24`, host part 10..=250) and random source ports below the ephemeral
/// range, through a raw socket (IP_HDRINCL) in the calling thread's
/// namespace. Nobody answers the SYN-ACKs, as in a spoofed flood. Returns
/// how many were sent.
pub fn syn_flood(src_net: Ipv4Addr, dst: SocketAddrV4, count: usize) -> usize {
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let one: libc::c_int = 1;
    // SAFETY: valid fd and option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_HDRINCL,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "IP_HDRINCL: {}", std::io::Error::last_os_error());
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dst.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let net = src_net.octets();
    let mut sent = 0;
    let mut buf = Vec::with_capacity(64);
    for _ in 0..count {
        let src = [net[0], net[1], net[2], rand::random_range(10..=250)];
        let sport: u16 = rand::random_range(1024..32768);
        buf.clear();
        etherparse::PacketBuilder::ipv4(src, dst.ip().octets(), 64)
            .tcp(sport, dst.port(), rand::random(), 64240)
            .syn()
            .write(&mut buf, &[])
            .expect("build SYN");
        loop {
            // SAFETY: buf and `to` are valid for the given lengths.
            let n = unsafe {
                libc::sendto(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                sent += 1;
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                thread::sleep(Duration::from_micros(200));
                continue;
            }
            panic!("sendto: {e}");
        }
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    sent
}

// ---------------------------------------------------------------------------
// Sockets and processes seen from outside.

/// TCP listeners in `ns` as `ss -ltnH` prints their local addresses
/// (`127.0.0.1:9464`, `0.0.0.0:8080`, `[::]:80`, `*:80`).
pub fn listeners(ns: &Netns) -> Vec<String> {
    let out = crate::netns::run(ns.command("ss").args(["-ltnH"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

/// `GET path` over plain HTTP/1.0 to `addr` from the calling thread's
/// namespace: the whole response as text.
pub fn http_get_text(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Waits until `cond` holds, polling every 50 ms; panics with `what` after
/// `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}
