//! HTTP/2 and gRPC with real components, in a test's namespaces: nghttpd
//! (a static-file server) with h2load and nghttp as clients, a grpcio
//! server and client (`tests/grpc/*.py`, Debian's `/usr/bin/python3`) for
//! `tests/grpc/users.proto`, compiled at test time by protoc, and tshark as
//! an independent reader of what went over the wire, stream by stream.
//!
//! All HTTP/2 here is cleartext with prior knowledge (h2c, no upgrade).

use std::{
    collections::BTreeMap,
    fmt,
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use parallelrun_sandbox::Proc;
use serde_json::Value;

use crate::netns::{Netns, run};

/// Debian's Python, which has grpcio and protobuf (the pyenv `python3` on
/// PATH may not).
pub const PYTHON: &str = "/usr/bin/python3";

/// Ceiling for one client run (h2load, nghttp, the gRPC client).
const CLIENT_LIMIT: &str = "60";

/// `tests/grpc`: the .proto and the Python server and client.
pub fn grpc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grpc")
}

/// Waits until `addr` accepts a TCP connection from inside `ns`.
pub fn wait_for_port(ns: &Netns, addr: SocketAddr, limit: Duration) {
    let ok = ns.run(move || {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    });
    assert!(ok, "nothing listens on {addr} after {limit:?}");
}

/// A child's output collected by threads (so the child never blocks on
/// it), for panic messages.
#[derive(Clone, Default)]
struct Said(Arc<Mutex<String>>);

impl Said {
    /// Reads `pipe` to its end on a new thread, calling `on_line` on each
    /// line too.
    fn collect(
        &self,
        pipe: impl std::io::Read + Send + 'static,
        mut on_line: impl FnMut(&str) + Send + 'static,
    ) {
        let log = self.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                on_line(&line);
                log.push(&line);
            }
        });
    }

    fn push(&self, line: &str) {
        let mut s = self.0.lock().unwrap();
        s.push_str(line);
        s.push('\n');
    }

    fn get(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// nghttpd serving `docroot` over h2c. Killed on drop.
pub struct Nghttpd {
    pub addr: SocketAddr,
    proc: Proc,
    said: Said,
}

impl Nghttpd {
    /// `nghttpd --no-tls -a IP -d DOCROOT PORT` in `ns`; returns once the
    /// port accepts connections. `addr` needs an explicit port.
    pub fn start(ns: &Netns, addr: SocketAddr, docroot: &Path) -> Self {
        Self::start_with(ns, addr, docroot, &[])
    }

    /// [`Nghttpd::start`] with more options (`["--echo-upload"]`: answer
    /// a request with a body with that body).
    pub fn start_with(ns: &Netns, addr: SocketAddr, docroot: &Path, extra: &[&str]) -> Self {
        assert_ne!(addr.port(), 0, "nghttpd needs an explicit port");
        let mut cmd = ns.command("nghttpd");
        cmd.args(["--no-tls", "-a", &addr.ip().to_string(), "-d"])
            .arg(docroot)
            .args(extra)
            .arg(addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn("nghttpd", &mut cmd)
            .unwrap_or_else(|e| panic!("{e} (cargo xtask setup installs nghttp2-server)"))
            .with_grace(Duration::ZERO);
        let said = Said::default();
        said.collect(proc.take_stderr().expect("stderr is piped"), |_| {});
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = proc.exited() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "nghttpd exited ({st}) before listening on {addr}:\n{}",
                    said.get()
                );
            }
            let probe = ns
                .run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok());
            if probe {
                break;
            }
            assert!(
                Instant::now() < end,
                "nghttpd does not listen on {addr} after 10 s:\n{}",
                said.get()
            );
            thread::sleep(Duration::from_millis(50));
        }
        Self { addr, proc, said }
    }

    /// What nghttpd printed on stderr so far.
    pub fn output(&self) -> String {
        self.said.get()
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }
}

/// What h2load reports about a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct H2load {
    /// "Application protocol:" (h2c for cleartext HTTP/2).
    pub protocol: String,
    pub total: u64,
    pub started: u64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// Bytes of DATA payload ("traffic: ... data").
    pub data_bytes: u64,
    /// h2load's whole stdout.
    pub text: String,
}

