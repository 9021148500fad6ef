//! Reading pcap and pcapng files into TCP segments (offline pipeline input).
//!
//! [`PcapSource`] reads a capture written by tcpdump, dumpcap/Wireshark or
//! `parallelrun record` and hands every TCP segment of an old service's
//! connection to a callback, borrowed straight from the reader's buffer: no
//! allocation and no copy per packet.
//!
//! # What is read
//!
//! * Files: pcap in either byte order with microsecond or nanosecond
//!   timestamps, and pcapng (Enhanced, Simple and the obsolete Packet blocks;
//!   several sections and interfaces; `if_tsresol` and `if_tsoffset`). The
//!   format is recognised by its magic number, not by the file name.
//! * Link types: see [`SUPPORTED_LINK_TYPES`]. Ethernet frames may carry
//!   802.1Q / 802.1ad (QinQ) VLAN tags, and PPPoE session frames (EtherType
//!   0x8864) with IPv4 or IPv6 inside.
//! * Network: IPv4 (with options) and IPv6 (with extension headers). IP
//!   fragments are skipped and counted: only a reassembled datagram has a
//!   complete TCP segment, and the live capture skips them too.
//!
//! # Which segments are delivered
//!
//! The same ones the kernel side emits, so the offline and live pipelines see
//! the same input: a segment whose destination is an old service is a
//! [`Direction::Request`], else one whose source is an old service is a
//! [`Direction::Response`]; an exact `IP:PORT` service or a `:PORT` (any
//! address) service matches. Segments without payload and without SYN, FIN
//! or RST (pure ACKs) are counted in [`ReadStats::pure_acks`] and not
//! delivered, as the kernel side does not emit them either.
//!
//! [`Direction::Request`]: crate::model::Direction::Request
//! [`Direction::Response`]: crate::model::Direction::Response
//!
//! A capture on Linux's `any` interface may hold the same packet twice (once
//! per device it crossed, e.g. a bridge or veth pair and its peer). Such
//! duplicates are delivered as they are: reassembly drops the copy by its
//! sequence number.
//!
//! # Nothing to read
//!
//! A capture whose packets hold no TCP segment of an old service (wrong
//! `--old`, a link layer or encapsulation that is not decoded, UDP only)
//! gives nothing to pair, which looks like a broken tool rather than a wrong
//! input. [`PcapSource::nothing_found`] says what the packets were instead,
//! and [`PcapSource::warn_if_nothing_found`] logs it as a warning at the end
//! of a read.
//!
//! # Truncated packets
//!
//! When the capture's snapshot length cut a packet inside its TCP payload,
//! the bytes that are present are delivered and [`TcpSegment::missing`]
//! tells how many the IP header says followed them (counted in
//! [`ReadStats::truncated`]); reassembly sees a gap there. A packet cut inside
//! its IP or TCP header cannot be placed in a stream and is counted in
//! [`ReadStats::headers_cut`].
//!
//! # Layout
//!
//! The `file` submodule reads the two file formats record by record (its
//! documentation says why pcapng packet blocks are decoded by hand rather
//! than with pcap-file), and `decode` takes each packet from its link-layer
//! header down to TCP. This module counts every record and hands out the
//! segments, in batches or until the caller stops.

mod decode;
mod file;

use std::{
    convert::Infallible,
    io,
    ops::ControlFlow,
    path::{Path, PathBuf},
};

use pcap_file::{DataLink, PcapError};

pub use decode::SUPPORTED_LINK_TYPES;
use decode::{Services, decode};
use file::{Input, Record};

use parallelrun_common::SAMPLE_ALL;

use crate::{model::TcpSegment, service::ServiceAddr};

