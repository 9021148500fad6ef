//! Capture file formats: telling pcap from pcapng by the magic number, and
//! reading a file's records as link-layer packets.
//!
//! [`Input`] reads a file record by record and hands each packet record to
//! its caller as a [`Record`]: the packet's bytes, borrowed from the
//! reader's buffer, with its [`Link`] type, its length on the wire and its
//! timestamp in nanoseconds since the Unix epoch; or why it cannot be
//! decoded. Other blocks (section headers, interface descriptions,
//! statistics, name resolution, ...) change how later packets are read, or
//! are skipped; they are not records.
//!
//! # pcap
//!
//! pcap-file's `PcapReader` reads the file header (byte order, microsecond
//! or nanosecond timestamps, the file's one link type) and its records.
//!
//! # pcapng
//!
//! pcap-file's `PcapNgReader` frames the blocks (`next_raw_block`, in
//! place) and parses the section headers and the interface description
//! blocks, options included, into its list of the section's interfaces.
//! The packet blocks (Enhanced, Simple, and the obsolete Packet block) are
//! decoded by hand here ([`parse_packet_block`]) in the section's byte
//! order, and not with pcap-file's typed blocks (`next_block`), because
//! what pcap-file 2.0 makes of them is not what this reader needs:
//!
//! - `EnhancedPacketBlock::timestamp` is the block's 64-bit timestamp taken
//!   as nanoseconds, whatever the interface's `if_tsresol` says, and
//!   `if_tsoffset` is not added: pcap-file parses both options but nothing
//!   in it applies them (`PacketBlock::timestamp` is left in raw units).
//!   With the default resolution, microseconds, every timestamp would be a
//!   thousand times too small. [`Iface::ts_ns`] applies both per interface,
//!   powers of 2 included.
//! - `SimplePacketBlock::data` is the rest of the block, padding included,
//!   not cut to the packet's original length and the interface's snapshot
//!   length.
//! - A packet block it cannot parse (captured length past the end of the
//!   block, an option that is not valid, such as a comment that is not
//!   UTF-8) is an error that `next_block` returns again and again without
//!   moving past the block, so the rest of the file is lost. Here such a
//!   block, or one that names an interface that was never described, is one
//!   packet counted in [`ReadStats::malformed`](super::ReadStats::malformed).
//! - Each packet's options are collected in a `Vec`: an allocation for every
//!   packet that has options, where this reader allocates nothing per
//!   packet.

use std::{
    fmt::Write as _,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::Path,
};

use pcap_file::{
    DataLink, Endianness, PcapError, TsResolution,
    pcap::PcapReader,
    pcapng::{PcapNgReader, blocks::interface_description::InterfaceDescriptionOption},
};

use super::{
    PcapReadError,
    decode::{Link, Packet, SUPPORTED_LINK_TYPES},
};

/// pcapng block types (pcapng specification, section 11.1).
const SECTION_HEADER_BLOCK: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION_BLOCK: u32 = 1;
const PACKET_BLOCK: u32 = 2;
const SIMPLE_PACKET_BLOCK: u32 = 3;
const ENHANCED_PACKET_BLOCK: u32 = 6;

/// A capture file being read, by format.
pub(super) enum Input {
    Pcap {
        reader: PcapReader<File>,
        link: Link,
        /// The file's link type, as its header gives it.
        linktype: u32,
        /// Nanoseconds per unit of the fractional timestamp (1000 or 1).
        frac_ns: u64,
    },
    PcapNg {
        reader: PcapNgReader<File>,
        /// Byte order of the current section.
        big_endian: bool,
        /// Interfaces of the current section, by interface id.
        ifaces: Vec<Iface>,
        /// Link types of every interface described so far, each once, in
        /// the order they first appeared.
        linktypes: Vec<u32>,
    },
}

/// A packet record of the file.
pub(super) enum Record<'a> {
    /// A packet of a link type that can be decoded.
    Packet(Link, Packet<'a>),
    /// A pcapng packet block that is malformed or names an interface that
    /// was never described.
    Malformed,
    /// A pcapng packet of an interface whose link type is not supported.
    UnsupportedLinkType,
}

impl Input {
    /// Opens a pcap or pcapng file, recognised by its magic number.
    ///
    /// Fails when the file cannot be opened, is not a capture file, or
    /// (pcap) has a link type that is not supported.
    pub(super) fn open(path: &Path) -> Result<Self, PcapReadError> {
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
        Ok(match magic {
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
                Self::Pcap {
                    reader,
                    link,
                    linktype,
                    frac_ns,
                }
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                let reader = PcapNgReader::new(file).map_err(header_err)?;
                let big_endian = reader.section().endianness == Endianness::Big;
                Self::PcapNg {
                    reader,
                    big_endian,
                    ifaces: Vec::new(),
                    linktypes: Vec::new(),
                }
            }
            other => {
                return Err(PcapReadError::NotPcap {
                    path: path.to_owned(),
                    found: describe_magic(other),
                });
            }
        })
    }

    /// The link types of the file (pcap) or of the interfaces described so
    /// far (pcapng), each once.
    pub(super) fn linktypes(&self) -> &[u32] {
        match self {
            Self::Pcap { linktype, .. } => std::slice::from_ref(linktype),
            Self::PcapNg { linktypes, .. } => linktypes,
        }
    }

    /// Reads the next packet record and hands it to `f`; `None` once the
    /// file has ended. Blocks that are not packets are read on the way.
    pub(super) fn next<T>(
        &mut self,
        path: &Path,
        f: impl FnOnce(Record<'_>) -> T,
    ) -> Option<Result<T, PcapError>> {
        match self {
            Self::Pcap {
                reader,
                link,
                frac_ns,
                ..
            } => {
                let raw = match reader.next_raw_packet()? {
                    Ok(raw) => raw,
                    Err(e) => return Some(Err(e)),
                };
                let ts_ns =
                    u64::from(raw.ts_sec) * 1_000_000_000 + u64::from(raw.ts_frac) * *frac_ns;
                let packet = Packet {
                    data: &raw.data,
                    orig_len: raw.orig_len,
                    ts_ns,
                };
                Some(Ok(f(Record::Packet(*link, packet))))
            }
            Self::PcapNg {
                reader,
                big_endian,
                ifaces,
                linktypes,
            } => loop {
                let block = match reader.next_raw_block()? {
                    Ok(block) => block,
                    Err(e) => return Some(Err(e)),
                };
                let body: &[u8] = &block.body;
                match block.type_ {
                    SECTION_HEADER_BLOCK => {
                        // The byte-order magic opens the body; the reader
                        // already checked it is one of the two.
                        *big_endian = body.get(..4) == Some(&[0x1a, 0x2b, 0x3c, 0x4d]);
                        ifaces.clear();
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
                            let linktype = u32::from(idb.linktype);
                            if !linktypes.contains(&linktype) {
                                linktypes.push(linktype);
                            }
                        }
                    }
                    ENHANCED_PACKET_BLOCK | PACKET_BLOCK | SIMPLE_PACKET_BLOCK => {
                        let record =
                            match parse_packet_block(block.type_, body, *big_endian, ifaces) {
                                None => Record::Malformed,
                                Some((iface, packet)) => match iface.link {
                                    Some(link) => Record::Packet(link, packet),
                                    None => Record::UnsupportedLinkType,
                                },
                            };
                        return Some(Ok(f(record)));
                    }
                    _ => {}
                }
            },
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
pub(super) struct Iface {
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

#[cfg(test)]
mod tests;
