//! The bounded buffer between the pipeline and the publisher task.
//!
//! # Rules
//!
//! - The buffer counts *results* (mismatch log events and summaries), not
//!   messages: at most `max_results` of them and `max_bytes` payload bytes
//!   are held.
//! - Events coalesce while they wait: an event pushed behind an event
//!   message of the same subject that is not being published joins it (one
//!   more JSON line, up to [`MAX_EVENTS`] events and [`MAX_PAYLOAD`]
//!   bytes a message). The publisher lingers a moment before it takes
//!   ([`super::task`]), and falls behind under load: either way it
//!   publishes one message (one acknowledgement) per many events. A message keeps its
//!   first event's id, which no other message can have.
//! - [`Queue::push`] never waits: when a result does not fit, the oldest
//!   results not being published are dropped until it does, one at a time
//!   (the first event of a message of several leaves it, and the message
//!   takes the next one's id), so a full buffer holds its bound (the
//!   newest results matter most: a later summary holds everything an
//!   earlier one did). A result larger than `max_bytes` alone, or one that
//!   does not fit because everything held is being published, is dropped
//!   itself.
//!   Every dropped result is counted.
//! - The publisher [`Queue::take`]s messages from the front, then
//!   [`Queue::settle`]s: the first `n` were stored and leave; the others
//!   are taken again on the next try, in the same order and with the same
//!   contents (a taken message takes no more events). A message once taken
//!   is never dropped: it may have reached NATS (its acknowledgement lost),
//!   and a dropped result must be one that is not stored. So the oldest
//!   dropped are the oldest never sent.

use std::{collections::VecDeque, sync::Mutex};

use async_nats::Subject;
use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

/// Events one message carries at most.
pub const MAX_EVENTS: u32 = 256;
/// Payload bytes a message of several events reaches at most (NATS
/// refuses payloads over its `max_payload`, 1 MiB by default).
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// One message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub subject: Subject,
    /// `Nats-Msg-Id`.
    pub id: String,
    /// One result, or several events one JSON line each.
    pub payload: Bytes,
    /// The results it carries; 0 for a summary, which never takes others,
    /// counts as one.
    pub events: u32,
}

impl Message {
    /// Results the message carries.
    pub fn results(&self) -> u64 {
        u64::from(self.events.max(1))
    }

    /// Whether `next` may join this message (see the module rules).
    fn takes(&self, next: &Message) -> bool {
        self.events > 0
            && next.events == 1
            && self.events < MAX_EVENTS
            && self.subject == next.subject
            && self.payload.len() + 1 + next.payload.len() <= MAX_PAYLOAD
    }
}

/// A message held, with the ids of the events after its first.
#[derive(Debug)]
struct Item {
    msg: Message,
    later_ids: VecDeque<String>,
}

impl Item {
    /// Appends `next`'s event as one more line.
    fn join(&mut self, next: Message) {
        let mut payload = std::mem::take(&mut self.msg.payload)
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        payload.extend_from_slice(b"\n");
        payload.extend_from_slice(&next.payload);
        self.msg.payload = payload.freeze();
        self.msg.events += 1;
        self.later_ids.push_back(next.id);
    }

    /// Drops the first event of a message of several; returns the bytes
    /// freed, or `None` when it holds one result only.
    fn drop_first(&mut self) -> Option<usize> {
        let line = self.msg.payload.iter().position(|&b| b == b'\n')?;
        self.msg.id = self.later_ids.pop_front()?;
        self.msg.payload = self.msg.payload.slice(line + 1..);
        self.msg.events -= 1;
        Some(line + 1)
    }
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Item>,
    /// Results held, and their payload bytes.
    results: u64,
    bytes: usize,
    /// The first `taken` items are being published.
    taken: usize,
    dropped: u64,
}

impl Inner {
    fn remove(&mut self, at: usize) -> Option<Message> {
        let m = self.items.remove(at)?.msg;
        self.results -= m.results();
        self.bytes -= m.payload.len();
        Some(m)
    }

    /// Drops the oldest result not being published; false when every
    /// message held is being published.
    fn drop_oldest(&mut self) -> bool {
        let at = self.taken;
        let Some(item) = self.items.get_mut(at) else {
            return false;
        };
        if let Some(freed) = item.drop_first() {
            self.bytes -= freed;
            self.results -= 1;
            self.dropped += 1;
        } else if let Some(old) = self.remove(at) {
            self.dropped += old.results();
        }
        true
    }
}

