//! The interface to attach to: does it exist, and how long is its link-layer
//! header (the TC program needs the offset of the IP header).

use std::{ffi::CString, io};

/// ARPHRD_* link types (include/uapi/linux/if_arp.h) that parallelrun knows.
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_NONE: u16 = 65534;
const ARPHRD_RAWIP: u16 = 519;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    /// Bytes in front of the IP header as TC sees the packet.
    pub l2_len: u32,
    pub loopback: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error(
        "interface '{0}' not found in this network namespace; `ip link` lists the interfaces (for one inside a namespace, run the agent with `ip netns exec NS`)"
    )]
    NotFound(String),
    #[error("'{0}' is not a valid interface name")]
    BadName(String),
    #[error(
        "interface '{name}' has link type {kind}, which parallelrun cannot parse; supported: Ethernet, loopback, raw IP (tun, wireguard)"
    )]
    UnsupportedLinkType { name: String, kind: u16 },
    #[error("querying interface '{0}': {1}")]
    Io(String, io::Error),
}

impl Interface {
    pub fn lookup(name: &str) -> Result<Self, InterfaceError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
            return Err(InterfaceError::BadName(name.to_owned()));
        }
        let cname = CString::new(name).map_err(|_| InterfaceError::BadName(name.to_owned()))?;
        // SAFETY: cname is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(InterfaceError::NotFound(name.to_owned()));
        }
        let kind = link_type(&cname).map_err(|e| InterfaceError::Io(name.to_owned(), e))?;
        let (l2_len, loopback) = match kind {
            ARPHRD_ETHER => (14, false),
            // Loopback carries an all-zero Ethernet header.
            ARPHRD_LOOPBACK => (14, true),
            ARPHRD_NONE | ARPHRD_RAWIP => (0, false),
            other => {
                return Err(InterfaceError::UnsupportedLinkType {
                    name: name.to_owned(),
                    kind: other,
                });
            }
        };
        Ok(Self {
            name: name.to_owned(),
            index,
            l2_len,
            loopback,
        })
    }
}

/// The interface's ARPHRD type, from SIOCGIFHWADDR (answers for the caller's
/// network namespace, unlike /sys which shows the mounting namespace).
fn link_type(name: &CString) -> io::Result<u16> {
    // SAFETY: socket(2) takes no pointers; the fd it returns is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is a socket, req a valid ifreq with a NUL-terminated name.
    let ret = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR as _, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: fd is the socket opened above, closed exactly once, here.
    unsafe { libc::close(fd) };
    if ret < 0 {
        return Err(err);
    }
    // SAFETY: the ioctl succeeded, so SIOCGIFHWADDR filled ifru_hwaddr (a
    // sockaddr: plain integers, any bit pattern valid); the union was zeroed.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_with_an_ethernet_sized_header() {
        let lo = Interface::lookup("lo").unwrap();
        assert!(lo.loopback);
        assert_eq!(lo.l2_len, 14);
        assert_eq!(lo.index, 1);
    }

    #[test]
    fn missing_interface_says_how_to_list_them() {
        let err = Interface::lookup("nosuchif0").unwrap_err();
        assert!(matches!(err, InterfaceError::NotFound(_)));
        assert!(err.to_string().contains("ip link"));
    }

    #[test]
    fn bad_names_are_rejected_before_any_syscall() {
        for bad in ["", "a/b", "waytoolonginterfacename"] {
            assert!(
                matches!(Interface::lookup(bad), Err(InterfaceError::BadName(_))),
                "{bad}"
            );
        }
    }
}