/// The numbers before each of `names` in a line like
/// "requests: 10 total, 10 started, ...".
fn counts(line: &str, names: &[&str]) -> Vec<u64> {
    let parts: Vec<&str> = line
        .split_once(':')
        .map_or("", |(_, rest)| rest)
        .split(',')
        .map(str::trim)
        .collect();
    names
        .iter()
        .map(|name| {
            parts
                .iter()
                .find_map(|p| p.strip_suffix(name).map(str::trim))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no `{name}` count in h2load's line {line:?}"))
        })
        .collect()
}

/// Parses h2load's stdout.
pub fn parse_h2load(text: &str) -> H2load {
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in h2load's output:\n{text}"))
    };
    let r = counts(
        line("requests:"),
        &[
            "total",
            "started",
            "done",
            "succeeded",
            "failed",
            "errored",
            "timeout",
        ],
    );
    let s = counts(line("status codes:"), &["2xx", "3xx", "4xx", "5xx"]);
    // "traffic: 29.70KB (30414) total, 210B (210) headers (...), 29.30KB (30000) data"
    let data_bytes = line("traffic:")
        .split(',')
        .find(|p| p.trim_end().ends_with("data"))
        .and_then(|p| p.split_once('(')?.1.split_once(')'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no data bytes in h2load's traffic line:\n{text}"));
    H2load {
        protocol: text
            .lines()
            .find_map(|l| l.strip_prefix("Application protocol:"))
            .map(|p| p.trim().to_owned())
            .unwrap_or_default(),
        total: r[0],
        started: r[1],
        done: r[2],
        succeeded: r[3],
        failed: r[4],
        errored: r[5],
        timeout: r[6],
        status_2xx: s[0],
        status_3xx: s[1],
        status_4xx: s[2],
        status_5xx: s[3],
        data_bytes,
        text: text.to_owned(),
    }
}

/// Runs a client program in `ns` under `timeout`, panicking with its
/// output when it fails; returns its stdout.
fn client(ns: &Netns, what: &str, program: &str, args: &[&str]) -> Vec<u8> {
    let out = ns
        .command("timeout")
        .args([CLIENT_LIMIT, program])
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}{}): {program} {args:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        if out.status.code() == Some(124) {
            ", timed out"
        } else {
            ""
        },
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `h2load -n REQUESTS -c CLIENTS -m STREAMS URL` in `ns` (h2c with prior
/// knowledge for an `http://` URL). `-n 100 -c 1 -m 100`: 100 concurrent
/// streams on one connection.
pub fn h2load(ns: &Netns, url: &str, requests: u32, clients: u32, streams: u32) -> H2load {
    h2load_with(ns, &[url], requests, clients, streams, &[])
}

/// [`h2load`] on several URLs (each client sends them in turn) with more
/// options (e.g. `["-d", FILE]` to POST a body).
pub fn h2load_with(
    ns: &Netns,
    urls: &[&str],
    requests: u32,
    clients: u32,
    streams: u32,
    extra: &[&str],
) -> H2load {
    let (n, c, m) = (
        requests.to_string(),
        clients.to_string(),
        streams.to_string(),
    );
    let mut args = vec!["-n", &n, "-c", &c, "-m", &m];
    args.extend(extra);
    args.extend(urls);
    parse_h2load(&String::from_utf8_lossy(&client(
        ns, "h2load", "h2load", &args,
    )))
}

/// `nghttp ARGS` in `ns` (h2c with prior knowledge for `http://` URLs;
/// `["-d", FILE, URL]` POSTs the file); returns its stdout (the bodies, or
/// with `-v` the frames too).
pub fn nghttp(ns: &Netns, args: &[&str]) -> Vec<u8> {
    client(ns, "nghttp", "nghttp", args)
}

/// Compiles `tests/grpc/users.proto` into `dir/users.desc`, a descriptor
/// set with its imports, as the gRPC scripts and the agent read it.
pub fn compile_proto(dir: &Path) -> PathBuf {
    let out = dir.join("users.desc");
    run(Command::new("protoc")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("--include_imports")
        .arg("-I")
        .arg(grpc_dir())
        .arg("users.proto"));
    assert!(out.is_file(), "protoc wrote no {}", out.display());
    out
}

/// The gRPC method `name` of the test service, as an HTTP/2 `:path`.
pub fn grpc_path(method: &str) -> String {
    format!("/shadow.users.v1.Users/{method}")
}

/// Which version of the gRPC service a server is (see `tests/grpc/server.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcFlavor {
    /// The service being shadowed.
    Old,
    /// The new version: `profile.address.city` differs in every Get and
    /// List answer.
    New,
    /// Another instance of the old version.
    Secondary,
}

impl fmt::Display for GrpcFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Old => "old",
            Self::New => "new",
            Self::Secondary => "secondary",
        })
    }
}

