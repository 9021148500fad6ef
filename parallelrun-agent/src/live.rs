//! The loop every live command runs: read the ring buffer in batches and
//! follow the interfaces (attach to those that appear, detach from those
//! that go) until a signal, the end of `--duration` or the removal of an
//! interface given by name, then detach and hand what is still in the ring
//! to the same handler, so that records read at shutdown are counted
//! exactly as those read before it.

use std::time::Duration;

use parallelrun_agent::{
    capture::{Capture, CaptureError, Clock, Follower, InterfaceStats, Segment, SegmentError},
    http::HttpTracker,
    model::TcpSegment,
    pipeline::Pipeline,
    reassembly::Reassembler,
    shutdown::Shutdown,
};
use tracing::{info, warn};

/// Records handed over per wake-up, so a flood cannot starve the timers and
/// the signal handlers of the runtime.
const BATCH: usize = 4096;

/// What a live command does with the records and the time between them.
pub trait Handler {
    /// One record, or one that could not be parsed.
    fn record(&mut self, seg: Result<Segment<'_>, SegmentError>);

    /// After each batch of records.
    async fn batch(&mut self) {}

    /// Once a second, with the capture and the interfaces' counters.
    async fn tick(&mut self, _capture: &Capture, _interfaces: &InterfaceStats) {}

    /// Stop early, with this reason (e.g. the output cannot be written).
    fn stop(&self) -> Option<&'static str> {
        None
    }
}

/// How a live loop ended.
pub struct Stopped {
    /// The interface given by name whose removal stopped the capture.
    removed: Option<String>,
    /// The interfaces followed, counted.
    pub interfaces: InterfaceStats,
}

impl Stopped {
    /// The command's result once its summary is out: an error when an
    /// interface given by name disappeared under the capture.
    pub fn into_result(self) -> anyhow::Result<()> {
        match self.removed {
            Some(name) => Err(CaptureError::InterfaceRemoved(name).into()),
            None => Ok(()),
        }
    }
}

/// Runs `h` over `capture`, kept attached by `follower`, until it is time
/// to stop, then detaches and drains the ring into `h`.
pub async fn run(
    capture: &mut Capture,
    mut follower: Follower,
    duration: Option<Duration>,
    h: &mut impl Handler,
) -> anyhow::Result<Stopped> {
    let mut shutdown = Shutdown::new(duration)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut removed = None;
    let reason = loop {
        tokio::select! {
            r = capture.next_batch(BATCH, |s| h.record(s)) => {
                r?;
                h.batch().await;
            }
            ev = follower.next_event() => match follower.apply(ev?, capture) {
                Ok(()) => {}
                Err(CaptureError::InterfaceRemoved(name)) => {
                    removed = Some(name);
                    break "interface removed";
                }
                Err(e) => return Err(e.into()),
            },
            _ = tick.tick() => h.tick(capture, &follower.stats()).await,
            reason = shutdown.wait() => break reason,
        }
        if let Some(reason) = h.stop() {
            break reason;
        }
    };
    info!(reason, "stopping");
    capture.detach();
    capture.drain(|s| h.record(s));
    Ok(Stopped {
        removed,
        interfaces: follower.stats(),
    })
}

/// Where live segments go: reassembly alone (`exchanges`) or the whole
/// pipeline (`run`).
pub trait Sink {
    /// The next segment follows records the kernel dropped.
    fn note_ring_drops(&mut self);
    fn push(&mut self, seg: &TcpSegment<'_>);
}

impl Sink for Pipeline {
    fn note_ring_drops(&mut self) {
        Pipeline::note_ring_drops(self);
    }

    fn push(&mut self, seg: &TcpSegment<'_>) {
        Pipeline::push(self, seg);
    }
}

impl Sink for Reassembler<HttpTracker> {
    fn note_ring_drops(&mut self) {
        Reassembler::note_ring_drops(self);
    }

    fn push(&mut self, seg: &TcpSegment<'_>) {
        Reassembler::push(self, seg);
    }
}

/// Hands one ring-buffer record to `sink` (after noting the drops before
/// it); a record that cannot be parsed is counted in `malformed` and
/// skipped.
pub fn feed(
    sink: &mut impl Sink,
    clock: &Clock,
    malformed: &mut u64,
    seg: Result<Segment<'_>, SegmentError>,
) {
    match seg {
        Ok(seg) => {
            if seg.drops_before {
                sink.note_ring_drops();
            }
            sink.push(&seg.to_tcp(clock));
        }
        Err(e) => {
            *malformed += 1;
            warn!("skipping malformed record: {e}");
        }
    }
}
