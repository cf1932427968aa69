//! The machine's wake-up floors, for the bench's latency baselines: how
//! long one process takes to wake another that sleeps in the kernel, with
//! a futex (the cheapest mechanism) or a Unix socketpair, one way
//! ([`one_way`]) or there and back ([`round_trip`]); and how late a bare
//! timerfd loop wakes for its ticks ([`timer_lateness`]).

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

/// `len` u64 slots in an anonymous shared mapping: what a forked child
/// writes its measurements into (zeroed; unmapped on drop).
struct SharedSlots {
    base: *mut u64,
    len: usize,
}

impl SharedSlots {
    fn new(len: usize) -> Self {
        // SAFETY: a fresh anonymous shared mapping; it aliases nothing and
        // is unmapped on drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1) * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        Self {
            base: base.cast(),
            len,
        }
    }

    fn slot(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "slot {i} of {}", self.len);
        // SAFETY: inside the mapping, 8-byte aligned (page-aligned base),
        // alive as long as `self`.
        unsafe { AtomicU64::from_ptr(self.base.wrapping_add(i)) }
    }

    /// The word at slot `i` as a futex (the low half of the u64).
    fn futex(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.len, "slot {i} of {}", self.len);
        // SAFETY: as in `slot`; a u32 at an 8-aligned address.
        unsafe { AtomicU32::from_ptr(self.base.wrapping_add(i).cast()) }
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: our mapping; no reference into it outlives `self`.
        unsafe { libc::munmap(self.base.cast(), self.len.max(1) * 8) };
    }
}

/// Forks a child that runs `body` and `_exit`s, then waits for it.
///
/// # Safety
/// `body` runs in a forked copy of a possibly multi-threaded process: it
/// may only make system calls and touch memory it owns or shared mappings
/// (no allocation, no locks).
unsafe fn in_child(body: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the caller promises `body` is fork-safe.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        body();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    child
}

fn wait_child(child: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
}

/// The bare tick loop: a separate process reads an absolute 1-period
/// timerfd `count` times (blocking `read`, nothing else) and measures, like
/// the worker's reactor loop (`worker/src/module/lateness.rs`), how late
/// it woke: from the due time of the oldest expiration the read returned to
/// the moment it returned. Returns the lateness of each tick in ns.
///
/// # Panics
/// If the timer or the fork fails.
pub fn timer_lateness(count: usize, period: Duration) -> Vec<u64> {
    let out = SharedSlots::new(count);
    // SAFETY: a timerfd of our own; its fd is closed below.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
    assert!(fd >= 0, "timerfd_create");
    let period_ns = period.as_nanos() as u64;
    let first = now_ns() + 10_000_000;
    let spec = |ns: u64| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    let timer = libc::itimerspec {
        it_interval: spec(period_ns),
        it_value: spec(first),
    };
    // SAFETY: arms our timerfd; `timer` is read, nothing written back.
    let rc =
        unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &timer, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "timerfd_settime");
    let body = || {
        let mut due = first;
        for i in 0..count {
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a local.
            let n = unsafe { libc::read(fd, (&raw mut expirations).cast(), 8) };
            let now = now_ns();
            if n != 8 {
                break;
            }
            // SYNC: Relaxed: read by the parent after waitpid.
            out.slot(i)
                .store(now.saturating_sub(due).max(1), Ordering::Relaxed);
            due += expirations * period_ns;
        }
    };
    // SAFETY: the child only makes system calls and stores to the shared
    // mapping.
    let child = unsafe { in_child(body) };
    wait_child(child);
    // SAFETY: our fd; not used after this.
    unsafe { libc::close(fd) };
    // SYNC: Relaxed: the child exited (waitpid orders its writes before).
    (0..count)
        .map(|i| out.slot(i).load(Ordering::Relaxed))
        .filter(|&ns| ns > 0)
        .collect()
}

