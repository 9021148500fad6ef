//! The network links of this namespace as they come and go, from rtnetlink
//! (RTM_NEWLINK / RTM_DELLINK on the RTMGRP_LINK group).
//!
//! Rules:
//! - [`LinkWatcher::open`] subscribes before [`LinkWatcher::dump`] lists
//!   the links, so no change between the two is missed (one seen twice is
//!   harmless: the consumer treats events as idempotent).
//! - When the kernel could not queue a notification (the socket's buffer
//!   overran: ENOBUFS) or a datagram cannot be parsed, events were lost:
//!   the watcher counts it and answers with a fresh [`LinkEvent::Snapshot`],
//!   from which the consumer rebuilds its view.
//! - Memory: one receive buffer of [`RECV_BUF`] bytes and the events of one
//!   datagram at a time.

use std::{collections::VecDeque, io};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{debug, warn};

/// One network link: its name and its index (stable while it exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
}

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link appeared, or changed (state, name): sent again on every
    /// change of an existing link.
    Added(Link),
    /// The link with this index is gone (deleted, or moved to another
    /// namespace).
    Removed { index: u32 },
    /// Every link there is now: what is not in it is gone.
    Snapshot(Vec<Link>),
}

#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    #[error(
        "cannot follow network links over netlink ({0}); the agent needs CAP_NET_ADMIN in this network namespace"
    )]
    Socket(io::Error),
    #[error("listing the network links over netlink failed: {0}")]
    Dump(String),
}

/// Room for one netlink datagram: the kernel sends at most a page-sized
/// batch per datagram for dumps, and notifications are smaller.
const RECV_BUF: usize = 64 * 1024;

/// Sequence number of our dump requests.
const DUMP_SEQ: u32 = 1;

/// Subscribed to link notifications.
pub struct LinkWatcher {
    socket: AsyncFd<Socket>,
    buf: Vec<u8>,
    pending: VecDeque<LinkEvent>,
    overruns: u64,
}

impl LinkWatcher {
    /// Subscribes to RTMGRP_LINK in the caller's network namespace.
    pub fn open() -> Result<Self, LinksError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(LinksError::Socket)?;
        socket
            .bind(&SocketAddr::new(0, libc::RTMGRP_LINK as u32))
            .map_err(LinksError::Socket)?;
        socket.set_non_blocking(true).map_err(LinksError::Socket)?;
        Ok(Self {
            // SAFETY: the fd belongs to `socket`, which the AsyncFd owns from
            // here on: it stays open until the AsyncFd is dropped.
            socket: unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
                .map_err(|e| LinksError::Socket(e.into_parts().1))?,
            buf: vec![0; RECV_BUF],
            pending: VecDeque::new(),
            overruns: 0,
        })
    }

    /// Times notifications were lost (ENOBUFS, or a datagram that could
    /// not be parsed) and the links listed again.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Waits for the next change.
    pub async fn next(&mut self) -> Result<LinkEvent, LinksError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            let mut guard = self.socket.readable().await.map_err(LinksError::Socket)?;
            let buf = &mut self.buf[..];
            let read = guard.try_io(|s| {
                let mut slice: &mut [u8] = buf;
                s.get_ref().recv(&mut slice, 0)
            });
            match read {
                Err(_would_block) => continue,
                Ok(Ok(n)) => {
                    let data = &self.buf[..n.min(RECV_BUF)];
                    if parse_datagram(data, &mut |ev| self.pending.push_back(ev)).is_err() {
                        self.pending.clear();
                        return self.resync("a link notification could not be parsed");
                    }
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.pending.clear();
                    return self.resync("link notifications overran the socket buffer");
                }
                Ok(Err(e)) => return Err(LinksError::Socket(e)),
            }
        }
    }

    fn resync(&mut self, why: &str) -> Result<LinkEvent, LinksError> {
        self.overruns += 1;
        warn!(overruns = self.overruns, "{why}: listing the links again");
        Ok(LinkEvent::Snapshot(Self::dump()?))
    }

    /// Every link of the namespace now (RTM_GETLINK dump on a socket of its
    /// own, so that it never mixes with the notifications).
    pub fn dump() -> Result<Vec<Link>, LinksError> {
        let dump_err = |e: io::Error| LinksError::Dump(e.to_string());
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(LinksError::Socket)?;
        socket.bind_auto().map_err(dump_err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(dump_err)?;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = DUMP_SEQ;
        let mut req = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
        );
        req.finalize();
        let mut out = vec![0; req.buffer_len()];
        req.serialize(&mut out);
        socket.send(&out, 0).map_err(dump_err)?;

        let mut links = Vec::new();
        let mut buf = vec![0; RECV_BUF];
        loop {
            let mut slice: &mut [u8] = &mut buf[..];
            let n = socket.recv(&mut slice, 0).map_err(dump_err)?;
            let mut failed = None;
            let done = parse_datagram(&buf[..n.min(RECV_BUF)], &mut |ev| match ev {
                LinkEvent::Added(link) => links.push(link),
                LinkEvent::Removed { .. } | LinkEvent::Snapshot(_) => {}
            })
            .map_err(|e| failed = Some(e))
            .unwrap_or(false);
            if let Some(e) = failed {
                return Err(LinksError::Dump(e));
            }
            if done {
                debug!(links = links.len(), "links listed");
                return Ok(links);
            }
        }
    }
}

