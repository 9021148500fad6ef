//! `cargo xtask conformance`: does parallelrun see what Wireshark sees?
//!
//! Every capture in a folder goes through `parallelrun exchanges --pcap` and,
//! independently, through tshark's HTTP dissector. Per connection and in
//! order, each request tshark dissects must have exactly one outcome line from
//! parallelrun (a paired exchange or a lost request), with the same method and
//! target, and a paired exchange the status of the final response tshark saw
//! for it. parallelrun's own summary must count exactly the lines it wrote.
//!
//! The old services are found the way a user would name them: every port
//! that answers with `HTTP/` or is sent a request line. tshark is told to
//! dissect HTTP on those ports (`-d tcp.port==P,http`), since it knows only a
//! few by default.
//!
//! HTTP/2 in clear text (h2c) is compared too. A port is an h2c server when
//! the first bytes a client sends begin with the connection preface (`PRI *
//! HTTP/2.0`: prior knowledge), or when it answers `101` with `Upgrade:
//! h2c`. tshark dissects prior-knowledge ports as HTTP/2 (`-d
//! tcp.port==P,http2`) and follows upgrades by itself; its requests are the
//! streams a client's HEADERS opened, per connection in stream id order,
//! each with its method, `:path` and final `:status`. An upgraded
//! connection's HTTP/1.1 request is its stream 1, answered in HTTP/2.
//! parallelrun's paired HTTP/2 exchanges are matched by stream id; its lost
//! requests name no stream, so they take, in output order, the streams
//! that nothing paired.
//!
//! Exits with an error when a request tshark dissects has no outcome, or a
//! summary disagrees with its output; differences in method, target or status
//! are printed and counted but are not failures on their own (tshark is a
//! reference, not an oracle: after a gap it sometimes gives up where
//! parallelrun resynchronises, and the reverse).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// A connection as both tools name it: client and server `IP:PORT`
/// (IPv6 as `[addr]:port`).
type Conn = (String, String);

/// One request as tshark dissected it, with the status of the final
/// response it got (if tshark saw one).
#[derive(Debug)]
struct Dissected {
    method: String,
    target: String,
    status: Option<u16>,
}

/// A request tshark dissected, and the HTTP/2 stream it is on (`None`
/// for HTTP/1).
#[derive(Debug)]
struct Wanted {
    stream: Option<u32>,
    d: Dissected,
}

/// One outcome line of `parallelrun exchanges`.
#[derive(Debug)]
struct Outcome {
    method: Option<String>,
    target: Option<String>,
    /// The stream of a paired HTTP/2 exchange.
    stream: Option<u32>,
    /// `Ok(status)` for a paired exchange, `Err(cause)` for a lost request.
    result: Result<u16, String>,
}

/// What one capture gave, in counts.
#[derive(Debug, Default, Clone)]
pub struct FileResult {
    pub dissected: u64,
    pub outcomes: u64,
    /// Paired with the same method, target and status.
    pub identical: u64,
    /// Lost by parallelrun (any cause) where tshark dissected the request.
    pub lost: u64,
    /// Method, target or status differ.
    pub differ: u64,
    /// Requests tshark dissected that have no outcome line.
    pub missing: u64,
    /// Outcome lines beyond what tshark dissected on the connection.
    pub extra: u64,
    /// The summary's counts equal the output's lines.
    pub summary_agrees: bool,
    /// First few disagreements, for the reader.
    pub notes: Vec<String>,
}

impl FileResult {
    fn add(&mut self, o: &FileResult) {
        self.dissected += o.dissected;
        self.outcomes += o.outcomes;
        self.identical += o.identical;
        self.lost += o.lost;
        self.differ += o.differ;
        self.missing += o.missing;
        self.extra += o.extra;
    }

    fn note(&mut self, s: String) {
        if self.notes.len() < 5 {
            self.notes.push(s);
        }
    }
}

