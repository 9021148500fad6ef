//! A ring-buffer record read in place: the fixed [`SegmentHeader`] and a
//! borrowed payload slice. No allocation per record. Records may be longer
//! than header + payload (size-class padding, up to about twice); only
//! `captured_len` bytes after the header are payload.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::UNIX_EPOCH,
};

use parallelrun_common::{Direction, HEADER_LEN, SegmentHeader};

use crate::model::{ConnKey, TcpSegment};

/// One captured TCP segment, borrowing its payload from the ring buffer (or
/// from any buffer holding a record).
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub header: SegmentHeader,
    pub direction: Direction,
    pub payload: &'a [u8],
    /// The kernel dropped records (ring buffer full) right before this one:
    /// its `drop_epoch` differs from the previous record's.
    pub drops_before: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("record of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("record says {claimed} payload bytes but carries {carried}")]
    Length { claimed: u32, carried: usize },
    #[error("record has unknown direction {0}")]
    Direction(u8),
    #[error("record has unknown address family {0}")]
    Family(u8),
}

impl<'a> Segment<'a> {
    /// Reads a record as the kernel side wrote it.
    pub fn parse(record: &'a [u8]) -> Result<Self, SegmentError> {
        let Some((head, payload)) = record.split_at_checked(HEADER_LEN) else {
            return Err(SegmentError::Short(record.len()));
        };
        // SAFETY: `head` is HEADER_LEN bytes and SegmentHeader is repr(C)
        // plain old data; read_unaligned makes no alignment assumption.
        let header = unsafe { head.as_ptr().cast::<SegmentHeader>().read_unaligned() };
        // Records are longer than header + payload: the kernel reserves one
        // of a few size classes (payload capacity a power of two, see
        // `parallelrun_common::SizedRecord`), and the ring pads to 8 bytes.
        // The header says how many of the trailing bytes are payload; the
        // rest is padding, ignored. A record shorter than that is refused.
        let captured = header.captured_len as usize;
        let Some(payload) = payload.get(..captured) else {
            return Err(SegmentError::Length {
                claimed: header.captured_len,
                carried: payload.len(),
            });
        };
        if header.captured_len > header.payload_len {
            return Err(SegmentError::Length {
                claimed: header.payload_len,
                carried: captured,
            });
        }
        let direction = Direction::from_u8(header.direction)
            .ok_or(SegmentError::Direction(header.direction))?;
        if header.family != 4 && header.family != 6 {
            return Err(SegmentError::Family(header.family));
        }
        Ok(Self {
            header,
            direction,
            payload,
            drops_before: false,
        })
    }

    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(
            ip(self.header.family, &self.header.saddr),
            self.header.sport,
        )
    }

    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(
            ip(self.header.family, &self.header.daddr),
            self.header.dport,
        )
    }

    /// The segment as the pipeline sees it, with its timestamp on the wall
    /// clock. Borrows the payload; no copy.
    pub fn to_tcp(&self, clock: &super::Clock) -> TcpSegment<'a> {
        let ts_ns = clock
            .wall(self.header.ts_ns)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64);
        let (client, server) = match self.direction {
            Direction::Request => (self.src(), self.dst()),
            Direction::Response => (self.dst(), self.src()),
        };
        TcpSegment {
            ts_ns,
            conn: ConnKey { client, server },
            direction: self.direction,
            seq: self.header.seq,
            ack: self.header.ack,
            flags: self.header.flags,
            payload: self.payload,
            missing: self
                .header
                .payload_len
                .saturating_sub(self.header.captured_len),
        }
    }

    /// True when the skb carried more payload than was copied.
    pub fn truncated(&self) -> bool {
        self.header.captured_len < self.header.payload_len
    }
}

fn ip(family: u8, a: &[u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

#[cfg(test)]
pub(crate) mod tests;
