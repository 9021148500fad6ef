//! A page opened in Debian's headless Chromium: its DOM after load (scripts
//! run), a screenshot, and every network request it tried to make.
//!
//! [`render_in_chromium`] runs `/usr/bin/chromium` twice (`--dump-dom`, then
//! `--screenshot`), each with a fresh profile, and proves the page fetches
//! nothing in two independent ways:
//!
//! - every connection is sent to a proxy this function owns
//!   (`--proxy-server`, loopback included with `--proxy-bypass-list=<-loopback>`),
//!   which answers 403 and records the request line of each connection;
//!   every host name resolves to nothing (`--host-resolver-rules`), so a
//!   request cannot go around it either;
//! - Chromium's own record of its network stack (`--log-net-log`) is read
//!   back, and every URL it requested is listed, except the page itself
//!   (`file://` of it), `data:` and `about:`.
//!
//! Chromium also talks to Google for itself (component updates, account
//! and time checks), whatever the page: those requests have no initiating
//! document (the net log's `initiator` is `not an origin`) and are listed
//! apart, in [`Rendered::browser_requests`], with the proxy connections
//! made for their hosts; a page can never start a request like that.
//!
//! Each run is killed, with its whole process group, after [`TIMEOUT`].

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{ErrorKind, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use parallelrun_sandbox::Proc;
use serde_json::Value;

/// Debian's Chromium (the launcher script, which execs the browser).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one Chromium run may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The screenshot's window size.
pub const WINDOW: &str = "1280,2000";

/// What Chromium made of a page.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    /// The DOM after load and scripts (`--dump-dom`), serialised.
    pub dom: String,
    /// Every request the page made, or tried to: each URL of the net logs
    /// that is not the page, `data:` or `about:`, and one entry per proxy
    /// connection (`proxy: CONNECT host:443 HTTP/1.1`). Empty for a
    /// self-contained page.
    pub network_requests: Vec<String>,
    /// Requests Chromium made for itself, not for the page (see the
    /// [module docs](self)); for the curious, never a failure.
    pub browser_requests: Vec<String>,
}

/// Opens `html` in headless Chromium: returns its DOM after load and the
/// requests it tried, and writes a 1280×2000 PNG screenshot to
/// `screenshot` (its directory is created).
pub fn render_in_chromium(html: &Path, screenshot: &Path) -> anyhow::Result<Rendered> {
    let chromium = chromium()?;
    let html = fs::canonicalize(html).with_context(|| format!("page {}", html.display()))?;
    let page = file_url(&html);
    if let Some(dir) = screenshot.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let screenshot = std::path::absolute(screenshot)
        .with_context(|| format!("screenshot path {}", screenshot.display()))?;
    let _ = fs::remove_file(&screenshot);
    let tmp = tempfile::Builder::new()
        .prefix("parallelrun-chromium-")
        .tempdir()
        .context("creating a temporary directory for Chromium")?;
    let proxy = Proxy::start()?;

    let dom_log = tmp.path().join("dom.netlog.json");
    let dom_out = tmp.path().join("dom.html");
    run(
        &chromium,
        &proxy,
        &tmp.path().join("profile-dom"),
        &dom_log,
        &["--dump-dom".to_owned(), page.clone()],
        &dom_out,
        &tmp.path().join("dom.stderr"),
    )?;
    let dom = fs::read_to_string(&dom_out).context("reading the dumped DOM")?;
    if !dom.contains("<html") {
        bail!("chromium dumped no DOM for {page}:\n{dom}");
    }

    let shot_log = tmp.path().join("shot.netlog.json");
    let shot_stderr = tmp.path().join("shot.stderr");
    run(
        &chromium,
        &proxy,
        &tmp.path().join("profile-shot"),
        &shot_log,
        &[
            format!("--screenshot={}", screenshot.display()),
            format!("--window-size={WINDOW}"),
            "--hide-scrollbars".to_owned(),
            page.clone(),
        ],
        &tmp.path().join("shot.out"),
        &shot_stderr,
    )?;
    let png = fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    if png == 0 {
        bail!(
            "chromium wrote no screenshot to {}:\n{}",
            screenshot.display(),
            tail(&shot_stderr)
        );
    }

    let connections = proxy.stop();
    let mut seen = NetLogUrls::default();
    for log in [&dom_log, &shot_log] {
        seen.read(log, &page)?;
    }
    let browser_hosts: HashSet<String> = seen.browser.iter().filter_map(|u| url_host(u)).collect();
    let mut rendered = Rendered {
        dom,
        network_requests: seen.page,
        browser_requests: seen.browser,
    };
    for line in connections {
        let entry = format!("proxy: {line}");
        match request_line_host(&line) {
            Some(host) if browser_hosts.contains(&host) => rendered.browser_requests.push(entry),
            _ => rendered.network_requests.push(entry),
        }
    }
    Ok(rendered)
}

