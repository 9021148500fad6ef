//! TCP reassembly: segments to in-order streams per connection and direction.
//!
//! A [`Reassembler`] tracks connections by [`ConnKey`](crate::model::ConnKey) and turns the segments
//! of each direction into the in-order byte stream a [`StreamHandler`]
//! consumes, with gaps where bytes will never arrive.
//!
//! # Sequence space
//!
//! Each direction maps sequence numbers to 64-bit stream offsets from its
//! origin (offset 0 = the first payload byte: ISN + 1 after a SYN, else the
//! first segment seen with payload or FIN). A sequence number is placed
//! within ±2 GiB of the next expected byte, so the 32-bit wrap-around is
//! invisible to the handler.
//!
//! # Delivery
//!
//! * In-order payload is handed to [`StreamHandler::data`] straight from the
//!   segment (no copy); buffered pieces that became contiguous follow.
//! * Payload ahead of the next expected byte is copied into the direction's
//!   buffer. Each buffered piece costs its bytes plus [`PIECE_OVERHEAD`]
//!   against [`ReassemblyConfig::max_conn_buffer`] and
//!   [`ReassemblyConfig::max_total_buffer`] (and in
//!   [`ReassemblyStats::buffered_bytes`]), so tiny segments cannot hold much
//!   more memory than the limits say.
//! * Bytes before the next expected byte (or before the origin) were seen
//!   already: they are trimmed and counted in
//!   [`ReassemblyStats::retransmitted_bytes`]. Delivered bytes are not kept,
//!   so only overlaps with buffered bytes are compared: the first copy wins
//!   and differing bytes are counted in
//!   [`ReassemblyStats::conflicting_bytes`]. The first FIN wins too: bytes
//!   after it count as conflicting.
//! * [`TcpSegment::missing`] bytes (cut by the capture) are reported with
//!   [`StreamHandler::gap`] (`ring_drops = false`: the cause is known) in
//!   their place in the stream.
//!
//! # Holes
//!
//! A hole (bytes expected before what is buffered, or before what the peer
//! acknowledged) becomes a permanent gap, reported with its length before
//! what follows it is delivered, when:
//!
//! * a segment of the other direction with the ACK flag acknowledges bytes
//!   past the hole's start: the receiver got them, so they were on the wire
//!   and the capture lost them. This also reports a missing tail that
//!   nothing was buffered after (the last segment of a response, reported
//!   when the next request acknowledges it);
//! * the direction's buffer exceeds [`ReassemblyConfig::max_conn_buffer`];
//! * the total buffer exceeds [`ReassemblyConfig::max_total_buffer`]: the
//!   direction that just buffered gives up its holes, first one first, until
//!   the total is within the limit. As only a push adds to the total, this
//!   keeps every other connection's buffer intact and costs O(1) to decide;
//! * the connection closes (FIN from both sides, RST, idle, eviction, end of
//!   input, port reuse): every hole up to the last buffered byte, or up to
//!   the FIN when it was seen, is reported.
//!
//! Holes given up because of the buffer limits are also counted in
//! [`ReassemblyStats::buffer_limit_gaps`].
//!
//! # Ring-buffer drops
//!
//! [`Reassembler::note_ring_drops`] advances a drop epoch. A hole gap passes
//! `ring_drops = true` when drops were noted since that direction last
//! reported a gap (or was opened), so one burst of drops marks the first gap
//! of every connection it hit, not only the first gap anywhere. The caller
//! should note drops as soon as it sees the kernel's counter rise, before it
//! pushes the segments read after that: a hole declared before the drops
//! are noted is reported with `ring_drops = false`.
//!
//! # Connections
//!
//! * A SYN for an unknown connection opens it (`midstream = false`); so does
//!   a SYN-ACK (the client's SYN was missed; its ACK gives the request
//!   direction's origin). A segment with payload and without SYN opens it
//!   `midstream`. Other segments of unknown connections (RST, FIN or pure
//!   ACK after a close) are ignored and counted in
//!   [`ReassemblyStats::ignored`].
//! * A SYN without ACK whose ISN differs from the known one is a new
//!   connection on a reused port: the old one is closed
//!   ([`CloseReason::End`]) and a new one opened.
//! * A FIN is reported ([`StreamHandler::fin`]) once every byte before it is
//!   delivered; when both directions finished, the connection is closed
//!   ([`CloseReason::Fin`]) and forgotten. A RST reports what is buffered
//!   (holes as gaps) and closes ([`CloseReason::Rst`]).
//! * Connections are kept on a list in order of their last segment. At
//!   [`ReassemblyConfig::max_connections`], a new connection evicts the least
//!   recently active one ([`CloseReason::Evicted`]) in O(1).
//!   [`Reassembler::expire`] walks that list from its idle end and stops at
//!   the first connection still active, so it costs O(expired + 1), not a
//!   scan of every connection. An expired connection closes with
//!   [`CloseReason::Idle`], or [`CloseReason::Fin`] when a FIN was seen in
//!   one direction (the [`CloseReason`] contract: one FIN, other side idle).
//!
//! Closes are counted by the reason given to the handler:
//! [`ReassemblyStats::closed_fin`], `closed_rst`, `closed_idle`, `evicted`,
//! `closed_end`.

