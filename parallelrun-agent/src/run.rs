//! `parallelrun run` (live) and `parallelrun replay` (offline): the
//! command-line edges of the pipeline, built the same way from their flags.

use std::{
    net::SocketAddr,
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use parallelrun_agent::{
    capture::{
        Capture, CaptureConfig, Clock, Follower, IfaceSelector, InterfaceStats, KernelCounters,
        Segment, SegmentError, sample_threshold,
    },
    diff::{DiffConfig, PointerPattern, Schema, noise::NoiseThresholds},
    http::{DigestPolicy, HttpConfig, HttpLimits, track::HttpStats},
    metrics::{self, Metrics},
    model::wall_ns,
    pcap::read::{PcapSource, ReadStats},
    pipeline::{self, AccountingSnapshot, Pipeline, PipelineConfig, Policy, Targets},
    private_file,
    publish::{PublishConfig, PublishStats, Publisher},
    reassembly::{ReassemblyConfig, ReassemblyStats},
    replay::{ReplayConfig, Replayer, ShadowMarker},
    report::log::{LogConfig, MismatchLog},
    service::ServiceAddr,
    shutdown::Shutdown,
    summary::{Results, verdict::Decision},
};
use parallelrun_common::Counter;
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    cli::{PipelineArgs, ReplayArgs, RunArgs, SampleBy},
    live, memory, results, summaries,
};

/// Packets read from a pcap per slice.
const BATCH: usize = 4096;
/// Seconds between progress lines.
const PROGRESS_EVERY: u32 = 5;
/// How long the end of a run waits for NATS to take what is buffered.
const NATS_FLUSH: Duration = Duration::from_secs(5);

/// Final counters of a run: printed, and written by `--stats-json`.
#[derive(Serialize)]
struct Stats<'a> {
    seconds: f64,
    requests_seen: u64,
    unaccounted: i128,
    outcomes: AccountingSnapshot,
    http: &'a HttpStats,
    reassembly: &'a ReassemblyStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel: Option<KernelCounters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interfaces: Option<InterfaceStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pcap: Option<ReadStats>,
    malformed_records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats: Option<PublishStats>,
}

impl<'a> Stats<'a> {
    /// The pipeline's counters; the caller adds what its source knows.
    fn new(p: &'a Pipeline, started: Instant) -> Self {
        Self {
            seconds: started.elapsed().as_secs_f64(),
            requests_seen: p.http_stats().requests_seen,
            unaccounted: p.unaccounted(),
            outcomes: p.accounting(),
            http: p.http_stats(),
            reassembly: p.reassembly_stats(),
            kernel: None,
            interfaces: None,
            pcap: None,
            malformed_records: 0,
            nats: None,
        }
    }
}

/// What `run` and `replay` build the same way from their flags.
struct Setup {
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    log_path: std::path::PathBuf,
    /// Per-endpoint results, when kept.
    results: Option<results::Output>,
    /// `--nats`.
    publisher: Option<Publisher>,
}

