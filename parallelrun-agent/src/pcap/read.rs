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
mod tests;