/// Runs the comparison over every `.pcap`/`.pcapng` in `dir` with the agent
/// binary `agent`; prints a table and fails on a missing outcome.
pub fn run(dir: &Path, agent: &Path) -> Result<()> {
    if Command::new("tshark").arg("--version").output().is_err() {
        bail!("tshark is not installed: run `cargo xtask setup` (Debian package `tshark`)");
    }
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "pcap" || e == "pcapng" || e == "cap")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .pcap or .pcapng files in {}", dir.display());
    }
    let scratch = tempdir()?;
    let mut rows = Vec::new();
    let mut total = FileResult {
        summary_agrees: true,
        ..FileResult::default()
    };
    for (i, file) in files.iter().enumerate() {
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        eprintln!("conformance: [{}/{}] {name}", i + 1, files.len());
        let r = compare(file, agent, &scratch.join(format!("{i}")))
            .with_context(|| format!("comparing {}", file.display()))?;
        total.add(&r);
        total.summary_agrees &= r.summary_agrees;
        rows.push((name, r));
    }
    let _ = fs::remove_dir_all(&scratch);
    print!("{}", table(&rows, &total));
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, r)| r.missing > 0 || !r.summary_agrees)
        .map(|(n, _)| n.as_str())
        .collect();
    // A closing line in the form test runners use: one capture, one test.
    println!(
        "conformance: {} passed, {} failed",
        rows.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!(
            "{} capture(s) with requests tshark dissects but parallelrun gives no outcome, \
             or whose summary disagrees with its output: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("parallelrun-conformance-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The markdown table: one row per capture, then the totals.
fn table(rows: &[(String, FileResult)], total: &FileResult) -> String {
    let mut s = String::new();
    s.push_str(
        "\n| capture | tshark requests | parallelrun outcomes | identical | lost | differ | \
         missing | parallelrun only | summary = lines |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let line = |s: &mut String, name: &str, r: &FileResult| {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.dissected,
            r.outcomes,
            r.identical,
            r.lost,
            r.differ,
            r.missing,
            r.extra,
            if r.summary_agrees { "yes" } else { "**no**" }
        );
    };
    for (name, r) in rows {
        line(&mut s, name, r);
    }
    line(&mut s, "**total**", total);
    let pct = if total.dissected == 0 {
        100.0
    } else {
        total.identical as f64 * 100.0 / total.dissected as f64
    };
    let _ = writeln!(
        s,
        "\n{} of {} requests tshark dissects paired identically ({pct:.1} %), {} lost with a \
         cause, {} differ, {} without an outcome.",
        total.identical, total.dissected, total.lost, total.differ, total.missing
    );
    for (name, r) in rows {
        for n in &r.notes {
            let _ = writeln!(s, "  {name}: {n}");
        }
    }
    s
}

fn compare(file: &Path, agent: &Path, scratch: &Path) -> Result<FileResult> {
    let ports = server_ports(file)?;
    let http1 = if ports.http1.is_empty() {
        BTreeMap::new()
    } else {
        dissect(file, &ports.http1)?
    };
    let h2 = if ports.h2c.is_empty() && ports.upgrade.is_empty() {
        BTreeMap::new()
    } else {
        dissect_h2(file, &ports)?
    };
    let dissected = merge(http1, h2);
    let mut r = FileResult {
        summary_agrees: true,
        ..FileResult::default()
    };
    r.dissected = dissected.values().map(|v| v.len() as u64).sum();
    let all = ports.all();
    if all.is_empty() {
        return Ok(r);
    }
    let (outcomes, agrees) = exchanges(file, &all, agent, scratch)?;
    r.summary_agrees = agrees;
    r.outcomes = outcomes.values().map(|v| v.len() as u64).sum();
    if !agrees {
        r.note("the summary's counts differ from the output's lines".into());
    }
    let conns: BTreeSet<&Conn> = dissected.keys().chain(outcomes.keys()).collect();
    for conn in conns {
        let want = dissected.get(conn).map_or(&[][..], Vec::as_slice);
        let got = outcomes.get(conn).map_or(&[][..], Vec::as_slice);
        let (matched, extra) = match_outcomes(want, got);
        for (i, (w, o)) in want.iter().zip(matched).enumerate() {
            let d = &w.d;
            let Some(o) = o else {
                r.missing += 1;
                r.note(format!(
                    "{} -> {}: no outcome for request {} `{} {}`",
                    conn.0,
                    conn.1,
                    i + 1,
                    d.method,
                    d.target
                ));
                continue;
            };
            let same_line = o.method.as_deref().is_none_or(|m| m == d.method)
                && o.target.as_deref().is_none_or(|t| t == d.target);
            match &o.result {
                Err(_) if same_line => r.lost += 1,
                Ok(status) if same_line && d.status.is_none_or(|s| s == *status) => {
                    r.identical += 1;
                }
                _ => {
                    r.differ += 1;
                    r.note(format!(
                        "{} -> {}: request {}{}: tshark `{} {}` → {}, parallelrun `{} {}` → {}",
                        conn.0,
                        conn.1,
                        i + 1,
                        w.stream.map_or(String::new(), |s| format!(" (stream {s})")),
                        d.method,
                        d.target,
                        d.status.map_or("no response".into(), |s| s.to_string()),
                        o.method.as_deref().unwrap_or("?"),
                        o.target.as_deref().unwrap_or("?"),
                        match &o.result {
                            Ok(s) => s.to_string(),
                            Err(cause) => format!("lost ({cause})"),
                        }
                    ));
                }
            }
        }
        r.extra += extra as u64;
    }
    Ok(r)
}

/// The outcome of each wanted request (`None`: none), and how many
/// outcomes are left over. On an HTTP/1 connection the n-th outcome is the
/// n-th request's. Where HTTP/2 is involved, a paired HTTP/2 exchange is
/// its stream's; the other outcomes (HTTP/1, or lost, which name no stream)
/// go in order to the requests that no stream took.
fn match_outcomes<'a>(want: &[Wanted], got: &'a [Outcome]) -> (Vec<Option<&'a Outcome>>, usize) {
    if want.iter().all(|w| w.stream.is_none()) && got.iter().all(|o| o.stream.is_none()) {
        let matched = (0..want.len()).map(|i| got.get(i)).collect();
        return (matched, got.len().saturating_sub(want.len()));
    }
    let mut used = vec![false; got.len()];
    let mut matched: Vec<Option<&Outcome>> = want
        .iter()
        .map(|w| {
            let i = got
                .iter()
                .enumerate()
                .position(|(i, o)| !used[i] && o.stream.is_some() && o.stream == w.stream)?;
            used[i] = true;
            Some(&got[i])
        })
        .collect();
    let mut rest = (0..got.len()).filter(|&i| got[i].stream.is_none());
    for m in matched.iter_mut().filter(|m| m.is_none()) {
        if let Some(i) = rest.by_ref().find(|&i| !used[i]) {
            used[i] = true;
            *m = Some(&got[i]);
        }
    }
    (matched, used.iter().filter(|u| !**u).count())
}

