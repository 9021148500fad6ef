//! One direction of a connection: the mapping from sequence numbers to 64-bit
//! stream offsets, the out-of-order buffer, and delivery to the handler.

use std::collections::BTreeMap;

use super::ReassemblyStats;
use crate::model::{ConnKey, Direction};
use crate::stream::StreamHandler;

/// What one buffered piece costs against the buffer limits on top of its
/// payload bytes: its map entry and allocation header, approximately. It keeps
/// a flood of tiny out-of-order segments from holding far more memory than
/// the limits say.
pub const PIECE_OVERHEAD: u64 = 64;

/// Everything a direction reports to: the handler with the connection's
/// state, and the statistics.
pub(super) struct Out<'a, H: StreamHandler> {
    pub(super) handler: &'a mut H,
    pub(super) stats: &'a mut ReassemblyStats,
    pub(super) key: &'a ConnKey,
    pub(super) state: &'a mut H::Conn,
    /// The reassembler's ring-drop epoch (see [`DirState::drop_epoch`]).
    pub(super) drop_epoch: u64,
    /// Every hole is blamed on ring-buffer drops (see
    /// [`ReassemblyConfig::lossless_capture`](super::ReassemblyConfig)).
    pub(super) blame_drops: bool,
}

impl<H: StreamHandler> Out<'_, H> {
    fn data(&mut self, dir: Direction, ts_ns: u64, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.handler.data(self.state, self.key, dir, ts_ns, bytes);
        }
    }

    fn gap(&mut self, dir: Direction, ts_ns: u64, len: u64, ring_drops: bool) {
        add(&mut self.stats.gaps, 1);
        add(&mut self.stats.gap_bytes, len);
        self.handler
            .gap(self.state, self.key, dir, ts_ns, len, ring_drops);
    }

    fn fin(&mut self, dir: Direction, ts_ns: u64) {
        self.handler.fin(self.state, self.key, dir, ts_ns);
    }
}

/// Adds to a counter without overflowing.
pub(super) fn add(counter: &mut u64, n: u64) {
    *counter = counter.saturating_add(n);
}

fn to_u64(x: i128) -> u64 {
    u64::try_from(x.max(0)).unwrap_or(u64::MAX)
}

fn to_usize(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

/// A range of the stream held until the bytes before it are delivered.
/// How far beyond the bytes seen an ACK may declare bytes lost (see
/// `on_peer_ack`).
const MAX_ACK_AHEAD: u64 = 64 << 20;

enum Piece {
    /// Captured bytes, copied out of their segment.
    Data { bytes: Vec<u8>, ts_ns: u64 },
    /// Bytes a segment carried but the capture cut (`TcpSegment::missing`).
    Missing { len: u64, ts_ns: u64 },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Data { bytes, .. } => bytes.len() as u64,
            Piece::Missing { len, .. } => *len,
        }
    }

    /// Bytes counted against the buffer limits while held.
    fn cost(&self) -> u64 {
        match self {
            Piece::Data { bytes, .. } => (bytes.len() as u64).saturating_add(PIECE_OVERHEAD),
            Piece::Missing { .. } => PIECE_OVERHEAD,
        }
    }
}

/// The content of a range being inserted into the buffer.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// Captured bytes; the slice starts at the range's start.
    Data(&'a [u8]),
    /// Bytes the capture cut.
    Missing,
}

/// One direction of a tracked connection.
pub(super) struct DirState {
    dir: Direction,
    /// Sequence number of stream offset 0 (the first payload byte), once
    /// known: ISN + 1 after a SYN, else the first payload or FIN segment's.
    pub(super) origin: Option<u32>,
    /// Offset of the next byte to deliver; everything before it was
    /// delivered or reported as a gap.
    next: u64,
    /// Out-of-order ranges by offset: disjoint, each starting after `next`.
    pieces: BTreeMap<u64, Piece>,
    /// Cost (see [`Piece::cost`]) of `pieces`.
    buffered: u64,
    /// Offset of the FIN (one past the last payload byte), once seen.
    fin: Option<u64>,
    /// `handler.fin` was called: every byte up to `fin` was delivered.
    pub(super) fin_done: bool,
    /// The reassembler's ring-drop epoch when this direction last reported
    /// a gap (or was opened): a later hole gap while the epoch has moved on
    /// is attributed to ring-buffer drops.
    drop_epoch: u64,
}

