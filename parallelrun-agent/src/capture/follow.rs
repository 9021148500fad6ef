//! Following interfaces: starts the capture on the interfaces selected by
//! `--iface` and keeps it attached to them as links appear and disappear.
//!
//! Rules:
//! - One loaded program and one ring buffer serve every followed interface
//!   of one link-layer header length (`L2_LEN`, fixed at load). The first
//!   is loaded at start, for the length of the first plain name given, else
//!   of the first matching link present, else Ethernet's (14 bytes); an
//!   interface of another length (raw IP next to Ethernet) gets a second
//!   program with a ring of its own (another `--ring-size`) when it is
//!   first attached.
//! - A plain name must exist at start and attach, or the start fails; its
//!   removal stops the capture ([`CaptureError::InterfaceRemoved`]). A
//!   pattern's links are attached and detached without stopping anything,
//!   and their failures are counted, not fatal.
//! - Connections of a link that went away are left to the reassembly: they
//!   end by their FIN/RST if it was captured, else by the idle expiry, as a
//!   counted loss.

use serde::Serialize;
use tracing::{info, warn};

use super::{
    Capture, CaptureConfig, CaptureError, Interface, InterfaceError,
    attach_set::{Action, AttachSet},
    check_config, check_privileges,
    links::{Link, LinkEvent, LinkWatcher, LinksError},
};

/// Link-layer header length assumed when no link is there yet: Ethernet's
/// (veths, physical NICs, bridges).
const DEFAULT_L2_LEN: u32 = 14;

/// Counters of the interfaces followed during a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InterfaceStats {
    /// Interfaces attached now.
    pub attached: u64,
    /// Attaches made (each interface once per appearance).
    pub attaches: u64,
    /// Detaches made (the interface went away or was renamed out of the
    /// selection).
    pub detaches: u64,
    /// Interfaces selected but not attached (see the warning logged).
    pub attach_errors: u64,
    /// Times link notifications were lost and the links listed again.
    pub netlink_resyncs: u64,
}

/// Keeps a [`Capture`] attached to the selected interfaces.
pub struct Follower {
    watcher: LinkWatcher,
    set: AttachSet,
    stats: InterfaceStats,
}

impl Follower {
    /// Loads the capture and attaches it to every selected interface there
    /// is now. On error nothing stays attached.
    pub fn start(cfg: &CaptureConfig) -> Result<(Capture, Self), CaptureError> {
        check_config(cfg)?;
        let selector = &cfg.iface;
        // Plain names keep the single-interface behaviour: each must exist.
        let named = selector
            .names()
            .iter()
            .map(|n| Interface::lookup(n))
            .collect::<Result<Vec<_>, _>>()?;
        check_privileges()?;
        // Subscribe first, then list: nothing between the two is missed.
        let watcher = LinkWatcher::open()?;
        let links = LinkWatcher::dump()?;
        let l2_len = named
            .first()
            .map(|i| i.l2_len)
            .or_else(|| {
                links
                    .iter()
                    .filter(|l| selector.matches(&l.name))
                    .find_map(|l| Interface::lookup(&l.name).ok())
                    .map(|i| i.l2_len)
            })
            .unwrap_or(DEFAULT_L2_LEN);
        let mut capture = Capture::new(cfg, l2_len)?;
        let mut follower = Self {
            watcher,
            set: AttachSet::new(selector.clone()),
            stats: InterfaceStats::default(),
        };
        follower.apply(LinkEvent::Snapshot(links), &mut capture)?;
        if let Some(missing) = selector.names().iter().find(|n| !follower.set.has_name(n)) {
            // Gone between the lookup and the listing.
            return Err(InterfaceError::NotFound(missing.clone()).into());
        }
        if follower.set.is_empty() {
            info!(
                iface = %selector.describe(),
                "no interface matches yet: waiting for one to appear"
            );
        }
        Ok((capture, follower))
    }

    /// Waits for the next change of the links.
    pub async fn next_event(&mut self) -> Result<LinkEvent, LinksError> {
        let ev = self.watcher.next().await;
        self.stats.netlink_resyncs = self.watcher.overruns();
        ev
    }

    /// Attaches and detaches `capture` as `ev` asks. Fails when a plain
    /// name cannot be attached or is gone.
    pub fn apply(&mut self, ev: LinkEvent, capture: &mut Capture) -> Result<(), CaptureError> {
        let mut result = Ok(());
        for action in self.set.on_event(ev) {
            let r = match action {
                Action::Attach(link) => self.attach(&link, capture),
                Action::Detach(link) => self.detach(&link, capture),
            };
            // Every action is applied; the first failure is the answer.
            if result.is_ok() {
                result = r;
            }
        }
        self.stats.attached = self.set.len() as u64;
        result
    }

    /// The counters so far.
    pub fn stats(&self) -> InterfaceStats {
        self.stats
    }

    fn attach(&mut self, link: &Link, capture: &mut Capture) -> Result<(), CaptureError> {
        let attached = Interface::lookup(&link.name)
            .map_err(CaptureError::from)
            .and_then(|iface| capture.attach_iface(&iface));
        match attached {
            Ok(()) => {
                self.set.attached(link);
                self.stats.attaches += 1;
                Ok(())
            }
            Err(e) => {
                self.set.failed(link);
                self.stats.attach_errors += 1;
                if self.set.selector().is_named(&link.name) {
                    return Err(e);
                }
                warn!(iface = %link.name, "not following this interface: {e}");
                Ok(())
            }
        }
    }

    fn detach(&mut self, link: &Link, capture: &mut Capture) -> Result<(), CaptureError> {
        capture.detach_iface(link.index);
        self.stats.detaches += 1;
        if self.set.selector().is_named(&link.name) {
            return Err(CaptureError::InterfaceRemoved(link.name.clone()));
        }
        Ok(())
    }
}
