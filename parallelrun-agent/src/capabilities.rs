//! The capabilities the agent needs, made effective at start.
//!
//! The container image gives the binary CAP_BPF, CAP_PERFMON and
//! CAP_NET_ADMIN as *permitted* file capabilities only (`setcap ...=p`, no
//! effective bit): container runtimes that drop ambient capabilities for a
//! non-root user (containerd, CRI-O) still let it gain them, and the kernel
//! never refuses to start it when the runtime grants fewer (with the
//! effective bit it would: `exec: operation not permitted`). The agent then
//! raises each of the three that it holds as permitted into its effective
//! set, before any thread starts (capabilities are per thread; new threads
//! inherit them). One it does not hold is left to the capture's privilege
//! check, which names it. Root, or a process given them as ambient
//! capabilities, has them effective already: nothing to do.

use caps::{CapSet, Capability};

/// What the capture needs: load eBPF, read its ring buffer, attach to TC.
pub const NEEDED: [Capability; 3] = [
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_NET_ADMIN,
];

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot make the permitted capabilities effective ({0}); run as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN as ambient capabilities"
)]
pub struct RaiseError(#[from] caps::errors::CapsError);

/// Raises each [`NEEDED`] capability this thread holds as permitted but not
/// effective; returns those it raised.
pub fn raise_permitted() -> Result<Vec<Capability>, RaiseError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let effective = caps::read(None, CapSet::Effective)?;
    let mut raised = Vec::new();
    for cap in NEEDED {
        if permitted.contains(&cap) && !effective.contains(&cap) {
            caps::raise(None, CapSet::Effective, cap)?;
            raised.push(cap);
        }
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread of its own: capabilities are per thread.
    #[test]
    fn a_permitted_capability_dropped_from_effective_is_raised_again() {
        std::thread::spawn(|| {
            let permitted = caps::read(None, CapSet::Permitted).unwrap();
            if !permitted.contains(&Capability::CAP_BPF) {
                // Not root: nothing permitted, nothing raised.
                assert_eq!(raise_permitted().unwrap(), []);
                return;
            }
            caps::drop(None, CapSet::Effective, Capability::CAP_BPF).unwrap();
            assert_eq!(raise_permitted().unwrap(), [Capability::CAP_BPF]);
            let effective = caps::read(None, CapSet::Effective).unwrap();
            assert!(effective.contains(&Capability::CAP_BPF));
            assert_eq!(raise_permitted().unwrap(), [], "nothing left to raise");
        })
        .join()
        .unwrap();
    }
}
