//! The mismatch log: writing it and following it; and the summary for
//! people.
//!
//! [`log`] writes every difference found (and every failed replay) as one
//! JSON object per line, redacting secrets and rotating by size.
//! [`tail`](mod@tail) follows that file for people (`parallelrun tail`), like
//! `tail -F`, printing each event as a readable line.
//!
//! A [`crate::summary::Summary`] is rendered as a terminal [`table`] or as
//! one self-contained [`html`] page; [`curl`](mod@curl) turns a kept example
//! request into a command line that replays it.

pub mod curl;
pub mod html;
pub mod log;
pub mod table;
pub mod tail;

pub use self::{
    log::{EventKind, LogConfig, LogError, LogEvent, MismatchLog, REDACTED, Side, redact},
    tail::{TailError, TailOptions, TailSummary, format_event, tail},
};