impl DirState {
    pub(super) fn new(dir: Direction, drop_epoch: u64) -> Self {
        Self {
            dir,
            origin: None,
            next: 0,
            pieces: BTreeMap::new(),
            buffered: 0,
            fin: None,
            fin_done: false,
            drop_epoch,
        }
    }

    /// Cost of the bytes held out of order (tests).
    #[cfg(test)]
    pub(super) fn buffered(&self) -> u64 {
        self.buffered
    }

    /// The FIN was seen (it is reported at the latest when the connection
    /// closes).
    pub(super) fn fin_seen(&self) -> bool {
        self.fin.is_some()
    }

    /// Nothing was delivered, buffered or finished yet: the origin may still
    /// be moved (a SYN-ACK retransmitted with another ISN).
    pub(super) fn untouched(&self) -> bool {
        self.next == 0 && self.pieces.is_empty() && self.fin.is_none()
    }

    /// Stream offset of `seq`, relative to the next byte to deliver (within
    /// ±2 GiB of it, which handles wrap-around); `None` before the origin is
    /// known. Negative offsets are before the origin.
    fn offset_of(&self, seq: u32) -> Option<i128> {
        let origin = self.origin?;
        // Offsets are taken modulo 2^32 here on purpose: sequence space wraps.
        let base = origin.wrapping_add(self.next as u32);
        let delta = seq.wrapping_sub(base) as i32;
        Some(i128::from(self.next) + i128::from(delta))
    }

    fn first_start(&self) -> Option<u64> {
        self.pieces.first_key_value().map(|(&k, _)| k)
    }

    fn hold(&mut self, stats: &mut ReassemblyStats, cost: u64) {
        self.buffered = self.buffered.saturating_add(cost);
        add(&mut stats.buffered_bytes, cost);
        stats.peak_buffered_bytes = stats.peak_buffered_bytes.max(stats.buffered_bytes);
    }

    fn release(&mut self, stats: &mut ReassemblyStats, cost: u64) {
        debug_assert!(self.buffered >= cost && stats.buffered_bytes >= cost);
        self.buffered = self.buffered.saturating_sub(cost);
        stats.buffered_bytes = stats.buffered_bytes.saturating_sub(cost);
    }

    /// A segment of this direction with payload (captured and `missing`)
    /// starting at `data_seq`, and/or a FIN after it.
    pub(super) fn on_payload<H: StreamHandler>(
        &mut self,
        out: &mut Out<'_, H>,
        data_seq: u32,
        payload: &[u8],
        missing: u32,
        fin: bool,
        ts_ns: u64,
    ) {
        let Some(off) = self.offset_of(data_seq) else {
            // The caller sets the origin first; unreachable.
            add(&mut out.stats.ignored, 1);
            return;
        };
        self.ingest(out, off, payload, missing, ts_ns);
        if fin {
            let len = payload.len() as i128 + i128::from(missing);
            self.set_fin(out, off + len);
        }
        self.check_fin(out, ts_ns);
    }

