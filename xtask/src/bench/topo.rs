//! The bench's network: three namespaces joined by two veth pairs, an nginx
//! as the old service, one as the new service, and one as the inline
//! mirroring proxy of condition D.
//!
//! ```text
//!  client ns                 old ns                          new ns
//!  wrk / oha ── veth ── OLD_IF  old nginx :80, h2c :8082 (agent here)
//!   10.201.1.2          10.201.1.1  proxy nginx :8080 ──┐
//!                                   (mirror) ─ veth ────┴── new nginx :80
//!                       10.201.2.1                        10.201.2.2
//! ```
//!
//! The agent runs in the old namespace on the old service's own interface,
//! as it would on the service's host; its replays leave by the second veth.
//! The proxy sits in front of the old service on the same host (a local
//! nginx fronting the app), reaches it over loopback and mirrors to the new
//! service. Everything is removed on drop.
//!
//! The new service stands in for another machine: it runs under SCHED_IDLE
//! so that on the bench's shared cores it takes only CPU time production
//! leaves over, and condition C measures what the agent costs production.

use std::{
    collections::HashSet,
    fs,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::sys::{self, Netns, Proc, TempDir};

/// Body sizes served, by file name.
pub const SIZES: [(&str, usize); 3] = [("1k", 1024), ("64k", 64 * 1024), ("1m", 1024 * 1024)];

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);
pub const OLD_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 1);
pub const OLD_NEW_SIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 1);
pub const NEW_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 2);
pub const SERVICE_PORT: u16 = 80;
pub const PROXY_PORT: u16 = 8080;
const STATUS_PORT: u16 = 8081;
/// The old and new services' HTTP/2 port (h2c, prior knowledge: nginx's
/// `listen … http2` on a plain port).
pub const H2_PORT: u16 = 8082;
/// The new service's port whose every answer differs from the old one's
/// (an extra `X-Bench-Version` header): conditions C* and C*N replay there,
/// so each request makes a mismatch event.
pub const DIFFERING_PORT: u16 = 8084;
/// nats-server (JetStream) in the old service's namespace, on loopback:
/// condition C*N publishes to it.
pub const NATS_PORT: u16 = 4222;

/// Temporary directory name prefix; `-PID` follows.
pub const TMP_PREFIX: &str = "parallelrun-bench";

/// Namespace name prefix; the bench's pid follows.
pub const NS_PREFIX: &str = "prbench";

pub struct Topology {
    // Fields drop in order: servers first, then the namespaces, then files.
    servers: Vec<Proc>,
    pub client: Netns,
    pub old: Netns,
    pub new: Netns,
    /// The old service's interface (facing the client).
    pub old_if: String,
    pub dir: TempDir,
}