mod direction;
mod table;

#[cfg(test)]
mod tests;

use crate::model::{Direction, TcpSegment, tcp_flags};
use crate::stream::{CloseReason, StreamHandler};

pub use direction::PIECE_OVERHEAD;
use direction::{DirState, Out, add};
use table::Table;

/// Limits of a [`Reassembler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Connections tracked at once; a new one beyond it evicts the least
    /// recently active. At least one is always tracked.
    pub max_connections: usize,
    /// Bytes held out of order per connection and direction (with
    /// [`PIECE_OVERHEAD`] per piece); beyond it holes become gaps.
    pub max_conn_buffer: usize,
    /// Bytes held out of order by all connections together (with
    /// [`PIECE_OVERHEAD`] per piece); beyond it the direction that buffered
    /// last gives up its holes. One segment may exceed it briefly.
    pub max_total_buffer: usize,
    /// A connection without a segment for longer than this is closed by
    /// [`Reassembler::expire`].
    pub idle_timeout_ns: u64,
    /// The capture sees every byte on the wire unless its ring buffer
    /// overflows (live TC capture: a segment lost on the network is
    /// retransmitted, and the retransmission passes the hook). Then, once
    /// any ring-buffer drop was noted, every hole is blamed on drops. Off
    /// for pcaps, whose capturer may lose packets silently.
    pub lossless_capture: bool,
}

impl Default for ReassemblyConfig {
    /// 65 536 connections, 4 MiB per connection and direction, 256 MiB in
    /// total, 60 s idle timeout.
    fn default() -> Self {
        Self {
            max_connections: 65_536,
            max_conn_buffer: 4 << 20,
            max_total_buffer: 256 << 20,
            idle_timeout_ns: 60_000_000_000,
            lossless_capture: false,
        }
    }
}

/// Counters of a [`Reassembler`]; every segment or byte it drops or skips is
/// counted in one of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReassemblyStats {
    /// Segments pushed.
    pub segments: u64,
    /// Connections opened (midstream ones included).
    pub connections_opened: u64,
    /// Connections opened without their SYN or SYN-ACK seen.
    pub midstream_opened: u64,
    /// Connections closed with [`CloseReason::Fin`].
    pub closed_fin: u64,
    /// Connections closed with [`CloseReason::Rst`].
    pub closed_rst: u64,
    /// Connections closed with [`CloseReason::Idle`].
    pub closed_idle: u64,
    /// Connections closed with [`CloseReason::Evicted`] (connection limit).
    pub evicted: u64,
    /// Connections closed with [`CloseReason::End`] (end of input, or a new
    /// SYN on a reused port).
    pub closed_end: u64,
    /// Segments that arrived ahead of the next expected byte and were
    /// buffered.
    pub out_of_order: u64,
    /// Bytes seen again (already delivered or buffered) and dropped.
    pub retransmitted_bytes: u64,
    /// Bytes whose later copy differed from the buffered first copy (which
    /// was kept), or that came after the stream's FIN.
    pub conflicting_bytes: u64,
    /// Gaps reported to the handler (hole or bytes cut by the capture).
    pub gaps: u64,
    /// Bytes in those gaps.
    pub gap_bytes: u64,
    /// Gaps forced by [`ReassemblyConfig::max_conn_buffer`] or
    /// [`ReassemblyConfig::max_total_buffer`] (also in `gaps`).
    pub buffer_limit_gaps: u64,
    /// Segments ignored: RST, FIN or pure ACK of an unknown connection, or a
    /// FIN contradicting the stream's first FIN or delivered bytes.
    pub ignored: u64,
    /// Bytes held out of order now (with [`PIECE_OVERHEAD`] per piece).
    pub buffered_bytes: u64,
    /// Highest `buffered_bytes` so far.
    pub peak_buffered_bytes: u64,
}