/// The field every flavor fills with a random value (noise).
pub const GRPC_RANDOM_FIELD: &str = "trace_id";

/// The nested field the new flavor changes, as a JSON pointer into a
/// decoded `User`.
pub const GRPC_CHANGED_FIELD: &str = "/profile/address/city";

/// Starts one of the tests' Python servers (`script --host IP --port P
/// ARGS`) in `ns` with Debian's Python, waits for its "ready" line and for
/// `addr` to accept connections; `hint` says what installs its modules.
fn start_python(
    ns: &Netns,
    name: &str,
    script: &Path,
    addr: SocketAddr,
    args: &[&str],
    hint: &str,
) -> (Proc, Said) {
    let mut cmd = ns.command(PYTHON);
    cmd.arg(script)
        .args(["--host", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(name, &mut cmd)
        .unwrap_or_else(|e| panic!("{e} ({hint})"))
        .with_grace(Duration::from_secs(1));
    let said = Said::default();
    said.collect(proc.take_stderr().expect("stderr is piped"), |_| {});
    let (tx, rx) = mpsc::channel();
    said.collect(proc.take_stdout().expect("stdout is piped"), move |line| {
        if line.trim() == "ready" {
            let _ = tx.send(());
        }
    });
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
            break;
        }
        if let Some(st) = proc.exited() {
            thread::sleep(Duration::from_millis(100));
            panic!(
                "{name} exited ({st}) before ready on {addr}:\n{}",
                said.get()
            );
        }
        assert!(
            Instant::now() < end,
            "{name} not ready on {addr} after 20 s:\n{}",
            said.get()
        );
    }
    wait_for_port(ns, addr, Duration::from_secs(10));
    (proc, said)
}

/// An HTTP/1.1 server that switches to HTTP/2 on `Upgrade: h2c`
/// (`tests/h2c/upgrade_server.py`, on python3-h2), serving `root`'s files:
/// nghttpd, nginx and grpcio do not take the upgrade. Stopped on drop.
pub struct UpgradeServer {
    pub addr: SocketAddr,
    _proc: Proc,
    _said: Said,
}

impl UpgradeServer {
    pub fn start(ns: &Netns, addr: SocketAddr, root: &Path) -> Self {
        let root = root.to_string_lossy();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("h2c/upgrade_server.py");
        let (proc, said) = start_python(
            ns,
            "h2c upgrade server",
            &script,
            addr,
            &["--root", &root],
            "cargo xtask setup installs python3-h2",
        );
        Self {
            addr,
            _proc: proc,
            _said: said,
        }
    }
}

/// `tests/grpc/server.py` in a namespace. Killed on drop.
pub struct GrpcServer {
    pub addr: SocketAddr,
    pub flavor: GrpcFlavor,
    proc: Proc,
    said: Said,
}

impl GrpcServer {
    /// Starts the server on `addr` (explicit port) and waits for its
    /// "ready" and for the port to accept connections.
    pub fn start(ns: &Netns, addr: SocketAddr, flavor: GrpcFlavor, descriptor: &Path) -> Self {
        Self::start_with(ns, addr, flavor, descriptor, &[])
    }

    /// [`GrpcServer::start`] with more arguments (`["--gzip"]`: compress
    /// every response).
    pub fn start_with(
        ns: &Netns,
        addr: SocketAddr,
        flavor: GrpcFlavor,
        descriptor: &Path,
        extra: &[&str],
    ) -> Self {
        assert_ne!(addr.port(), 0, "the gRPC server needs an explicit port");
        let flavor_arg = flavor.to_string();
        let descriptor = descriptor.to_string_lossy();
        let mut args = vec!["--flavor", &flavor_arg, "--descriptor", &descriptor];
        args.extend_from_slice(extra);
        let (proc, said) = start_python(
            ns,
            &format!("gRPC server ({flavor})"),
            &grpc_dir().join("server.py"),
            addr,
            &args,
            "cargo xtask setup installs python3-grpcio",
        );
        Self {
            addr,
            flavor,
            proc,
            said,
        }
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        self.said.get()
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }
}