/// The Chromium binary, or an error saying how to install it.
fn chromium() -> anyhow::Result<PathBuf> {
    chromium_at(Path::new(CHROMIUM))
}

fn chromium_at(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "{} not found: the HTML report tests need Debian's Chromium; run `cargo xtask setup` (it installs the `chromium` package)",
            path.display()
        );
    }
    Ok(path.to_owned())
}

/// One headless Chromium run with the isolating flags and `extra`;
/// stdout to `out`, stderr to `err`. Fails if it exits unsuccessfully or
/// is still running after [`TIMEOUT`] (then it is killed, with its group).
fn run(
    chromium: &Path,
    proxy: &Proxy,
    profile: &Path,
    net_log: &Path,
    extra: &[String],
    out: &Path,
    err: &Path,
) -> anyhow::Result<()> {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter",
        "--force-device-scale-factor=1",
        "--proxy-bypass-list=<-loopback>",
        // The proxy is reached by address; every name resolves to nothing.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ])
    .arg(format!("--proxy-server=http://{}", proxy.addr))
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--log-net-log={}", net_log.display()))
    .args(extra)
    .stdin(Stdio::null())
    .stdout(fs::File::create(out).with_context(|| format!("creating {}", out.display()))?)
    .stderr(fs::File::create(err).with_context(|| format!("creating {}", err.display()))?);
    let mut proc = Proc::spawn_own_group("chromium", &mut cmd)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_grace(Duration::ZERO);
    let end = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = proc.exited() {
            break status;
        }
        if Instant::now() >= end {
            // SAFETY: kill(2) of our child's process group (it leads it:
            // spawned with process_group(0)) while the child is not reaped,
            // so the group id is still ours; its helpers are in it.
            unsafe { libc::kill(-proc.pid(), libc::SIGKILL) };
            drop(proc);
            bail!(
                "chromium did not finish within {TIMEOUT:?} ({}); killed. Its stderr:\n{}",
                extra.join(" "),
                tail(err)
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        bail!(
            "chromium {} failed ({status}):\n{}",
            extra.join(" "),
            tail(err)
        );
    }
    Ok(())
}

/// The last few lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `file://` URL of an absolute path, percent-encoding what a URL path
/// cannot hold.
pub fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(b) {
            url.push(char::from(*b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// An HTTP proxy that refuses everything and records each connection's
/// request line.
struct Proxy {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the recording proxy")?;
        listener
            .set_nonblocking(true)
            .context("making the proxy's listener non-blocking")?;
        let addr = listener.local_addr().context("the proxy's address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let line = refuse(conn);
                            seen.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => {
                            seen.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("(accept failed: {e})"));
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        };
        Ok(Self {
            addr,
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// Stops accepting; every connection's request line.
    fn stop(mut self) -> Vec<String> {
        // A connection Chromium opened just before exiting is accepted.
        thread::sleep(Duration::from_millis(100));
        self.halt();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Reads a connection's first line (up to 1 s, 8 KiB), answers 403 and
/// closes; the line, or what was wrong.
fn refuse(mut conn: TcpStream) -> String {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while buf.len() < 8192 && !buf.contains(&b'\n') {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ =
        conn.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&buf);
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => line.to_owned(),
        _ => "(connection without a request line)".to_owned(),
    }
}

/// The host a proxy request line is for: `CONNECT host:443 HTTP/1.1` or
/// `GET http://host:80/path HTTP/1.1`.
fn request_line_host(line: &str) -> Option<String> {
    let target = line.split_whitespace().nth(1)?;
    if target.contains("://") {
        return url_host(target);
    }
    Some(strip_port(target).to_ascii_lowercase())
}

/// The host of `scheme://host[:port]/…`.
fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(strip_port(authority).to_ascii_lowercase())
}

fn strip_port(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// URLs of the net logs, split into the page's and the browser's own.
#[derive(Default)]
struct NetLogUrls {
    page: Vec<String>,
    browser: Vec<String>,
}

impl NetLogUrls {
    /// Adds the URLs requested in one net log. The log holds one event per
    /// line (it is read line by line, so a log cut short by a kill still
    /// counts); events are grouped by their sources and the sources they
    /// depend on (a request and its stream jobs), and a group is the
    /// browser's own when one of its events says `initiator: not an
    /// origin` without naming the page's origin as its isolation key.
    fn read(&mut self, path: &Path, page: &str) -> anyhow::Result<()> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading Chromium's net log {}", path.display()))?;
        let events: Vec<Value> = text
            .lines()
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e.get("source").is_some() && e.get("type").is_some())
            .collect();
        if events.is_empty() {
            bail!("Chromium's net log {} holds no events", path.display());
        }
        let mut groups = Groups::default();
        for e in &events {
            let (Some(id), Some(params)) = (source_id(e), e.get("params")) else {
                continue;
            };
            if let Some(dep) = params
                .get("source_dependency")
                .and_then(|d| d.get("id"))
                .and_then(Value::as_i64)
            {
                groups.union(id, dep);
            }
        }
        let mut own = HashSet::new();
        for e in &events {
            let (Some(id), Some(params)) = (source_id(e), e.get("params")) else {
                continue;
            };
            let no_document =
                params.get("initiator").and_then(Value::as_str) == Some("not an origin");
            let page_key = params
                .get("network_isolation_key")
                .and_then(Value::as_str)
                .is_some_and(|k| k.contains("file://"));
            if no_document && !page_key {
                own.insert(groups.find(id));
            }
        }
        let mut listed: HashSet<String> = self.page.iter().chain(&self.browser).cloned().collect();
        for e in &events {
            let (Some(id), Some(params)) = (source_id(e), e.get("params")) else {
                continue;
            };
            for key in ["url", "original_url"] {
                let Some(url) = params.get(key).and_then(Value::as_str) else {
                    continue;
                };
                if is_local(url, page) || !listed.insert(url.to_owned()) {
                    continue;
                }
                if own.contains(&groups.find(id)) {
                    self.browser.push(url.to_owned());
                } else {
                    self.page.push(url.to_owned());
                }
            }
        }
        Ok(())
    }
}

fn source_id(event: &Value) -> Option<i64> {
    event.get("source")?.get("id")?.as_i64()
}

/// The page itself (any fragment of it), `data:` and `about:` URLs.
fn is_local(url: &str, page: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    url.strip_prefix(page)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('#'))
        || lower.starts_with("data:")
        || lower.starts_with("about:")
}

/// Union-find over net log source ids.
#[derive(Default)]
struct Groups {
    parent: HashMap<i64, i64>,
}

impl Groups {
    fn find(&mut self, id: i64) -> i64 {
        let mut root = id;
        while let Some(&p) = self.parent.get(&root) {
            if p == root {
                break;
            }
            root = p;
        }
        // Path compression.
        let mut cur = id;
        while cur != root {
            let next = self.parent.get(&cur).copied().unwrap_or(root);
            self.parent.insert(cur, root);
            cur = next;
        }
        root
    }

    fn union(&mut self, a: i64, b: i64) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent.insert(ra, rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_that_fetches_is_caught() {
        let tmp = tempfile::tempdir().unwrap();
        let page = tmp.path().join("fetching page.html");
        fs::write(
            &page,
            r#"<!DOCTYPE html><html><head><style>body { background: url(http://css.example/bg.png) }</style>
<link rel="stylesheet" href="https://link.example/x.css"></head>
<body><img src="http://img.example/a.png"><script>fetch('http://127.0.0.1:9/loopback').catch(function () {});</script></body></html>"#,
        )
        .unwrap();
        let r = render_in_chromium(&page, &tmp.path().join("shot.png"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        for url in [
            "http://css.example/bg.png",
            "https://link.example/x.css",
            "http://img.example/a.png",
            "http://127.0.0.1:9/loopback",
        ] {
            assert!(
                r.network_requests.iter().any(|u| u == url),
                "{url} not caught: {:?}",
                r.network_requests
            );
        }
        // Plain-HTTP requests reach the proxy.
        assert!(
            r.network_requests
                .iter()
                .any(|u| u.starts_with("proxy: GET http://img.example/a.png")),
            "{:?}",
            r.network_requests
        );
        // The page itself is never listed.
        assert!(!r.network_requests.iter().any(|u| u.starts_with("file:")));
    }

    #[test]
    fn urls_and_request_lines() {
        assert_eq!(
            file_url(Path::new("/tmp/a b/r%port.html")),
            "file:///tmp/a%20b/r%25port.html"
        );
        assert_eq!(
            request_line_host("CONNECT update.example:443 HTTP/1.1").as_deref(),
            Some("update.example")
        );
        assert_eq!(
            request_line_host("GET http://Img.Example:8080/a.png HTTP/1.1").as_deref(),
            Some("img.example")
        );
        assert_eq!(url_host("https://u@[::1]:8443/x").as_deref(), Some("::1"));
        assert_eq!(request_line_host("garbage"), None);
        let page = "file:///tmp/r.html";
        assert!(is_local("file:///tmp/r.html", page));
        assert!(is_local("file:///tmp/r.html#ep-1", page));
        assert!(is_local("data:image/png;base64,AAAA", page));
        assert!(is_local("about:blank", page));
        assert!(!is_local("file:///etc/passwd", page));
        assert!(!is_local("file:///tmp/r.html.bak", page));
    }

    #[test]
    fn net_log_requests_are_grouped_by_source_and_initiator() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("n.json");
        let lines = [
            r#"{"constants":{"x":1},"#,
            r#""events": ["#,
            r#"{"params":{"initiator":"not an origin","network_isolation_key":"null null","url":"https://update.example/u"},"phase":1,"source":{"id":8,"type":1},"time":"1","type":2},"#,
            r#"{"params":{"source_dependency":{"id":8,"type":1}},"phase":0,"source":{"id":9,"type":32},"time":"1","type":3},"#,
            r#"{"params":{"url":"https://update.example/u?stream"},"phase":1,"source":{"id":9,"type":32},"time":"1","type":4},"#,
            r#"{"params":{"initiator":"null","network_isolation_key":"file:// file://","url":"http://img.example/a.png"},"phase":1,"source":{"id":20,"type":1},"time":"2","type":2},"#,
            r#"{"params":{"url":"file:///tmp/r.html"},"phase":1,"source":{"id":21,"type":1},"time":"2","type":2},"#,
            // Cut short by a kill: ignored.
            r#"{"params":{"url":"http://cut"#,
        ];
        fs::write(&log, lines.join("\n")).unwrap();
        let mut urls = NetLogUrls::default();
        urls.read(&log, "file:///tmp/r.html").unwrap();
        assert_eq!(urls.page, ["http://img.example/a.png"]);
        assert_eq!(
            urls.browser,
            [
                "https://update.example/u",
                "https://update.example/u?stream"
            ]
        );
        fs::write(&log, "").unwrap();
        assert!(urls.read(&log, "x").is_err());
    }

    #[test]
    fn a_missing_chromium_says_how_to_install_it() {
        let e = chromium_at(Path::new("/nonexistent/chromium")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/nonexistent/chromium not found: the HTML report tests need Debian's Chromium; run `cargo xtask setup` (it installs the `chromium` package)"
        );
    }

    #[test]
    fn a_missing_page_is_a_clear_error() {
        let e = render_in_chromium(Path::new("/nonexistent/page.html"), Path::new("/tmp/x.png"))
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("/nonexistent/page.html") || msg.contains("cargo xtask setup"),
            "{msg}"
        );
    }
}