/// Hands the link events of one datagram to `f`; `Ok(true)` once the end
/// of a dump (NLMSG_DONE) is reached. An error names what could not be
/// parsed: the rest of the datagram is then unreadable.
fn parse_datagram(mut data: &[u8], f: &mut impl FnMut(LinkEvent)) -> Result<bool, String> {
    while !data.is_empty() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data)
            .map_err(|e| format!("netlink message: {e}"))?;
        let len = msg.header.length as usize;
        if len == 0 {
            return Err("netlink message of length 0".into());
        }
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                if let Some(link) = link_of(&m) {
                    f(LinkEvent::Added(link));
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                f(LinkEvent::Removed {
                    index: m.header.index,
                });
            }
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(format!("the kernel refused the request: {e}"));
            }
            NetlinkPayload::Overrun(_) => return Err("the kernel reported an overrun".into()),
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        data = data.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(false)
}

fn link_of(m: &LinkMessage) -> Option<Link> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(Link {
            name: name.clone(),
            index: m.header.index,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_lists_loopback() {
        let links = LinkWatcher::dump().unwrap();
        assert!(
            links.iter().any(|l| l.name == "lo" && l.index == 1),
            "{links:?}"
        );
    }

    #[test]
    fn datagrams_with_new_and_removed_links_parse_in_order() {
        let mut data = Vec::new();
        for (kind, index, name) in [("new", 7, "veth7"), ("del", 7, "veth7"), ("new", 9, "eth9")] {
            let mut m = LinkMessage::default();
            m.header.index = index;
            m.attributes.push(LinkAttribute::IfName(name.into()));
            let inner = if kind == "new" {
                RouteNetlinkMessage::NewLink(m)
            } else {
                RouteNetlinkMessage::DelLink(m)
            };
            let mut msg = NetlinkMessage::new(NetlinkHeader::default(), inner.into());
            msg.finalize();
            let start = data.len();
            data.resize(start + msg.buffer_len().next_multiple_of(4), 0);
            msg.serialize(&mut data[start..]);
        }
        let mut events = Vec::new();
        assert_eq!(parse_datagram(&data, &mut |e| events.push(e)), Ok(false));
        let link = |name: &str, index| Link {
            name: name.into(),
            index,
        };
        assert_eq!(
            events,
            [
                LinkEvent::Added(link("veth7", 7)),
                LinkEvent::Removed { index: 7 },
                LinkEvent::Added(link("eth9", 9)),
            ]
        );
        assert!(parse_datagram(&data[..10], &mut |_| {}).is_err());
    }
}