/// Runs `tests/grpc/client.py --target TARGET --descriptor DESCRIPTOR ARGS`
/// in `ns` (e.g. `["--get", "3", "--list", "1", "--create", "1",
/// "--gzip"]`): every call on one connection. Returns its JSON summary:
/// `counts` (`get`, `list`, `list_items`, `create`, `missing`, `calls`) and the
/// answers, decoded (`get`: users, `list`: a list of users per call,
/// `create`: users), and `missing`: the status of each `--missing K` call
/// (a Get of id 0, which must end in NOT_FOUND, gRPC status 5; they come
/// last). Panics when a call fails otherwise.
pub fn grpc_client(ns: &Netns, target: &str, descriptor: &Path, args: &[&str]) -> Value {
    let script = grpc_dir().join("client.py");
    let descriptor = descriptor.to_str().expect("UTF-8 path");
    let mut all = vec![
        script.to_str().expect("UTF-8 path"),
        "--target",
        target,
        "--descriptor",
        descriptor,
    ];
    all.extend(args);
    let out = client(ns, "gRPC client", PYTHON, &all);
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "the gRPC client printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out)
        )
    })
}

/// One gRPC message in a stream's DATA: the length-prefixed frame's
/// compressed flag and length (without the 5-byte prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcMessage {
    pub compressed: bool,
    pub len: usize,
}

/// One HTTP/2 stream as tshark dissected it from a capture. (Its Debug
/// shows the bodies' lengths, not their bytes.)
#[derive(Clone, Default, PartialEq, Eq)]
pub struct H2Stream {
    /// The client's end of the connection.
    pub conn: Option<SocketAddr>,
    pub stream_id: u32,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<u16>,
    /// The client's header fields (the first HEADERS), in order.
    pub request_headers: Vec<(String, String)>,
    /// The server's first HEADERS.
    pub response_headers: Vec<(String, String)>,
    /// The server's later HEADERS (trailers: gRPC's status).
    pub trailers: Vec<(String, String)>,
    /// DATA payload bytes (without padding) each way, summed over frames.
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// `grpc-status` of the trailers (or of a trailers-only answer).
    pub grpc_status: Option<u32>,
    /// The gRPC messages of each body, when the content-type is gRPC.
    pub request_messages: Vec<GrpcMessage>,
    pub response_messages: Vec<GrpcMessage>,
    /// RST_STREAM error code, from either side.
    pub reset: Option<u32>,
    /// The first and last capture frame (`frame.number`) with a frame of
    /// this stream: streams open at once overlap.
    pub first_frame: u64,
    pub last_frame: u64,
    /// END_STREAM seen from the client, from the server.
    pub request_ended: bool,
    pub response_ended: bool,
}

impl fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Stream")
            .field("conn", &self.conn)
            .field("stream_id", &self.stream_id)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("status", &self.status)
            .field("grpc_status", &self.grpc_status)
            .field("request_body_len", &self.request_body.len())
            .field("response_body_len", &self.response_body.len())
            .field("request_headers", &self.request_headers)
            .field("response_headers", &self.response_headers)
            .field("trailers", &self.trailers)
            .field("request_messages", &self.request_messages)
            .field("response_messages", &self.response_messages)
            .field("reset", &self.reset)
            .field("frames", &(self.first_frame..=self.last_frame))
            .field("request_ended", &self.request_ended)
            .field("response_ended", &self.response_ended)
            .finish()
    }
}

impl H2Stream {
    pub fn request_body_len(&self) -> usize {
        self.request_body.len()
    }

    pub fn response_body_len(&self) -> usize {
        self.response_body.len()
    }

    /// The value of request header `name` (lowercase), if any.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        find(&self.request_headers, name)
    }

    /// The value of response header `name`, or else trailer `name`.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        find(&self.response_headers, name).or_else(|| find(&self.trailers, name))
    }

    fn is_grpc(&self) -> bool {
        self.request_header("content-type")
            .is_some_and(|c| c.starts_with("application/grpc"))
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A JSON field that tshark writes as an object when it occurs once and,
/// with `--no-duplicate-keys`, as an array when it repeats.
fn each(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v) => vec![v],
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    match v.get(key)? {
        Value::String(s) => Some(s),
        // A repeated leaf: the first.
        Value::Array(a) => a.first()?.as_str(),
        _ => None,
    }
}

fn number(v: &Value, key: &str) -> Option<u64> {
    let s = text(v, key)?;
    s.strip_prefix("0x")
        .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
}