impl Setup {
    /// `input` names what the run reads (`iface:eth0`, `pcap:FILE`).
    async fn new(
        args: &PipelineArgs,
        old: &[ServiceAddr],
        offline: bool,
        input: String,
    ) -> anyhow::Result<Self> {
        let mut targets = vec![("--new", args.new)];
        if let Some(s) = args.secondary {
            targets.push(("--secondary", s));
            if s == args.new {
                bail!(
                    "--secondary {s} is the --new service: give a second instance of the OLD version"
                );
            }
        }
        let host = pipeline::host_addresses().unwrap_or_else(|e| {
            warn!(
                "cannot list this host's addresses ({e}): replay targets are checked against \
                 --old, loopback and the unspecified address only"
            );
            Vec::new()
        });
        pipeline::check_targets(old, &targets, &host)?;
        let limits = HttpLimits {
            max_body: usize::try_from(args.max_body).unwrap_or(usize::MAX),
            ..HttpLimits::default()
        };
        let mut diff = DiffConfig::default();
        // Old, new and secondary responses alike.
        let digest = Some(DigestPolicy {
            max_whole: usize::try_from(args.max_diff_body).unwrap_or(usize::MAX),
            max_decoded: diff.max_decoded_body,
        });
        diff.ignore_headers.extend(&args.ignore_header);
        if let Some(path) = &args.proto_descriptor {
            let schema = Schema::load(path).with_context(|| {
                format!(
                    "--proto-descriptor {}: give a FileDescriptorSet written by protoc \
                     --include_imports --descriptor_set_out",
                    path.display()
                )
            })?;
            diff.schema = Some(Arc::new(schema));
        }
        for p in &args.ignore_pointer {
            let pattern: PointerPattern = p
                .parse()
                .map_err(|e| anyhow::anyhow!("--ignore-pointer {p}: {e}"))?;
            diff.ignore_pointers.push(pattern);
        }
        let mut log_cfg = LogConfig {
            path: args.log.clone(),
            max_bytes: args.log_max_size,
            keep: args.log_keep,
            ..LogConfig::default()
        };
        log_cfg
            .redact_headers
            .extend(args.redact_header.iter().map(|h| h.to_ascii_lowercase()));
        let node = args.nats.node.clone().unwrap_or_else(results::hostname);
        let publisher = args.nats.url.as_ref().map(|url| {
            Publisher::start(PublishConfig {
                url: url.clone(),
                stream: args.nats.nats_stream.clone(),
                service: args.nats.nats_service.clone(),
                node: node.clone(),
                max_results: args.nats.nats_buffer.get(),
                max_bytes: usize::try_from(args.nats.nats_buffer_bytes).unwrap_or(usize::MAX),
            })
        });
        let output = results::Output::new(
            &args.results,
            !args.no_metrics,
            publisher.clone(),
            Results::new(
                results::rules(&args.results),
                results::source(
                    node,
                    input,
                    args.new.to_string(),
                    args.secondary.map(|s| s.to_string()),
                ),
                log_cfg.redact_headers.clone(),
            ),
        );
        let log = MismatchLog::open(log_cfg)?;
        let replayer = |target: SocketAddr| {
            Replayer::new(ReplayConfig {
                target,
                max_in_flight: args.max_in_flight.get(),
                max_idle: args.max_in_flight.get(),
                request_timeout: args.timeout,
                host_override: args.host.clone(),
                marker: ShadowMarker {
                    header: (!args.no_shadow_header).then(|| args.shadow_header.clone()),
                    host_suffix: args.shadow_host_suffix,
                },
                limits,
                digest,
                ..ReplayConfig::new(target)
            })
        };
        let targets = Targets {
            new: replayer(args.new),
            secondary: args.secondary.map(replayer),
        };
        let cfg = PipelineConfig {
            reassembly: ReassemblyConfig {
                max_connections: args.max_connections.max(1),
                max_conn_buffer: usize::try_from(args.max_conn_buffer).unwrap_or(usize::MAX),
                max_total_buffer: usize::try_from(args.max_buffer).unwrap_or(usize::MAX),
                idle_timeout_ns: args.idle_timeout.as_nanos().min(u64::MAX as u128) as u64,
                lossless_capture: !offline,
            },
            http: HttpConfig {
                limits,
                max_total_buffered: usize::try_from(args.max_http_buffer).unwrap_or(usize::MAX),
                digest,
                ..HttpConfig::default()
            },
            policy: Policy {
                methods: args.methods.clone(),
                path_prefixes: args.path_prefix.clone(),
                exclude_prefixes: args.exclude_path_prefix.clone(),
                grpc_methods: args.grpc_method.clone(),
                // Per request only when asked; by connection the kernel
                // (live) or the pcap reader (offline) already chose.
                sample: match args.sample_by {
                    SampleBy::Request => args.sample,
                    SampleBy::Connection => 1.0,
                },
                sample_seed: None,
                rate: args.rate,
            },
            diff,
            noise: NoiseThresholds {
                relative: args.noise_relative,
                absolute: args.noise_absolute,
                ..NoiseThresholds::default()
            },
            wait_for_capacity: offline,
            drain_timeout: args.timeout + Duration::from_secs(1),
            max_queue: args.max_queue.get(),
            max_queue_bytes: usize::try_from(args.max_queue_bytes).unwrap_or(usize::MAX),
            endpoints: results::endpoints(&args.results),
            results: output.as_ref().map(results::Output::results),
        };
        let metrics = Metrics::with_collector(
            output.as_ref().map(results::Output::results),
            publisher.as_ref().map(|p| {
                Box::new(p.collector()) as Box<dyn prometheus_client::collector::Collector>
            }),
        );
        if !args.no_metrics {
            // Served until the process exits.
            let bound = metrics::serve(args.metrics, Arc::clone(&metrics), std::future::pending())
                .await
                .with_context(|| format!("serving metrics on {}", args.metrics))?;
            info!(addr = %bound, "metrics at http://{bound}/metrics");
        }
        let unsafe_methods: Vec<&str> = args
            .methods
            .iter()
            .map(String::as_str)
            .filter(|m| !pipeline::DEFAULT_METHODS.contains(m))
            .collect();
        if !unsafe_methods.is_empty() {
            warn!(
                methods = %unsafe_methods.join(","),
                "replaying methods that may have side effects: the new service will repeat them"
            );
        }
        let pipeline = Pipeline::new(cfg, targets, log, Arc::clone(&metrics));
        if let Some(p) = &publisher {
            pipeline.publish_events(Arc::new(p.clone()));
        }
        Ok(Self {
            pipeline,
            metrics,
            log_path: args.log.clone(),
            results: output,
            publisher,
        })
    }