    /// Places `payload` (then `missing` uncaptured bytes) at offset `off`:
    /// delivers what is in order straight from the segment, buffers what is
    /// ahead, trims what was delivered already.
    fn ingest<H: StreamHandler>(
        &mut self,
        out: &mut Out<'_, H>,
        off: i128,
        payload: &[u8],
        missing: u32,
        ts_ns: u64,
    ) {
        let next = i128::from(self.next);
        let cap_end = off + payload.len() as i128;
        let mut end = cap_end + i128::from(missing);
        if let Some(fin) = self.fin.map(i128::from)
            && end > fin
        {
            // Bytes after the FIN contradict it: the FIN seen first wins.
            add(&mut out.stats.conflicting_bytes, to_u64(end - off.max(fin)));
            end = end.min(fin).max(off);
        }
        // Bytes before `next` (or before the origin) were seen already.
        add(
            &mut out.stats.retransmitted_bytes,
            to_u64(end.min(next) - off),
        );
        let start = off.max(next);
        if end <= start {
            return;
        }
        let cap_end = to_u64(cap_end.clamp(start, end));
        let (start, end) = (to_u64(start), to_u64(end));
        // `off` may be negative; index the payload relative to it.
        let index = |at: u64| to_usize(to_u64(i128::from(at) - off));

        if start == self.next {
            // In order: deliver from the segment itself. A buffered piece
            // inside its range arrived first and wins: deliver it instead of
            // the segment's copy, then go on with the segment after it.
            let seg_data = payload.get(index(start)..).unwrap_or_default();
            loop {
                let limit = self.first_start().map_or(end, |f| f.min(end));
                let cap_to = cap_end.min(limit);
                if cap_to > self.next {
                    let range = to_usize(self.next - start)..to_usize(cap_to - start);
                    if let Some(bytes) = seg_data.get(range) {
                        out.data(self.dir, ts_ns, bytes);
                    }
                    self.next = cap_to;
                }
                if limit > self.next {
                    // The capture cut these bytes: a gap, not a ring-buffer drop.
                    out.gap(self.dir, ts_ns, limit - self.next, false);
                    self.next = limit;
                }
                if limit >= end {
                    break;
                }
                if let Some((&ps, piece)) = self.pieces.first_key_value() {
                    let ov_end = ps.saturating_add(piece.len()).min(end);
                    let data_end = ov_end.min(cap_end);
                    let stats = &mut *out.stats;
                    count_overlap(stats, piece, ps, ps, data_end, Src::Data(seg_data), start);
                    count_overlap(
                        stats,
                        piece,
                        ps,
                        ps.max(cap_end),
                        ov_end,
                        Src::Missing,
                        start,
                    );
                }
                if !self.pop_contiguous(out) {
                    break;
                }
            }
            self.drain(out, ts_ns);
        } else {
            add(&mut out.stats.out_of_order, 1);
            let data = payload.get(index(start)..).unwrap_or_default();
            self.insert(out, start, end, cap_end, data, ts_ns);
        }
    }

    /// Buffers `[start, end)` of a segment whose captured bytes end at
    /// `cap_end`; `data` are the captured bytes from `start` on.
    fn insert<H: StreamHandler>(
        &mut self,
        out: &mut Out<'_, H>,
        start: u64,
        end: u64,
        cap_end: u64,
        data: &[u8],
        ts_ns: u64,
    ) {
        let data_end = cap_end.clamp(start, end);
        if data_end > start
            && let Some(bytes) = data.get(..to_usize(data_end - start))
        {
            self.insert_range(out, start, data_end, Src::Data(bytes), ts_ns);
        }
        if end > data_end {
            self.insert_range(out, data_end, end, Src::Missing, ts_ns);
        }
    }

    /// Buffers the parts of `[start, end)` not buffered yet; the parts that
    /// are keep their first copy and count as retransmitted (and conflicting
    /// where captured bytes differ).
    fn insert_range<H: StreamHandler>(
        &mut self,
        out: &mut Out<'_, H>,
        start: u64,
        end: u64,
        src: Src<'_>,
        ts_ns: u64,
    ) {
        let mut pos = start;
        // A piece starting before `start` may reach into the range.
        if let Some((&ps, piece)) = self.pieces.range(..start).next_back() {
            let pe = ps.saturating_add(piece.len());
            if pe > pos {
                let ov_end = pe.min(end);
                count_overlap(out.stats, piece, ps, pos, ov_end, src, start);
                pos = ov_end;
            }
        }
        while pos < end {
            let following = self.pieces.range(pos..end).next().map(|(&ps, piece)| {
                let ov_end = ps.saturating_add(piece.len()).min(end);
                count_overlap(out.stats, piece, ps, ps, ov_end, src, start);
                (ps, ov_end)
            });
            match following {
                Some((ps, ov_end)) => {
                    if ps > pos {
                        self.add_piece(out.stats, pos, ps, src, start, ts_ns);
                    }
                    pos = ov_end;
                }
                None => {
                    self.add_piece(out.stats, pos, end, src, start, ts_ns);
                    pos = end;
                }
            }
        }
    }

