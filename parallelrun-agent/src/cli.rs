//! Command line: subcommands and their flags, validated before anything is
//! loaded into the kernel. Arguments only: `main` dispatches each command to
//! its module, which depends on this one and never the other way round.

use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use parallelrun_agent::{
    capture::IfaceSelector,
    endpoint::Pattern,
    replay::{MarkerHeader, marker},
    service::ServiceAddr,
};

use crate::priority::Priority;

mod nats;
pub use nats::{FleetArgs, NatsArgs};

#[derive(Debug, Parser)]
#[command(name = "parallelrun", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture the old service's TCP traffic on an interface into a pcap file.
    Record(RecordArgs),
    /// Capture live, replay each request to the new service, log differences.
    Run(RunArgs),
    /// The offline twin of `run`: read the old service's traffic from a pcap
    /// (ours or tcpdump's), replay and compare.
    Replay(ReplayArgs),
    /// Follow the mismatch log like `tail -f`, one readable entry per event.
    Tail(TailArgs),
    /// Write the old service's HTTP exchanges (live or from a pcap) as JSON
    /// Lines, without replaying anything.
    Exchanges(ExchangesArgs),
    /// Per-endpoint results of one or more summaries (`run`/`replay
    /// --summary`), merged: a table ranked by impact, or --html / --json.
    Report(ReportArgs),
    /// Is the new version ready to take over? Judges one or more summaries
    /// (merged). Exit 0: ready; 1: not ready (which endpoints, which rule);
    /// 2: not enough data; 3: the summaries or flags cannot be used.
    Verdict(VerdictCmdArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Summary files (several agents or runs are merged).
    #[arg(value_name = "SUMMARY", required_unless_present_any = ["prometheus", "url"])]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    #[command(flatten)]
    pub nats: FleetArgs,
    /// Also write one self-contained HTML page (charts, top differing
    /// fields, copy-as-curl) to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Print the merged summary as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Colour: auto (on a terminal), always or never.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,
}

#[derive(Debug, Args)]
pub struct VerdictCmdArgs {
    /// Summary files (several agents or runs are merged).
    #[arg(value_name = "SUMMARY", required_unless_present_any = ["prometheus", "url"])]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    #[command(flatten)]
    pub nats: FleetArgs,
    #[command(flatten)]
    pub rules: VerdictArgs,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A fleet's results read from Prometheus instead of summary files.
#[derive(Debug, Args)]
pub struct PrometheusArgs {
    /// Read the results of every agent Prometheus scrapes from its HTTP API
    /// (http://HOST:PORT), summed per endpoint, instead of summary files.
    #[arg(long, value_name = "URL", conflicts_with_all = ["files", "url"])]
    pub prometheus: Option<String>,
    /// With --prometheus: the agents of the fleet, as a label matcher
    /// (e.g. '{job="parallelrun"}'). Default: every agent scraped.
    #[arg(long, value_name = "MATCHER")]
    pub prometheus_selector: Option<String>,
}

/// The rules of a cutover verdict: `verdict`, and `run`/`replay
/// --until-verdict`.
#[derive(Debug, Args)]
pub struct VerdictArgs {
    /// Highest mismatched / compared allowed on any endpoint in scope.
    #[arg(long, value_name = "RATE", default_value_t = 0.01, value_parser = parse_rate)]
    pub max_mismatch_rate: f64,
    /// Highest new / secondary latency allowed at p50 and p99 on any
    /// endpoint in scope (needs --secondary). Not judged when absent.
    #[arg(long, value_name = "X", value_parser = parse_ratio)]
    pub max_latency_ratio: Option<f64>,
    /// Compared requests every endpoint in scope needs to be judged.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub min_compared: u64,
    /// Endpoints judged, as --endpoint patterns (e.g. 'GET /users/{id}').
    /// Repeat for several. Default: every endpoint with a compared request.
    #[arg(long, value_name = "PATTERN", value_parser = parse_endpoint)]
    pub endpoint_scope: Vec<Pattern>,
}

/// Per-endpoint results: shared by `run` and `replay`.
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Write per-endpoint results to this JSON file, rewritten atomically
    /// every --summary-every and at exit; read it with `parallelrun report`
    /// and `parallelrun verdict`.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// How often the summary file is rewritten.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub summary_every: Duration,
    /// Endpoint template, e.g. 'GET /users/{id}' or '/static/{path*}'
    /// (any method); first match wins, before inference. Repeat for several.
    #[arg(long = "endpoint", value_name = "PATTERN", value_parser = parse_endpoint)]
    pub endpoints: Vec<Pattern>,
    /// Endpoints kept apart at most; requests of further ones are counted
    /// under `other`. Also bounds the `endpoint` label of the metrics.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_endpoints: u32,
    /// Distinct values a path segment takes (under the same prefix) before
    /// it is learned to be a parameter ({param}).
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub learn_after: u32,
    /// Difference locations kept per endpoint; further ones are counted
    /// together.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_locations: u32,
    /// Latency regression: an endpoint whose new latency is above this many
    /// times the secondary's, at p50 or p99 ...
    #[arg(long, value_name = "X", default_value_t = 1.2, value_parser = parse_ratio)]
    pub regression_ratio: f64,
    /// ... and at least this many milliseconds above it ...
    #[arg(long, value_name = "MS", default_value_t = 1.0, value_parser = parse_ms)]
    pub regression_min_delta: f64,
    /// ... with at least this many values on both sides.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub regression_min_samples: u64,
    /// Stop as soon as the verdict (see `parallelrun verdict`) is decided,
    /// ready or not ready, and exit with its code (0 or 1); at the end of
    /// the input or --duration without one, exit 2.
    #[arg(long)]
    pub until_verdict: bool,
    #[command(flatten)]
    pub verdict: VerdictArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["iface", "pcap"])))]
