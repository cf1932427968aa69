//! The machine's wake-up floors, for the bench's latency baselines: how
//! long one process takes to wake another that sleeps in the kernel, with
//! a futex (the cheapest mechanism) or a Unix socketpair.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How the sleeping process is woken.
#[derive(Debug, Clone, Copy)]
pub enum Mechanism {
    /// `futex_wait` / `futex_wake` on a shared word.
    Futex,
    /// A blocking `read` on a socketpair.
    Socketpair,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sends `count` stamps to a forked child, one per `interval` (the sender
/// busy-waits between), and returns the child's one-way latencies in ns.
///
/// # Panics
/// If the mapping, socketpair or fork fails.
pub fn one_way(mechanism: Mechanism, count: usize, interval: Duration) -> Vec<u64> {
    let len = 64 + count * 8;
    // SAFETY: a fresh anonymous shared mapping; it aliases nothing and is
    // unmapped at the end of this function.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap");
    let base = base.cast::<u8>();
    // SAFETY: offsets 0 and 8 are inside the mapping and aligned; the
    // memory lives until the munmap below, after the child exited.
    let word = unsafe { AtomicU32::from_ptr(base.cast::<u32>()) };
    // SAFETY: as above.
    let stamp = unsafe { AtomicU64::from_ptr(base.wrapping_add(8).cast::<u64>()) };
    let latency = |i: usize| {
        // SAFETY: index below `count`: inside the mapping, 8-byte aligned.
        unsafe { AtomicU64::from_ptr(base.wrapping_add(64 + i * 8).cast::<u64>()) }
    };
    let mut pair = [0i32; 2];
    // SAFETY: socketpair writes two fds into `pair`.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
    assert_eq!(rc, 0, "socketpair");
    // SAFETY: the child only makes system calls and atomic accesses to the
    // shared mapping, then `_exit`s: nothing that needs other threads' locks.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        // SAFETY: closes the child's copy of the sender's end, so the
        // parent closing its own gives us EOF.
        unsafe { libc::close(pair[0]) };
        let mut last = 0u32;
        loop {
            // Index of the message that woke us; a message missed while we
            // were late is left at 0 and filtered out.
            let index = match mechanism {
                Mechanism::Futex => {
                    // SYNC: Acquire: pairs with the sender's Release store;
                    // the stamp written before it is visible.
                    let now = word.load(Ordering::Acquire);
                    if now == last {
                        // SAFETY: futex_wait on a valid shared u32.
                        unsafe {
                            libc::syscall(
                                libc::SYS_futex,
                                word.as_ptr(),
                                libc::FUTEX_WAIT,
                                last,
                                std::ptr::null::<libc::timespec>(),
                            )
                        };
                        continue;
                    }
                    last = now;
                    now as usize - 1
                }
                Mechanism::Socketpair => {
                    let mut buf = [0u8; 16];
                    // SAFETY: reads into a local buffer from our socket end.
                    let n = unsafe { libc::read(pair[1], buf.as_mut_ptr().cast(), 16) };
                    if n != 16 {
                        break;
                    }
                    stamp.store(
                        u64::from_le_bytes(buf[..8].try_into().expect("8")),
                        Ordering::Relaxed,
                    );
                    u64::from_le_bytes(buf[8..].try_into().expect("8")) as usize
                }
            };
            // SYNC: Relaxed: read by the parent after waitpid.
            latency(index).store(
                now_ns().saturating_sub(stamp.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            if index + 1 == count {
                break;
            }
        }
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the parent's copy of the child's end is not used.
    unsafe { libc::close(pair[1]) };
    let mut next = now_ns() + 20_000_000;
    for i in 0..count {
        next += interval.as_nanos() as u64;
        while now_ns() < next {
            std::hint::spin_loop();
        }
        let sent = now_ns();
        match mechanism {
            Mechanism::Futex => {
                // SYNC: Relaxed, published by the Release store below.
                stamp.store(sent, Ordering::Relaxed);
                // SYNC: Release: pairs with the child's Acquire load.
                word.store(i as u32 + 1, Ordering::Release);
                // SAFETY: futex_wake on a valid shared u32.
                unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
            }
            Mechanism::Socketpair => {
                let mut buf = [0u8; 16];
                buf[..8].copy_from_slice(&sent.to_le_bytes());
                buf[8..].copy_from_slice(&(i as u64).to_le_bytes());
                // SAFETY: writes a local buffer to our socket end.
                unsafe { libc::write(pair[0], buf.as_ptr().cast(), 16) };
            }
        }
    }
    // The child may have missed the last futex value while late: one more
    // wake-up with an out-of-range value is not needed, as it exits on the
    // last index or on EOF; close our end to give it EOF.
    // SAFETY: our socket end; not used after this.
    unsafe { libc::close(pair[0]) };
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    // SYNC: Relaxed: the child exited (waitpid orders its writes before).
    let out = (0..count)
        .map(|i| latency(i).load(Ordering::Relaxed))
        .filter(|&ns| ns > 0)
        .collect();
    // SAFETY: unmaps our mapping; nothing uses it now.
    unsafe { libc::munmap(base.cast(), len) };
    out
}