/// Counters of a [`PcapSource`]: what became of every packet read.
///
/// Every packet record lands in exactly one of `segments`, `pure_acks`,
/// `not_ip`, `not_tcp`, `fragments`, `other_traffic`, `malformed`,
/// `headers_cut` and `unsupported_linktype`; their sum is `packets`.
/// `truncated` counts a subset of `segments`.
#[derive(Default, Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReadStats {
    /// Packet records read from the file.
    pub packets: u64,
    /// TCP segments of an old service's connection passed to the callback.
    pub segments: u64,
    /// Old-service segments without payload and without SYN, FIN or RST:
    /// skipped, like the kernel side skips them.
    pub pure_acks: u64,
    /// Frames that carry no IP packet (ARP, LLDP, other EtherTypes or
    /// address families).
    pub not_ip: u64,
    /// IP packets that carry no TCP (UDP, ICMP, ...).
    pub not_tcp: u64,
    /// IPv4 or IPv6 fragments (first or later): skipped.
    pub fragments: u64,
    /// TCP segments neither to nor from an old service.
    pub other_traffic: u64,
    /// Old-service segments (not pure ACKs) of connections left out by
    /// connection sampling ([`PcapSource::sample_connections`]), as the
    /// kernel's `sampled_out` counts them live.
    pub sampled_out: u64,
    /// Packets whose headers are invalid (bad IP version or header length,
    /// TCP data offset below 5, a link header shorter than its type needs
    /// although the packet was captured whole, a pcapng packet block naming
    /// an interface that was never described, ...).
    pub malformed: u64,
    /// Packets whose IP or TCP header the snapshot length cut: they cannot be
    /// placed in a stream. Capture with a larger snapshot length (`tcpdump
    /// -s 0`).
    pub headers_cut: u64,
    /// pcapng packets of an interface whose link type is not supported (see
    /// [`SUPPORTED_LINK_TYPES`]).
    pub unsupported_linktype: u64,
    /// Delivered segments whose payload the snapshot length cut
    /// ([`TcpSegment::missing`] > 0). Also counted in `segments`.
    pub truncated: u64,
    /// The file ended in the middle of a record (it was copied or read while
    /// still being written, or its last record is corrupt). The records
    /// before were delivered.
    pub cut_short: bool,
}

/// Why a capture file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapReadError {
    /// [`PcapSource::open`] was given no service to select connections by.
    #[error("no old service given: pass at least one IP:PORT or :PORT to select its connections")]
    NoServices,
    /// The file cannot be opened or its first bytes read.
    #[error("cannot open capture file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The file does not start with a pcap or pcapng magic number; `found`
    /// describes what it starts with.
    #[error(
        "{path} is not a pcap or pcapng file ({found}); give a capture written by `tcpdump -w`, \
         dumpcap/Wireshark or `parallelrun record`"
    )]
    NotPcap { path: PathBuf, found: String },
    /// The pcap file header or the first pcapng section header is invalid
    /// or cut short.
    #[error("{path} has a damaged file header ({source}); the file is not usable")]
    Header { path: PathBuf, source: PcapError },
    /// A pcap file of a link type that [`PcapSource`] cannot decode.
    #[error(
        "{path} has link type {linktype}, which is not supported; supported link types: \
         {SUPPORTED_LINK_TYPES}. Capture on an Ethernet, loopback or `any` interface"
    )]
    UnsupportedLinkType { path: PathBuf, linktype: u32 },
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A record or block is invalid (not merely cut short by the end of the
    /// file).
    #[error(
        "{path} is corrupt after {packets} packets ({source}); the segments before were \
         delivered, the rest of the file cannot be read"
    )]
    Corrupt {
        path: PathBuf,
        packets: u64,
        source: PcapError,
    },
}

/// A capture file being read: see the [module documentation](self).
pub struct PcapSource {
    path: PathBuf,
    services: Services,
    input: Input,
    stats: ReadStats,
    /// Connection sampling threshold (see [`PcapSource::sample_connections`]).
    sample_threshold: u64,
    /// Set once the file ended or failed: later calls deliver nothing.
    done: bool,
}

impl PcapSource {
    /// Opens a pcap or pcapng file (recognised by its magic number) and
    /// selects the connections of `services`.
    ///
    /// Fails when `services` is empty, the file cannot be opened, is not a
    /// capture file, or (pcap) has a link type that is not supported. A pcapng
    /// interface of an unsupported link type is not an error: its packets are
    /// counted in [`ReadStats::unsupported_linktype`].
    pub fn open(path: &Path, services: &[ServiceAddr]) -> Result<Self, PcapReadError> {
        if services.is_empty() {
            return Err(PcapReadError::NoServices);
        }
        let input = Input::open(path)?;
        Ok(Self {
            path: path.to_owned(),
            services: Services::new(services),
            input,
            stats: ReadStats::default(),
            sample_threshold: SAMPLE_ALL,
            done: false,
        })
    }

