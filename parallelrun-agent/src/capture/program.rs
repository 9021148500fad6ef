//! One loaded instance of the TC program: its maps, its ring buffer and
//! the interfaces it is attached to. `L2_LEN` is fixed when it loads, so
//! one instance serves the interfaces of one link-layer header length.
#![deny(clippy::undocumented_unsafe_blocks)]

use std::{
    collections::BTreeMap,
    io,
    task::{Context, Poll},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        TcAttachType,
        tc::{self, SchedClassifierLinkId},
    },
};
use parallelrun_common::{Counter, PORT_BITMAP_LEN, ServiceKey, set_port};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info};

use super::{
    CaptureConfig, CaptureError, Interface, KernelCounters, Segment, SegmentError,
    classify_load_error, classify_program_error, error_chain, missing, program, read_records,
    register, sum_counter, wakeup_threshold,
};

/// One loaded TC program, its maps and the interfaces it is attached to.
/// Dropping it (or [`Program::detach`]) removes it from every interface.
pub(super) struct Program {
    ebpf: Option<Ebpf>,
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    /// The `L2_LEN` the program was loaded with.
    pub(super) l2_len: u32,
    /// The links made on each interface, by interface index.
    attached: BTreeMap<u32, Attachment>,
    /// `drop_epoch` of the last record read (see [`Segment::drops_before`]).
    drop_epoch: u32,
}

/// The program's links on one interface.
struct Attachment {
    name: String,
    links: Vec<SchedClassifierLinkId>,
}