/// One connection's requests: HTTP/1 in order, then HTTP/2 streams in
/// stream id order. An upgraded connection's request answered `101` is its
/// stream 1 and takes stream 1's status; streams whose request HEADERS
/// tshark did not see (a capture that began after them) are dropped, as
/// responses with no request are for HTTP/1.
fn merge(
    http1: BTreeMap<Conn, Vec<Dissected>>,
    mut h2: BTreeMap<Conn, Vec<H2Request>>,
) -> BTreeMap<Conn, Vec<Wanted>> {
    let mut out: BTreeMap<Conn, Vec<Wanted>> = BTreeMap::new();
    for (conn, list) in http1 {
        let mut wanted: Vec<Wanted> = list
            .into_iter()
            .map(|d| Wanted { stream: None, d })
            .collect();
        if let Some(streams) = h2.get_mut(&conn)
            && let Some(first) = streams
                .iter()
                .position(|s| s.stream == 1 && s.method.is_none())
            && let Some(w) = wanted.iter_mut().rev().find(|w| w.d.status == Some(101))
        {
            w.stream = Some(1);
            w.d.status = streams.remove(first).status;
        }
        out.insert(conn, wanted);
    }
    for (conn, streams) in h2 {
        let wanted = out.entry(conn).or_default();
        for s in streams {
            let Some(method) = s.method else { continue };
            wanted.push(Wanted {
                stream: Some(s.stream),
                d: Dissected {
                    method,
                    target: s.path.unwrap_or_default(),
                    status: s.status,
                },
            });
        }
    }
    out.retain(|_, v| !v.is_empty());
    out
}

/// The server ports of a capture, by how tshark dissects them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Ports {
    /// Ports that send `HTTP/` status lines or are sent request lines.
    http1: BTreeSet<u16>,
    /// Ports sent the HTTP/2 connection preface (prior knowledge h2c).
    h2c: BTreeSet<u16>,
    /// HTTP/1 ports that switched a connection to h2c (`101`, `Upgrade:
    /// h2c`).
    upgrade: BTreeSet<u16>,
}

impl Ports {
    /// Every server port, for parallelrun's `--old`.
    fn all(&self) -> BTreeSet<u16> {
        self.http1.union(&self.h2c).copied().collect()
    }
}