/// Futex wait on `word` while it holds `value`, for at most a second.
fn futex_wait(word: &AtomicU32, value: u32) {
    let timeout = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    // SAFETY: futex_wait on a valid shared u32 with a valid timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            value,
            &raw const timeout,
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: futex_wake on a valid shared u32.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// Sleeps until CLOCK_MONOTONIC reads `ns`.
fn sleep_until(ns: u64) {
    let at = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: reads `at`; no remaining time is written with TIMER_ABSTIME.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &at,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

/// Round trips between two processes that both sleep in the kernel in
/// between, paced like the bench's ping module: every `interval` this
/// process wakes, stamps the time, wakes the echoing child and sleeps until
/// the child woke it back. Returns `count` round-trip times in ns (fewer if
/// the child stopped answering for a second).
///
/// # Panics
/// If the mapping, socketpair or fork fails.
pub fn round_trip(mechanism: Mechanism, count: usize, interval: Duration) -> Vec<u64> {
    let shared = SharedSlots::new(1);
    let word = shared.futex(0);
    let mut pair = [0i32; 2];
    // SAFETY: socketpair writes two fds into `pair`.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
    assert_eq!(rc, 0, "socketpair");
    let echo = || {
        // SAFETY: the child's copy of the initiator's end is not used.
        unsafe { libc::close(pair[0]) };
        for i in 0..count as u32 {
            match mechanism {
                Mechanism::Futex => {
                    loop {
                        // SYNC: Acquire: pairs with the initiator's Release.
                        let now = word.load(Ordering::Acquire);
                        if now == 2 * i + 1 {
                            break;
                        }
                        futex_wait(word, now);
                    }
                    // SYNC: Release: pairs with the initiator's Acquire.
                    word.store(2 * i + 2, Ordering::Release);
                    futex_wake(word);
                }
                Mechanism::Socketpair => {
                    let mut buf = [0u8; 8];
                    // SAFETY: reads into / writes from a local buffer on
                    // our socket end.
                    if unsafe { libc::read(pair[1], buf.as_mut_ptr().cast(), 8) } != 8
                        // SAFETY: as above.
                        || unsafe { libc::write(pair[1], buf.as_ptr().cast(), 8) } != 8
                    {
                        break;
                    }
                }
            }
        }
    };
    // SAFETY: the child only makes system calls and atomic accesses to the
    // shared mapping.
    let child = unsafe { in_child(echo) };
    // SAFETY: the parent's copy of the child's end is not used.
    unsafe { libc::close(pair[1]) };
    let mut rtts = Vec::with_capacity(count);
    let mut next = now_ns() + 20_000_000;
    'rounds: for i in 0..count as u32 {
        next += interval.as_nanos() as u64;
        sleep_until(next);
        let sent = now_ns();
        match mechanism {
            Mechanism::Futex => {
                // SYNC: Release: pairs with the child's Acquire load.
                word.store(2 * i + 1, Ordering::Release);
                futex_wake(word);
                loop {
                    // SYNC: Acquire: pairs with the child's Release store.
                    let now = word.load(Ordering::Acquire);
                    if now == 2 * i + 2 {
                        break;
                    }
                    if now_ns() - sent > 1_000_000_000 {
                        break 'rounds;
                    }
                    futex_wait(word, now);
                }
            }
            Mechanism::Socketpair => {
                let mut buf = (i as u64).to_le_bytes();
                // SAFETY: writes / reads a local buffer on our socket end.
                if unsafe { libc::write(pair[0], buf.as_ptr().cast(), 8) } != 8
                    // SAFETY: as above.
                    || unsafe { libc::read(pair[0], buf.as_mut_ptr().cast(), 8) } != 8
                {
                    break 'rounds;
                }
            }
        }
        rtts.push(now_ns() - sent);
    }
    // SAFETY: our socket end; not used after this. EOF ends a waiting child.
    unsafe { libc::close(pair[0]) };
    if rtts.len() < count {
        // SAFETY: our own child, stuck waiting for a round that never came.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    wait_child(child);
    rtts
}