pub struct ExchangesArgs {
    /// Capture live on this interface, or on those matching this pattern
    /// (`*`, `?`), followed as they come and go. Repeat for several.
    #[arg(long, value_name = "IFACE", value_parser = parse_iface)]
    pub iface: Vec<String>,
    /// Or read this pcap/pcapng file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Old service: IP:PORT, [IPV6]:PORT or :PORT. Repeat for several.
    #[arg(long = "old", value_name = "ADDR:PORT", required = true)]
    pub old: Vec<ServiceAddr>,
    /// Kernel ring buffer size (live capture).
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub ring_size: u32,
    /// JSON Lines output: one exchange (or lost request) per line.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Largest body kept whole; larger exchanges are counted as too large.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_bytes)]
    pub max_body: u64,
    /// Stop after this many seconds (live default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Also write the final counters as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    #[command(flatten)]
    pub priority: PriorityArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Memory cap of the agent (resident set): above it, replays are
    /// skipped (counted as overload) until usage falls 10 % below it.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
    #[command(flatten)]
    pub priority: PriorityArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// pcap or pcapng file holding the old service's traffic.
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    /// Old service in the capture: IP:PORT, [IPV6]:PORT or :PORT. Repeat
    /// for several.
    #[arg(long = "old", value_name = "ADDR:PORT", required = true)]
    pub old: Vec<ServiceAddr>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Stop after this many seconds (default: at the end of the file).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
}

/// What `--sample` chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SampleBy {
    /// Whole connections, by a hash of the 4-tuple (in the kernel when live).
    Connection,
    /// Single requests, at random, after capture and parsing.
    Request,
}

/// Default mismatch log, for `run`, `replay` and `tail`.
pub const DEFAULT_LOG: &str = "parallelrun-mismatches.jsonl";