impl Topology {
    pub fn create() -> Result<Self> {
        let pid = std::process::id() % 1_000_000;
        let dir = TempDir::new(TMP_PREFIX)?;
        let client = Netns::create(format!("{NS_PREFIX}{pid}c"))?;
        let old = Netns::create(format!("{NS_PREFIX}{pid}o"))?;
        let new = Netns::create(format!("{NS_PREFIX}{pid}n"))?;
        // Interface names are at most 15 bytes.
        let old_if = format!("pb{pid}o");
        let client_if = format!("pb{pid}c");
        let old_new_if = format!("pb{pid}p");
        let new_if = format!("pb{pid}n");
        let mut topo = Self {
            servers: Vec::new(),
            client,
            old,
            new,
            old_if,
            dir,
        };
        let t = &mut topo;
        t.old.add_veth(&t.old_if, &client_if, &t.client)?;
        t.old.add_veth(&old_new_if, &new_if, &t.new)?;
        for (ns, ifname, ip) in [
            (&t.old, &t.old_if, OLD_IP),
            (&t.client, &client_if, CLIENT_IP),
            (&t.old, &old_new_if, OLD_NEW_SIDE_IP),
            (&t.new, &new_if, NEW_IP),
        ] {
            ns.address(ifname, ip.into(), 24)?;
        }
        // nginx 1.22's mirror subrequests are header-only, so their upstream
        // connections are never kept alive: one new connection to the new
        // service per request. Let the proxy reuse TIME_WAIT ports, or it
        // runs out of them within seconds and measures that instead.
        t.old.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        t.old.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;

        let www = t.dir.join("www");
        fs::create_dir_all(&www)?;
        for (name, len) in SIZES {
            fs::write(www.join(name), body(len))?;
        }
        let old_cfg = server_conf(
            &t.dir.join("old"),
            &www,
            &[
                SocketAddrV4::new(OLD_IP, SERVICE_PORT),
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, SERVICE_PORT),
            ],
        )?;
        let new_cfg = server_conf(
            &t.dir.join("new"),
            &www,
            &[SocketAddrV4::new(NEW_IP, SERVICE_PORT)],
        )?;
        differing_server(&new_cfg, &www)?;
        let proxy_cfg = proxy_conf(&t.dir.join("proxy"))?;
        let old_ns = t.old.name.clone();
        let new_ns = t.new.name.clone();
        for (name, ns_name, cfg, status) in [
            ("old nginx", &old_ns, old_cfg, Some(&t.old)),
            ("new nginx", &new_ns, new_cfg, Some(&t.new)),
            ("proxy nginx", &old_ns, proxy_cfg, None),
        ] {
            let stands_in_for_another_machine = name == "new nginx";
            let prefix = cfg.parent().unwrap_or(Path::new("/"));
            let out = fs::File::create(prefix.join("stderr.log"))?;
            let mut cmd = std::process::Command::new("ip");
            cmd.args(["netns", "exec", ns_name, "nginx", "-c"])
                .arg(&cfg)
                .arg("-p")
                .arg(prefix)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            if stands_in_for_another_machine {
                sys::sched_idle(&mut cmd);
            }
            let mut proc = sys::spawn(name, &mut cmd)?;
            if let Some(ns) = status {
                wait_ready(&mut proc, ns, prefix)?;
            }
            t.servers.push(proc);
        }
        // NATS stands in for another machine too.
        let store = t.dir.join("nats");
        fs::create_dir_all(&store)?;
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &old_ns,
            "nats-server",
            "-js",
            "-a",
            "127.0.0.1",
        ])
        .args(["-p", &NATS_PORT.to_string()])
        .arg("-sd")
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(t.dir.join("nats.log"))?);
        sys::sched_idle(&mut cmd);
        let nats = sys::spawn("nats-server", &mut cmd)
            .context("starting nats-server (Debian's nats-server: run `cargo xtask setup`)")?;
        t.servers.push(nats);
        sys::wait_listening(&t.old, SocketAddr::from((Ipv4Addr::LOCALHOST, NATS_PORT)))?;
        // The proxy has no status port: wait for its listener through it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = sys::http_get(&t.client, t.proxy_addr(), "/1k");
            if r.as_ref().is_ok_and(|s| s.starts_with("HTTP/1.1 200")) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the mirroring proxy does not answer: {r:?}\n{}",
                    fs::read_to_string(t.dir.join("proxy/error.log")).unwrap_or_default()
                );
            }
            sys::sleep(Duration::from_millis(50))?;
        }
        for s in &mut t.servers {
            if let Some(st) = s.exited() {
                bail!("{} exited: {st}", s.name);
            }
        }
        // The new service's master and workers (all that runs in its
        // namespace) must have inherited SCHED_IDLE.
        let new_ino = t.new.inode()?;
        let new_pids = sys::pids_in_netns(new_ino);
        if new_pids.is_empty() {
            bail!("no process runs in the new service's namespace");
        }
        for pid in new_pids {
            sys::check_idle("the new nginx", pid)?;
        }
        Ok(topo)
    }

    pub fn old_addr(&self) -> SocketAddr {
        SocketAddr::from((OLD_IP, SERVICE_PORT))
    }

    pub fn new_addr(&self) -> SocketAddr {
        SocketAddr::from((NEW_IP, SERVICE_PORT))
    }

    /// The new service's port whose answers all differ from the old one's.
    pub fn new_differing_addr(&self) -> SocketAddr {
        SocketAddr::from((NEW_IP, DIFFERING_PORT))
    }

    /// The NATS server condition C*N publishes to (in the agent's
    /// namespace).
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{NATS_PORT}")
    }

    /// The old service over h2c.
    pub fn old_h2_addr(&self) -> SocketAddr {
        SocketAddr::from((OLD_IP, H2_PORT))
    }

    /// The new service over h2c.
    pub fn new_h2_addr(&self) -> SocketAddr {
        SocketAddr::from((NEW_IP, H2_PORT))
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        SocketAddr::from((OLD_IP, PROXY_PORT))
    }

    /// Requests the old service has served so far (its stub_status).
    pub fn old_requests(&self) -> Result<u64> {
        sys::nginx_requests(&self.old, status_addr())
    }

    /// Requests the new service has served so far.
    pub fn new_requests(&self) -> Result<u64> {
        sys::nginx_requests(&self.new, status_addr())
    }

    /// Inodes of the bench's namespaces.
    pub fn namespace_inodes(&self) -> HashSet<u64> {
        [&self.client, &self.old, &self.new]
            .iter()
            .filter_map(|ns| ns.inode().ok())
            .collect()
    }

    /// Fails when a server died.
    pub fn check_servers(&mut self) -> Result<()> {
        for s in &mut self.servers {
            if let Some(st) = s.exited() {
                bail!("{} exited during the bench: {st}", s.name);
            }
        }
        Ok(())
    }
}

