//! Which links the capture is attached to, and what a link event asks of
//! it: the decisions of following interfaces, without the kernel, so that
//! they can be tested alone.
//!
//! Rules:
//! - A link is attached when its current name is selected (see
//!   [`IfaceSelector`]) and detached when it is removed, missing from a
//!   snapshot, or renamed to a name that is not selected.
//! - Events are idempotent: a link already attached, or whose attach
//!   already failed, is not attached again until it is removed (the kernel
//!   repeats RTM_NEWLINK on every change of a link, e.g. going up).
//! - Only confirmed attaches count as attached ([`AttachSet::attached`]);
//!   a refused one is remembered by index ([`AttachSet::failed`]).
//! - Memory: one entry per link of the namespace at most.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    links::{Link, LinkEvent},
    select::IfaceSelector,
};

/// What to do for a link event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Attach(Link),
    Detach(Link),
}

/// The links attached to, by index.
#[derive(Debug)]
pub struct AttachSet {
    selector: IfaceSelector,
    attached: BTreeMap<u32, String>,
    failed: BTreeSet<u32>,
}

impl AttachSet {
    pub fn new(selector: IfaceSelector) -> Self {
        Self {
            selector,
            attached: BTreeMap::new(),
            failed: BTreeSet::new(),
        }
    }

    pub fn selector(&self) -> &IfaceSelector {
        &self.selector
    }

    /// Links attached now.
    pub fn len(&self) -> usize {
        self.attached.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attached.is_empty()
    }

    /// Whether `name` is attached now.
    pub fn has_name(&self, name: &str) -> bool {
        self.attached.values().any(|n| n == name)
    }

    /// What `ev` asks for, in order.
    pub fn on_event(&mut self, ev: LinkEvent) -> Vec<Action> {
        match ev {
            LinkEvent::Added(link) => self.on_added(link).into_iter().collect(),
            LinkEvent::Removed { index } => self.on_removed(index).into_iter().collect(),
            LinkEvent::Snapshot(links) => self.on_snapshot(links),
        }
    }

    /// The attach of `link` succeeded.
    pub fn attached(&mut self, link: &Link) {
        self.failed.remove(&link.index);
        self.attached.insert(link.index, link.name.clone());
    }

    /// The attach of `link` failed: not tried again until it is removed.
    pub fn failed(&mut self, link: &Link) {
        self.failed.insert(link.index);
    }

    fn on_added(&mut self, link: Link) -> Option<Action> {
        let selected = self.selector.matches(&link.name);
        match self.attached.get_mut(&link.index) {
            Some(name) if *name == link.name => None,
            Some(name) if selected => {
                // Renamed, still selected: the program stays attached.
                *name = link.name;
                None
            }
            Some(_) => {
                let old = self.attached.remove(&link.index)?;
                Some(Action::Detach(Link {
                    name: old,
                    index: link.index,
                }))
            }
            None if selected && !self.failed.contains(&link.index) => Some(Action::Attach(link)),
            None => None,
        }
    }

    fn on_removed(&mut self, index: u32) -> Option<Action> {
        self.failed.remove(&index);
        let name = self.attached.remove(&index)?;
        Some(Action::Detach(Link { name, index }))
    }

    fn on_snapshot(&mut self, links: Vec<Link>) -> Vec<Action> {
        let present: BTreeSet<u32> = links.iter().map(|l| l.index).collect();
        self.failed.retain(|i| present.contains(i));
        let gone: Vec<u32> = self
            .attached
            .keys()
            .filter(|i| !present.contains(i))
            .copied()
            .collect();
        let mut actions: Vec<Action> = gone
            .into_iter()
            .filter_map(|i| self.on_removed(i))
            .collect();
        actions.extend(links.into_iter().filter_map(|l| self.on_added(l)));
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, index: u32) -> Link {
        Link {
            name: name.into(),
            index,
        }
    }

    fn set(flags: &[&str]) -> AttachSet {
        AttachSet::new(IfaceSelector::new(flags).unwrap())
    }

    /// Applies `ev`, confirming every attach; returns the actions.
    fn apply(s: &mut AttachSet, ev: LinkEvent) -> Vec<Action> {
        let actions = s.on_event(ev);
        for a in &actions {
            if let Action::Attach(l) = a {
                s.attached(l);
            }
        }
        actions
    }

    #[test]
    fn matching_links_are_attached_once_and_detached_when_removed() {
        let mut s = set(&["pr1*"]);
        assert_eq!(
            apply(&mut s, LinkEvent::Added(link("pr1a", 5))),
            [Action::Attach(link("pr1a", 5))]
        );
        // The same link again (it went up): nothing new.
        assert_eq!(apply(&mut s, LinkEvent::Added(link("pr1a", 5))), []);
        assert_eq!(apply(&mut s, LinkEvent::Added(link("eth0", 2))), []);
        assert_eq!(
            apply(&mut s, LinkEvent::Added(link("pr1b", 6))),
            [Action::Attach(link("pr1b", 6))]
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            apply(&mut s, LinkEvent::Removed { index: 5 }),
            [Action::Detach(link("pr1a", 5))]
        );
        assert_eq!(apply(&mut s, LinkEvent::Removed { index: 5 }), []);
        assert_eq!(apply(&mut s, LinkEvent::Removed { index: 2 }), []);
        assert_eq!(s.len(), 1);
        assert!(s.has_name("pr1b"));
    }

    #[test]
    fn a_snapshot_detaches_what_is_gone_and_attaches_what_is_new() {
        let mut s = set(&["pr2*", "lo"]);
        apply(
            &mut s,
            LinkEvent::Snapshot(vec![link("lo", 1), link("pr2a", 5), link("pr2b", 6)]),
        );
        assert_eq!(s.len(), 3);
        let actions = apply(
            &mut s,
            LinkEvent::Snapshot(vec![link("lo", 1), link("pr2b", 6), link("pr2c", 8)]),
        );
        assert_eq!(
            actions,
            [
                Action::Detach(link("pr2a", 5)),
                Action::Attach(link("pr2c", 8))
            ]
        );
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn a_rename_detaches_only_when_the_new_name_is_not_selected() {
        let mut s = set(&["pr3*"]);
        apply(&mut s, LinkEvent::Added(link("pr3a", 5)));
        assert_eq!(apply(&mut s, LinkEvent::Added(link("pr3z", 5))), []);
        assert!(s.has_name("pr3z"));
        assert_eq!(
            apply(&mut s, LinkEvent::Added(link("other", 5))),
            [Action::Detach(link("pr3z", 5))]
        );
        assert!(s.is_empty());
    }

    #[test]
    fn a_failed_attach_is_not_retried_until_the_link_comes_back() {
        let mut s = set(&["pr4*"]);
        let actions = s.on_event(LinkEvent::Added(link("pr4a", 5)));
        assert_eq!(actions, [Action::Attach(link("pr4a", 5))]);
        s.failed(&link("pr4a", 5));
        assert_eq!(s.on_event(LinkEvent::Added(link("pr4a", 5))), []);
        assert_eq!(s.on_event(LinkEvent::Removed { index: 5 }), []);
        assert_eq!(
            s.on_event(LinkEvent::Added(link("pr4a", 5))),
            [Action::Attach(link("pr4a", 5))]
        );
        assert!(s.is_empty());
    }
}
