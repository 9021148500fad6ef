//! Packet decoding: from a captured frame's link-layer header down to its
//! TCP segment, and whether the offline pipeline gets that segment.
//!
//! [`decode`] takes one [`Packet`]: a record's bytes from the link-layer
//! header on, framed as its [`Link`] says (Ethernet II with 802.1Q / 802.1ad
//! tags, raw IPv4 or IPv6, Linux cooked capture v1 and v2, BSD loopback).
//! It slices the packet in place with etherparse, through IPv4 options and
//! IPv6 extension headers; a PPPoE session frame (EtherType 0x8864, which
//! etherparse does not know) is unwrapped by hand first ([`pppoe_session`]).
//! It returns a [`TcpSegment`] borrowing the
//! packet's bytes when the segment belongs to an old service's connection
//! ([`Services`]). Which segments are delivered, and how a packet cut by
//! the snapshot length is reported, is in the [reader's
//! documentation](super).
//!
//! Invariant: [`decode`] counts every packet it is given in exactly one of
//! [`ReadStats::segments`], `pure_acks`, `not_ip`, `not_tcp`, `fragments`,
//! `other_traffic`, `malformed` and `headers_cut`, and counts a delivered
//! segment with missing payload in `truncated` too.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
};

use etherparse::{
    EtherType, IpNumber, LaxNetSlice, LaxSlicedPacket, LenSource, TransportSlice, err::Layer,
};
use parallelrun_common::ServiceKey;

use super::ReadStats;
use crate::{
    capture::conn_sampled,
    model::{ConnKey, Direction, TcpSegment, tcp_flags},
    service::{ServiceAddr, addr16},
};

/// The link types [`PcapSource`](super::PcapSource) reads, as named in error
/// messages. Those with an EtherType (Ethernet, Linux cooked capture) may
/// carry PPPoE session frames.
pub const SUPPORTED_LINK_TYPES: &str = "ETHERNET (1), RAW (101), IPV4 (228), IPV6 (229), \
     LINUX_SLL (113), LINUX_SLL2 (276), NULL (0), LOOP (108)";

/// How a link type frames the IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Link {
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
    pub(super) fn from_linktype(linktype: u32) -> Option<Self> {
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

/// One packet record: the captured bytes from the link-layer header on.
#[derive(Clone, Copy)]
pub(super) struct Packet<'a> {
    pub(super) data: &'a [u8],
    /// Length of the packet on the wire.
    pub(super) orig_len: u32,
    /// Nanoseconds since the Unix epoch.
    pub(super) ts_ns: u64,
}

impl Packet<'_> {
    /// The snapshot length cut this packet.
    fn cut(&self) -> bool {
        (self.data.len() as u64) < u64::from(self.orig_len)
    }
}

/// The old services, looked up the way the kernel side does (`is_service`
/// in the eBPF crate): the exact address and port, then any address on the
/// port.
pub(super) struct Services {
    keys: HashSet<ServiceKey>,
}

impl Services {
    pub(super) fn new(services: &[ServiceAddr]) -> Self {
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
pub(super) fn decode<'a>(
    link: Link,
    packet: Packet<'a>,
    services: &Services,
    sample_threshold: u64,
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
    // Connection sampling after the pure-ACK test, as in the kernel.
    if !conn_sampled(&seg.conn, sample_threshold) {
        stats.sampled_out += 1;
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

/// EtherType of PPPoE session frames (RFC 2516).
const PPPOE_SESSION: EtherType = EtherType(0x8864);

/// Slices the packet below its link-layer header (etherparse, in place),
/// through a PPPoE session header if there is one.
fn slice_link(link: Link, data: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    let sliced = slice_link_header(link, data)?;
    if sliced.net.is_none() && sliced.stop_err.is_none() {
        match sliced.ether_payload() {
            Some(p) if p.ether_type == PPPOE_SESSION => return pppoe_session(p.payload),
            _ => {}
        }
    }
    Ok(sliced)
}

/// The IP packet in a PPPoE session frame's payload (RFC 2516 §4: version
/// and type 0x11, code 0, session id, length; then the PPP protocol field,
/// RFC 1661 §2, two bytes or one when compressed (RFC 1661 §6.5: an odd
/// first byte): 0x0021 IPv4, 0x0057 IPv6). Other PPP protocols (LCP, IPCP,
/// ...) are not IP.
fn pppoe_session(payload: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    let [0x11, 0, _, _, len_hi, len_lo, ppp @ ..] = payload else {
        return Err(Skip::Broken);
    };
    let length = usize::from(u16::from_be_bytes([*len_hi, *len_lo]));
    // The length leaves out Ethernet padding; a capture may have cut the
    // frame short of it (then the IP layer finds the packet incomplete).
    let ppp = ppp.get(..length).unwrap_or(ppp);
    let (protocol, ip) = match ppp {
        [p, rest @ ..] if p & 1 == 1 => (u16::from(*p), rest),
        [hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]), rest),
        _ => return Err(Skip::Broken),
    };
    match protocol {
        0x0021 => Ok(LaxSlicedPacket::from_ether_type(EtherType::IPV4, ip)),
        0x0057 => Ok(LaxSlicedPacket::from_ether_type(EtherType::IPV6, ip)),
        _ => Err(Skip::NotIp),
    }
}

/// Slices the packet below its link-layer header.
fn slice_link_header(link: Link, data: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
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
