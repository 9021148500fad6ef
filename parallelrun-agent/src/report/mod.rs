//! The mismatch log: writing it and following it.
//!
//! [`log`] writes every difference found (and every failed replay) as one
//! JSON object per line, redacting secrets and rotating by size.
//! [`tail`](mod@tail) follows that file for people (`parallelrun tail`), like
//! `tail -F`, printing each event as a readable line.

pub mod log;
pub mod tail;

pub use self::{
    log::{
        EventKind, LogConfig, LogError, LogEvent, MismatchLog, REDACTED, Side, redact, timestamp,
    },
    tail::{TailError, TailOptions, TailSummary, format_event, tail},
};
