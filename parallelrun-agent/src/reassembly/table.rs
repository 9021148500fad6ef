//! The connection table: a slab of entries indexed by [`ConnKey`] and threaded
//! on an intrusive doubly-linked list in order of last activity, so that the
//! least recently active entry is found, and an entry is marked active, in
//! O(1) without allocating.

use std::collections::HashMap;

use crate::model::ConnKey;

/// "No entry" in the list links.
const NIL: usize = usize::MAX;

struct Node<T> {
    key: ConnKey,
    value: T,
    /// Towards the most recently active end.
    prev: usize,
    /// Towards the least recently active end.
    next: usize,
}

/// Entries by key, in order of activity.
pub(super) struct Table<T> {
    slots: Vec<Option<Node<T>>>,
    /// Vacant slots, reused before the slab grows.
    free: Vec<usize>,
    index: HashMap<ConnKey, usize>,
    /// Most recently active entry.
    head: usize,
    /// Least recently active entry.
    tail: usize,
}

impl<T> Table<T> {
    pub(super) fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            head: NIL,
            tail: NIL,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of `key`, if tracked.
    pub(super) fn find(&self, key: &ConnKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The least recently active entry.
    pub(super) fn tail(&self) -> Option<usize> {
        (self.tail != NIL).then_some(self.tail)
    }

    pub(super) fn get(&self, idx: usize) -> Option<(&ConnKey, &T)> {
        self.slots
            .get(idx)
            .and_then(Option::as_ref)
            .map(|n| (&n.key, &n.value))
    }

    pub(super) fn get_mut(&mut self, idx: usize) -> Option<(&ConnKey, &mut T)> {
        self.slots
            .get_mut(idx)
            .and_then(Option::as_mut)
            .map(|n| (&n.key, &mut n.value))
    }

    /// Adds `key` as the most recently active entry and returns its slot.
    /// The caller has checked that `key` is not tracked yet.
    pub(super) fn insert(&mut self, key: ConnKey, value: T) -> usize {
        debug_assert!(!self.index.contains_key(&key), "key inserted twice");
        let node = Node {
            key,
            value,
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                if let Some(slot) = self.slots.get_mut(idx) {
                    *slot = Some(node);
                }
                idx
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        };
        if let Some(old) = self.index.insert(key, idx) {
            // Unreachable by the precondition; keep the table consistent anyway.
            self.unlink(old);
            self.release(old);
        }
        self.push_front(idx);
        idx
    }

    /// Removes the entry in slot `idx`.
    pub(super) fn remove(&mut self, idx: usize) -> Option<(ConnKey, T)> {
        if self.slots.get(idx).is_none_or(Option::is_none) {
            return None;
        }
        self.unlink(idx);
        let node = self.release(idx)?;
        self.index.remove(&node.key);
        Some((node.key, node.value))
    }

    /// Marks the entry in slot `idx` as the most recently active.
    pub(super) fn touch(&mut self, idx: usize) {
        if self.head != idx && self.slots.get(idx).is_some_and(Option::is_some) {
            self.unlink(idx);
            self.push_front(idx);
        }
    }

    fn release(&mut self, idx: usize) -> Option<Node<T>> {
        let node = self.slots.get_mut(idx)?.take()?;
        self.free.push(idx);
        Some(node)
    }

    fn links(&mut self, idx: usize) -> Option<&mut Node<T>> {
        self.slots.get_mut(idx).and_then(Option::as_mut)
    }

    fn unlink(&mut self, idx: usize) {
        let Some(node) = self.links(idx) else {
            return;
        };
        let (prev, next) = (node.prev, node.next);
        node.prev = NIL;
        node.next = NIL;
        match self.links(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.links(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, idx: usize) {
        let old_head = self.head;
        let Some(node) = self.links(idx) else {
            return;
        };
        node.prev = NIL;
        node.next = old_head;
        match self.links(old_head) {
            Some(h) => h.prev = idx,
            None => self.tail = idx,
        }
        self.head = idx;
    }

    /// Slots from the least to the most recently active (tests).
    #[cfg(test)]
    pub(super) fn order_from_tail(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = self.tail;
        while let Some(node) = self.slots.get(cur).and_then(Option::as_ref) {
            out.push(cur);
            cur = node.prev;
        }
        out
    }

    /// All live entries (tests).
    #[cfg(test)]
    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten().map(|n| &n.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> ConnKey {
        ConnKey {
            client: ([10, 0, 0, 1], port).into(),
            server: ([10, 0, 0, 2], 80).into(),
        }
    }

    #[test]
    fn lru_order_touch_remove_and_slot_reuse() {
        let mut t = Table::new();
        let a = t.insert(key(1), 'a');
        let b = t.insert(key(2), 'b');
        let c = t.insert(key(3), 'c');
        assert_eq!(t.order_from_tail(), vec![a, b, c]);
        t.touch(a);
        assert_eq!(t.order_from_tail(), vec![b, c, a]);
        assert_eq!(t.tail(), Some(b));
        assert_eq!(t.remove(c), Some((key(3), 'c')));
        assert_eq!(t.remove(c), None);
        assert_eq!(t.order_from_tail(), vec![b, a]);
        assert_eq!(t.find(&key(3)), None);
        let d = t.insert(key(4), 'd');
        assert_eq!(d, c, "vacant slot reused");
        assert_eq!(t.order_from_tail(), vec![b, a, d]);
        assert_eq!(t.len(), 3);
        for idx in [b, a, d] {
            assert!(t.remove(idx).is_some());
        }
        assert_eq!(t.tail(), None);
        assert_eq!(t.len(), 0);
        assert!(t.order_from_tail().is_empty());
    }
}
