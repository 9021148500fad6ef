//! The bounded buffer between the pipeline and the publisher task.
//!
//! # Rules
//!
//! - At most `max_msgs` messages and `max_bytes` payload bytes are held.
//! - [`Queue::push`] never waits: when a message does not fit, the oldest
//!   messages not being published are dropped until it does (the newest
//!   results matter most: a later summary holds everything an earlier one
//!   did). A message larger than `max_bytes` alone, or one that does not
//!   fit because everything held is being published, is dropped itself.
//!   Every dropped message is counted.
//! - The publisher [`Queue::take`]s messages from the front, then
//!   [`Queue::settle`]s: the first `n` were stored and leave; the others
//!   are taken again on the next try, in the same order. A message once
//!   taken is never dropped: it may have reached NATS (its acknowledgement
//!   lost), and a dropped message must be one that is not stored. So the
//!   oldest dropped are the oldest never sent.

use std::{collections::VecDeque, sync::Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

/// One message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    /// `Nats-Msg-Id`.
    pub id: String,
    pub payload: Bytes,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Message>,
    bytes: usize,
    /// The first `taken` items are being published.
    taken: usize,
    dropped: u64,
}

/// See the module rules.
#[derive(Debug)]
pub struct Queue {
    inner: Mutex<Inner>,
    ready: Notify,
    max_msgs: usize,
    max_bytes: usize,
}

impl Queue {
    pub fn new(max_msgs: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            max_msgs: max_msgs.max(1),
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

    /// Adds `msg`, dropping the oldest to make room; returns how many
    /// messages were dropped (`msg` itself included when it could not fit).
    pub fn push(&self, msg: Message) -> u64 {
        let len = msg.payload.len();
        let mut q = self.lock();
        let before = q.dropped;
        if len > self.max_bytes {
            q.dropped += 1;
            return 1;
        }
        while (q.items.len() >= self.max_msgs || q.bytes + len > self.max_bytes)
            && q.items.len() > q.taken
        {
            let at = q.taken;
            if let Some(old) = q.items.remove(at) {
                q.bytes -= old.payload.len();
                q.dropped += 1;
            }
        }
        if q.items.len() >= self.max_msgs || q.bytes + len > self.max_bytes {
            q.dropped += 1;
        } else {
            q.bytes += len;
            q.items.push_back(msg);
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
        let got: Vec<Message> = q.items.iter().take(n).cloned().collect();
        q.taken = q.taken.max(got.len());
        got
    }

    /// The first `stored` messages were stored and leave; the rest of the
    /// taken ones stay taken, to be published again.
    pub fn settle(&self, stored: usize) {
        let mut q = self.lock();
        let stored = stored.min(q.taken);
        for _ in 0..stored {
            if let Some(m) = q.items.pop_front() {
                q.bytes -= m.payload.len();
            }
        }
        q.taken -= stored;
    }

    /// Waits until a message is there to publish.
    pub async fn ready(&self) {
        let notified = self.ready.notified();
        if !self.is_empty() {
            return;
        }
        notified.await;
    }

    /// Messages held (taken ones included).
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Messages dropped since the queue was made.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32, len: usize) -> Message {
        Message {
            subject: "s".to_owned(),
            id: format!("id{n}"),
            payload: Bytes::from(vec![b'x'; len]),
        }
    }

    fn ids(q: &Queue) -> Vec<String> {
        q.lock().items.iter().map(|m| m.id.clone()).collect()
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