    /// Delivers only the segments of connections whose
    /// [`conn_hash`](crate::capture::conn_hash) is below `threshold`
    /// ([`crate::capture::sample_threshold`] of `--sample`), the same test
    /// the kernel applies live: a pcap and a live capture with the same
    /// fraction keep the same connections. Applied before reassembly;
    /// the others are counted in [`ReadStats::sampled_out`].
    pub fn sample_connections(&mut self, threshold: u64) {
        self.sample_threshold = threshold;
    }

    /// Calls `f` with each TCP segment of an old service's connection, in
    /// file order, and returns when the file ends. The segment borrows the
    /// reader's buffer (one buffer for the whole file: no allocation per
    /// packet); copy what must outlive the call.
    ///
    /// A file that ends in the middle of a record is not an error: the
    /// segments before are delivered and [`ReadStats::cut_short`] is set. An
    /// error is returned when the file cannot be read or a record is corrupt;
    /// the segments before it have been delivered.
    pub fn for_each(&mut self, f: impl FnMut(&TcpSegment<'_>)) -> Result<(), PcapReadError> {
        match self.try_for_each(never_breaking(f))? {
            ControlFlow::Continue(()) => Ok(()),
        }
    }

    /// Like [`for_each`](Self::for_each), but `f` can stop the reading by
    /// returning [`ControlFlow::Break`] (to wait for the pipeline, or on
    /// shutdown). The break value is returned; a later call resumes with the
    /// next segment. Returns `Continue` when the file has ended.
    pub fn try_for_each<B>(
        &mut self,
        f: impl FnMut(&TcpSegment<'_>) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>, PcapReadError> {
        Ok(match self.pump(u64::MAX, f)? {
            Stop::Break(b) => ControlFlow::Break(b),
            Stop::Ended | Stop::Budget => ControlFlow::Continue(()),
        })
    }

    /// Reads at most `max_packets` (at least one) packet records, calling `f` with the
    /// segments among them as [`for_each`](Self::for_each) does. Returns
    /// whether the file may have more (`false` once it has ended), so that a
    /// caller can interleave reading with other work and bound how much it
    /// reads ahead:
    ///
    /// ```ignore
    /// while source.read_batch(4096, |seg| pipeline.push(seg))? {
    ///     pipeline.dispatch().await;
    /// }
    /// ```
    pub fn read_batch(
        &mut self,
        max_packets: usize,
        f: impl FnMut(&TcpSegment<'_>),
    ) -> Result<bool, PcapReadError> {
        let budget = u64::try_from(max_packets.max(1)).unwrap_or(u64::MAX);
        Ok(match self.pump(budget, never_breaking(f))? {
            Stop::Ended => false,
            Stop::Budget => true,
        })
    }

    /// Reads until the file ends, `budget` packet records were read, or `f`
    /// breaks.
    fn pump<B>(
        &mut self,
        budget: u64,
        mut f: impl FnMut(&TcpSegment<'_>) -> ControlFlow<B>,
    ) -> Result<Stop<B>, PcapReadError> {
        let Self {
            path,
            services,
            input,
            stats,
            sample_threshold,
            done,
        } = self;
        if *done {
            return Ok(Stop::Ended);
        }
        let limit = stats.packets.saturating_add(budget);
        loop {
            if stats.packets >= limit {
                return Ok(Stop::Budget);
            }
            let read = input.next(path, |record| {
                stats.packets += 1;
                let (link, packet) = match record {
                    Record::Packet(link, packet) => (link, packet),
                    Record::Malformed => {
                        stats.malformed += 1;
                        return ControlFlow::Continue(());
                    }
                    Record::UnsupportedLinkType => {
                        stats.unsupported_linktype += 1;
                        return ControlFlow::Continue(());
                    }
                };
                match decode(link, packet, services, *sample_threshold, stats) {
                    Some(seg) => f(&seg),
                    None => ControlFlow::Continue(()),
                }
            });
            match read {
                None => break,
                Some(Ok(ControlFlow::Continue(()))) => {}
                Some(Ok(ControlFlow::Break(b))) => return Ok(Stop::Break(b)),
                Some(Err(e)) => {
                    *done = true;
                    return end_of_file(path, stats, e);
                }
            }
        }
        *done = true;
        Ok(Stop::Ended)
    }

    /// What became of the packets read so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the packets read so far hold no TCP segment of an old service
    /// (not even one without payload), what they held instead, as a
    /// sentence: the file, its link types, and the packets counted by what
    /// they were. `None` when a segment was found, or nothing was read yet.
    pub fn nothing_found(&self) -> Option<String> {
        let s = &self.stats;
        if s.segments + s.pure_acks > 0 {
            return None;
        }
        let path = self.path.display();
        let links = self
            .input
            .linktypes()
            .iter()
            .map(|&l| linktype_name(l))
            .collect::<Vec<_>>()
            .join(", ");
        let links = if links.is_empty() {
            "no interface described".to_owned()
        } else {
            format!("link type {links}")
        };
        if s.packets == 0 {
            return self
                .done
                .then(|| format!("{path} ({links}) holds no packets"));
        }
        let kinds = [
            (
                s.not_ip,
                "not IP (ARP, EtherTypes or address families other than IPv4, IPv6 and \
                 PPPoE sessions)",
            ),
            (s.not_tcp, "IP but not TCP (UDP, ICMP, ...)"),
            (s.fragments, "IP fragments"),
            (
                s.other_traffic,
                "TCP of other services (check --old: which IP:PORT or :PORT serves HTTP?)",
            ),
            (s.malformed, "malformed"),
            (s.headers_cut, "with headers cut by the snapshot length"),
            (s.unsupported_linktype, "of an unsupported link type"),
        ];
        let what = kinds
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join("; ");
        Some(format!(
            "{path} ({links}): none of its {} packets is a TCP segment of an old service: {what}",
            s.packets
        ))
    }

    /// Logs [`nothing_found`](Self::nothing_found) as a warning, if there is
    /// anything to say: for the end of a read.
    pub fn warn_if_nothing_found(&self) {
        if let Some(what) = self.nothing_found() {
            tracing::warn!("{what}");
        }
    }
}

/// A link type as a reader knows it: `ETHERNET (1)`, or its number when
/// it has no name.
fn linktype_name(linktype: u32) -> String {
    match DataLink::from(linktype) {
        DataLink::Unknown(_) => linktype.to_string(),
        name => format!("{name:?} ({linktype})"),
    }
}

/// Why [`PcapSource::pump`] returned.
enum Stop<B> {
    /// The file ended (or failed).
    Ended,
    /// The packet budget was used up.
    Budget,
    /// The callback broke.
    Break(B),
}

/// `f` as a callback that never stops the reading.
fn never_breaking(
    mut f: impl FnMut(&TcpSegment<'_>),
) -> impl FnMut(&TcpSegment<'_>) -> ControlFlow<Infallible> {
    move |seg| {
        f(seg);
        ControlFlow::Continue(())
    }
}

/// Ends reading on a reader error: a record cut by the end of the file only
/// marks the stats; anything else is an error.
fn end_of_file<B>(
    path: &Path,
    stats: &mut ReadStats,
    e: PcapError,
) -> Result<Stop<B>, PcapReadError> {
    match e {
        PcapError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            tracing::warn!(
                path = %path.display(),
                packets = stats.packets,
                "capture file ends in the middle of a record (cut short while being written, or \
                 corrupt); the packets before it were read"
            );
            stats.cut_short = true;
            Ok(Stop::Ended)
        }
        PcapError::IoError(source) => Err(PcapReadError::Read {
            path: path.to_owned(),
            source,
        }),
        source => Err(PcapReadError::Corrupt {
            path: path.to_owned(),
            packets: stats.packets,
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