/// tshark's `aa:bb:cc` bytes.
fn hex_bytes(s: &str) -> Vec<u8> {
    s.split(':')
        .filter(|b| !b.is_empty())
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("tshark bytes {b:?}: {e}")))
        .collect()
}

/// Splits a gRPC body into its length-prefixed messages (a truncated tail
/// is reported with the length it has).
fn grpc_messages(mut body: &[u8]) -> Vec<GrpcMessage> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let have = len.min(body.len() - 5);
        out.push(GrpcMessage {
            compressed: body[0] & 1 == 1,
            len: have,
        });
        body = &body[5 + have..];
    }
    out
}

/// The layers of a tshark JSON packet.
fn layers(packet: &Value) -> &Value {
    &packet["_source"]["layers"]
}

fn endpoint(layers: &Value, src: bool) -> Option<SocketAddr> {
    let (ip_key, port_key) = if src {
        (["ip.src", "ipv6.src"], "tcp.srcport")
    } else {
        (["ip.dst", "ipv6.dst"], "tcp.dstport")
    };
    let ip: IpAddr = text(&layers["ip"], ip_key[0])
        .or_else(|| text(&layers["ipv6"], ip_key[1]))?
        .parse()
        .ok()?;
    let port = number(&layers["tcp"], port_key)?;
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}