    /// Buffers `[a, b)` of `src`, which starts at `src_start`.
    fn add_piece(
        &mut self,
        stats: &mut ReassemblyStats,
        a: u64,
        b: u64,
        src: Src<'_>,
        src_start: u64,
        ts_ns: u64,
    ) {
        let piece = match src {
            Src::Data(bytes) => {
                let range = to_usize(a - src_start)..to_usize(b - src_start);
                let Some(bytes) = bytes.get(range) else {
                    return;
                };
                Piece::Data {
                    bytes: bytes.to_vec(),
                    ts_ns,
                }
            }
            Src::Missing => Piece::Missing { len: b - a, ts_ns },
        };
        self.hold(stats, piece.cost());
        self.pieces.insert(a, piece);
    }

    /// Delivers the buffered pieces that became contiguous, then the FIN if
    /// it is reached.
    fn drain<H: StreamHandler>(&mut self, out: &mut Out<'_, H>, ts_ns: u64) {
        while self.pop_contiguous(out) {}
        self.check_fin(out, ts_ns);
    }

    /// Delivers the first buffered piece if it starts at (or before) `next`.
    fn pop_contiguous<H: StreamHandler>(&mut self, out: &mut Out<'_, H>) -> bool {
        let Some(entry) = self.pieces.first_entry() else {
            return false;
        };
        let ps = *entry.key();
        if ps > self.next {
            return false;
        }
        let piece = entry.remove();
        self.release(out.stats, piece.cost());
        let pe = ps.saturating_add(piece.len());
        if pe <= self.next {
            // Pieces start after `next`; defensive.
            add(&mut out.stats.retransmitted_bytes, piece.len());
            return true;
        }
        let skip = self.next - ps;
        match piece {
            Piece::Data { bytes, ts_ns } => {
                if let Some(rest) = bytes.get(to_usize(skip)..) {
                    out.data(self.dir, ts_ns, rest);
                }
            }
            Piece::Missing { len, ts_ns } => {
                out.gap(self.dir, ts_ns, len - skip, false);
            }
        }
        self.next = pe;
        true
    }

    /// Reports the `len` bytes at `next` as a hole that will not be filled.
    fn hole_gap<H: StreamHandler>(&mut self, out: &mut Out<'_, H>, len: u64, ts_ns: u64) {
        let ring_drops = self.drop_epoch != out.drop_epoch || out.blame_drops;
        self.drop_epoch = out.drop_epoch;
        out.gap(self.dir, ts_ns, len, ring_drops);
        self.next = self.next.saturating_add(len);
    }

    /// Gives up on the first hole: reports it and delivers what follows it.
    /// Returns the hole's length, `None` when nothing is buffered.
    pub(super) fn skip_first_hole<H: StreamHandler>(
        &mut self,
        out: &mut Out<'_, H>,
        ts_ns: u64,
    ) -> Option<u64> {
        let first = self.first_start()?;
        let len = first.saturating_sub(self.next);
        if len > 0 {
            self.hole_gap(out, len, ts_ns);
        }
        // Delivers at least the first piece: progress is guaranteed.
        self.drain(out, ts_ns);
        Some(len)
    }

    /// The peer acknowledged `ack`: it received every byte before it, so
    /// the bytes before it this direction still misses were on the wire and
    /// the capture lost them. Reports them as gaps and delivers what follows.
    pub(super) fn on_peer_ack<H: StreamHandler>(
        &mut self,
        out: &mut Out<'_, H>,
        ack: u32,
        ts_ns: u64,
    ) {
        if self.fin_done {
            return;
        }
        let Some(acked) = self.offset_of(ack) else {
            return;
        };
        if acked <= i128::from(self.next) {
            return;
        }
        // An ACK far beyond every byte seen is not believed: a forged or
        // corrupt ACK must not declare gigabytes lost. Bytes really in
        // flight are bounded by the peer's window, far below this.
        let seen_end = self
            .pieces
            .last_key_value()
            .map_or(self.next, |(&k, p)| k.saturating_add(p.len()));
        if acked > i128::from(seen_end.saturating_add(MAX_ACK_AHEAD)) {
            return;
        }
        // The FIN takes one sequence number: an ACK of it is one past `fin`.
        let target = self.fin.map_or(to_u64(acked), |f| f.min(to_u64(acked)));
        while self.next < target {
            let before = self.next;
            let hole_end = self.first_start().map_or(target, |f| f.min(target));
            if hole_end > self.next {
                self.hole_gap(out, hole_end - self.next, ts_ns);
            }
            self.drain(out, ts_ns);
            if self.next == before {
                break;
            }
        }
        self.check_fin(out, ts_ns);
    }

