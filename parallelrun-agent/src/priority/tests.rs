use super::*;

/// A real stat line (a tokio worker of `parallelrun` under SCHED_IDLE),
/// its command name given spaces and parentheses.
const STAT: &str = "4242 (tokio (rt) 1) S 4240 4240 3993 34816 4240 4194624 96 0 0 0 3 1 0 0 \
                    39 19 4 0 9816 281690112 4573 18446744073709551615 1 1 0 0 0 0 0 4096 \
                    17666 0 0 0 -1 1 0 5 0 0 0 0 0 0 0 0 0 0 0";

#[test]
fn reads_the_policy_field_after_the_command_name() {
    assert_eq!(policy_from_stat(STAT), Some(Policy(SCHED_IDLE)));
    assert_eq!(policy_from_stat("1 (init) S 0 1"), None);
    assert_eq!(policy_from_stat("no command name"), None);
}

#[test]
fn names_policies() {
    assert_eq!(Policy(0).to_string(), "SCHED_OTHER");
    assert_eq!(Policy(5).to_string(), "SCHED_IDLE");
    assert_eq!(Policy(9).to_string(), "policy 9");
}

#[test]
fn a_thread_switched_to_idle_reads_back_idle_and_its_children_inherit() {
    // On a thread of its own: the test harness's other threads keep theirs.
    let (tid, child) = std::thread::spawn(|| {
        set_idle(0).expect("SCHED_IDLE is allowed to any thread");
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let child = std::thread::spawn(|| {
            // SAFETY: as above.
            let child = unsafe { libc::gettid() };
            let policies = thread_policies().expect("own threads");
            policies.into_iter().find(|(t, _)| *t == child)
        })
        .join()
        .expect("child thread");
        (tid, child)
    })
    .join()
    .expect("thread");
    assert!(tid > 0);
    assert_eq!(child.map(|(_, p)| p), Some(Policy(SCHED_IDLE)));
}
