//! NATS subjects and JetStream message ids of what an agent publishes.
//!
//! # Rules
//!
//! - Every subject is `parallelrun.<kind>.<service>.<node>`: `kind` is
//!   `mismatch` or `replay_error` for a mismatch log event, `summary` for a
//!   summary. One stream takes them all ([`STREAM_SUBJECTS`]).
//! - A token (service, node) keeps ASCII letters, digits, `-` and `_`;
//!   every other character (`.`, `*`, `>`, spaces, non-ASCII…) becomes `_`,
//!   an empty token is `_`, and a token is cut at [`MAX_TOKEN`] bytes. Two
//!   names that differ only there share a subject: name nodes plainly.
//! - A message id (`Nats-Msg-Id`) is `<node>:<run>:e<event id>` or
//!   `<node>:<run>:s<summary number>`: the same message retried keeps its
//!   id, so JetStream stores it once; `run` is drawn at random when the
//!   agent starts, so a later run of the same node never collides.

use std::fmt::Write;

use async_nats::Subject;

use crate::report::log::EventKind;

/// First token of every subject.
pub const PREFIX: &str = "parallelrun";
/// The subjects of the stream an agent creates when it is missing.
pub const STREAM_SUBJECTS: &str = "parallelrun.>";
/// Bytes a token keeps at most.
pub const MAX_TOKEN: usize = 64;

/// `name` made safe as one subject token (see the module rules).
pub fn token(name: &str) -> String {
    let mut t: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TOKEN)
        .collect();
    if t.is_empty() {
        t.push('_');
    }
    t
}

/// Where one agent (`node`) publishes about one service. Subjects and the
/// message ids' prefix are built once: every event takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    mismatch: Subject,
    replay_error: Subject,
    summary: Subject,
    /// `<node>:<run>:`.
    id_prefix: String,
}

impl Subjects {
    /// `run` tells this run's message ids from any other run's of `node`.
    pub fn new(service: &str, node: &str, run: u64) -> Self {
        let (service, node) = (token(service), token(node));
        let subject = |kind: &str| Subject::from(format!("{PREFIX}.{kind}.{service}.{node}"));
        Self {
            mismatch: subject(EventKind::Mismatch.name()),
            replay_error: subject(EventKind::ReplayError.name()),
            summary: subject("summary"),
            id_prefix: format!("{node}:{run:016x}:"),
        }
    }

    /// `parallelrun.<kind>.<service>.<node>`.
    pub fn event(&self, kind: EventKind) -> Subject {
        match kind {
            EventKind::Mismatch => self.mismatch.clone(),
            EventKind::ReplayError => self.replay_error.clone(),
        }
    }

    /// `parallelrun.summary.<service>.<node>`.
    pub fn summary(&self) -> Subject {
        self.summary.clone()
    }

    /// The message id of the mismatch log event `id`.
    pub fn event_id(&self, id: u64) -> String {
        self.id('e', id)
    }

    /// The message id of this run's `n`th summary.
    pub fn summary_id(&self, n: u64) -> String {
        self.id('s', n)
    }

    fn id(&self, kind: char, n: u64) -> String {
        let mut id = String::with_capacity(self.id_prefix.len() + 21);
        id.push_str(&self.id_prefix);
        id.push(kind);
        // Writing to a String cannot fail.
        let _ = write!(id, "{n}");
        id
    }
}

/// A server address for messages: `scheme://host:port`, never a user or
/// password it carries.
pub fn display(url: &async_nats::ServerAddr) -> String {
    format!("{}://{}:{}", url.scheme(), url.host(), url.port())
}

/// The filter matching the summaries of `service` (every service when
/// `None`), one subject per node.
pub fn summaries(service: Option<&str>) -> String {
    match service {
        Some(s) => format!("{PREFIX}.summary.{}.*", token(s)),
        None => format!("{PREFIX}.summary.*.*"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_lose_what_nats_gives_a_meaning_to() {
        assert_eq!(token("web-1_a"), "web-1_a");
        assert_eq!(token("node.eu.1"), "node_eu_1");
        assert_eq!(token("a*b>c d\te"), "a_b_c_d_e");
        assert_eq!(token("nœud"), "n_ud");
        assert_eq!(token(""), "_");
        assert_eq!(token(&"x".repeat(100)).len(), MAX_TOKEN);
    }

    #[test]
    fn subjects_name_kind_service_and_node() {
        let s = Subjects::new("users api", "host.1", 0xab);
        assert_eq!(
            &*s.event(EventKind::Mismatch),
            "parallelrun.mismatch.users_api.host_1"
        );
        assert_eq!(
            &*s.event(EventKind::ReplayError),
            "parallelrun.replay_error.users_api.host_1"
        );
        assert_eq!(&*s.summary(), "parallelrun.summary.users_api.host_1");
        assert_eq!(
            summaries(Some("users api")),
            "parallelrun.summary.users_api.*"
        );
        assert_eq!(summaries(None), "parallelrun.summary.*.*");
    }

    #[test]
    fn addresses_are_shown_without_credentials() {
        let url: async_nats::ServerAddr = "nats://user:secret@10.1.2.3:4333".parse().unwrap();
        assert_eq!(display(&url), "nats://10.1.2.3:4333");
    }

    #[test]
    fn message_ids_are_stable_per_message_and_distinct_across_runs() {
        let a = Subjects::new("svc", "n1", 1);
        assert_eq!(a.event_id(42), a.event_id(42));
        assert_eq!(a.event_id(42), "n1:0000000000000001:e42");
        assert_ne!(a.event_id(42), a.event_id(43));
        assert_ne!(a.event_id(1), a.summary_id(1));
        let b = Subjects::new("svc", "n1", 2);
        assert_ne!(a.event_id(42), b.event_id(42));
        let c = Subjects::new("svc", "n2", 1);
        assert_ne!(a.event_id(42), c.event_id(42));
        assert!(!a.event_id(7).contains(char::is_whitespace));
    }
}
