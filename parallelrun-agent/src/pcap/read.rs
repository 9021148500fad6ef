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
//!   802.1Q / 802.1ad (QinQ) VLAN tags.
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
//! A capture on Linux's `any` interface may hold the same packet twice (once
//! per device it crossed, e.g. a bridge or veth pair and its peer). Such
//! duplicates are delivered as they are: reassembly drops the copy by its
//! sequence number.
//!
//! # Truncated packets
//!
//! When the capture's snapshot length cut a packet inside its TCP payload,
//! the bytes that are present are delivered and [`TcpSegment::missing`]
//! tells how many the IP header says followed them (counted in
//! [`ReadStats::truncated`]); reassembly sees a gap there. A packet cut inside
//! its IP or TCP header cannot be placed in a stream and is counted in
//! [`ReadStats::headers_cut`].

use std::{
    collections::HashSet,
    fmt::Write as _,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    net::{IpAddr, SocketAddr},
    ops::ControlFlow,
    path::{Path, PathBuf},
};

use etherparse::{
    EtherType, IpNumber, LaxNetSlice, LaxSlicedPacket, LenSource, TransportSlice, err::Layer,
};
use parallelrun_common::ServiceKey;
use pcap_file::{
    DataLink, Endianness, PcapError, TsResolution,
    pcap::PcapReader,
    pcapng::{PcapNgReader, blocks::interface_description::InterfaceDescriptionOption},
};

use crate::{
    model::{ConnKey, Direction, TcpSegment, tcp_flags},
    service::{ServiceAddr, addr16},
};

/// The link types [`PcapSource`] reads, as named in error messages.
pub const SUPPORTED_LINK_TYPES: &str = "ETHERNET (1), RAW (101), IPV4 (228), IPV6 (229), \
     LINUX_SLL (113), LINUX_SLL2 (276), NULL (0), LOOP (108)";

/// pcapng block types (pcapng specification, section 11.1).
const SECTION_HEADER_BLOCK: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION_BLOCK: u32 = 1;
const PACKET_BLOCK: u32 = 2;
const SIMPLE_PACKET_BLOCK: u32 = 3;
const ENHANCED_PACKET_BLOCK: u32 = 6;

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
    /// Set once the file ended or failed: later calls deliver nothing.
    done: bool,
}