/// Replay, compare and report: shared by `run` and `replay`.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The new service version to validate: IP:PORT, or HOST:PORT (e.g. a
    /// Kubernetes Service name) resolved once at start.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_host_port)]
    pub new: SocketAddr,
    /// A second instance of the OLD version: differences it shows too are
    /// noise (per request, and per endpoint over time). IP:PORT or HOST:PORT.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_host_port)]
    pub secondary: Option<SocketAddr>,
    /// Mismatch log (JSON Lines) to append to.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_LOG)]
    pub log: PathBuf,
    /// Rotate the log when it reaches this size.
    #[arg(long, value_name = "SIZE", default_value = "100MiB", value_parser = parse_bytes)]
    pub log_max_size: u64,
    /// Rotated logs kept (FILE.1 .. FILE.N).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub log_keep: usize,
    /// Prometheus metrics address (text format at /metrics).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
    pub metrics: SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Methods to replay, comma-separated. Only methods without side effects
    /// by default; add others (POST, PUT, ...) only if the new service may
    /// repeat their effects.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "GET,HEAD,OPTIONS", value_parser = parse_method)]
    pub methods: Vec<String>,
    /// gRPC methods to replay, as globs over `/package.Service/Method`
    /// (`*` matches anything, `?` one character), e.g. `/shop.v1.Catalog/Get*`. Repeat for
    /// several. None by default: gRPC calls are all POST and may have
    /// effects, so each must be asked for; --methods does not apply to them.
    #[arg(long, value_name = "GLOB", value_parser = parse_grpc_method)]
    pub grpc_method: Vec<String>,
    /// Replay only targets whose path starts with this. Repeat for several.
    #[arg(long, value_name = "PREFIX", value_parser = parse_path_prefix)]
    pub path_prefix: Vec<String>,
    /// Never replay targets whose path starts with this. Repeat for several.
    #[arg(long, value_name = "PREFIX", value_parser = parse_path_prefix)]
    pub exclude_path_prefix: Vec<String>,
    /// Fraction to replay, in (0, 1]: of connections (the default: chosen
    /// by a hash of the 4-tuple, filtered in the kernel live and before
    /// reassembly offline, so a sampled connection is followed whole), or
    /// of requests with --sample-by request.
    #[arg(long, value_name = "FRACTION", default_value_t = 1.0, value_parser = parse_fraction)]
    pub sample: f64,
    /// What --sample chooses: whole connections (cost scales with the
    /// fraction: the kernel copies only them) or single requests (every
    /// connection is still captured and parsed; requests are drawn at random).
    #[arg(long, value_name = "UNIT", default_value = "connection")]
    pub sample_by: SampleBy,
    /// At most this many replays per second (skipped ones are counted).
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<NonZeroU32>,
    /// Replays in flight at most, per target (pooled keep-alive connections).
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(64).expect("64 > 0"))]
    pub max_in_flight: NonZeroUsize,
    /// Replays queued or in flight at most; beyond it live requests are
    /// skipped (counted as overload), so memory stays bounded.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(1024).expect("1024 > 0"))]
    pub max_queue: NonZeroUsize,
    /// Bytes (captured requests, old responses kept whole, and the replayed
    /// responses expected) the queued and running replays may hold; beyond
    /// it live requests are skipped (overload).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_queue_bytes: u64,
    /// Timeout of one replayed exchange.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Rewrite the Host header of replayed requests (default: as captured).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// The header that marks every replayed request as a shadow, so the new
    /// service can keep replayed writes away from shared storage; a captured
    /// header of that name is replaced.
    #[arg(long, value_name = "NAME: VALUE", default_value = marker::DEFAULT_HEADER)]
    pub shadow_header: MarkerHeader,
    /// Replay without the shadow marker header.
    #[arg(long)]
    pub no_shadow_header: bool,
    /// Also append `-shadow` to the host's name (`api:8080` becomes
    /// `api-shadow:8080`), as Envoy's request mirroring does.
    #[arg(long)]
    pub shadow_host_suffix: bool,
    /// Header not compared (case-insensitive, `*` and `?` wildcards), on
    /// top of the built-in list of per-response values. Repeat for several.
    #[arg(long, value_name = "NAME")]
    pub ignore_header: Vec<String>,
    /// JSON Pointer not compared (`*` = any one segment, trailing `**` = any
    /// suffix), e.g. /meta/*/requestId. Repeat for several.
    #[arg(long, value_name = "POINTER")]
    pub ignore_pointer: Vec<String>,
    /// A protobuf FileDescriptorSet (`protoc --include_imports
    /// --descriptor_set_out=FILE`): gRPC messages are then compared by field
    /// name (`grpc:/user/name`) instead of field number (`grpc:/1/2`).
    #[arg(long, value_name = "FILE")]
    pub proto_descriptor: Option<PathBuf>,
    /// Header whose values are redacted in the log, on top of Authorization,
    /// Proxy-Authorization, Cookie, Set-Cookie and X-Api-Key.
    #[arg(long, value_name = "NAME")]
    pub redact_header: Vec<String>,
    /// Largest body kept whole; larger exchanges are counted as too large.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_bytes)]
    pub max_body: u64,
    /// Largest response body kept for a byte-by-byte (JSON, text) diff;
    /// larger ones, and binary content types, are hashed as they arrive and
    /// compared by length and digest.
    #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = parse_bytes)]
    pub max_diff_body: u64,
    /// Bytes all connections together may hold in HTTP messages not yet
    /// paired; the connection that passes it loses its requests (too large).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_bytes)]
    pub max_http_buffer: u64,
    /// Connections tracked at once; the least recently active is evicted.
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub max_connections: usize,
    /// Out-of-order bytes held per connection and direction.
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_bytes)]
    pub max_conn_buffer: u64,
    /// Out-of-order bytes held over all connections.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_bytes)]
    pub max_buffer: u64,
    /// A connection without traffic for this long is forgotten.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub idle_timeout: Duration,
    /// Per-endpoint noise: a field is reported only when its difference rate
    /// exceeds the secondary's by this relative margin.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.2, value_parser = parse_fraction)]
    pub noise_relative: f64,
    /// Per-endpoint noise: ... and by this fraction of the endpoint's requests.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0003, value_parser = parse_fraction)]
    pub noise_absolute: f64,
    /// Also write the final counters as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    #[command(flatten)]
    pub results: ResultsArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Mismatch log to follow.
    #[arg(value_name = "FILE", default_value = DEFAULT_LOG)]
    pub file: PathBuf,
    /// Print the whole log first (default: the last 10 events).
    #[arg(long)]
    pub from_start: bool,
    /// Print what is there and exit instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// Colour: auto (on a terminal), always or never.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,
}