    /// Records the FIN at offset `at` (the first FIN seen wins).
    fn set_fin<H: StreamHandler>(&mut self, out: &mut Out<'_, H>, at: i128) {
        if let Some(fin) = self.fin {
            if i128::from(fin) != at {
                add(&mut out.stats.ignored, 1);
            }
            return;
        }
        if at < i128::from(self.next) {
            // Bytes after it were delivered already: a bogus FIN.
            add(&mut out.stats.ignored, 1);
            return;
        }
        let at = to_u64(at);
        // Buffered bytes after the FIN contradict it.
        let beyond = self.pieces.split_off(&at);
        for piece in beyond.values() {
            self.release(out.stats, piece.cost());
            add(&mut out.stats.conflicting_bytes, piece.len());
        }
        if let Some(mut last) = self.pieces.last_entry() {
            let ps = *last.key();
            let piece = last.get_mut();
            let keep = at.saturating_sub(ps);
            let cut = piece.len().saturating_sub(keep);
            if cut > 0 {
                match piece {
                    Piece::Data { bytes, .. } => {
                        bytes.truncate(to_usize(keep));
                        bytes.shrink_to_fit();
                        self.release(out.stats, cut);
                    }
                    Piece::Missing { len, .. } => *len = keep,
                }
                add(&mut out.stats.conflicting_bytes, cut);
            }
        }
        self.fin = Some(at);
    }

    /// Reports the FIN once every byte before it is delivered.
    fn check_fin<H: StreamHandler>(&mut self, out: &mut Out<'_, H>, ts_ns: u64) {
        if !self.fin_done && self.fin.is_some_and(|f| self.next >= f) {
            self.fin_done = true;
            out.fin(self.dir, ts_ns);
        }
    }

    /// The connection ends: reports every remaining hole (up to the FIN when
    /// it was seen) as a gap, delivers everything buffered, then the FIN.
    pub(super) fn flush_all<H: StreamHandler>(&mut self, out: &mut Out<'_, H>, ts_ns: u64) {
        while self.skip_first_hole(out, ts_ns).is_some() {}
        if let Some(fin) = self.fin
            && fin > self.next
        {
            self.hole_gap(out, fin - self.next, ts_ns);
        }
        self.check_fin(out, ts_ns);
    }

    /// Keeps this direction within `max_conn` and the total within
    /// `max_total` by giving up on holes, first one first.
    pub(super) fn enforce_limits<H: StreamHandler>(
        &mut self,
        out: &mut Out<'_, H>,
        max_conn: u64,
        max_total: u64,
        ts_ns: u64,
    ) {
        while self.buffered > max_conn || out.stats.buffered_bytes > max_total {
            match self.skip_first_hole(out, ts_ns) {
                Some(len) => {
                    if len > 0 {
                        add(&mut out.stats.buffer_limit_gaps, 1);
                    }
                }
                None => break,
            }
        }
    }
}

/// Counts the overlap `[a, b)` of a new range (`src`, starting at
/// `src_start`) with a buffered `piece` starting at `ps`.
fn count_overlap(
    stats: &mut ReassemblyStats,
    piece: &Piece,
    ps: u64,
    a: u64,
    b: u64,
    src: Src<'_>,
    src_start: u64,
) {
    if b <= a {
        return;
    }
    add(&mut stats.retransmitted_bytes, b - a);
    if let (Piece::Data { bytes: old, .. }, Src::Data(new)) = (piece, src) {
        let old = old.get(to_usize(a - ps)..to_usize(b - ps));
        let new = new.get(to_usize(a - src_start)..to_usize(b - src_start));
        if let (Some(old), Some(new)) = (old, new) {
            let differ = old.iter().zip(new).filter(|(x, y)| x != y).count();
            add(&mut stats.conflicting_bytes, differ as u64);
        }
    }
}