/// A tracked connection.
struct Conn<C> {
    /// The handler's state.
    state: C,
    /// Request, response.
    dirs: [DirState; 2],
    /// Newest segment timestamp.
    last_ts: u64,
}

/// Direction `dir` of `dirs` and the other one.
fn pair(dirs: &mut [DirState; 2], dir: Direction) -> (&mut DirState, &mut DirState) {
    let [req, resp] = dirs;
    match dir {
        Direction::Request => (req, resp),
        Direction::Response => (resp, req),
    }
}

impl<C> Conn<C> {
    fn dir(&self, dir: Direction) -> &DirState {
        let [req, resp] = &self.dirs;
        match dir {
            Direction::Request => req,
            Direction::Response => resp,
        }
    }
}

/// TCP reassembly over all connections, driving a [`StreamHandler`]. See the
/// [module documentation](self) for the semantics.
pub struct Reassembler<H: StreamHandler> {
    cfg: ReassemblyConfig,
    handler: H,
    conns: Table<Conn<H::Conn>>,
    stats: ReassemblyStats,
    /// Advanced by [`Reassembler::note_ring_drops`].
    drop_epoch: u64,
}

impl<H: StreamHandler> Reassembler<H> {
    /// A reassembler with no connections, reporting to `handler`.
    pub fn new(cfg: ReassemblyConfig, handler: H) -> Self {
        Self {
            cfg,
            handler,
            conns: Table::new(),
            stats: ReassemblyStats::default(),
            drop_epoch: 0,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably (to collect what it produced).
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The handler, giving up the connections still tracked without closing
    /// them (call [`Reassembler::finish`] first to close them).
    pub fn into_handler(self) -> H {
        self.handler
    }

    /// Counters so far.
    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The kernel reported ring-buffer drops: the next hole gap of every
    /// direction passes `ring_drops = true` (see the module documentation).
    pub fn note_ring_drops(&mut self) {
        self.drop_epoch = self.drop_epoch.wrapping_add(1);
    }

    /// Feeds one segment.
    pub fn push(&mut self, seg: &TcpSegment<'_>) {
        add(&mut self.stats.segments, 1);
        let syn = seg.has(tcp_flags::SYN);
        let client_syn = syn && !seg.has(tcp_flags::ACK);
        let idx = match self.conns.find(&seg.conn) {
            Some(idx) if client_syn && self.is_new_syn(idx, seg) => {
                self.close(idx, seg.ts_ns, CloseReason::End);
                self.open(seg, false)
            }
            Some(idx) => idx,
            None if seg.has(tcp_flags::RST) => {
                add(&mut self.stats.ignored, 1);
                return;
            }
            None if syn => self.open(seg, false),
            None if !seg.payload.is_empty() || seg.missing > 0 => self.open(seg, true),
            None => {
                add(&mut self.stats.ignored, 1);
                return;
            }
        };
        self.conns.touch(idx);
        if let Some(reason) = self.process(idx, seg) {
            self.close(idx, seg.ts_ns, reason);
        }
    }

    /// Closes the connections without a segment for longer than
    /// [`ReassemblyConfig::idle_timeout_ns`] before `now_ns`. Meant to be
    /// called about once a second; costs O(expired + 1).
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(idx) = self.conns.tail() {
            let Some((_, conn)) = self.conns.get(idx) else {
                break;
            };
            if now_ns.saturating_sub(conn.last_ts) <= self.cfg.idle_timeout_ns {
                break;
            }
            let reason = if conn.dirs.iter().any(DirState::fin_seen) {
                CloseReason::Fin
            } else {
                CloseReason::Idle
            };
            self.close(idx, now_ns, reason);
        }
    }

    /// The input ended: closes every connection ([`CloseReason::End`]),
    /// least recently active first, after reporting what they buffered.
    pub fn finish(&mut self, ts_ns: u64) {
        while let Some(idx) = self.conns.tail() {
            self.close(idx, ts_ns, CloseReason::End);
        }
    }

    /// A client SYN on a tracked connection whose ISN is not the one known:
    /// the port was reused after a close that was not seen.
    fn is_new_syn(&self, idx: usize, seg: &TcpSegment<'_>) -> bool {
        self.conns.get(idx).is_some_and(|(_, conn)| {
            conn.dir(seg.direction).origin != Some(seg.seq.wrapping_add(1))
        })
    }

    fn open(&mut self, seg: &TcpSegment<'_>, midstream: bool) -> usize {
        while self.conns.len() >= self.cfg.max_connections.max(1) {
            let Some(lru) = self.conns.tail() else {
                break;
            };
            self.close(lru, seg.ts_ns, CloseReason::Evicted);
        }
        let state = self.handler.open(&seg.conn, seg.ts_ns, midstream);
        add(&mut self.stats.connections_opened, 1);
        if midstream {
            add(&mut self.stats.midstream_opened, 1);
        }
        let conn = Conn {
            state,
            dirs: [
                DirState::new(Direction::Request, self.drop_epoch),
                DirState::new(Direction::Response, self.drop_epoch),
            ],
            last_ts: seg.ts_ns,
        };
        self.conns.insert(seg.conn, conn)
    }

    /// Applies `seg` to the connection in slot `idx`; returns how it closes,
    /// if it does.
    fn process(&mut self, idx: usize, seg: &TcpSegment<'_>) -> Option<CloseReason> {
        let max_conn = u64::try_from(self.cfg.max_conn_buffer).unwrap_or(u64::MAX);
        let max_total = u64::try_from(self.cfg.max_total_buffer).unwrap_or(u64::MAX);
        let (key, conn) = self.conns.get_mut(idx)?;
        let Conn {
            state,
            dirs,
            last_ts,
        } = conn;
        *last_ts = (*last_ts).max(seg.ts_ns);
        let ts = seg.ts_ns;
        let syn = seg.has(tcp_flags::SYN);
        let has_ack = seg.has(tcp_flags::ACK);
        let fin = seg.has(tcp_flags::FIN);
        let (this, other) = pair(dirs, seg.direction);
        let data_seq = if syn {
            let origin = seg.seq.wrapping_add(1);
            if this.origin.is_none() || (this.origin != Some(origin) && this.untouched()) {
                this.origin = Some(origin);
            }
            if has_ack && other.origin.is_none() {
                // A SYN-ACK acknowledges the client's ISN + 1.
                other.origin = Some(seg.ack);
            }
            origin
        } else {
            seg.seq
        };
        let carries = !seg.payload.is_empty() || seg.missing > 0;
        if (carries || fin) && this.origin.is_none() {
            this.origin = Some(data_seq);
        }
        let mut out = Out {
            handler: &mut self.handler,
            stats: &mut self.stats,
            key,
            state,
            drop_epoch: self.drop_epoch,
            blame_drops: self.cfg.lossless_capture && self.drop_epoch != 0,
        };
        if has_ack {
            other.on_peer_ack(&mut out, seg.ack, ts);
        }
        if carries || fin {
            this.on_payload(&mut out, data_seq, seg.payload, seg.missing, fin, ts);
            this.enforce_limits(&mut out, max_conn, max_total, ts);
        }
        if seg.has(tcp_flags::RST) {
            Some(CloseReason::Rst)
        } else if this.fin_done && other.fin_done {
            Some(CloseReason::Fin)
        } else {
            None
        }
    }

    /// Stops tracking the connection in slot `idx`: reports what it
    /// buffered, then closes it with `reason`.
    fn close(&mut self, idx: usize, ts_ns: u64, reason: CloseReason) {
        let Some((key, mut conn)) = self.conns.remove(idx) else {
            return;
        };
        let mut out = Out {
            handler: &mut self.handler,
            stats: &mut self.stats,
            key: &key,
            state: &mut conn.state,
            drop_epoch: self.drop_epoch,
            blame_drops: self.cfg.lossless_capture && self.drop_epoch != 0,
        };
        for dir in &mut conn.dirs {
            dir.flush_all(&mut out, ts_ns);
        }
        self.handler.close(conn.state, &key, ts_ns, reason);
        let counter = match reason {
            CloseReason::Fin => &mut self.stats.closed_fin,
            CloseReason::Rst => &mut self.stats.closed_rst,
            CloseReason::Idle => &mut self.stats.closed_idle,
            CloseReason::Evicted => &mut self.stats.evicted,
            CloseReason::End => &mut self.stats.closed_end,
        };
        add(counter, 1);
    }

    /// Sum of every direction's buffer (tests: must equal
    /// `stats.buffered_bytes`).
    #[cfg(test)]
    fn buffered_sum(&self) -> u64 {
        self.conns
            .values()
            .flat_map(|c| c.dirs.iter())
            .map(DirState::buffered)
            .sum()
    }
}