/// The HTTP/2 client connection preface begins so.
const PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// Ports that act as HTTP servers in the capture: they send `HTTP/` status
/// lines, or are sent request lines or the HTTP/2 preface.
fn server_ports(file: &Path) -> Result<Ports> {
    let out = tshark(
        file,
        &[
            "-Y",
            "tcp.len > 0",
            "-T",
            "fields",
            "-e",
            "tcp.stream",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.payload",
        ],
    )?;
    Ok(classify_ports(&out))
}

/// [`server_ports`] from tshark's lines of `tcp.stream`, `tcp.srcport`,
/// `tcp.dstport` and `tcp.payload` (hex), one per segment with a payload.
fn classify_ports(out: &str) -> Ports {
    let mut ports = Ports::default();
    // (tcp.stream, port) of the senders seen so far: the preface is prior
    // knowledge only as a client's first bytes (after an upgrade it is not).
    let mut spoke: BTreeSet<(&str, &str)> = BTreeSet::new();
    for line in out.lines() {
        let mut f = line.split('\t');
        let (Some(conn), Some(src), Some(dst), Some(payload)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let first = spoke.insert((conn, src));
        let head = hex_prefix(payload, 16);
        if head.starts_with(b"HTTP/") {
            if let Ok(p) = src.parse() {
                ports.http1.insert(p);
                if head.get(9..12) == Some(b"101") && upgrades_to_h2c(&hex_prefix(payload, 4096)) {
                    ports.upgrade.insert(p);
                }
            }
        } else if head.starts_with(PREFACE_START) {
            if first && let Ok(p) = dst.parse() {
                ports.h2c.insert(p);
            }
        } else if looks_like_request_line(&head)
            && let Ok(p) = dst.parse()
        {
            ports.http1.insert(p);
        }
    }
    // A prior-knowledge port is HTTP/2 to tshark, not HTTP/1.
    ports.http1.retain(|p| !ports.h2c.contains(p));
    ports
}

/// A response head with `Upgrade: h2c` (any case, optional whitespace).
fn upgrades_to_h2c(head: &[u8]) -> bool {
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    let head = head.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(n, v)| n.trim() == "upgrade" && v.trim() == "h2c")
    })
}