    /// After the pipeline finished: publishes the final summary and waits
    /// (bounded) for NATS to take what is buffered.
    async fn finish_publishing(&self) -> Option<PublishStats> {
        let p = self.publisher.as_ref()?;
        if let Some(out) = &self.results {
            out.publish_final();
        }
        Some(p.finish(NATS_FLUSH).await)
    }
}

fn progress(p: &Pipeline, started: Instant) {
    let a = p.accounting();
    info!(
        secs = started.elapsed().as_secs(),
        seen = p.http_stats().requests_seen,
        replayed = a.replayed,
        matched = a.matched,
        mismatched = a.mismatched,
        noise = a.noise,
        skipped = a.skipped_total(),
        lost = a.lost_total(),
        replay_errors = a.replay_errors,
        in_flight = p.in_flight(),
        buffered_bytes = p.reassembly_stats().buffered_bytes,
        "progress"
    );
}

/// Live from the ring buffer into the pipeline.
struct Live<'a> {
    pipeline: &'a mut Pipeline,
    results: Option<&'a mut results::Output>,
    /// The verdict `--until-verdict` stops on, once decided.
    decided: Option<Decision>,
    metrics: &'a Metrics,
    clock: Clock,
    started: Instant,
    ticks: u32,
    malformed: u64,
    max_rss: Option<u64>,
}

impl live::Handler for Live<'_> {
    fn record(&mut self, seg: Result<Segment<'_>, SegmentError>) {
        live::feed(&mut *self.pipeline, &self.clock, &mut self.malformed, seg);
    }

    async fn batch(&mut self) {
        self.pipeline.dispatch().await;
    }

    async fn tick(&mut self, capture: &Capture, interfaces: &InterfaceStats) {
        let pipeline = &mut *self.pipeline;
        self.metrics.set_kernel(&capture.kernel_counters());
        self.metrics.set_interfaces(interfaces);
        if let Some(cap) = self.max_rss {
            let rss = memory::rss_bytes().unwrap_or(0);
            // Hysteresis: stop shedding once 10 % under the cap.
            let shed = rss > cap || (pipeline.shedding() && rss > cap / 10 * 9);
            if shed != pipeline.shedding() {
                warn!(
                    rss,
                    cap,
                    shed,
                    "agent memory at its cap: replays are skipped (overload) until it falls"
                );
                pipeline.set_shedding(shed);
            }
        }
        pipeline.tick(wall_ns());
        pipeline.dispatch().await;
        if let Some(out) = self.results.as_deref_mut() {
            self.decided = self.decided.or(out.tick());
        }
        self.ticks += 1;
        if self.ticks.is_multiple_of(PROGRESS_EVERY) {
            progress(pipeline, self.started);
        }
    }

    fn stop(&self) -> Option<&'static str> {
        self.decided.map(|_| "verdict decided")
    }
}

/// `parallelrun run`: live from the ring buffer.
pub async fn live(args: RunArgs) -> anyhow::Result<ExitCode> {
    let iface = IfaceSelector::new(&args.capture.iface)?;
    let input = format!("iface:{}", iface.describe());
    let mut setup = Setup::new(&args.pipeline, &args.capture.old, false, input).await?;
    let (mut capture, follower) = Follower::start(&CaptureConfig {
        iface,
        services: args.capture.old.clone(),
        ring_bytes: args.capture.ring_size,
        sample_threshold: connection_threshold(&args.pipeline),
    })?;
    let started = Instant::now();
    let mut h = Live {
        pipeline: &mut setup.pipeline,
        results: setup.results.as_mut(),
        decided: None,
        metrics: &setup.metrics,
        clock: capture.clock(),
        started,
        ticks: 0,
        malformed: 0,
        max_rss: args.max_memory,
    };
    let stopped = live::run(&mut capture, follower, args.duration, &mut h).await?;
    let malformed = h.malformed;
    setup.pipeline.finish().await;
    let nats = setup.finish_publishing().await;
    let pipeline = &setup.pipeline;
    let mut stats = Stats::new(pipeline, started);
    stats.nats = nats;
    stats.kernel = Some(capture.kernel_counters());
    stats.interfaces = Some(stopped.interfaces);
    setup.metrics.set_interfaces(&stopped.interfaces);
    stats.malformed_records = malformed;
    let code = finish(
        &stats,
        setup.results.as_mut(),
        &setup.log_path,
        args.pipeline.stats_json.as_deref(),
    )?;
    stopped.into_result()?;
    Ok(code)
}