fn status_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, STATUS_PORT))
}

fn wait_ready(proc: &mut Proc, ns: &Netns, prefix: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if sys::nginx_requests(ns, status_addr()).is_ok() {
            return Ok(());
        }
        let log = || {
            fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default()
                + &fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
        };
        if let Some(st) = proc.exited() {
            bail!("{} exited ({st}):\n{}", proc.name, log());
        }
        if Instant::now() >= deadline {
            bail!("{} did not start within 10 s:\n{}", proc.name, log());
        }
        sys::sleep(Duration::from_millis(50))?;
    }
}

/// Deterministic, incompressible-looking body bytes (xorshift).
fn body(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What every nginx here shares: run as root in the foreground (a child the
/// bench can stop), logs and temp files in its own directory, no access log,
/// keep-alive without practical limits.
fn common(prefix: &Path) -> Result<String> {
    fs::create_dir_all(prefix.join("tmp"))?;
    let p = prefix.display();
    Ok(format!(
        "user root;
worker_processes auto;
daemon off;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  default_type application/octet-stream;
  keepalive_requests 1000000000;
  keepalive_timeout 75s;
  client_body_temp_path {p}/tmp;
  proxy_temp_path {p}/tmp;
  fastcgi_temp_path {p}/tmp;
  uwsgi_temp_path {p}/tmp;
  scgi_temp_path {p}/tmp;
"
    ))
}

/// A static file server on `listen`, with stub_status on localhost.
fn server_conf(prefix: &Path, www: &Path, listen: &[SocketAddrV4]) -> Result<std::path::PathBuf> {
    let mut c = common(prefix)?;
    c.push_str("  sendfile on;\n  tcp_nopush on;\n  server {\n");
    for l in listen {
        c.push_str(&format!("    listen {l};\n"));
        let h2 = SocketAddrV4::new(*l.ip(), H2_PORT);
        c.push_str(&format!("    listen {h2} http2;\n"));
    }
    c.push_str(&format!(
        "    root {};\n    location / {{ }}\n  }}\n  server {{\n    listen 127.0.0.1:{STATUS_PORT};\n    location / {{ stub_status; }}\n  }}\n}}\n",
        www.display()
    ));
    let path = prefix.join("nginx.conf");
    fs::write(&path, c).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Adds to the new service's configuration at `cfg` a server on
/// [`DIFFERING_PORT`] serving the same files with one more header, so that
/// every replay to it mismatches.
fn differing_server(cfg: &Path, www: &Path) -> Result<()> {
    let c = fs::read_to_string(cfg)?;
    let end = c
        .rfind('}')
        .context("the new service's nginx.conf has no closing brace")?;
    let server = format!(
        "  server {{\n    listen {NEW_IP}:{DIFFERING_PORT};\n    root {};\n    \
         add_header X-Bench-Version 2;\n    location / {{ }}\n  }}\n",
        www.display()
    );
    fs::write(cfg, format!("{}{server}}}\n", &c[..end]))?;
    Ok(())
}

/// Condition D: a reverse proxy in front of the old service that mirrors
/// every request to the new one (nginx's documented `mirror` setup, with
/// keep-alive upstream pools for both). Bodies are passed through without
/// temp files so the proxy's cost is its proxying, not disk writes.
fn proxy_conf(prefix: &Path) -> Result<std::path::PathBuf> {
    let mut c = common(prefix)?;
    c.push_str(&format!(
        "  proxy_http_version 1.1;
  proxy_set_header Connection \"\";
  proxy_max_temp_file_size 0;
  upstream old_service {{ server 127.0.0.1:{SERVICE_PORT}; keepalive 64; keepalive_requests 1000000000; }}
  upstream new_service {{ server {NEW_IP}:{SERVICE_PORT}; keepalive 64; keepalive_requests 1000000000; }}
  server {{
    listen {OLD_IP}:{PROXY_PORT};
    location / {{
      mirror /__mirror;
      proxy_pass http://old_service;
    }}
    location = /__mirror {{
      internal;
      proxy_pass http://new_service$request_uri;
    }}
  }}
}}
"
    ));
    let path = prefix.join("nginx.conf");
    fs::write(&path, c)?;
    Ok(path)
}