enum Input {
    Pcap {
        reader: PcapReader<File>,
        link: Link,
        /// Nanoseconds per unit of the fractional timestamp (1000 or 1).
        frac_ns: u64,
    },
    PcapNg {
        reader: PcapNgReader<File>,
        /// Byte order of the current section.
        big_endian: bool,
        /// Interfaces of the current section, by interface id.
        ifaces: Vec<Iface>,
    },
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
        let open_err = |source| PcapReadError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(open_err)?;
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut file, &mut magic).map_err(open_err)?;
        file.seek(SeekFrom::Start(0)).map_err(open_err)?;
        let magic = magic.get(..got).unwrap_or_default();
        let header_err = |source| PcapReadError::Header {
            path: path.to_owned(),
            source,
        };
        let input = match magic {
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => {
                let reader = PcapReader::new(file).map_err(header_err)?;
                let header = reader.header();
                let linktype = u32::from(header.datalink);
                let link = Link::from_linktype(linktype).ok_or_else(|| {
                    PcapReadError::UnsupportedLinkType {
                        path: path.to_owned(),
                        linktype,
                    }
                })?;
                let frac_ns = match header.ts_resolution {
                    TsResolution::MicroSecond => 1_000,
                    TsResolution::NanoSecond => 1,
                };
                Input::Pcap {
                    reader,
                    link,
                    frac_ns,
                }
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                let reader = PcapNgReader::new(file).map_err(header_err)?;
                let big_endian = reader.section().endianness == Endianness::Big;
                Input::PcapNg {
                    reader,
                    big_endian,
                    ifaces: Vec::new(),
                }
            }
            other => {
                return Err(PcapReadError::NotPcap {
                    path: path.to_owned(),
                    found: describe_magic(other),
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            services: Services::new(services),
            input,
            stats: ReadStats::default(),
            done: false,
        })
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
    pub fn for_each(&mut self, mut f: impl FnMut(&TcpSegment<'_>)) -> Result<(), PcapReadError> {
        match self.try_for_each(|seg| {
            f(seg);
            ControlFlow::<std::convert::Infallible>::Continue(())
        })? {
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
        mut f: impl FnMut(&TcpSegment<'_>),
    ) -> Result<bool, PcapReadError> {
        let budget = u64::try_from(max_packets.max(1)).unwrap_or(u64::MAX);
        let stop = self.pump(budget, |seg| {
            f(seg);
            ControlFlow::<std::convert::Infallible>::Continue(())
        })?;
        Ok(match stop {
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
            done,
        } = self;
        if *done {
            return Ok(Stop::Ended);
        }
        let limit = stats.packets.saturating_add(budget);
        match input {
            Input::Pcap {
                reader,
                link,
                frac_ns,
            } => loop {
                if stats.packets >= limit {
                    return Ok(Stop::Budget);
                }
                let raw = match reader.next_raw_packet() {
                    None => break,
                    Some(Ok(raw)) => raw,
                    Some(Err(e)) => {
                        *done = true;
                        return end_of_file(path, stats, e);
                    }
                };
                stats.packets += 1;
                let ts_ns =
                    u64::from(raw.ts_sec) * 1_000_000_000 + u64::from(raw.ts_frac) * *frac_ns;
                let packet = Packet {
                    data: &raw.data,
                    orig_len: raw.orig_len,
                    ts_ns,
                };
                if let Some(seg) = decode(*link, packet, services, stats)
                    && let ControlFlow::Break(b) = f(&seg)
                {
                    return Ok(Stop::Break(b));
                }
            },
            Input::PcapNg {
                reader,
                big_endian,
                ifaces,
            } => loop {
                if stats.packets >= limit {
                    return Ok(Stop::Budget);
                }
                let block = match reader.next_raw_block() {
                    None => break,
                    Some(Ok(block)) => block,
                    Some(Err(e)) => {
                        *done = true;
                        return end_of_file(path, stats, e);
                    }
                };
                let body: &[u8] = &block.body;
                let packet = match block.type_ {
                    SECTION_HEADER_BLOCK => {
                        // The byte-order magic opens the body; the reader
                        // already checked it is one of the two.
                        *big_endian = body.get(..4) == Some(&[0x1a, 0x2b, 0x3c, 0x4d]);
                        ifaces.clear();
                        continue;
                    }
                    INTERFACE_DESCRIPTION_BLOCK => {
                        // The reader parsed it (options included) into its
                        // list of the section's interfaces.
                        if let Some(idb) = reader.interfaces().last() {
                            let iface = Iface::new(idb.linktype, idb.snaplen, &idb.options);
                            if iface.link.is_none() {
                                tracing::warn!(
                                    path = %path.display(),
                                    interface = ifaces.len(),
                                    linktype = u32::from(idb.linktype),
                                    supported = SUPPORTED_LINK_TYPES,
                                    "pcapng interface has an unsupported link type; its packets \
                                     are skipped and counted"
                                );
                            }
                            ifaces.push(iface);
                        }
                        continue;
                    }
                    ENHANCED_PACKET_BLOCK | PACKET_BLOCK | SIMPLE_PACKET_BLOCK => {
                        stats.packets += 1;
                        parse_packet_block(block.type_, body, *big_endian, ifaces)
                    }
                    _ => continue,
                };
                let Some((iface, packet)) = packet else {
                    stats.malformed += 1;
                    continue;
                };
                let Some(link) = iface.link else {
                    stats.unsupported_linktype += 1;
                    continue;
                };
                if let Some(seg) = decode(link, packet, services, stats)
                    && let ControlFlow::Break(b) = f(&seg)
                {
                    return Ok(Stop::Break(b));
                }
            },
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

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..) {
        if rest.is_empty() {
            break;
        }
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Describes the first bytes of a file that is not a capture.
fn describe_magic(magic: &[u8]) -> String {
    if magic.is_empty() {
        return "it is empty".to_owned();
    }
    let mut s = String::from("it starts with bytes");
    for b in magic {
        let _ = write!(s, " {b:02x}");
    }
    if magic.starts_with(&[0x1f, 0x8b]) {
        s.push_str(": gzip-compressed, decompress it first");
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        s.push_str(": zstd-compressed, decompress it first");
    } else if magic
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        s.push_str(": looks like text");
    }
    s
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

/// The old services, looked up the way the kernel side does (`is_service`
/// in the eBPF crate): the exact address and port, then any address on the
/// port.
struct Services {
    keys: HashSet<ServiceKey>,
}

impl Services {
    fn new(services: &[ServiceAddr]) -> Self {
        Self {
            keys: services.iter().map(ServiceAddr::key).collect(),
        }
    }

    fn contains(&self, sa: SocketAddr) -> bool {
        let exact = ServiceKey {
            addr: addr16(sa.ip()),
            port: sa.port(),
            family: if sa.is_ipv4() { 4 } else { 6 },
            _pad: 0,
        };
        self.keys.contains(&exact) || self.keys.contains(&ServiceKey::any_addr(sa.port()))
    }
}

/// How a link type frames the IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Ethernet II, possibly VLAN-tagged.
    Ethernet,
    /// The IP header first (RAW, IPV4, IPV6).
    Raw,
    /// Linux cooked capture v1: 16-byte header, protocol at offset 14.
    LinuxSll,
    /// Linux cooked capture v2: 20-byte header, protocol at offset 0.
    LinuxSll2,
    /// BSD loopback: a 4-byte address family (NULL: writer's byte order,
    /// LOOP: network byte order).
    Null,
}

impl Link {
    fn from_linktype(linktype: u32) -> Option<Self> {
        // The upper 16 bits hold FCS information (pcap) or are reserved.
        match linktype & 0xffff {
            1 => Some(Link::Ethernet),
            101 | 228 | 229 => Some(Link::Raw),
            113 => Some(Link::LinuxSll),
            276 => Some(Link::LinuxSll2),
            0 | 108 => Some(Link::Null),
            _ => None,
        }
    }
}

/// Units of a pcapng interface's timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsUnit {
    /// 10^-n seconds.
    Pow10(u8),
    /// 2^-n seconds.
    Pow2(u8),
}

/// What is needed of a pcapng interface description for its packets.
#[derive(Clone, Copy, Debug)]
struct Iface {
    link: Option<Link>,
    snaplen: u32,
    unit: TsUnit,
    /// `if_tsoffset`: seconds added to every timestamp.
    offset_s: i64,
}

impl Iface {
    fn new(linktype: DataLink, snaplen: u32, options: &[InterfaceDescriptionOption<'_>]) -> Self {
        let mut iface = Iface {
            link: Link::from_linktype(u32::from(linktype)),
            snaplen,
            // The pcapng default: microseconds.
            unit: TsUnit::Pow10(6),
            offset_s: 0,
        };
        for opt in options {
            match *opt {
                InterfaceDescriptionOption::IfTsResol(r) if r & 0x80 != 0 => {
                    iface.unit = TsUnit::Pow2(r & 0x7f);
                }
                InterfaceDescriptionOption::IfTsResol(r) => iface.unit = TsUnit::Pow10(r),
                // The specification defines if_tsoffset as a signed integer.
                InterfaceDescriptionOption::IfTsOffset(o) => iface.offset_s = o as i64,
                _ => {}
            }
        }
        iface
    }

    /// A timestamp in this interface's units as nanoseconds since the Unix
    /// epoch (saturating).
    fn ts_ns(&self, units: u64) -> u64 {
        let units = u128::from(units);
        let ns = match self.unit {
            TsUnit::Pow10(n) if n <= 9 => units * 10u128.pow(9 - u32::from(n)),
            TsUnit::Pow10(n) => 10u128
                .checked_pow(u32::from(n) - 9)
                .map_or(0, |div| units / div),
            TsUnit::Pow2(n) => (units * 1_000_000_000)
                .checked_shr(u32::from(n))
                .unwrap_or(0),
        };
        let ns = ns as i128 + i128::from(self.offset_s) * 1_000_000_000;
        ns.clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// One packet record: the captured bytes from the link-layer header on.
#[derive(Clone, Copy)]
struct Packet<'a> {
    data: &'a [u8],
    /// Length of the packet on the wire.
    orig_len: u32,
    ts_ns: u64,
}

impl Packet<'_> {
    /// The snapshot length cut this packet.
    fn cut(&self) -> bool {
        (self.data.len() as u64) < u64::from(self.orig_len)
    }
}

/// Reads a pcapng packet block body in place. `None` when it is malformed or
/// names an interface that was not described.
fn parse_packet_block<'a>(
    block_type: u32,
    body: &'a [u8],
    big_endian: bool,
    ifaces: &[Iface],
) -> Option<(Iface, Packet<'a>)> {
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = body.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    if block_type == SIMPLE_PACKET_BLOCK {
        // Always interface 0; no timestamp; the captured length is the
        // original length cut to the interface's snapshot length.
        let iface = *ifaces.first()?;
        let orig_len = u32_at(0)?;
        let data = body.get(4..)?;
        let mut caplen = (orig_len as usize).min(data.len());
        if iface.snaplen != 0 {
            caplen = caplen.min(iface.snaplen as usize);
        }
        let data = data.get(..caplen)?;
        return Some((
            iface,
            Packet {
                data,
                orig_len,
                ts_ns: 0,
            },
        ));
    }
    // Enhanced Packet Block: interface id (32 bits); obsolete Packet Block:
    // interface id and drop count (16 bits each). The rest is laid out alike.
    let iface_id = if block_type == ENHANCED_PACKET_BLOCK {
        u32_at(0)?
    } else {
        let v = u32_at(0)?;
        if big_endian { v >> 16 } else { v & 0xffff }
    };
    let iface = *ifaces.get(iface_id as usize)?;
    let units = (u64::from(u32_at(4)?) << 32) | u64::from(u32_at(8)?);
    let caplen = u32_at(12)? as usize;
    let orig_len = u32_at(16)?;
    let data = body.get(20..)?.get(..caplen)?;
    Some((
        iface,
        Packet {
            data,
            orig_len,
            ts_ns: iface.ts_ns(units),
        },
    ))
}

/// Why a packet is not delivered.
enum Skip {
    NotIp,
    NotTcp,
    Fragment,
    /// A header is short or invalid: `headers_cut` when the snapshot length
    /// cut the packet, `malformed` otherwise.
    Broken,
}

/// Decodes one packet and counts it; `Some` for a segment to deliver.
fn decode<'a>(
    link: Link,
    packet: Packet<'a>,
    services: &Services,
    stats: &mut ReadStats,
) -> Option<TcpSegment<'a>> {
    let tcp = match tcp_of(link, packet) {
        Ok(tcp) => tcp,
        Err(skip) => {
            let counter = match skip {
                Skip::NotIp => &mut stats.not_ip,
                Skip::NotTcp => &mut stats.not_tcp,
                Skip::Fragment => &mut stats.fragments,
                Skip::Broken if packet.cut() => &mut stats.headers_cut,
                Skip::Broken => &mut stats.malformed,
            };
            *counter += 1;
            return None;
        }
    };
    let (direction, conn) = if services.contains(tcp.dst) {
        let conn = ConnKey {
            client: tcp.src,
            server: tcp.dst,
        };
        (Direction::Request, conn)
    } else if services.contains(tcp.src) {
        let conn = ConnKey {
            client: tcp.dst,
            server: tcp.src,
        };
        (Direction::Response, conn)
    } else {
        stats.other_traffic += 1;
        return None;
    };
    let seg = TcpSegment {
        ts_ns: packet.ts_ns,
        conn,
        direction,
        seq: tcp.seq,
        ack: tcp.ack,
        flags: tcp.flags,
        payload: tcp.payload,
        missing: tcp.missing,
    };
    if seg.payload_len() == 0 && !seg.has(tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) {
        stats.pure_acks += 1;
        return None;
    }
    stats.segments += 1;
    if seg.missing > 0 {
        stats.truncated += 1;
    }
    Some(seg)
}

/// The TCP fields of a packet.
struct Tcp<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &'a [u8],
    missing: u32,
}

/// Slices the packet below its link-layer header (etherparse, in place).
fn slice_link(link: Link, data: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    fn from(ether_type: u16, rest: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
        Ok(LaxSlicedPacket::from_ether_type(
            EtherType(ether_type),
            rest,
        ))
    }
    let be16 = |at: usize| -> Result<u16, Skip> {
        data.get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
            .ok_or(Skip::Broken)
    };
    match link {
        Link::Ethernet => LaxSlicedPacket::from_ethernet(data).map_err(|_| Skip::Broken),
        Link::Raw => match data.first().map(|b| b >> 4) {
            Some(4) => from(EtherType::IPV4.0, data),
            Some(6) => from(EtherType::IPV6.0, data),
            _ => Err(Skip::Broken),
        },
        Link::LinuxSll => from(be16(14)?, data.get(16..).ok_or(Skip::Broken)?),
        Link::LinuxSll2 => from(be16(0)?, data.get(20..).ok_or(Skip::Broken)?),
        Link::Null => {
            let family: [u8; 4] = data
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(Skip::Broken)?;
            let rest = data.get(4..).ok_or(Skip::Broken)?;
            let is = |values: &[u32]| {
                values.contains(&u32::from_le_bytes(family))
                    || values.contains(&u32::from_be_bytes(family))
            };
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD,
            // OpenBSD), 28 (FreeBSD), 30 (macOS).
            if is(&[2]) {
                from(EtherType::IPV4.0, rest)
            } else if is(&[10, 24, 28, 30]) {
                from(EtherType::IPV6.0, rest)
            } else {
                Err(Skip::NotIp)
            }
        }
    }
}

/// Finds the TCP segment in a packet.
fn tcp_of(link: Link, packet: Packet<'_>) -> Result<Tcp<'_>, Skip> {
    let sliced = slice_link(link, packet.data)?;
    let (ip_start, claimed_end, src, dst, ip_payload) = match &sliced.net {
        None if sliced.stop_err.is_some() => return Err(Skip::Broken),
        None | Some(LaxNetSlice::Arp(_)) => return Err(Skip::NotIp),
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            (
                h.slice().as_ptr() as usize,
                usize::from(h.total_len()),
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
                v4.payload(),
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (
                h.slice().as_ptr() as usize,
                40 + usize::from(h.payload_length()),
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
                v6.payload(),
            )
        }
    };
    if ip_payload.fragmented {
        return Err(Skip::Fragment);
    }
    let tcp = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        _ if ip_payload.ip_number == IpNumber::TCP => return Err(Skip::Broken),
        // An error before the transport layer leaves ip_number unreliable
        // (e.g. a cut IPv6 extension header chain).
        _ => match &sliced.stop_err {
            Some((_, layer)) if !is_transport(*layer) => return Err(Skip::Broken),
            _ => return Err(Skip::NotTcp),
        },
    };
    let payload = tcp.payload();
    let missing = if ip_payload.incomplete {
        // The IP length says how far the packet went; it stops short of that.
        let present_end = (payload.as_ptr() as usize + payload.len()).saturating_sub(ip_start);
        claimed_end.saturating_sub(present_end)
    } else if ip_payload.len_source == LenSource::Slice {
        // No usable IP length (zero: a TSO/GSO or IPv6 jumbo packet captured
        // on the sending host): only the record's lengths tell.
        (packet.orig_len as usize).saturating_sub(packet.data.len())
    } else {
        0
    };
    Ok(Tcp {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: tcp.header_slice().get(13).copied().unwrap_or(0),
        payload,
        missing: u32::try_from(missing).unwrap_or(u32::MAX),
    })
}

/// Layers whose errors come after the IP payload's protocol number is known.
fn is_transport(layer: Layer) -> bool {
    matches!(
        layer,
        Layer::UdpHeader
            | Layer::UdpPayload
            | Layer::TcpHeader
            | Layer::Icmpv4
            | Layer::Icmpv4Timestamp
            | Layer::Icmpv4TimestampReply
            | Layer::Icmpv6
            | Layer::Igmp
    )
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, io::Write, time::Duration};

    use etherparse::PacketBuilder;
    use pcap_file::{
        pcap::{PcapHeader, PcapPacket, PcapWriter},
        pcapng::{
            PcapNgWriter, RawBlock,
            blocks::{
                enhanced_packet::EnhancedPacketBlock,
                interface_description::InterfaceDescriptionBlock,
                section_header::SectionHeaderBlock, simple_packet::SimplePacketBlock,
            },
        },
    };
    use tempfile::TempDir;

    use super::*;

    const CLIENT4: &str = "10.0.0.1:40000";
    const SERVICE4: &str = "10.0.0.2:8080";
    const CLIENT6: &str = "[fd00::1]:40000";
    const SERVICE6: &str = "[fd00::2]:8080";
    const ACK_NO: u32 = 7777;

    /// A delivered segment, owned.
    #[derive(Debug, PartialEq, Eq)]
    struct Seg {
        ts_ns: u64,
        conn: ConnKey,
        direction: Direction,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: Vec<u8>,
        missing: u32,
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn services(list: &[&str]) -> Vec<ServiceAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// An IP packet carrying one TCP segment.
    fn ip_tcp(src: &str, dst: &str, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let (src, dst) = (sa(src), sa(dst));
        let builder = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
            _ => panic!("mixed address families"),
        };
        let tcp = crate::pcap::write::with_flags(
            builder.tcp(src.port(), dst.port(), seq, 65535),
            flags,
            ACK_NO,
        );
        let mut out = Vec::new();
        tcp.write(&mut out, payload).unwrap();
        out
    }

    fn ip_udp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(53, 8080)
            .write(&mut out, b"dns")
            .unwrap();
        out
    }

    fn ethertype_of(ip: &[u8]) -> [u8; 2] {
        if ip[0] >> 4 == 4 {
            [0x08, 0x00]
        } else {
            [0x86, 0xdd]
        }
    }

    /// Frames an IP packet for a link type.
    fn frame(linktype: u32, ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        match linktype {
            1 => {
                f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
                f.extend_from_slice(&ethertype_of(ip));
            }
            101 | 228 | 229 => {}
            113 => {
                // packet type, ARPHRD_ETHER, address length, address (8), protocol
                f.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                f.extend_from_slice(&ethertype_of(ip));
            }
            276 => {
                // protocol, reserved, ifindex, ARPHRD_ETHER, packet type,
                // address length, address (8)
                f.extend_from_slice(&ethertype_of(ip));
                f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            }
            0 => {
                // AF_INET / AF_INET6 (macOS) in the writer's (little-endian) order
                let family: u32 = if ip[0] >> 4 == 4 { 2 } else { 30 };
                f.extend_from_slice(&family.to_le_bytes());
            }
            108 => {
                // network byte order; AF_INET6 as on Linux
                let family: u32 = if ip[0] >> 4 == 4 { 2 } else { 10 };
                f.extend_from_slice(&family.to_be_bytes());
            }
            _ => panic!("no framing for {linktype}"),
        }
        f.extend_from_slice(ip);
        f
    }

    /// An Ethernet frame with VLAN tags (outer first) around an IP packet.
    fn vlan_frame(tags: &[(u16, u16)], ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for (tpid, vid) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ethertype_of(ip));
        f.extend_from_slice(ip);
        f
    }

    struct Rec {
        ts: Duration,
        data: Vec<u8>,
        orig_len: u32,
    }

    fn rec(data: Vec<u8>) -> Rec {
        Rec {
            ts: Duration::from_secs(1_700_000_000),
            orig_len: data.len() as u32,
            data,
        }
    }

    fn write_pcap_with(
        dir: &TempDir,
        linktype: u32,
        endianness: Endianness,
        ts_resolution: TsResolution,
        recs: &[Rec],
    ) -> PathBuf {
        let path = dir.path().join(format!("{linktype}-{endianness:?}.pcap"));
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: 65535,
            datalink: DataLink::from(linktype),
            ts_resolution,
            endianness,
        };
        let mut w = PcapWriter::with_header(File::create(&path).unwrap(), header).unwrap();
        for r in recs {
            w.write_packet(&PcapPacket::new(r.ts, r.orig_len, &r.data))
                .unwrap();
        }
        w.into_writer().flush().unwrap();
        path
    }

    fn write_pcap(dir: &TempDir, linktype: u32, recs: &[Rec]) -> PathBuf {
        write_pcap_with(
            dir,
            linktype,
            Endianness::Little,
            TsResolution::NanoSecond,
            recs,
        )
    }

    fn read_all(path: &Path, svc: &[&str]) -> (Vec<Seg>, ReadStats) {
        let mut src = PcapSource::open(path, &services(svc)).unwrap();
        let mut segs = Vec::new();
        src.for_each(|s| segs.push(owned(s))).unwrap();
        let stats = src.stats().clone();
        assert_eq!(
            stats.packets,
            stats.segments
                + stats.pure_acks
                + stats.not_ip
                + stats.not_tcp
                + stats.fragments
                + stats.other_traffic
                + stats.malformed
                + stats.headers_cut
                + stats.unsupported_linktype,
            "every packet is counted once: {stats:?}"
        );
        (segs, stats)
    }

    fn owned(s: &TcpSegment<'_>) -> Seg {
        Seg {
            ts_ns: s.ts_ns,
            conn: s.conn,
            direction: s.direction,
            seq: s.seq,
            ack: s.ack,
            flags: s.flags,
            payload: s.payload.to_vec(),
            missing: s.missing,
        }
    }

    fn conn(client: &str, server: &str) -> ConnKey {
        ConnKey {
            client: sa(client),
            server: sa(server),
        }
    }

    const DATA: u8 = tcp_flags::ACK | tcp_flags::PSH;

    #[test]
    fn every_link_type_both_directions_v4_and_v6() {
        let dir = TempDir::new().unwrap();
        for linktype in [1, 101, 228, 229, 113, 276, 0, 108] {
            let families: &[(&str, &str)] = match linktype {
                228 => &[(CLIENT4, SERVICE4)],
                229 => &[(CLIENT6, SERVICE6)],
                _ => &[(CLIENT4, SERVICE4), (CLIENT6, SERVICE6)],
            };
            let mut recs = Vec::new();
            for (client, service) in families {
                recs.push(rec(frame(
                    linktype,
                    &ip_tcp(client, service, 100, DATA, b"GET / HTTP/1.1\r\n\r\n"),
                )));
                recs.push(rec(frame(
                    linktype,
                    &ip_tcp(service, client, 500, DATA, b"HTTP/1.1 200 OK\r\n\r\n"),
                )));
            }
            let path = write_pcap(&dir, linktype, &recs);
            let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
            let mut want = Vec::new();
            for (client, service) in families {
                let c = conn(client, service);
                want.push(Seg {
                    ts_ns: 1_700_000_000_000_000_000,
                    conn: c,
                    direction: Direction::Request,
                    seq: 100,
                    ack: ACK_NO,
                    flags: DATA,
                    payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                    missing: 0,
                });
                want.push(Seg {
                    ts_ns: 1_700_000_000_000_000_000,
                    conn: c,
                    direction: Direction::Response,
                    seq: 500,
                    ack: ACK_NO,
                    flags: DATA,
                    payload: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
                    missing: 0,
                });
            }
            assert_eq!(segs, want, "link type {linktype}");
            assert_eq!(stats.segments, want.len() as u64, "link type {linktype}");
        }
    }

    #[test]
    fn vlan_and_qinq_tags() {
        let dir = TempDir::new().unwrap();
        let ip = ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"x");
        let ip6 = ip_tcp(SERVICE6, CLIENT6, 2, DATA, b"y");
        let path = write_pcap(
            &dir,
            1,
            &[
                rec(vlan_frame(&[(0x8100, 10)], &ip)),
                rec(vlan_frame(&[(0x88a8, 100), (0x8100, 10)], &ip6)),
                rec(vlan_frame(&[(0x8100, 100), (0x8100, 10)], &ip)),
            ],
        );
        let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
        assert_eq!(stats.segments, 3);
        assert_eq!(segs[0].payload, b"x");
        assert_eq!(segs[1].direction, Direction::Response);
        assert_eq!(segs[1].conn, conn(CLIENT6, SERVICE6));
        assert_eq!(segs[2].payload, b"x");
    }

    #[test]
    fn byte_orders_and_timestamp_resolutions() {
        let dir = TempDir::new().unwrap();
        let ts = Duration::new(1_700_000_000, 123_456_789);
        let data = frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"x"));
        for (endianness, res, want) in [
            (
                Endianness::Big,
                TsResolution::MicroSecond,
                1_700_000_000_123_456_000,
            ),
            (
                Endianness::Little,
                TsResolution::MicroSecond,
                1_700_000_000_123_456_000,
            ),
            (
                Endianness::Big,
                TsResolution::NanoSecond,
                1_700_000_000_123_456_789,
            ),
            (
                Endianness::Little,
                TsResolution::NanoSecond,
                1_700_000_000_123_456_789,
            ),
        ] {
            let recs = [Rec {
                ts,
                orig_len: data.len() as u32,
                data: data.clone(),
            }];
            let path = dir.path().join(format!("{endianness:?}-{res:?}.pcap"));
            std::fs::rename(write_pcap_with(&dir, 1, endianness, res, &recs), &path).unwrap();
            let (segs, _) = read_all(&path, &[SERVICE4]);
            assert_eq!(segs.len(), 1);
            assert_eq!(segs[0].ts_ns, want, "{endianness:?} {res:?}");
        }
    }

    #[test]
    fn snaplen_cut_payload_becomes_missing_and_cut_headers_are_counted() {
        let dir = TempDir::new().unwrap();
        let payload = [b'a'; 100];
        let v4 = frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, &payload));
        let v6 = frame(1, &ip_tcp(SERVICE6, CLIENT6, 1, DATA, &payload));
        // Ethernet 14 + IPv4 20 + TCP 20: cut 30 payload bytes in.
        let cut = |full: &Vec<u8>, keep: usize| Rec {
            ts: Duration::ZERO,
            orig_len: full.len() as u32,
            data: full[..keep].to_vec(),
        };
        let path = write_pcap(
            &dir,
            1,
            &[
                cut(&v4, 14 + 20 + 20 + 30),
                cut(&v6, 14 + 40 + 20 + 10),
                // Inside the TCP header, then inside the IP header.
                cut(&v4, 14 + 20 + 10),
                cut(&v4, 14 + 10),
            ],
        );
        let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
        assert_eq!(segs.len(), 2);
        assert_eq!((segs[0].payload.len(), segs[0].missing), (30, 70));
        assert_eq!((segs[1].payload.len(), segs[1].missing), (10, 90));
        assert_eq!(stats.truncated, 2);
        assert_eq!(stats.headers_cut, 2);
        assert_eq!(stats.malformed, 0);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let dir = TempDir::new().unwrap();
        let mut f = frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"ab"));
        f.resize(60, 0);
        let path = write_pcap(&dir, 1, &[rec(f)]);
        let (segs, _) = read_all(&path, &[SERVICE4]);
        assert_eq!(
            (segs[0].payload.as_slice(), segs[0].missing),
            (&b"ab"[..], 0)
        );
    }

    #[test]
    fn tso_packet_without_ip_length_uses_the_record_lengths() {
        // tcpdump on the sending host sees GSO packets with IPv4 total
        // length 0; only orig_len tells how long they were.
        let dir = TempDir::new().unwrap();
        let mut ip = ip_tcp(CLIENT4, SERVICE4, 1, DATA, &[b'a'; 40]);
        ip[2] = 0;
        ip[3] = 0;
        let f = frame(1, &ip);
        let path = write_pcap(
            &dir,
            1,
            &[Rec {
                ts: Duration::ZERO,
                orig_len: f.len() as u32 + 1000,
                data: f,
            }],
        );
        let (segs, stats) = read_all(&path, &[SERVICE4]);
        assert_eq!((segs[0].payload.len(), segs[0].missing), (40, 1000));
        assert_eq!(stats.truncated, 1);
    }

    #[test]
    fn skipped_packets_are_counted() {
        let dir = TempDir::new().unwrap();
        let request = ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"x");
        let mut first_fragment = request.clone();
        first_fragment[6] |= 0x20; // more fragments
        let mut later_fragment = request.clone();
        later_fragment[7] = 8; // offset 64 bytes
        let mut v6_fragment = ip_tcp(CLIENT6, SERVICE6, 1, DATA, b"x");
        v6_fragment[6] = 44; // next header: fragment
        let len = u16::from_be_bytes([v6_fragment[4], v6_fragment[5]]) + 8;
        v6_fragment[4..6].copy_from_slice(&len.to_be_bytes());
        v6_fragment.splice(40..40, [6, 0, 0, 1, 0, 0, 0, 9]); // offset 0, M=1
        let mut bad_ihl = request.clone();
        bad_ihl[0] = 0x43;
        let mut bad_data_offset = request.clone();
        bad_data_offset[20 + 12] = 0x20;
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[0; 20]);
        let recs = [
            rec(frame(1, &request)),
            rec(arp),
            rec(frame(1, &ip_udp([10, 0, 0, 1], [10, 0, 0, 2]))),
            rec(frame(1, &first_fragment)),
            rec(frame(1, &later_fragment)),
            rec(frame(1, &v6_fragment)),
            rec(frame(1, &ip_tcp(CLIENT4, "10.0.0.2:9090", 1, DATA, b"x"))),
            rec(frame(1, &ip_tcp("10.0.0.3:1", "10.0.0.4:2", 1, DATA, b"x"))),
            rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, 2, tcp_flags::ACK, b""))),
            rec(frame(1, &bad_ihl)),
            rec(frame(1, &bad_data_offset)),
            rec(vec![1, 2, 3]),
        ];
        let path = write_pcap(&dir, 1, &recs);
        let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
        assert_eq!(segs.len(), 1);
        assert_eq!(
            stats,
            ReadStats {
                packets: 12,
                segments: 1,
                pure_acks: 1,
                not_ip: 1,
                not_tcp: 1,
                fragments: 3,
                other_traffic: 2,
                malformed: 3,
                ..ReadStats::default()
            }
        );
    }

    #[test]
    fn syn_fin_rst_without_payload_are_delivered() {
        let dir = TempDir::new().unwrap();
        let recs = [
            tcp_flags::SYN,
            tcp_flags::FIN | tcp_flags::ACK,
            tcp_flags::RST,
        ]
        .map(|flags| rec(frame(101, &ip_tcp(CLIENT4, SERVICE4, 1, flags, b""))));
        let path = write_pcap(&dir, 101, &recs);
        let (segs, stats) = read_all(&path, &[SERVICE4]);
        let flags: Vec<u8> = segs.iter().map(|s| s.flags).collect();
        assert_eq!(
            flags,
            [
                tcp_flags::SYN,
                tcp_flags::FIN | tcp_flags::ACK,
                tcp_flags::RST
            ]
        );
        assert_eq!(stats.pure_acks, 0);
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let dir = TempDir::new().unwrap();
        let mut ip = ip_tcp(CLIENT6, SERVICE6, 1, DATA, b"hop");
        ip[6] = 0; // next header: hop-by-hop options
        let len = u16::from_be_bytes([ip[4], ip[5]]) + 8;
        ip[4..6].copy_from_slice(&len.to_be_bytes());
        ip.splice(40..40, [6, 0, 1, 4, 0, 0, 0, 0]); // next: TCP; PadN
        let path = write_pcap(&dir, 101, &[rec(ip)]);
        let (segs, _) = read_all(&path, &[SERVICE6]);
        assert_eq!(segs[0].payload, b"hop");
    }

    #[test]
    fn services_match_like_the_kernel() {
        let dir = TempDir::new().unwrap();
        let recs = [
            // :8080 matches any address.
            ip_tcp("10.0.0.1:1", "192.168.1.1:8080", 1, DATA, b"a"),
            // 10.0.0.2:9000 matches only that address.
            ip_tcp("10.0.0.1:1", "10.0.0.2:9000", 1, DATA, b"b"),
            ip_tcp("10.0.0.1:1", "10.0.0.3:9000", 1, DATA, b"c"),
            ip_tcp("10.0.0.2:9000", "10.0.0.1:1", 1, DATA, b"d"),
            // Between two services: the destination wins, a request.
            ip_tcp("10.0.0.2:9000", "10.0.0.9:8080", 1, DATA, b"e"),
            ip_tcp("[fd00::7]:1", "[fd00::9]:8080", 1, DATA, b"f"),
        ]
        .map(rec);
        let path = write_pcap(&dir, 101, &recs);
        let (segs, stats) = read_all(&path, &[":8080", "10.0.0.2:9000"]);
        let got: Vec<(Vec<u8>, Direction, ConnKey)> = segs
            .into_iter()
            .map(|s| (s.payload, s.direction, s.conn))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    b"a".to_vec(),
                    Direction::Request,
                    conn("10.0.0.1:1", "192.168.1.1:8080")
                ),
                (
                    b"b".to_vec(),
                    Direction::Request,
                    conn("10.0.0.1:1", "10.0.0.2:9000")
                ),
                (
                    b"d".to_vec(),
                    Direction::Response,
                    conn("10.0.0.1:1", "10.0.0.2:9000")
                ),
                (
                    b"e".to_vec(),
                    Direction::Request,
                    conn("10.0.0.2:9000", "10.0.0.9:8080")
                ),
                (
                    b"f".to_vec(),
                    Direction::Request,
                    conn("[fd00::7]:1", "[fd00::9]:8080")
                ),
            ]
        );
        assert_eq!(stats.other_traffic, 1);
    }

    fn open_err(path: &Path, svc: &[&str]) -> PcapReadError {
        match PcapSource::open(path, &services(svc)) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn not_a_capture_is_a_clear_error() {
        let dir = TempDir::new().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "GET / HTTP/1.1\r\n").unwrap();
        let e = open_err(&text, &[SERVICE4]);
        assert!(matches!(e, PcapReadError::NotPcap { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("not a pcap or pcapng file"), "{msg}");
        assert!(msg.contains("looks like text"), "{msg}");

        let empty = dir.path().join("empty.pcap");
        std::fs::write(&empty, "").unwrap();
        assert!(open_err(&empty, &[SERVICE4]).to_string().contains("empty"));

        let gz = dir.path().join("c.pcap.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0]).unwrap();
        assert!(open_err(&gz, &[SERVICE4]).to_string().contains("gzip"));

        let short = dir.path().join("short.pcap");
        std::fs::write(&short, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).unwrap();
        assert!(matches!(
            open_err(&short, &[SERVICE4]),
            PcapReadError::Header { .. }
        ));

        let missing = dir.path().join("nope.pcap");
        assert!(matches!(
            open_err(&missing, &[SERVICE4]),
            PcapReadError::Open { .. }
        ));
        assert!(matches!(open_err(&text, &[]), PcapReadError::NoServices));
    }

    #[test]
    fn unsupported_link_type_names_the_supported_ones() {
        let dir = TempDir::new().unwrap();
        let path = write_pcap(&dir, 147, &[]);
        let e = open_err(&path, &[SERVICE4]);
        let msg = e.to_string();
        assert!(msg.contains("link type 147"), "{msg}");
        assert!(msg.contains("LINUX_SLL2 (276)"), "{msg}");
    }

    #[test]
    fn file_cut_mid_record_delivers_what_is_there() {
        let dir = TempDir::new().unwrap();
        let one = rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"first")));
        let two = rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, 6, DATA, b"second")));
        let path = write_pcap(&dir, 1, &[one, two]);
        let len = std::fs::metadata(&path).unwrap().len();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let (segs, stats) = read_all(&path, &[SERVICE4]);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].payload, b"first");
        assert!(stats.cut_short);
    }

    #[test]
    fn try_for_each_stops_and_resumes() {
        let dir = TempDir::new().unwrap();
        let recs: Vec<Rec> = (0..3u8)
            .map(|i| rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, i.into(), DATA, &[i]))))
            .collect();
        let path = write_pcap(&dir, 1, &recs);
        let mut src = PcapSource::open(&path, &services(&[SERVICE4])).unwrap();
        let first = src.try_for_each(|s| ControlFlow::Break(s.payload.to_vec()));
        assert_eq!(first.unwrap(), ControlFlow::Break(vec![0]));
        let mut rest = Vec::new();
        src.for_each(|s| rest.extend_from_slice(s.payload)).unwrap();
        assert_eq!(rest, [1, 2]);
        // Ended: nothing more.
        src.for_each(|_| panic!("delivered after the end")).unwrap();
        assert_eq!(src.stats().segments, 3);
    }

    #[test]
    fn read_batch_bounds_the_packets_read() {
        let dir = TempDir::new().unwrap();
        let mut recs: Vec<Rec> = (0..5u8)
            .map(|i| rec(frame(1, &ip_tcp(CLIENT4, SERVICE4, i.into(), DATA, &[i]))))
            .collect();
        // Not a segment: still a packet of the budget.
        recs.insert(2, rec(frame(1, &ip_udp([10, 0, 0, 1], [10, 0, 0, 2]))));
        let path = write_pcap(&dir, 1, &recs);
        let mut src = PcapSource::open(&path, &services(&[SERVICE4])).unwrap();
        let mut batches = Vec::new();
        loop {
            let mut batch = Vec::new();
            let more = src.read_batch(2, |s| batch.push(s.payload[0])).unwrap();
            batches.push(batch);
            if !more {
                break;
            }
        }
        assert_eq!(
            batches,
            [vec![0, 1], vec![2], vec![3, 4], vec![]],
            "2 packets per batch, the last call finds the end"
        );
        assert_eq!(src.stats().packets, 6);
        assert!(!src.read_batch(2, |_| panic!("after the end")).unwrap());
    }

    fn idb(
        linktype: u32,
        options: Vec<InterfaceDescriptionOption<'static>>,
    ) -> InterfaceDescriptionBlock<'static> {
        InterfaceDescriptionBlock {
            linktype: DataLink::from(linktype),
            snaplen: 0,
            options,
        }
    }

    fn epb(interface_id: u32, units: u64, data: &[u8]) -> EnhancedPacketBlock<'_> {
        EnhancedPacketBlock {
            interface_id,
            // pcap-file writes the Duration's nanoseconds as raw units.
            timestamp: Duration::from_nanos(units),
            original_len: data.len() as u32,
            data: Cow::Borrowed(data),
            options: vec![],
        }
    }

    #[test]
    fn pcapng_sections_interfaces_and_packet_blocks() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("c.pcapng");
        let eth = frame(1, &ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"eth"));
        let raw = ip_tcp(SERVICE6, CLIENT6, 2, DATA, b"raw");
        let sll2 = frame(276, &ip_tcp(CLIENT4, SERVICE4, 3, DATA, b"sll2"));
        let mut w =
            PcapNgWriter::with_endianness(File::create(&path).unwrap(), Endianness::Big).unwrap();
        // Interface 0: Ethernet, nanoseconds. 1: an unsupported link type.
        // 2: RAW, default microseconds, +10 s offset.
        w.write_pcapng_block(idb(1, vec![InterfaceDescriptionOption::IfTsResol(9)]))
            .unwrap();
        w.write_pcapng_block(idb(147, vec![])).unwrap();
        w.write_pcapng_block(idb(101, vec![InterfaceDescriptionOption::IfTsOffset(10)]))
            .unwrap();
        w.write_pcapng_block(epb(0, 1_700_000_000_123_456_789, &eth))
            .unwrap();
        w.write_pcapng_block(epb(1, 0, b"usb")).unwrap();
        w.write_pcapng_block(epb(2, 1_700_000_000_123_456, &raw))
            .unwrap();
        // A packet block naming an interface that was never described.
        let mut body = Vec::new();
        for v in [7u32, 0, 0, 4, 4] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        body.extend_from_slice(b"lost");
        w.write_raw_block(&RawBlock {
            type_: ENHANCED_PACKET_BLOCK,
            initial_len: 12 + body.len() as u32,
            body: Cow::Owned(body),
            trailer_len: 12 + 24,
        })
        .unwrap();
        // A new little-endian section: interfaces start over. Simple packet
        // blocks (interface 0, no timestamp) and 2^-n resolution.
        w.write_pcapng_block(SectionHeaderBlock {
            endianness: Endianness::Little,
            ..SectionHeaderBlock::default()
        })
        .unwrap();
        w.write_pcapng_block(idb(
            276,
            vec![InterfaceDescriptionOption::IfTsResol(0x80 | 10)],
        ))
        .unwrap();
        w.write_pcapng_block(SimplePacketBlock {
            original_len: sll2.len() as u32,
            data: Cow::Borrowed(&sll2),
        })
        .unwrap();
        w.write_pcapng_block(epb(0, 3 * 1024 + 512, &sll2)).unwrap();
        w.into_inner().flush().unwrap();

        let (segs, stats) = read_all(&path, &[SERVICE4, SERVICE6]);
        let got: Vec<(u64, Vec<u8>)> = segs.into_iter().map(|s| (s.ts_ns, s.payload)).collect();
        assert_eq!(
            got,
            vec![
                (1_700_000_000_123_456_789, b"eth".to_vec()),
                (1_700_000_010_123_456_000, b"raw".to_vec()),
                (0, b"sll2".to_vec()),
                (3_500_000_000, b"sll2".to_vec()),
            ]
        );
        assert_eq!(stats.unsupported_linktype, 1);
        assert_eq!(stats.malformed, 1);
        assert_eq!(stats.packets, 6);
    }

    #[test]
    fn timestamp_units() {
        let iface = |unit, offset_s| Iface {
            link: None,
            snaplen: 0,
            unit,
            offset_s,
        };
        assert_eq!(iface(TsUnit::Pow10(6), 0).ts_ns(5), 5_000);
        assert_eq!(iface(TsUnit::Pow10(9), 0).ts_ns(5), 5);
        assert_eq!(iface(TsUnit::Pow10(12), 0).ts_ns(5_000), 5);
        assert_eq!(iface(TsUnit::Pow10(127), 0).ts_ns(u64::MAX), 0);
        assert_eq!(iface(TsUnit::Pow10(0), 0).ts_ns(u64::MAX), u64::MAX);
        assert_eq!(iface(TsUnit::Pow2(1), 0).ts_ns(3), 1_500_000_000);
        assert_eq!(iface(TsUnit::Pow2(127), 0).ts_ns(3), 0);
        assert_eq!(iface(TsUnit::Pow10(0), -5).ts_ns(3), 0);
        assert_eq!(iface(TsUnit::Pow10(0), 2).ts_ns(3), 5_000_000_000);
    }

    #[test]
    fn null_loopback_with_unknown_family_is_not_ip() {
        let dir = TempDir::new().unwrap();
        let mut f = 99u32.to_le_bytes().to_vec();
        f.extend_from_slice(&ip_tcp(CLIENT4, SERVICE4, 1, DATA, b"x"));
        let path = write_pcap(&dir, 0, &[rec(f)]);
        let (_, stats) = read_all(&path, &[SERVICE4]);
        assert_eq!(stats.not_ip, 1);
    }
}
