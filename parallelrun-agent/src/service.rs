//! Old-service addresses given on the command line: `IP:PORT`, `[IPv6]:PORT`
//! or `:PORT` (any address on that port).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use parallelrun_common::ServiceKey;

/// An old service to watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceAddr {
    /// `None` means any address.
    pub ip: Option<IpAddr>,
    pub port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceAddrError {
    #[error("'{0}' is not a service address: use IP:PORT, [IPV6]:PORT or :PORT (any address)")]
    Syntax(String),
    #[error("'{0}': port 0 cannot be a service port; give the port the old service listens on")]
    PortZero(String),
    #[error(
        "'{0}': an unspecified address (0.0.0.0 or ::) never appears on the wire; use :PORT for any address"
    )]
    Unspecified(String),
}

impl FromStr for ServiceAddr {
    type Err = ServiceAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ServiceAddrError::Syntax(s.to_owned());
        let (ip, port) = if let Some(port) = s.strip_prefix(':') {
            (None, port.parse::<u16>().map_err(|_| syntax())?)
        } else {
            let sa = SocketAddr::from_str(s).map_err(|_| syntax())?;
            if sa.ip().is_unspecified() {
                return Err(ServiceAddrError::Unspecified(s.to_owned()));
            }
            (Some(sa.ip()), sa.port())
        };
        if port == 0 {
            return Err(ServiceAddrError::PortZero(s.to_owned()));
        }
        // An IPv4-mapped IPv6 address is the IPv4 service on the wire.
        let ip = ip.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        });
        Ok(Self { ip, port })
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            None => write!(f, ":{}", self.port),
            Some(ip) => write!(f, "{}", SocketAddr::new(ip, self.port)),
        }
    }
}

impl ServiceAddr {
    /// True when `addr` is this service: same port and, unless this is a
    /// `:PORT` (any address) entry, the same IP (IPv4-mapped IPv6 counts as
    /// IPv4, as on the wire).
    pub fn matches(&self, addr: &SocketAddr) -> bool {
        addr.port() == self.port && self.ip.is_none_or(|ip| ip == addr.ip().to_canonical())
    }

    /// The key the kernel side looks up (see `is_service` in the eBPF crate).
    pub fn key(&self) -> ServiceKey {
        match self.ip {
            None => ServiceKey::any_addr(self.port),
            Some(ip) => ServiceKey {
                addr: addr16(ip),
                port: self.port,
                family: if ip.is_ipv4() { 4 } else { 6 },
                _pad: 0,
            },
        }
    }
}

/// An address in the 16-byte layout of [`ServiceKey`] and the segment header:
/// IPv4 in the first four bytes, the rest zero.
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            a
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            "10.0.0.1:8080".parse(),
            Ok(ServiceAddr {
                ip: Some(Ipv4Addr::new(10, 0, 0, 1).into()),
                port: 8080
            })
        );
        assert_eq!(
            "[fd00::1]:80".parse(),
            Ok(ServiceAddr {
                ip: Some("fd00::1".parse::<Ipv6Addr>().unwrap().into()),
                port: 80
            })
        );
        assert_eq!(
            ":443".parse(),
            Ok(ServiceAddr {
                ip: None,
                port: 443
            })
        );
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for bad in [
            "",
            ":",
            "10.0.0.1",
            "10.0.0.1:",
            "host:80",
            ":99999",
            "fd00::1:80",
        ] {
            assert!(
                matches!(bad.parse::<ServiceAddr>(), Err(ServiceAddrError::Syntax(_))),
                "{bad}"
            );
        }
        assert_eq!(
            ":0".parse::<ServiceAddr>(),
            Err(ServiceAddrError::PortZero(":0".into()))
        );
        assert!(matches!(
            "0.0.0.0:80".parse::<ServiceAddr>(),
            Err(ServiceAddrError::Unspecified(_))
        ));
    }

    #[test]
    fn ipv4_mapped_is_ipv4_on_the_wire() {
        let s: ServiceAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        assert_eq!(s.key().family, 4);
        assert_eq!(&s.key().addr[..4], &[10, 0, 0, 1]);
        assert_eq!(s.to_string(), "10.0.0.1:80");
    }

    #[test]
    fn key_layout_matches_the_kernel() {
        let k = ":8080".parse::<ServiceAddr>().unwrap().key();
        assert_eq!(k, ServiceKey::any_addr(8080));
        let k = "[fd00::2]:80".parse::<ServiceAddr>().unwrap().key();
        assert_eq!((k.family, k.port, k.addr[15]), (6, 80, 2));
    }
}