/// The first `n` bytes of a hex string as tshark prints payloads.
fn hex_prefix(hex: &str, n: usize) -> Vec<u8> {
    let hex: String = hex
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(2 * n)
        .collect();
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// `TOKEN SP` at the start, the token a plausible method (upper-case
/// letters, `-` or `_`).
fn looks_like_request_line(head: &[u8]) -> bool {
    let Some(sp) = head.iter().position(|&b| b == b' ') else {
        return false;
    };
    sp >= 3
        && head[..sp]
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_')
}

/// tshark's HTTP requests per connection, in order, each with the status of
/// the final response that answered it (1xx interim responses other than 101
/// answer nothing; a response with no request waiting is ignored, as when a
/// capture starts mid-exchange).
fn dissect(file: &Path, ports: &BTreeSet<u16>) -> Result<BTreeMap<Conn, Vec<Dissected>>> {
    let mut args: Vec<String> = Vec::new();
    for p in ports {
        args.push("-d".into());
        args.push(format!("tcp.port=={p},http"));
    }
    args.extend(
        [
            "-Y",
            "http.request || http.response",
            "-T",
            "json",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "tcp.dstport",
            "-e",
            "http.request.method",
            "-e",
            "http.request.uri",
            "-e",
            "http.response.code",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tshark(file, &args)?;
    let packets: Vec<Value> = if out.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&out).context("tshark's JSON output")?
    };
    let mut by_conn: BTreeMap<Conn, Vec<Dissected>> = BTreeMap::new();
    let mut waiting: BTreeMap<Conn, VecDeque<usize>> = BTreeMap::new();
    for p in &packets {
        let layers = &p["_source"]["layers"];
        let field = |name: &str| -> Vec<String> {
            layers[name]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let first = |a: &str, b: &str| field(a).into_iter().chain(field(b)).next();
        let (Some(src), Some(dst)) = (first("ip.src", "ipv6.src"), first("ip.dst", "ipv6.dst"))
        else {
            continue;
        };
        let (Some(sport), Some(dport)) = (
            field("tcp.srcport").into_iter().next(),
            field("tcp.dstport").into_iter().next(),
        ) else {
            continue;
        };
        let src = endpoint(&src, &sport);
        let dst = endpoint(&dst, &dport);
        let methods = field("http.request.method");
        let uris = field("http.request.uri");
        if !methods.is_empty() {
            let conn = (src.clone(), dst.clone());
            for (i, m) in methods.iter().enumerate() {
                let list = by_conn.entry(conn.clone()).or_default();
                list.push(Dissected {
                    method: m.clone(),
                    target: uris.get(i).cloned().unwrap_or_default(),
                    status: None,
                });
                let at = list.len() - 1;
                waiting.entry(conn.clone()).or_default().push_back(at);
            }
        }
        let conn = (dst, src);
        for code in field("http.response.code") {
            let Ok(code) = code.parse::<u16>() else {
                continue;
            };
            if (100..200).contains(&code) && code != 101 {
                continue;
            }
            if let Some(at) = waiting.get_mut(&conn).and_then(VecDeque::pop_front)
                && let Some(d) = by_conn.get_mut(&conn).and_then(|l| l.get_mut(at))
            {
                d.status = Some(code);
            }
        }
    }
    Ok(by_conn)
}

/// One HTTP/2 stream as tshark dissected it: the request's method and
/// `:path` (none when tshark saw no request HEADERS, as for an upgraded
/// connection's stream 1), and the final `:status`.
#[derive(Debug, Default, PartialEq, Eq)]
struct H2Request {
    stream: u32,
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
}

/// tshark's HTTP/2 streams per connection, in stream id order.
fn dissect_h2(file: &Path, ports: &Ports) -> Result<BTreeMap<Conn, Vec<H2Request>>> {
    let mut args: Vec<String> = Vec::new();
    for p in &ports.h2c {
        args.push("-d".into());
        args.push(format!("tcp.port=={p},http2"));
    }
    // tshark follows an upgrade from HTTP/1.1 by itself.
    for p in &ports.upgrade {
        args.push("-d".into());
        args.push(format!("tcp.port=={p},http"));
    }
    args.extend(
        [
            "-Y",
            "http2",
            "-T",
            "json",
            "--no-duplicate-keys",
            "-j",
            "ip ipv6 tcp http2 http2.stream http2.header",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tshark(file, &args)?;
    let packets: Value = if out.trim().is_empty() {
        Value::Array(Vec::new())
    } else {
        serde_json::from_str(&out).context("tshark's JSON output")?
    };
    let servers: BTreeSet<u16> = ports.h2c.union(&ports.upgrade).copied().collect();
    Ok(h2_requests(&packets, &servers))
}

/// A JSON field that tshark writes as an object (or string) when it occurs
/// once and, with `--no-duplicate-keys`, as an array when it repeats.
fn each(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v) => vec![v],
    }
}

/// A leaf's text (the first, if it repeats).
fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    each(v.get(key)).first()?.as_str()
}

/// A leaf's number, decimal or `0x` hex.
fn number(v: &Value, key: &str) -> Option<u64> {
    let s = text(v, key)?;
    s.strip_prefix("0x")
        .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
}

/// The streams of tshark's HTTP/2 packets (`-T json --no-duplicate-keys`),
/// per connection (client, server: the side whose port is in `servers`)
/// in stream id order. A request is a client's HEADERS (and
/// CONTINUATIONs) on a stream; the status is the server's first non-1xx
/// `:status` on it.
fn h2_requests(packets: &Value, servers: &BTreeSet<u16>) -> BTreeMap<Conn, Vec<H2Request>> {
    let mut streams: BTreeMap<(Conn, u32), H2Request> = BTreeMap::new();
    for p in each(Some(packets)) {
        let l = &p["_source"]["layers"];
        let ip = |v4: &str, v6: &str| text(&l["ip"], v4).or_else(|| text(&l["ipv6"], v6));
        let (Some(src), Some(dst), Some(sport), Some(dport)) = (
            ip("ip.src", "ipv6.src"),
            ip("ip.dst", "ipv6.dst"),
            number(&l["tcp"], "tcp.srcport"),
            number(&l["tcp"], "tcp.dstport"),
        ) else {
            continue;
        };
        let src = endpoint(src, &sport.to_string());
        let dst = endpoint(dst, &dport.to_string());
        let from_server = u16::try_from(sport).is_ok_and(|p| servers.contains(&p));
        let conn = if from_server { (dst, src) } else { (src, dst) };
        for frame in each(l.get("http2")) {
            let Some(f) = frame.get("http2.stream") else {
                continue;
            };
            // The preface has no type; stream 0 is the connection's.
            let (Some(id), Some(kind)) = (number(f, "http2.streamid"), number(f, "http2.type"))
            else {
                continue;
            };
            // HEADERS, CONTINUATION (tshark may decode a block on the last).
            let (Ok(id @ 1..), 1 | 9) = (u32::try_from(id), kind) else {
                continue;
            };
            let s = streams
                .entry((conn.clone(), id))
                .or_insert_with(|| H2Request {
                    stream: id,
                    ..H2Request::default()
                });
            for h in each(f.get("http2.header")) {
                let (Some(name), value) = (
                    text(h, "http2.header.name"),
                    text(h, "http2.header.value").unwrap_or(""),
                ) else {
                    continue;
                };
                match (from_server, name) {
                    (false, ":method") if s.method.is_none() => s.method = Some(value.into()),
                    (false, ":path") if s.path.is_none() => s.path = Some(value.into()),
                    (true, ":status") if s.status.is_none() => {
                        s.status = value.parse().ok().filter(|c| !(100..200).contains(c));
                    }
                    _ => {}
                }
            }
        }
    }
    let mut out: BTreeMap<Conn, Vec<H2Request>> = BTreeMap::new();
    for ((conn, _), s) in streams {
        out.entry(conn).or_default().push(s);
    }
    out
}

/// `IP:PORT`, IPv6 in brackets, as Rust's `SocketAddr` prints it.
fn endpoint(ip: &str, port: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port.parse().unwrap_or(0)).to_string(),
        Err(_) => format!("{ip}:{port}"),
    }
}