/// `parallelrun replay`: offline from a pcap file.
pub async fn offline(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut source = PcapSource::open(&args.pcap, &args.old)?;
    source.sample_connections(connection_threshold(&args.pipeline));
    let input = format!("pcap:{}", args.pcap.display());
    let mut setup = Setup::new(&args.pipeline, &args.old, true, input).await?;
    let pipeline = &mut setup.pipeline;
    let started = Instant::now();
    let mut shutdown = Shutdown::new(args.duration)?;
    let mut last_progress = Instant::now();
    let mut last_ts = 0u64;
    let mut stopped = None;
    loop {
        // A slice of the file at a time: the pipeline replays what it
        // completed before more is read, so memory stays bounded.
        let more = source.read_batch(BATCH, |seg| {
            pipeline.push(seg);
            last_ts = last_ts.max(seg.ts_ns);
        })?;
        tokio::select! {
            () = pipeline.dispatch() => {}
            reason = shutdown.wait() => { stopped = Some(reason); }
        }
        pipeline.tick(last_ts);
        if let Some(out) = setup.results.as_mut()
            && out.tick().is_some()
        {
            stopped = Some("verdict decided");
        }
        if last_progress.elapsed() >= Duration::from_secs(PROGRESS_EVERY.into()) {
            progress(pipeline, started);
            last_progress = Instant::now();
        }
        if !more || stopped.is_some() {
            break;
        }
    }
    if let Some(reason) = stopped {
        info!(reason, "stopping before the end of the file");
    }
    pipeline.finish().await;
    let nats = setup.finish_publishing().await;
    let mut stats = Stats::new(&setup.pipeline, started);
    stats.nats = nats;
    stats.pcap = Some(source.stats().clone());
    source.warn_if_nothing_found();
    let code = finish(
        &stats,
        setup.results.as_mut(),
        &setup.log_path,
        args.pipeline.stats_json.as_deref(),
    );
    drop(stats);
    code
}

/// The kernel's (or the pcap reader's) connection-sampling threshold.
fn connection_threshold(args: &PipelineArgs) -> u64 {
    match args.sample_by {
        SampleBy::Connection => sample_threshold(args.sample),
        SampleBy::Request => sample_threshold(1.0),
    }
}

/// Prints the final counters, writes `--stats-json` and the final summary;
/// the exit code is the verdict's with `--until-verdict`.
fn finish(
    s: &Stats<'_>,
    results: Option<&mut results::Output>,
    log: &Path,
    stats_json: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let o = &s.outcomes;
    eprintln!(
        "parallelrun: {} requests seen in {:.1}s: {} matched, {} mismatched, {} noise, \
         {} skipped, {} lost, {} replay errors",
        s.requests_seen,
        s.seconds,
        o.matched,
        o.mismatched,
        o.noise,
        o.skipped_total(),
        o.lost_total(),
        o.replay_errors
    );
    let nonzero = |m: &std::collections::BTreeMap<&'static str, u64>| {
        m.iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if o.skipped_total() > 0 {
        eprintln!("  skipped: {}", nonzero(&o.skipped));
    }
    if o.lost_total() > 0 {
        eprintln!("  lost:    {}", nonzero(&o.lost));
    }
    if o.noise_differences > 0 || o.secondary_errors > 0 || o.noise_unchecked > 0 {
        eprintln!(
            "  noise:   {} differences suppressed, {} secondary errors, \
             {} mismatches not checked for noise (noise_unchecked)",
            o.noise_differences, o.secondary_errors, o.noise_unchecked
        );
    }
    let sampled_out = s.kernel.map_or(0, |k| k.get(Counter::SampledOut))
        + s.pcap.as_ref().map_or(0, |p| p.sampled_out);
    if sampled_out > 0 {
        eprintln!(
            "  sampled: {sampled_out} segments of connections outside --sample not captured \
             (sampled_out)"
        );
    }
    if let Some(k) = &s.kernel {
        let drops = k.get(Counter::RingBufFull);
        if drops > 0 {
            eprintln!(
                "  warning: {drops} segments were lost because the ring buffer was full; \
                 raise --ring-size"
            );
        }
    }
    if let Some(n) = &s.nats {
        eprintln!(
            "  nats:    {} published ({} already stored), {} dropped, {} errors, \
             at most {} buffered",
            n.published, n.duplicates, n.dropped, n.errors, n.max_buffered
        );
    }
    if o.log_errors > 0 {
        eprintln!(
            "  warning: {} events could not be written to the log",
            o.log_errors
        );
    }
    if s.unaccounted != 0 {
        eprintln!(
            "  warning: {} requests without an outcome (a bug: please report it)",
            s.unaccounted
        );
    }
    eprintln!("  mismatch log: {}", log.display());
    if let Some(path) = stats_json {
        private_file::write(path, &serde_json::to_vec_pretty(s)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let decision = match results {
        Some(out) => out.finish()?,
        None => None,
    };
    Ok(decision.map_or(ExitCode::SUCCESS, |d| ExitCode::from(summaries::code(d))))
}
