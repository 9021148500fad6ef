//! Replay targets that must not be the old service: parallelrun never sends
//! anything to the old service, and capturing its own replays would loop.

use std::net::SocketAddr;

use crate::service::ServiceAddr;

/// Refuses replay targets that are old services: parallelrun never sends
/// anything to the old service, and capturing its own replays would loop.
pub fn check_targets(old: &[ServiceAddr], targets: &[(&str, SocketAddr)]) -> Result<(), String> {
    for (flag, addr) in targets {
        if let Some(o) = old.iter().find(|o| o.matches(addr)) {
            return Err(format!(
                "{flag} {addr} is an old service (--old {o}): replay targets must be \
                 other instances, or the old service would receive replayed traffic"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