/// See the module rules.
#[derive(Debug)]
pub struct Queue {
    inner: Mutex<Inner>,
    ready: Notify,
    max_results: u64,
    max_bytes: usize,
}

impl Queue {
    pub fn new(max_results: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            max_results: u64::try_from(max_results.max(1)).unwrap_or(u64::MAX),
            max_bytes: max_bytes.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The lock guards plain counters and a deque: a panic while it was
        // held leaves them usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `msg` (joining the last message when it may), dropping the
    /// oldest to make room; returns how many results were dropped (`msg`'s
    /// own included when it could not fit).
    pub fn push(&self, msg: Message) -> u64 {
        let (len, results) = (msg.payload.len(), msg.results());
        let mut q = self.lock();
        let before = q.dropped;
        // `+ 1`: the newline a joining event brings, counted whether it
        // joins or not, so the byte bound holds either way.
        let full = |q: &Inner| {
            q.results + results > self.max_results || q.bytes + len + 1 > self.max_bytes
        };
        if len + 1 > self.max_bytes {
            q.dropped += results;
            return results;
        }
        while full(&q) && q.drop_oldest() {}
        if full(&q) {
            q.dropped += results;
        } else {
            q.results += results;
            let joinable = q.items.len() > q.taken;
            match q.items.back_mut() {
                Some(last) if joinable && last.msg.takes(&msg) => {
                    last.join(msg);
                    q.bytes += len + 1;
                }
                _ => {
                    q.bytes += len;
                    q.items.push_back(Item {
                        msg,
                        later_ids: VecDeque::new(),
                    });
                }
            }
        }
        let dropped = q.dropped - before;
        drop(q);
        self.ready.notify_one();
        dropped
    }

    /// Up to `n` messages from the front (those taken before first), to
    /// publish.
    pub fn take(&self, n: usize) -> Vec<Message> {
        let mut q = self.lock();
        let got: Vec<Message> = q.items.iter().take(n).map(|i| i.msg.clone()).collect();
        q.taken = q.taken.max(got.len());
        got
    }

    /// The first `stored` messages were stored and leave; the rest of the
    /// taken ones stay taken, to be published again. Returns the results
    /// they carried.
    pub fn settle(&self, stored: usize) -> u64 {
        let mut q = self.lock();
        let stored = stored.min(q.taken);
        let mut results = 0;
        for _ in 0..stored {
            if let Some(m) = q.remove(0) {
                results += m.results();
            }
        }
        q.taken -= stored;
        results
    }

    /// Waits until a message is there to publish.
    pub async fn ready(&self) {
        let notified = self.ready.notified();
        if !self.is_empty() {
            return;
        }
        notified.await;
    }

    /// Results held (in taken messages too).
    pub fn len(&self) -> u64 {
        self.lock().results
    }

    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Results dropped since the queue was made.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A summary-like message: never joined by another.
    fn msg(n: u32, len: usize) -> Message {
        Message {
            subject: "s".into(),
            id: format!("id{n}"),
            payload: Bytes::from(vec![b'x'; len]),
            events: 0,
        }
    }

    /// An event on `subject`.
    fn event(subject: &str, n: u32) -> Message {
        Message {
            subject: subject.into(),
            id: format!("e{n}"),
            payload: Bytes::from(format!("{{\"id\":{n}}}")),
            events: 1,
        }
    }

    fn ids(q: &Queue) -> Vec<String> {
        q.lock().items.iter().map(|i| i.msg.id.clone()).collect()
    }

    #[test]
    fn the_oldest_are_dropped_past_the_count_bound_and_counted() {
        let q = Queue::new(3, 1 << 20);
        for n in 0..5 {
            q.push(msg(n, 10));
            assert!(q.len() <= 3);
        }
        assert_eq!(ids(&q), ["id2", "id3", "id4"]);
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.bytes(), 30);
    }