/// parallelrun's outcomes per connection, in output order, and whether its
/// summary counts what it wrote.
fn exchanges(
    file: &Path,
    ports: &BTreeSet<u16>,
    agent: &Path,
    scratch: &Path,
) -> Result<(BTreeMap<Conn, Vec<Outcome>>, bool)> {
    fs::create_dir_all(scratch)?;
    let out = scratch.join("exchanges.jsonl");
    let stats = scratch.join("stats.json");
    let mut cmd = Command::new(agent);
    cmd.arg("exchanges").arg("--pcap").arg(file);
    for p in ports {
        cmd.arg("--old").arg(format!(":{p}"));
    }
    cmd.arg("--out").arg(&out).arg("--stats-json").arg(&stats);
    let res = cmd
        .output()
        .with_context(|| format!("cannot run {}", agent.display()))?;
    if !res.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            res.status,
            String::from_utf8_lossy(&res.stderr)
        );
    }
    let text = fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let mut by_conn: BTreeMap<Conn, Vec<Outcome>> = BTreeMap::new();
    let (mut paired, mut lost) = (0u64, 0u64);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).context("an exchanges output line")?;
        let s = |v: &Value| v.as_str().map(String::from);
        let conn = (
            s(&v["client"]).unwrap_or_default(),
            s(&v["server"]).unwrap_or_default(),
        );
        let outcome = if let Some(cause) = s(&v["lost"]) {
            lost += 1;
            Outcome {
                method: s(&v["method"]),
                target: s(&v["target"]),
                stream: None,
                result: Err(cause),
            }
        } else {
            paired += 1;
            Outcome {
                method: s(&v["request"]["method"]),
                target: s(&v["request"]["target"]),
                stream: (v["protocol"] == "http2")
                    .then(|| v["stream"].as_u64().and_then(|s| u32::try_from(s).ok()))
                    .flatten(),
                result: Ok(v["response"]["status"].as_u64().unwrap_or(0) as u16),
            }
        };
        by_conn.entry(conn).or_default().push(outcome);
    }
    let summary: Value = serde_json::from_slice(
        &fs::read(&stats).with_context(|| format!("reading {}", stats.display()))?,
    )
    .context("the --stats-json summary")?;
    let http = &summary["http"];
    let count = |k: &str| http[k].as_u64().unwrap_or(u64::MAX);
    let lost_total = http["lost"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum::<u64>());
    let agrees = count("requests_seen") == paired + lost
        && count("paired") == paired
        && lost_total.is_none_or(|l| l == lost);
    Ok((by_conn, agrees))
}