/// Where to capture: shared by every command that attaches to an interface.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Interface to attach to: the old service's own (requests arrive on
    /// ingress) or a host-side veth facing it (the reverse); `lo` works too.
    /// Or a pattern (`*`, `?`, e.g. 'veth*'): every matching interface is
    /// attached as it appears and detached as it goes, without a restart.
    /// A name must exist and its removal stops the run; a pattern may
    /// match nothing yet. Repeat for several.
    #[arg(long, value_name = "IFACE", required = true, value_parser = parse_iface)]
    pub iface: Vec<String>,
    /// Old service to observe: IP:PORT, [IPV6]:PORT or :PORT for any address.
    /// Repeat for several.
    #[arg(long = "old", value_name = "ADDR:PORT", required = true)]
    pub old: Vec<ServiceAddr>,
    /// Kernel ring buffer size (power of two, e.g. 16MiB, 64MiB). Larger
    /// absorbs longer bursts; drops are counted when it fills.
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub ring_size: u32,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// pcap file to write (LINKTYPE_RAW; tcpdump, tshark and Wireshark read it).
    #[arg(long, value_name = "FILE", required_unless_present = "discard")]
    pub pcap: Option<PathBuf>,
    /// Read and count the records without writing them anywhere (measures
    /// the capture's own cost).
    #[arg(long, conflicts_with = "pcap")]
    pub discard: bool,
    /// Record only this fraction of connections, in (0, 1]: those whose
    /// 4-tuple hash falls under it (the kernel copies nothing of the others
    /// and counts their segments as sampled_out).
    #[arg(long, value_name = "FRACTION", default_value_t = 1.0, value_parser = parse_fraction)]
    pub sample: f64,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Also write the final counters as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    #[command(flatten)]
    pub priority: PriorityArgs,
}

/// CPU priority of a live command: `run`, `record`, `exchanges --iface`.
#[derive(Debug, Args)]
pub struct PriorityArgs {
    /// CPU priority of every agent thread (live capture). `idle`
    /// (SCHED_IDLE): the agent runs only on CPU time the services on this
    /// host leave over, so it never delays production; when production
    /// needs every core the agent falls behind and sheds, counted as
    /// ring-buffer drops and overload skips. `normal`: the scheduling the
    /// agent was started with (usually SCHED_OTHER, an equal of the
    /// service). Opt out only where completeness matters more than
    /// production latency, or on a host with CPU to spare (e.g. the agent
    /// alone on a host-side veth).
    #[arg(long, value_name = "PRIORITY", value_enum, default_value_t = Priority::Idle)]
    pub priority: Priority,
}