/// Every HTTP/2 stream (stream id > 0) of the connections to TCP `port` in
/// `pcap`, as tshark dissects them, ordered by connection (in the order of
/// their first stream in the capture) and stream id.
///
/// tshark reads the file with its HTTP/2 dissector forced on the port
/// (`-d tcp.port==PORT,http2`: h2c with prior knowledge has no upgrade it
/// could detect) and TCP reassembly on, and prints JSON. Header fields
/// come HPACK-decoded (`http2.header.name` / `http2.header.value` under
/// each frame's `http2.stream`), so the capture must hold each connection
/// from its start. Bodies are the DATA frames' `http2.data.data`, joined
/// per stream and direction (gRPC's length prefixes included), checked
/// against each frame's length less its padding. Quirk (tshark 4.0, which
/// has no preference to turn it off): on a DATA frame with END_STREAM that
/// ends a body of several frames, `http2.data.data` is the whole
/// reassembled body, not the frame's payload.
pub fn tshark_h2_streams(pcap: &Path, port: u16) -> Vec<H2Stream> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-d", &format!("tcp.port=={port},http2")])
        .args(["-o", "tcp.desegment_tcp_streams:TRUE"])
        .args(["-Y", &format!("tcp.port=={port} && http2")])
        .args(["-T", "json", "--no-duplicate-keys"])
        .args(["-j", "frame ip ipv6 tcp http2 http2.stream http2.header"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run tshark ({e}); cargo xtask setup installs it"));
    assert!(
        out.status.success(),
        "tshark -r {} failed ({}):\n{}",
        pcap.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let packets: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tshark printed no JSON for {} ({e}):\n{}",
            pcap.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut streams: BTreeMap<(Option<SocketAddr>, u32), H2Stream> = BTreeMap::new();
    // Header blocks the server has begun on each stream.
    let mut server_blocks: BTreeMap<(Option<SocketAddr>, u32), u32> = BTreeMap::new();
    for packet in packets.as_array().map(Vec::as_slice).unwrap_or_default() {
        let l = layers(packet);
        let from_server = number(&l["tcp"], "tcp.srcport") == Some(u64::from(port));
        let conn = endpoint(l, !from_server);
        let frame_no = number(&l["frame"], "frame.number").unwrap_or(0);
        for frame in each(l.get("http2")) {
            let Some(f) = frame.get("http2.stream") else {
                continue;
            };
            // The connection preface has no frame header.
            let (Some(id), Some(kind)) = (number(f, "http2.streamid"), number(f, "http2.type"))
            else {
                continue;
            };
            if id == 0 {
                continue;
            }
            let id = u32::try_from(id).expect("31-bit stream id");
            let s = streams.entry((conn, id)).or_insert_with(|| H2Stream {
                conn,
                stream_id: id,
                first_frame: frame_no,
                ..H2Stream::default()
            });
            s.last_frame = frame_no;
            let flags = number(f, "http2.flags").unwrap_or(0);
            let end_stream = flags & 0x1 != 0;
            match kind {
                // DATA
                0 => {
                    let padding = if flags & 0x8 != 0 {
                        1 + number(f, "http2.pad_length").unwrap_or(0)
                    } else {
                        0
                    };
                    let len = number(f, "http2.length")
                        .and_then(|l| l.checked_sub(padding))
                        .and_then(|l| usize::try_from(l).ok())
                        .unwrap_or_else(|| panic!("DATA frame without a length: {f}"));
                    let data = text(f, "http2.data.data")
                        .map(hex_bytes)
                        .unwrap_or_default();
                    let body = if from_server {
                        &mut s.response_body
                    } else {
                        &mut s.request_body
                    };
                    if data.len() == len {
                        body.extend(data);
                    } else if end_stream && data.len() == body.len() + len {
                        // tshark reassembles a body of several frames and
                        // shows it whole as the last frame's data.
                        *body = data;
                    } else {
                        panic!(
                            "frame {frame_no}: DATA of stream {id} has {} bytes of data for a payload of {len} ({} before)",
                            data.len(),
                            body.len()
                        );
                    }
                }
                // HEADERS, CONTINUATION
                1 | 9 => {
                    let fields: Vec<(String, String)> = each(f.get("http2.header"))
                        .into_iter()
                        .filter_map(|h| {
                            Some((
                                text(h, "http2.header.name")?.to_owned(),
                                text(h, "http2.header.value").unwrap_or("").to_owned(),
                            ))
                        })
                        .collect();
                    // A header block is a HEADERS frame and its
                    // CONTINUATIONs (tshark may decode it on the last).
                    let blocks = server_blocks.entry((conn, id)).or_insert(0);
                    if from_server && kind == 1 {
                        *blocks += 1;
                    }
                    let into = if !from_server {
                        &mut s.request_headers
                    } else if *blocks <= 1 {
                        &mut s.response_headers
                    } else {
                        &mut s.trailers
                    };
                    into.extend(fields);
                }
                // RST_STREAM
                3 => {
                    s.reset =
                        number(f, "http2.rst_stream.error").and_then(|e| u32::try_from(e).ok());
                }
                _ => {}
            }
            if end_stream && matches!(kind, 0 | 1) {
                if from_server {
                    s.response_ended = true;
                } else {
                    s.request_ended = true;
                }
            }
        }
    }
    let mut out: Vec<H2Stream> = streams.into_values().collect();
    let mut conn_start: BTreeMap<Option<SocketAddr>, u64> = BTreeMap::new();
    for s in &out {
        let start = conn_start.entry(s.conn).or_insert(s.first_frame);
        *start = (*start).min(s.first_frame);
    }
    out.sort_by_key(|s| (conn_start[&s.conn], s.conn, s.stream_id));
    for s in &mut out {
        s.method = s.request_header(":method").map(str::to_owned);
        s.path = s.request_header(":path").map(str::to_owned);
        s.status = s.response_header(":status").and_then(|v| v.parse().ok());
        s.grpc_status = s
            .response_header("grpc-status")
            .and_then(|v| v.parse().ok());
        if s.is_grpc() {
            s.request_messages = grpc_messages(&s.request_body);
            s.response_messages = grpc_messages(&s.response_body);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_output_is_parsed() {
        let text = "starting benchmark...\n\
            Application protocol: h2c\n\
            finished in 5.87ms, 1705.03 req/s, 4.95MB/s\n\
            requests: 10 total, 10 started, 9 done, 8 succeeded, 2 failed, 1 errored, 0 timeout\n\
            status codes: 8 2xx, 0 3xx, 1 4xx, 0 5xx\n\
            traffic: 29.70KB (30414) total, 210B (210) headers (space savings 89.06%), 29.30KB (30000) data\n";
        let s = parse_h2load(text);
        assert_eq!(s.protocol, "h2c");
        assert_eq!(
            (
                s.total,
                s.started,
                s.done,
                s.succeeded,
                s.failed,
                s.errored,
                s.timeout
            ),
            (10, 10, 9, 8, 2, 1, 0)
        );
        assert_eq!((s.status_2xx, s.status_4xx), (8, 1));
        assert_eq!(s.data_bytes, 30000);
    }

    #[test]
    fn grpc_bodies_split_into_messages() {
        let body = [0, 0, 0, 0, 2, 8, 1, 1, 0, 0, 0, 1, 7];
        assert_eq!(
            grpc_messages(&body),
            [
                GrpcMessage {
                    compressed: false,
                    len: 2
                },
                GrpcMessage {
                    compressed: true,
                    len: 1
                }
            ]
        );
    }
}
