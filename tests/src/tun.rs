//! A raw IP link between two namespaces, as a VPN or wireguard makes: a tun
//! device in each (no link-layer header: ARPHRD_NONE), and a thread per
//! direction copying every packet read from one device to the other. The
//! devices go with the [`TunLink`] (their files close when it drops).

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use crate::netns::Netns;

/// Two tun devices joined; stops copying and closes them on drop. A packet
/// the other device refuses (it is down) is dropped, as on a wire.
pub struct TunLink {
    stop: Arc<AtomicBool>,
    pumps: Vec<thread::JoinHandle<()>>,
}

impl TunLink {
    /// A device `a_name` in `a` and `b_name` in `b`, joined (both down and
    /// without addresses: give them with `Netns::address`).
    pub fn new(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> Self {
        let (da, db) = (open(a, a_name), open(b, b_name));
        let stop = Arc::new(AtomicBool::new(false));
        let pump = |from: &File, to: &File| {
            let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut buf = vec![0; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if !readable(&from, 100) {
                        continue;
                    }
                    // A device still down answers EIO: wait for it to come up.
                    match from.read(&mut buf) {
                        Ok(n) if n > 0 => {
                            let _ = to.write(&buf[..n]);
                        }
                        _ => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        let pumps = vec![pump(&da, &db), pump(&db, &da)];
        Self { stop, pumps }
    }
}

impl Drop for TunLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
    }
}

/// Whether `f` has a packet to read within `ms` milliseconds.
fn readable(f: &File, ms: i32) -> bool {
    let mut fds = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut fds, 1, ms) == 1 }
}

/// A tun device named `name` in `ns` (IFF_TUN | IFF_NO_PI: bare IP packets).
fn open(ns: &Netns, name: &str) -> File {
    let name = name.to_owned();
    ns.run(move || {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun (is the tun module loaded?)");
        // SAFETY: ifreq is plain data; zeroed is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: the fd is open /dev/net/tun, req a valid ifreq with a
        // NUL-terminated name (zeroed, shorter than IFNAMSIZ).
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
        assert_eq!(
            rc,
            0,
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        );
        file
    })
}
