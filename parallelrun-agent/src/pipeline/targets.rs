//! Replay targets that must not be the old service ([`check_targets`]),
//! and the addresses of this host it checks them against
//! ([`host_addresses`]).

#![deny(clippy::undocumented_unsafe_blocks)]

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use crate::service::ServiceAddr;

/// Why a replay target is refused. Each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The target is an `--old` address.
    #[error(
        "{flag} {addr} is an old service (--old {old}): replay targets must be other instances, \
         or the old service would receive replayed traffic"
    )]
    OldService {
        flag: String,
        addr: SocketAddr,
        old: ServiceAddr,
    },
    /// `--old :PORT` watches the target's port on every address.
    #[error(
        "{flag} {addr} has the port of --old {old}, which names the old service on every \
         address: replays to it could reach the old service. Run the replay target on \
         another port, or name the old service's address (--old IP:{port})",
        port = old.port
    )]
    OldOnEveryAddress {
        flag: String,
        addr: SocketAddr,
        old: ServiceAddr,
    },
    /// The target has an old service's port and may be on its host.
    #[error(
        "{flag} {addr} is {place} and has the port of --old {old}: an old service listening on \
         every address (0.0.0.0:{port} or [::]:{port}) answers there too, and replays must \
         never reach it. Run the replay target on another port, or on another host",
        port = old.port
    )]
    OldServicesHost {
        flag: String,
        addr: SocketAddr,
        old: ServiceAddr,
        place: &'static str,
    },
}

/// Refuses replay targets (`(flag, address)`, e.g. `("--new", …)`) that
/// are, or may be, one of the `old` services; `host` is this host's
/// addresses ([`host_addresses`]). parallelrun never sends anything to the
/// old service, and capturing its own replays would loop.
///
/// An address alone does not tell: an old service listening on every
/// address (`0.0.0.0:8080`, `[::]:8080`) answers on each address of its
/// host, loopback included, whatever address `--old` names. So a target
/// with an old service's port is refused when it may be the old service's
/// host:
///
/// - it is an `--old` address, or `--old` is `:PORT` (every address);
/// - it is a loopback address (`127.0.0.0/8`, `::1`) or the unspecified
///   one (`0.0.0.0`, `::`, which connects to this host);
/// - it is one of `host`'s addresses.
///
/// A target on another port, or on another host's address, is accepted.
/// IPv4-mapped IPv6 addresses count as the IPv4 address.
pub fn check_targets(
    old: &[ServiceAddr],
    targets: &[(&str, SocketAddr)],
    host: &[IpAddr],
) -> Result<(), TargetError> {
    for &(flag, addr) in targets {
        let ip = addr.ip().to_canonical();
        for &o in old.iter().filter(|o| o.port == addr.port()) {
            let flag = flag.to_owned();
            if o.ip.is_none() {
                return Err(TargetError::OldOnEveryAddress { flag, addr, old: o });
            }
            if o.matches(&addr) {
                return Err(TargetError::OldService { flag, addr, old: o });
            }
            let place = if ip.is_loopback() {
                "a loopback address"
            } else if ip.is_unspecified() {
                "the unspecified address (this host)"
            } else if host.iter().any(|h| h.to_canonical() == ip) {
                "an address of this host"
            } else {
                continue;
            };
            return Err(TargetError::OldServicesHost {
                flag,
                addr,
                old: o,
                place,
            });
        }
    }
    Ok(())
}

/// The IPv4 and IPv6 addresses of this host's interfaces (in the caller's
/// network namespace), from getifaddrs(3).
pub fn host_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into the pointer it is given;
    // on success the list is freed below, exactly once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned,
        // valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if let Some(ip) = sockaddr_ip(ifa.ifa_addr) {
            out.push(ip);
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` is the list getifaddrs returned, not used after this.
    unsafe { libc::freeifaddrs(head) };
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The IP address in a sockaddr of family AF_INET or AF_INET6.
fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null ifa_addr points to a sockaddr whose family field
    // is valid to read.
    let family = i32::from(unsafe { (*sa).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: a sockaddr of family AF_INET is a sockaddr_in; read
            // unaligned as the list gives no alignment guarantee we rely on.
            let sin = unsafe { sa.cast::<libc::sockaddr_in>().read_unaligned() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: a sockaddr of family AF_INET6 is a sockaddr_in6.
            let sin6 = unsafe { sa.cast::<libc::sockaddr_in6>().read_unaligned() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