impl Cli {
    /// The CPU priority the command asks for; None for offline commands
    /// (they run as started).
    pub fn priority(&self) -> Option<Priority> {
        match &self.command {
            Command::Run(a) => Some(a.priority.priority),
            Command::Record(a) => Some(a.priority.priority),
            Command::Exchanges(a) if !a.iface.is_empty() => Some(a.priority.priority),
            Command::Exchanges(_)
            | Command::Replay(_)
            | Command::Tail(_)
            | Command::Report(_)
            | Command::Verdict(_) => None,
        }
    }

    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    }
}

/// Parses a ring-buffer size: a power of two from 4 KiB to 2 GiB, written
/// as `4096`, `64k`, `16M`, `16MiB`, `1G` (binary units).
pub fn parse_size(s: &str) -> Result<u32, String> {
    let bytes = parse_bytes(s)?;
    if !(4096..=1 << 31).contains(&bytes) || !bytes.is_power_of_two() {
        return Err(format!(
            "'{s}' must be a power of two from 4KiB to 2GiB (e.g. 16MiB)"
        ));
    }
    Ok(bytes as u32)
}

/// Parses a positive byte size: `4096`, `64k`, `16M`, `16MiB`, `1G`
/// (binary units).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size: use e.g. 4096, 64KiB, 16MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}': use KiB, MiB or GiB"
            ));
        }
    };
    let bytes = n
        .checked_mul(mult)
        .filter(|&b| b <= 1 << 40)
        .ok_or_else(|| format!("'{s}' is too large: at most 1TiB"))?;
    if bytes == 0 {
        return Err(format!("'{s}': give a size above zero"));
    }
    Ok(bytes)
}

/// Parses an HTTP method token, uppercased.
pub fn parse_method(s: &str) -> Result<String, String> {
    let m = s.trim();
    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
        return Err(format!(
            "'{s}' is not an HTTP method: use names like GET,HEAD,OPTIONS,POST"
        ));
    }
    Ok(m.to_ascii_uppercase())
}

/// Parses a path prefix: must start with `/`.
pub fn parse_path_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("'{s}': a path prefix starts with '/', e.g. /api/"));
    }
    Ok(s.to_owned())
}

/// Parses an `--iface` value: an interface name or a pattern over names.
pub fn parse_iface(s: &str) -> Result<String, String> {
    IfaceSelector::new(&[s])
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses a `--grpc-method` glob: a path, `/package.Service/Method`, in
/// which `*` matches any run of characters.
pub fn parse_grpc_method(s: &str) -> Result<String, String> {
    if !s.starts_with('/') && !s.starts_with('*') {
        return Err(format!(
            "'{s}': a gRPC method is a path such as /package.Service/Method (globs: /package.Service/*)"
        ));
    }
    Ok(s.to_owned())
}

/// Parses a fraction in (0, 1].
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number: give a fraction such as 0.25"))?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("'{s}': give a fraction above 0 and at most 1"));
    }
    Ok(v)
}

/// Parses a rate in [0, 1].
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number: give a rate such as 0.01"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("'{s}': give a rate from 0 to 1 (0.01 is 1 %)"));
    }
    Ok(v)
}

/// Parses a ratio of at least 1 (new / secondary).
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number: give a ratio such as 1.2"))?;
    if !(v.is_finite() && v >= 1.0) {
        return Err(format!(
            "'{s}': give a ratio of at least 1 (1.2 is 20 % slower)"
        ));
    }
    Ok(v)
}

/// Parses a non-negative number of milliseconds.
pub fn parse_ms(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of milliseconds"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("'{s}': give milliseconds, 0 or more"));
    }
    Ok(v)
}

/// Parses an endpoint pattern (`GET /users/{id}`).
pub fn parse_endpoint(s: &str) -> Result<Pattern, String> {
    Pattern::parse(s).map_err(|e| e.to_string())
}

/// Parses IP:PORT, [IPV6]:PORT or HOST:PORT; a host name is resolved now
/// (once: a Kubernetes Service keeps its address) to its first address.
pub fn parse_host_port(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    if !s
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        return Err(format!("'{s}': give IP:PORT, [IPV6]:PORT or HOST:PORT"));
    }
    std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("cannot resolve '{s}' ({e}): check the name, or give IP:PORT"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address: check the name, or give IP:PORT"))
}

/// Parses a positive number of seconds (fractions allowed).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(format!("'{s}': give a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests;
