//! Load generators, run in the client namespace.
//!
//! - Saturation (closed loop): `wrk -t2 -c32`, with a Lua script that gives
//!   every request a unique `?id=THREAD-N` and prints wrk's summary as JSON.
//! - Fixed rate (open loop, for latency): `oha -q RATE --latency-correction`,
//!   over HTTP/1.1 or h2c (prior knowledge, `--http-version 2`: the same
//!   scheduling and latency correction for both protocols, which h2load's
//!   `--rps` does not give, and percentiles it does not print).
//!   wrk cannot hold a rate and wrk2 is not packaged in Debian; oha is on
//!   crates.io (`cargo install oha --locked`), schedules requests at the rate
//!   and measures latency from each request's scheduled start (no
//!   coordinated omission), prints JSON, and draws every URL from a regex, so
//!   `?id=[0-9a-f]{16}` gives each request its own id (2^64 values: a
//!   collision in a run is not a practical concern).

use std::{fs, net::SocketAddr, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::sys::{self, Netns, TempDir};

/// What the load generator saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadResult {
    pub tool: &'static str,
    /// Offered rate (oha); None for closed loop.
    pub target_rate: Option<u32>,
    pub seconds: f64,
    /// Responses the tool counted (wrk does not count the requests still in
    /// flight when it stops).
    pub responses: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

const WRK_SCRIPT: &str = r#"
local nthreads = 0
function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, wrk.path .. "?id=" .. tid .. "-" .. n)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// Closed-loop saturation: `wrk -t2 -c32 -dSECS`.
pub fn wrk(
    ns: &Netns,
    dir: &TempDir,
    addr: SocketAddr,
    file: &str,
    seconds: u64,
) -> Result<LoadResult> {
    let script = dir.join("ids.lua");
    if !script.exists() {
        fs::write(&script, WRK_SCRIPT)?;
    }
    let out_path = dir.join("wrk.out");
    let mut cmd = ns.command("wrk");
    cmd.args(["-t2", "-c32", "--timeout", "10s"])
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}/{file}"));
    run_to_file("wrk", &mut cmd, &out_path, seconds)?;
    let text = fs::read_to_string(&out_path)?;
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .with_context(|| format!("no summary in wrk's output:\n{text}"))?;
    let v: serde_json::Value = serde_json::from_str(json)?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let secs = n("duration_us") as f64 / 1e6;
    Ok(LoadResult {
        tool: "wrk",
        target_rate: None,
        seconds: secs,
        responses: n("requests"),
        errors: n("errors"),
        rps: n("requests") as f64 / secs.max(1e-9),
        p50_ms: Some(n("p50_us") as f64 / 1e3),
        p99_ms: Some(n("p99_us") as f64 / 1e3),
    })
}

/// Open loop at `rate` requests/s for `seconds`.
#[allow(
    clippy::too_many_arguments,
    reason = "one load's parameters, each named at the call"
)]
pub fn oha(
    ns: &Netns,
    dir: &TempDir,
    oha_bin: &Path,
    addr: SocketAddr,
    file: &str,
    rate: u32,
    seconds: u64,
    h2: bool,
) -> Result<LoadResult> {
    let out_path = dir.join("oha.json");
    let mut cmd = ns.command(oha_bin);
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--latency-correction",
    ])
    .args(["-w", "-t", "10s"]);
    if h2 {
        // 64 streams in flight at most, as HTTP/1's 64 connections, over
        // 8 connections of 8 streams each.
        cmd.args(["--http-version", "2", "-c", "8", "-p", "8"]);
    } else {
        cmd.args(["-c", "64"]);
    }
    cmd.arg("-q")
        .arg(rate.to_string())
        .arg("-z")
        .arg(format!("{seconds}s"))
        .arg("--rand-regex-url")
        .arg(format!(r"http://{addr}/{file}\?id=[0-9a-f]{{16}}"));
    run_to_file("oha", &mut cmd, &out_path, seconds)?;
    let text = fs::read_to_string(&out_path)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("oha's JSON:\n{text}"))?;
    let responses: u64 = v["statusCodeDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(|c| c.as_u64()).sum())
        .unwrap_or(0);
    let errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(|c| c.as_u64()).sum())
        .unwrap_or(0);
    let pct = |k: &str| v["latencyPercentiles"][k].as_f64().map(|s| s * 1e3);
    Ok(LoadResult {
        tool: if h2 { "oha --http-version 2" } else { "oha" },
        target_rate: Some(rate),
        seconds: v["summary"]["total"].as_f64().unwrap_or(0.0),
        responses,
        errors,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: pct("p50"),
        p99_ms: pct("p99"),
    })
}

fn run_to_file(name: &str, cmd: &mut std::process::Command, out: &Path, secs: u64) -> Result<()> {
    let err = out.with_extension("err");
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(out)?)
        .stderr(fs::File::create(&err)?);
    let mut p = sys::spawn(name, cmd)?;
    let st = p.wait(Duration::from_secs(secs + 30))?;
    if !st.success() {
        anyhow::bail!(
            "{name} failed ({st}):\n{}{}",
            fs::read_to_string(out).unwrap_or_default(),
            fs::read_to_string(&err).unwrap_or_default()
        );
    }
    Ok(())
}