    #[test]
    fn the_byte_bound_holds_and_an_oversized_message_is_dropped_alone() {
        let q = Queue::new(100, 100);
        assert_eq!(q.push(msg(0, 40)), 0);
        assert_eq!(q.push(msg(1, 40)), 0);
        assert_eq!(q.push(msg(2, 40)), 1);
        assert_eq!(ids(&q), ["id1", "id2"]);
        assert_eq!(q.push(msg(3, 101)), 1);
        assert_eq!(ids(&q), ["id1", "id2"]);
        assert_eq!(q.bytes(), 80);
        assert_eq!(q.dropped(), 2);
    }

    #[test]
    fn taken_messages_are_kept_until_settled_and_never_dropped() {
        let q = Queue::new(2, 1 << 20);
        q.push(msg(0, 1));
        q.push(msg(1, 1));
        let taken = q.take(8);
        assert_eq!(taken.len(), 2);
        // Both held are being published: the newcomer cannot fit.
        assert_eq!(q.push(msg(2, 1)), 1);
        assert_eq!(ids(&q), ["id0", "id1"]);
        // One stored, the other is taken again next time.
        q.settle(1);
        assert_eq!(ids(&q), ["id1"]);
        let again = q.take(8);
        assert_eq!(again, vec![msg(1, 1)]);
        q.settle(0);
        assert_eq!(q.take(8), vec![msg(1, 1)]);
        q.settle(1);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        assert_eq!(q.dropped(), 1);
    }

    #[test]
    fn waiting_events_of_one_subject_coalesce_into_json_lines() {
        let q = Queue::new(100, 1 << 20);
        for n in 0..3 {
            assert_eq!(q.push(event("a", n)), 0);
        }
        // Another subject, and a summary, start messages of their own; an
        // event after the summary cannot join the event message before it.
        q.push(event("b", 3));
        q.push(msg(4, 2));
        q.push(event("b", 5));
        assert_eq!(ids(&q), ["e0", "e3", "id4", "e5"]);
        assert_eq!(q.len(), 6);
        let taken = q.take(8);
        assert_eq!(&taken[0].payload[..], b"{\"id\":0}\n{\"id\":1}\n{\"id\":2}");
        assert_eq!(taken[0].events, 3);
        assert_eq!(
            q.bytes(),
            taken.iter().map(|m| m.payload.len()).sum::<usize>()
        );
        // Taken messages take no more: the next event waits alone.
        q.push(event("b", 6));
        assert_eq!(ids(&q), ["e0", "e3", "id4", "e5", "e6"]);
        assert_eq!(q.settle(2), 4);
        assert_eq!(q.len(), 3);
        assert_eq!(q.take(8)[1], taken[3]);
    }

    #[test]
    fn a_message_takes_at_most_max_events_and_drops_count_results() {
        let q = Queue::new(1000, 1 << 20);
        for n in 0..MAX_EVENTS + 1 {
            q.push(event("a", n));
        }
        let lens: Vec<u32> = q.take(8).iter().map(|m| m.events).collect();
        assert_eq!(lens, [MAX_EVENTS, 1]);
        q.settle(2);
        // The count bound is in results, and room is made one result at a
        // time: the oldest event leaves its message, which takes the next
        // event's id.
        let q = Queue::new(4, 1 << 20);
        for n in 0..3 {
            q.push(event("a", n));
        }
        q.push(msg(9, 1));
        assert_eq!(q.len(), 4);
        assert_eq!(q.push(msg(10, 1)), 1);
        assert_eq!(ids(&q), ["e1", "id9", "id10"]);
        assert_eq!(q.len(), 4);
        let taken = q.take(1);
        assert_eq!(&taken[0].payload[..], b"{\"id\":1}\n{\"id\":2}");
        assert_eq!(taken[0].events, 2);
        assert_eq!(q.push(msg(11, 1)), 1);
        assert_eq!(ids(&q), ["e1", "id10", "id11"]);
        assert_eq!(q.dropped(), 2);
        let bytes: usize = q.take(8).iter().map(|m| m.payload.len()).sum();
        assert_eq!(q.bytes(), bytes);
    }

    #[test]
    fn a_partly_taken_queue_drops_the_oldest_untaken() {
        let q = Queue::new(3, 1 << 20);
        for n in 0..3 {
            q.push(msg(n, 1));
        }
        assert_eq!(q.take(1).len(), 1);
        q.push(msg(3, 1));
        assert_eq!(ids(&q), ["id0", "id2", "id3"]);
        assert_eq!(q.dropped(), 1);
    }
}
