//! The interface between reassembly and HTTP tracking: reassembly turns
//! segments into in-order byte streams per connection and direction and hands
//! them, with lifecycle events, to a [`StreamHandler`].

use crate::model::{ConnKey, Direction};

/// How a connection's tracking ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions finished with FIN (or one FIN and the other side idle).
    Fin,
    /// A RST was seen.
    Rst,
    /// No segment for longer than the idle timeout.
    Idle,
    /// Forced out by memory or connection-count limits.
    Evicted,
    /// The input ended (pcap end, agent shutdown).
    End,
}

/// Consumer of reassembled streams. Reassembly owns one `Self::Conn` per
/// tracked connection and passes it back on every event of that connection.
pub trait StreamHandler {
    /// Per-connection state of the handler.
    type Conn;

    /// A new connection is tracked. `midstream` is true when its start (SYN)
    /// was not seen: the first bytes may be in the middle of a message.
    fn open(&mut self, key: &ConnKey, ts_ns: u64, midstream: bool) -> Self::Conn;

    /// The next in-order bytes of one direction. `ts_ns` is the capture time
    /// of the segment that carried them (the last byte of `bytes`).
    fn data(
        &mut self,
        conn: &mut Self::Conn,
        key: &ConnKey,
        dir: Direction,
        ts_ns: u64,
        bytes: &[u8],
    );

    /// Bytes of one direction are missing and will never arrive (`len` is
    /// how many, when known). What follows in that direction starts after the
    /// hole; `ring_drops` is true when the kernel reported ring-buffer drops
    /// since the previous gap check, which is then the likely cause.
    fn gap(
        &mut self,
        conn: &mut Self::Conn,
        key: &ConnKey,
        dir: Direction,
        ts_ns: u64,
        len: u64,
        ring_drops: bool,
    );

    /// One direction ended with FIN: no more bytes will come that way.
    fn fin(&mut self, conn: &mut Self::Conn, key: &ConnKey, dir: Direction, ts_ns: u64);

    /// The connection is no longer tracked; its state is handed back.
    fn close(&mut self, conn: Self::Conn, key: &ConnKey, ts_ns: u64, reason: CloseReason);
}
