//! A short scheduler slice for fast-ticking modules.
//!
//! A control loop ticking every millisecond does tens of microseconds of
//! work per tick; what makes it late is waiting for a CPU that another
//! process holds. Linux's EEVDF scheduler (6.6+) picks the task with the
//! earliest virtual deadline, and since 6.12 a task may ask for its own
//! slice (`sched_setattr` with `sched_runtime`, SCHED_OTHER, no privilege
//! needed): a shorter slice gives an earlier deadline, and a waking task
//! with a shorter slice preempts one with a longer slice at once
//! (`PREEMPT_SHORT`). So a worker whose module ticks at most every
//! [`FAST_TICK_US`] asks for [`SHORT_SLICE_NS`] before the sandbox is up
//! (its threads inherit it). Nothing changes for other modules, and the
//! module's CPU quota is untouched: a shorter slice is a place in the
//! queue, not more time. On older kernels the call fails or is ignored,
//! which costs nothing but the benefit.

/// Modules ticking this often or more get the short slice.
pub const FAST_TICK_US: u64 = 10_000;

/// The slice asked for: the kernel's minimum (0.1 ms).
pub const SHORT_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` of `<linux/sched/types.h>`, size version 0.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// Whether a module ticking every `tick_us` (0: never) gets the short slice.
pub fn wanted(tick_us: u64) -> bool {
    tick_us > 0 && tick_us <= FAST_TICK_US
}

/// Asks for the short slice for this thread (and the threads it starts).
/// Returns whether the kernel took it.
pub fn shorten() -> bool {
    // The nice value is set by the same call (the kernel's "keep params"
    // flag would skip the slice too): keep the current one.
    // (For this process it cannot fail: its -1 is a nice value.)
    // SAFETY: getpriority takes no pointers.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_nice: nice,
        sched_runtime: SHORT_SLICE_NS,
        ..SchedAttr::default()
    };
    // SAFETY: sched_setattr reads `size` bytes from a valid, initialised
    // struct laid out as the kernel's `struct sched_attr` (version 0).
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    rc == 0
}

/// This thread's slice in ns, as the kernel reports it (`sched_getattr`).
#[cfg(test)]
fn current_ns() -> Option<u64> {
    let mut attr = SchedAttr::default();
    // SAFETY: sched_getattr writes at most `size` bytes into the struct we
    // own mutably for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    (rc == 0).then_some(attr.sched_runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_reference_says_who_gets_which_slice() {
        let policy = include_str!("../../../docs/policy.md");
        let flat: String = policy.split_whitespace().collect::<Vec<_>>().join(" ");
        for phrase in [
            format!("ticking every {FAST_TICK_US} µs or more often"),
            format!("shortest slice ({} ms;", SHORT_SLICE_NS as f64 / 1e6),
        ] {
            assert!(flat.contains(&phrase), "policy.md lacks {phrase:?}");
        }
    }

    #[test]
    fn only_fast_ticking_modules_want_it() {
        assert!(!wanted(0));
        assert!(wanted(1_000));
        assert!(wanted(FAST_TICK_US));
        assert!(!wanted(FAST_TICK_US + 1));
    }

    #[test]
    fn the_kernel_takes_the_short_slice_where_it_has_eevdf_slices() {
        std::thread::spawn(|| {
            if shorten() {
                assert_eq!(current_ns(), Some(SHORT_SLICE_NS));
            } else {
                eprintln!("skipped: this kernel has no per-task slices (before 6.12)");
            }
        })
        .join()
        .unwrap();
    }
}