impl Program {
    /// Loads and configures the program for interfaces whose link-layer
    /// header is `l2_len` bytes long, attached nowhere yet.
    pub(super) fn load(cfg: &CaptureConfig, l2_len: u32) -> Result<Self, CaptureError> {
        let object: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/parallelrun"));
        if object.is_empty() {
            return Err(CaptureError::Load(
                "this binary was built with AYA_BUILD_SKIP=1 and carries no eBPF program; \
                 rebuild without it (`cargo xtask build`)"
                    .into(),
            ));
        }
        let wakeup_bytes = wakeup_threshold(cfg.ring_bytes);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", cfg.ring_bytes)
            .override_global("L2_LEN", &l2_len, true)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("SAMPLE_THRESHOLD", &cfg.sample_threshold, true)
            .load(object)
            .map_err(|e| classify_load_error(&e))?;

        {
            let mut services: HashMap<_, ServiceKey, u8> = HashMap::try_from(
                ebpf.map_mut("SERVICES")
                    .ok_or_else(|| missing("map SERVICES"))?,
            )
            .map_err(|e| CaptureError::Load(e.to_string()))?;
            for s in &cfg.services {
                services
                    .insert(s.key(), 1, 0)
                    .map_err(|e| CaptureError::Load(format!("configuring {s}: {e}")))?;
            }
        }
        {
            // The ports' bitmap, the kernel's prefilter in front of SERVICES.
            let mut bitmap = [0u8; PORT_BITMAP_LEN];
            for s in &cfg.services {
                set_port(&mut bitmap, s.key().port);
            }
            let mut ports: Array<_, [u8; PORT_BITMAP_LEN]> =
                Array::try_from(ebpf.map_mut("PORTS").ok_or_else(|| missing("map PORTS"))?)
                    .map_err(|e| CaptureError::Load(e.to_string()))?;
            ports
                .set(0, bitmap, 0)
                .map_err(|e| CaptureError::Load(format!("configuring the port bitmap: {e}")))?;
        }
        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| missing("map EVENTS"))?,
        )
        .map_err(|e| CaptureError::Load(e.to_string()))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("COUNTERS")
                .ok_or_else(|| missing("map COUNTERS"))?,
        )
        .map_err(|e| CaptureError::Load(e.to_string()))?;

        let prog = program(&mut ebpf)?;
        prog.load().map_err(classify_program_error)?;
        if let Ok(info) = prog.info() {
            debug!(
                xlated_insns = info.size_translated().map(|b| b / 8),
                verified_insns = info.verified_instruction_count(),
                wakeup_bytes,
                sample_threshold = cfg.sample_threshold,
                "TC program loaded"
            );
        }

        info!(
            services = %cfg.services.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            ring_bytes = cfg.ring_bytes,
            l2_len,
            "TC program ready"
        );
        Ok(Self {
            ebpf: Some(ebpf),
            ring: register(ring)?,
            counters,
            l2_len,
            attached: BTreeMap::new(),
            drop_epoch: 0,
        })
    }

    /// Attaches the program to `iface` (both directions; ingress only on
    /// loopback). On error nothing stays attached to it.
    pub(super) fn attach_iface(
        &mut self,
        iface: &Interface,
        tcx: bool,
    ) -> Result<(), CaptureError> {
        if self.attached.contains_key(&iface.index) {
            return Ok(());
        }
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or_else(|| CaptureError::Load("the capture was detached".into()))?;
        if !tcx && let Err(e) = tc::qdisc_add_clsact(&iface.name) {
            debug!("clsact qdisc on {}: {e} (already present?)", iface.name);
        }
        // On loopback every packet passes egress and then ingress: one hook
        // sees each segment exactly once.
        let hooks: &[(TcAttachType, &'static str)] = if iface.loopback {
            &[(TcAttachType::Ingress, "ingress")]
        } else {
            &[
                (TcAttachType::Ingress, "ingress"),
                (TcAttachType::Egress, "egress"),
            ]
        };
        let prog = program(ebpf)?;
        let mut links = Vec::with_capacity(hooks.len());
        for &(hook, name) in hooks {
            match prog.attach(&iface.name, hook) {
                Ok(id) => links.push(id),
                Err(e) => {
                    for id in links {
                        let _ = prog.detach(id);
                    }
                    return Err(CaptureError::Attach {
                        iface: iface.name.clone(),
                        hook: name,
                        reason: error_chain(&e),
                    });
                }
            }
        }
        let hooks: Vec<_> = hooks.iter().map(|&(_, n)| n).collect();
        info!(iface = %iface.name, index = iface.index, hooks = %hooks.join(","), "attached");
        self.attached.insert(
            iface.index,
            Attachment {
                name: iface.name.clone(),
                links,
            },
        );
        Ok(())
    }

    /// Removes the program from the interface of this index, if attached
    /// (its links are closed; the kernel already dropped them if the
    /// interface is gone).
    pub(super) fn detach_iface(&mut self, index: u32) {
        let Some(att) = self.attached.remove(&index) else {
            return;
        };
        if let Some(prog) = self.ebpf.as_mut().and_then(|e| program(e).ok()) {
            for id in att.links {
                if let Err(e) = prog.detach(id) {
                    debug!(iface = %att.name, "detaching: {} (the interface is gone?)", error_chain(&e));
                }
            }
        }
        info!(iface = %att.name, index, "detached");
    }

    /// Removes the program from every interface. The ring buffer and
    /// counters stay readable, so what was captured before can still be
    /// drained.
    pub(super) fn detach(&mut self) {
        if self.ebpf.take().is_some() && !self.attached.is_empty() {
            let names: Vec<_> = std::mem::take(&mut self.attached)
                .into_values()
                .map(|a| a.name)
                .collect();
            info!(ifaces = %names.join(","), "detached");
        }
    }

    /// Hands up to `max` records already in the ring to `f`; returns how
    /// many.
    pub(super) fn read(
        &mut self,
        max: usize,
        f: &mut impl FnMut(Result<Segment<'_>, SegmentError>),
    ) -> usize {
        read_records(self.ring.get_mut(), max, &mut self.drop_epoch, f)
    }

    /// Polls the ring's readiness, clearing it when set: records written
    /// after this are announced anew.
    pub(super) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.ring.poll_read_ready(cx) {
            Poll::Ready(Ok(mut guard)) => {
                guard.clear_ready();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// This program's kernel counters, summed over all CPUs, added to `out`.
    pub(super) fn add_counters(&self, out: &mut KernelCounters) {
        for c in Counter::ALL {
            out.0[c as usize] += sum_counter(&self.counters, c);
        }
    }
}
