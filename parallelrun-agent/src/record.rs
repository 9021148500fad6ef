//! `parallelrun record`: captured segments straight into a pcap file.

use std::time::{Instant, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Serialize;
use tracing::{trace, warn};

use parallelrun_agent::{
    capture::{
        CaptureConfig, Clock, Follower, IfaceSelector, InterfaceStats, KernelCounters, Segment,
        SegmentError, sample_threshold,
    },
    pcap::{PcapError, PcapSink},
    private_file,
};

use crate::{cli::RecordArgs, live};

#[derive(Debug, Default, Serialize)]
struct AgentCounters {
    /// Records read from the ring buffer.
    records: u64,
    /// Records that could not be parsed (never expected).
    malformed: u64,
    /// Payload bytes written.
    payload_bytes: u64,
    /// Packets written to the pcap (a super-packet may need two).
    pcap_packets: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    seconds: f64,
    kernel: KernelCounters,
    agent: AgentCounters,
    interfaces: InterfaceStats,
}

/// Turns segments into pcap packets, counting as it goes.
struct Recorder {
    /// None with `--discard`: records are read and counted only.
    sink: Option<PcapSink<std::io::BufWriter<std::fs::File>>>,
    clock: Clock,
    counters: AgentCounters,
    /// First write error; once set, the capture stops.
    write_error: Option<PcapError>,
}

impl live::Handler for Recorder {
    fn record(&mut self, seg: Result<Segment<'_>, SegmentError>) {
        self.counters.records += 1;
        match seg {
            Ok(seg) if self.write_error.is_none() => {
                trace!(
                    src = %seg.src(),
                    dst = %seg.dst(),
                    direction = ?seg.direction,
                    seq = seg.header.seq,
                    len = seg.payload.len(),
                    payload_len = seg.header.payload_len,
                    flags = seg.header.flags,
                    "segment"
                );
                let Some(sink) = &mut self.sink else {
                    self.counters.payload_bytes += seg.payload.len() as u64;
                    return;
                };
                let ts = self
                    .clock
                    .wall(seg.header.ts_ns)
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                match sink.write(&seg, ts) {
                    Ok(()) => self.counters.payload_bytes += seg.payload.len() as u64,
                    Err(e) => self.write_error = Some(e),
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.counters.malformed += 1;
                warn!("skipping malformed record: {e}");
            }
        }
    }

    fn stop(&self) -> Option<&'static str> {
        self.write_error.as_ref().map(|_| "pcap write error")
    }
}

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
    // Open the output first: a bad path fails before anything is attached.
    let sink = match &args.pcap {
        Some(path) => Some(PcapSink::create(path)?),
        None => None,
    };
    let cfg = CaptureConfig {
        iface: IfaceSelector::new(&args.capture.iface)?,
        services: args.capture.old,
        ring_bytes: args.capture.ring_size,
        sample_threshold: sample_threshold(args.sample),
    };
    let (mut capture, follower) = Follower::start(&cfg)?;
    let mut rec = Recorder {
        sink,
        clock: capture.clock(),
        counters: AgentCounters::default(),
        write_error: None,
    };
    let started = Instant::now();
    let stopped = live::run(&mut capture, follower, args.duration, &mut rec).await?;
    if let Some(e) = rec.write_error {
        return Err(e).context("the capture stopped; the pcap file is incomplete");
    }
    if let Some(sink) = rec.sink.take() {
        rec.counters.pcap_packets = sink.packets();
        sink.finish()?;
    }

    let summary = Summary {
        seconds: started.elapsed().as_secs_f64(),
        kernel: capture.kernel_counters(),
        agent: rec.counters,
        interfaces: stopped.interfaces,
    };
    let target = args.pcap.as_ref().map_or_else(
        || "nowhere (--discard)".to_owned(),
        |p| p.display().to_string(),
    );
    print_summary(&summary, &target);
    if let Some(path) = &args.stats_json {
        private_file::write(path, &serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    stopped.into_result()
}

fn print_summary(s: &Summary, pcap: &str) {
    eprintln!(
        "parallelrun record: {} segments ({} packets, {} payload bytes) written to {pcap} in {:.1}s",
        s.agent.records, s.agent.pcap_packets, s.agent.payload_bytes, s.seconds
    );
    let kernel: Vec<String> = s.kernel.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("  kernel: {}", kernel.join(" "));
    eprintln!(
        "  agent:  records={} malformed={}",
        s.agent.records, s.agent.malformed
    );
    let drops = s.kernel.get(parallelrun_common::Counter::RingBufFull);
    if drops > 0 {
        eprintln!(
            "  warning: {drops} segments were lost because the ring buffer was full; \
             raise --ring-size (now a power of two) or capture less traffic"
        );
    }
}
