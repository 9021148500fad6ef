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

/// One outcome line of `parallelrun exchanges`.
#[derive(Debug)]
struct Outcome {
    method: Option<String>,
    target: Option<String>,
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
    let dissected = if ports.is_empty() {
        BTreeMap::new()
    } else {
        dissect(file, &ports)?
    };
    let mut r = FileResult {
        summary_agrees: true,
        ..FileResult::default()
    };
    r.dissected = dissected.values().map(|v| v.len() as u64).sum();
    if ports.is_empty() {
        return Ok(r);
    }
    let (outcomes, agrees) = exchanges(file, &ports, agent, scratch)?;
    r.summary_agrees = agrees;
    r.outcomes = outcomes.values().map(|v| v.len() as u64).sum();
    if !agrees {
        r.note("the summary's counts differ from the output's lines".into());
    }
    let conns: BTreeSet<&Conn> = dissected.keys().chain(outcomes.keys()).collect();
    for conn in conns {
        let want = dissected.get(conn).map_or(&[][..], Vec::as_slice);
        let got = outcomes.get(conn).map_or(&[][..], Vec::as_slice);
        for (i, d) in want.iter().enumerate() {
            let Some(o) = got.get(i) else {
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
                        "{} -> {}: request {}: tshark `{} {}` → {}, parallelrun `{} {}` → {}",
                        conn.0,
                        conn.1,
                        i + 1,
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
        r.extra += got.len().saturating_sub(want.len()) as u64;
    }
    Ok(r)
}

/// Ports that act as HTTP servers in the capture: they send `HTTP/` status
/// lines, or are sent request lines.
fn server_ports(file: &Path) -> Result<BTreeSet<u16>> {
    let out = tshark(
        file,
        &[
            "-Y",
            "tcp.len > 0",
            "-T",
            "fields",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.payload",
        ],
    )?;
    let mut ports = BTreeSet::new();
    for line in out.lines() {
        let mut f = line.split('\t');
        let (Some(src), Some(dst), Some(payload)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let head = hex_prefix(payload, 16);
        if head.starts_with(b"HTTP/") {
            if let Ok(p) = src.parse() {
                ports.insert(p);
            }
        } else if looks_like_request_line(&head)
            && let Ok(p) = dst.parse()
        {
            ports.insert(p);
        }
    }
    Ok(ports)
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
                result: Err(cause),
            }
        } else {
            paired += 1;
            Outcome {
                method: s(&v["request"]["method"]),
                target: s(&v["request"]["target"]),
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
    fn endpoints_print_like_socket_addrs() {
        assert_eq!(endpoint("10.0.0.1", "80"), "10.0.0.1:80");
        assert_eq!(endpoint("::1", "8000"), "[::1]:8000");
    }
}
