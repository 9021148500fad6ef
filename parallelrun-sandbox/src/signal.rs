//! Stop signals as a flag, and signals ignored for a while.
//!
//! [`install_stop_handlers`] makes SIGINT, SIGTERM and SIGHUP only record
//! that they arrived. The owner of the guards (tests' helpers, the demo, the
//! bench) polls [`received`] or [`check`] and unwinds through its guards,
//! instead of dying with namespaces, services and an agent left behind.
//! [`Proc::wait`](crate::Proc::wait) and [`sleep`] fail early once one
//! arrived.

use std::{
    sync::atomic::{AtomicI32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{Error, Result};

/// The last stop signal that arrived, 0 while none did.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// From now on SIGINT (Ctrl-C), SIGTERM and SIGHUP only set the flag that
/// [`received`] reads. Interrupted system calls restart (`SA_RESTART`).
pub fn install_stop_handlers() -> Result<()> {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler is
        // async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(Error::last_os(format!("sigaction({sig})")));
            }
        }
    }
    Ok(())
}

/// The stop signal that arrived, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Like [`received`], and clears the flag (to pass each signal on once).
pub fn take() -> Option<i32> {
    match RECEIVED.swap(0, Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Fails ([`Error::Interrupted`]) once a stop signal arrived.
pub fn check() -> Result<()> {
    match received() {
        Some(sig) => Err(Error::Interrupted(sig)),
        None => Ok(()),
    }
}

/// Sleeps, waking early (with an error) when a stop signal arrives.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// A signal ignored until this is dropped; then its previous disposition
/// is back. Children started meanwhile inherit the ignored disposition.
pub struct Ignored {
    sig: libc::c_int,
    previous: libc::sigaction,
}

/// Ignores `sig` while the returned guard lives.
pub fn ignore(sig: libc::c_int) -> Result<Ignored> {
    // SAFETY: zeroed sigactions are valid; `previous` receives the old one.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &sa, &mut previous) != 0 {
            return Err(Error::last_os(format!("ignoring signal {sig}")));
        }
        Ok(Ignored { sig, previous })
    }
}

impl Drop for Ignored {
    fn drop(&mut self) {
        // SAFETY: restores the disposition sigaction(2) gave us.
        unsafe { libc::sigaction(self.sig, &self.previous, std::ptr::null_mut()) };
    }
}
