use std::{os::unix::process::ExitStatusExt as _, process::Command, time::Duration};

use super::{Proc, is_gone, net_namespace, pids, status_kib};

#[test]
fn stop_sends_the_signal_and_reaps() {
    let mut p = Proc::spawn("sleep", Command::new("sleep").arg("30")).unwrap();
    let pid = p.pid();
    assert!(!is_gone(pid));
    assert!(p.exited().is_none());
    let st = p.stop(libc::SIGTERM, Duration::from_secs(5)).unwrap();
    assert_eq!(st.signal(), Some(libc::SIGTERM));
    // Reaped, and the status is kept.
    assert_eq!(p.exited(), Some(st));
    assert!(is_gone(pid));
    // Signalling or stopping a reaped child does nothing.
    p.signal(libc::SIGKILL);
    assert_eq!(p.stop(libc::SIGTERM, Duration::ZERO).unwrap(), st);
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_its_grace() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "trap '' TERM; sleep 30"]);
    let mut p = Proc::spawn("stubborn", &mut cmd).unwrap();
    // Let the shell install its trap.
    std::thread::sleep(Duration::from_millis(200));
    let e = p
        .stop(libc::SIGTERM, Duration::from_millis(200))
        .unwrap_err();
    assert!(e.to_string().contains("did not exit within"), "{e}");
    assert_eq!(p.exited().and_then(|st| st.signal()), Some(libc::SIGKILL));
}

#[test]
fn a_zombie_is_gone() {
    let mut p = Proc::spawn("true", &mut Command::new("true")).unwrap();
    let pid = p.pid();
    // Not reaped yet: a zombie once it has exited.
    while !is_gone(pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(p.exited().is_some_and(|st| st.success()));
}

#[test]
fn status_fields() {
    let me = std::process::id() as i32;
    assert!(status_kib(me, "VmRSS").unwrap() > 0);
    let e = status_kib(me, "NoSuchField").unwrap_err();
    assert!(e.to_string().contains("no NoSuchField in /proc/"), "{e}");
}

#[test]
fn lists_processes_and_reads_their_network_namespace() {
    let me = std::process::id() as i32;
    assert!(pids().contains(&me));
    let mine = net_namespace(me).expect("this process has a network namespace");
    let link = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(link.to_str().unwrap(), format!("net:[{mine}]"));
    assert_eq!(net_namespace(i32::MAX), None);
}
