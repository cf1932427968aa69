//! Prompt reaping of a killed gateway's orphans.
//!
//! A test that SIGKILLs `edgeward run` orphans its fork server and workers;
//! they die too (they notice the supervisor is gone, or the test kills
//! them), and their zombies wait for whoever adopted them to reap them.
//! Until then they still count in their module's `pids.current`, so the
//! next `edgeward run` on the same state dir waits for them before it
//! starts the module again (`cgroup::evict_stale`). A real init (systemd,
//! tini, edgeward itself as PID 1) reaps at once; this sandbox's PID 1
//! reaps about every two seconds, which made every kill-and-restart round
//! of the crash tests take two seconds.
//!
//! So the test process becomes a child subreaper, and a thread reaps the
//! zombies it adopts. It must not reap a child that a `std::process::Child`
//! will wait for: every gateway's supervisor starts in a process group of
//! its own, which its fork server and workers inherit, so an adopted
//! orphan is a zombie child in another process group that does not lead
//! it. Direct children either share the test's group or lead their own.

use std::sync::Once;
use std::time::Duration;

/// How often the reaper looks for zombies.
const EVERY: Duration = Duration::from_millis(5);

/// Makes this process the subreaper of the gateways it starts and reaps
/// their orphans from now on. Idempotent.
pub fn reap_adopted() {
    static START: Once = Once::new();
    START.call_once(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no
        // pointers; it only changes who adopts this process's orphans.
        let set = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if set != 0 {
            // Without it orphans go to PID 1 as before: slower, not wrong.
            return;
        }
        std::thread::Builder::new()
            .name("orphan-reaper".into())
            .spawn(|| loop {
                reap_once();
                std::thread::sleep(EVERY);
            })
            .expect("spawn the orphan reaper");
    });
}

fn reap_once() {
    let own_group = nix::unistd::getpgrp().as_raw();
    for pid in children() {
        let Some((state, group)) = state_and_group(pid) else {
            continue;
        };
        if state == 'Z' && group != own_group && group != pid {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// Children of every thread of this process (an orphan is adopted by one
/// of them).
fn children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// State letter and process group of `pid`, from `/proc/PID/stat`.
fn state_and_group(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command: state, ppid, pgrp.
    let mut fields = stat[stat.rfind(')')? + 2..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}