/// Runs tshark on `file` and returns its stdout.
fn tshark(file: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .context("cannot run tshark")?;
    if !out.status.success() {
        bail!(
            "tshark -r {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_and_hex() {
        assert_eq!(hex_prefix("474554202f", 16), b"GET /");
        assert!(looks_like_request_line(b"GET / HTTP/1.1"));
        assert!(looks_like_request_line(b"CCM_POST / HTTP"));
        assert!(!looks_like_request_line(b"HTTP/1.1 200 OK"));
        assert!(!looks_like_request_line(b"\x16\x03\x01 tls"));
    }

    #[test]
    fn ports_by_protocol() {
        let hex = |s: &[u8]| s.iter().map(|b| format!("{b:02x}:")).collect::<String>();
        let lines = [
            // HTTP/1.1 on 80.
            ("0", "5000", "80", hex(b"GET / HTTP/1.1\r\n")),
            ("0", "80", "5000", hex(b"HTTP/1.1 200 OK\r\n")),
            // Prior knowledge on 8080.
            (
                "1",
                "5001",
                "8080",
                hex(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            ),
            // An upgrade on 8081: the preface after the 101 is no prior knowledge.
            (
                "2",
                "5002",
                "8081",
                hex(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n"),
            ),
            (
                "2",
                "8081",
                "5002",
                hex(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n"),
            ),
            (
                "2",
                "5002",
                "8081",
                hex(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            ),
        ];
        let out: String = lines
            .iter()
            .map(|(c, s, d, p)| format!("{c}\t{s}\t{d}\t{p}\n"))
            .collect();
        assert_eq!(
            classify_ports(&out),
            Ports {
                http1: BTreeSet::from([80, 8081]),
                h2c: BTreeSet::from([8080]),
                upgrade: BTreeSet::from([8081]),
            }
        );
    }

    #[test]
    fn endpoints_print_like_socket_addrs() {
        assert_eq!(endpoint("10.0.0.1", "80"), "10.0.0.1:80");
        assert_eq!(endpoint("::1", "8000"), "[::1]:8000");
    }
    /// Two packets of a recorded capture (nghttpd and h2load, tshark 4.0
    /// `-T json --no-duplicate-keys`), cut to the fields read: the
    /// client's preface, SETTINGS and two requests in one segment; the
    /// server's answers in another, stream 3 first, stream 1 with an
    /// interim 103 first. A third stream has a response only (opened
    /// before the capture).
    const H2_PACKETS: &str = r#"[
      {"_source": {"layers": {
        "ip": {"ip.src": "127.0.0.1", "ip.dst": "127.0.0.1"},
        "tcp": {"tcp.srcport": "57794", "tcp.dstport": "34377"},
        "http2": [
          {"http2.stream": {"http2.magic": "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"}},
          {"http2.stream": {"http2.length": "12", "http2.type": "4", "http2.flags": "0x00",
            "http2.streamid": "0", "http2.settings": [{"filtered": "http2.settings"}, {"filtered": "http2.settings"}]}},
          {"http2.stream": {"http2.length": "39", "http2.type": "1", "http2.flags": "0x05",
            "http2.streamid": "1", "http2.header": [
              {"http2.header.name": ":path", "http2.header.value": "/f1.bin"},
              {"http2.header.name": ":scheme", "http2.header.value": "http"},
              {"http2.header.name": ":authority", "http2.header.value": "127.0.0.1:34377"},
              {"http2.header.name": ":method", "http2.header.value": "GET"}]}},
          {"http2.stream": {"http2.length": "11", "http2.type": "1", "http2.flags": "0x04",
            "http2.streamid": "3", "http2.header": [
              {"http2.header.name": ":method", "http2.header.value": "POST"},
              {"http2.header.name": ":path", "http2.header.value": "/missing?q=1"}]}},
          {"http2.stream": {"http2.length": "5", "http2.type": "0", "http2.flags": "0x01",
            "http2.streamid": "3"}}
        ]}}},
      {"_source": {"layers": {
        "ip": {"ip.src": "127.0.0.1", "ip.dst": "127.0.0.1"},
        "tcp": {"tcp.srcport": "34377", "tcp.dstport": "57794"},
        "http2": [
          {"http2.stream": {"http2.length": "0", "http2.type": "4", "http2.flags": "0x01", "http2.streamid": "0"}},
          {"http2.stream": {"http2.length": "12", "http2.type": "1", "http2.flags": "0x05",
            "http2.streamid": "3", "http2.header": {"http2.header.name": ":status", "http2.header.value": "404"}}},
          {"http2.stream": {"http2.length": "4", "http2.type": "1", "http2.flags": "0x04",
            "http2.streamid": "1", "http2.header": {"http2.header.name": ":status", "http2.header.value": "103"}}},
          {"http2.stream": {"http2.length": "102", "http2.type": "1", "http2.flags": "0x04",
            "http2.streamid": "1", "http2.header": [
              {"http2.header.name": ":status", "http2.header.value": "200"},
              {"http2.header.name": "server", "http2.header.value": "nghttpd nghttp2/1.52.0"}]}},
          {"http2.stream": {"http2.length": "6", "http2.type": "1", "http2.flags": "0x05",
            "http2.streamid": "7", "http2.header": {"http2.header.name": ":status", "http2.header.value": "200"}}}
        ]}}}
    ]"#;

    #[test]
    fn h2_streams_from_tshark_json() {
        let packets: Value = serde_json::from_str(H2_PACKETS).unwrap();
        let got = h2_requests(&packets, &BTreeSet::from([34377]));
        let conn = ("127.0.0.1:57794".to_owned(), "127.0.0.1:34377".to_owned());
        assert_eq!(got.keys().collect::<Vec<_>>(), [&conn]);
        let req = |stream, method: Option<&str>, path: Option<&str>, status| H2Request {
            stream,
            method: method.map(String::from),
            path: path.map(String::from),
            status,
        };
        assert_eq!(
            got[&conn],
            [
                req(1, Some("GET"), Some("/f1.bin"), Some(200)),
                req(3, Some("POST"), Some("/missing?q=1"), Some(404)),
                req(7, None, None, Some(200)),
            ]
        );
        // The stream without a request is dropped.
        let wanted = merge(BTreeMap::new(), got);
        let w: Vec<_> = wanted[&conn]
            .iter()
            .map(|w| {
                (
                    w.stream,
                    w.d.method.as_str(),
                    w.d.target.as_str(),
                    w.d.status,
                )
            })
            .collect();
        assert_eq!(
            w,
            [
                (Some(1), "GET", "/f1.bin", Some(200)),
                (Some(3), "POST", "/missing?q=1", Some(404))
            ]
        );
    }

    #[test]
    fn an_upgraded_request_is_stream_1() {
        let conn = ("10.0.0.1:5000".to_owned(), "10.0.0.2:80".to_owned());
        let d = |m: &str, t: &str, status| Dissected {
            method: m.into(),
            target: t.into(),
            status,
        };
        let http1 = BTreeMap::from([(
            conn.clone(),
            vec![d("GET", "/a", Some(200)), d("GET", "/up", Some(101))],
        )]);
        let h2 = BTreeMap::from([(
            conn.clone(),
            vec![
                H2Request {
                    stream: 1,
                    status: Some(204),
                    ..H2Request::default()
                },
                H2Request {
                    stream: 3,
                    method: Some("GET".into()),
                    path: Some("/b".into()),
                    status: Some(200),
                },
            ],
        )]);
        let w: Vec<_> = merge(http1, h2)[&conn]
            .iter()
            .map(|w| (w.stream, w.d.target.clone(), w.d.status))
            .collect();
        assert_eq!(
            w,
            [
                (None, "/a".into(), Some(200)),
                (Some(1), "/up".into(), Some(204)),
                (Some(3), "/b".into(), Some(200))
            ]
        );
        assert!(upgrades_to_h2c(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade:  H2C\r\n\r\n\0\0"
        ));
        assert!(!upgrades_to_h2c(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        ));
    }

    #[test]
    fn paired_h2_outcomes_match_by_stream_and_lost_ones_fill_in() {
        let w = |stream| Wanted {
            stream,
            d: Dissected {
                method: "GET".into(),
                target: "/".into(),
                status: Some(200),
            },
        };
        let o = |stream, result| Outcome {
            method: None,
            target: None,
            stream,
            result,
        };
        let want = [w(None), w(Some(1)), w(Some(3)), w(Some(5))];
        // Output order: stream 5 ended first; the HTTP/1 request; one lost.
        let got = [
            o(Some(5), Ok(200)),
            o(None, Ok(200)),
            o(None, Err("hpack_state".into())),
            o(Some(9), Ok(200)),
        ];
        let (matched, extra) = match_outcomes(&want, &got);
        let at =
            |m: Option<&Outcome>| m.map(|m| got.iter().position(|g| std::ptr::eq(g, m)).unwrap());
        let idx: Vec<_> = matched.into_iter().map(at).collect();
        assert_eq!(idx, [Some(1), Some(2), None, Some(0)]);
        assert_eq!(extra, 1);
        // HTTP/1 only: by position, as before.
        let (matched, extra) = match_outcomes(&[w(None)], &got[1..3]);
        assert_eq!(matched.len(), 1);
        assert!(std::ptr::eq(matched[0].unwrap(), &got[1]));
        assert_eq!(extra, 1);
    }
}
