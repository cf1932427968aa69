//! A sleep with microsecond precision for the poll schedule.
//!
//! tokio's timer wheel has millisecond ticks and rounds every deadline up
//! to the next one (and the reactor's `epoll_wait` timeout is in whole
//! milliseconds): polls woken by it start 0–2 ms late, 1.5 ms typical —
//! more than the whole lateness budget (p99 ≤ 1 ms). A `timerfd` armed for
//! the exact deadline wakes the reactor through its file descriptor
//! instead (nanosecond resolution, plus the kernel's timer slack, 50 µs by
//! default). Where a timerfd cannot be made, tokio's sleep is the fallback.
//! (The connector's seccomp allowlist has `timerfd_create`/`_settime`:
//! the worker's tick timer uses them too.)

use std::io;
use std::os::fd::{AsFd as _, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `AsyncFd` wants `AsRawFd`; nix's `TimerFd` offers `AsFd`.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One device's timer (one sleep at a time).
pub struct Timer {
    fd: Option<AsyncFd<Fd>>,
}

impl Timer {
    /// A timerfd-backed timer, or tokio's if that fails. Must be called
    /// inside the runtime (it registers with the reactor).
    pub fn new() -> Self {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .ok()
        .and_then(|fd| {
            // SAFETY: `Fd` owns the timerfd (nix's `TimerFd` holds an
            // `OwnedFd`), so the descriptor is open, and `as_raw_fd` returns
            // that same descriptor, for as long as the `AsyncFd` owns it.
            unsafe { AsyncFd::register_with_interest(Fd(fd), Interest::READABLE) }.ok()
        });
        Self { fd }
    }

    /// Resolves at `deadline` (at once if it has passed). Cancel-safe: a
    /// dropped sleep leaves at most a stale expiration, which the next
    /// sleep tells apart by checking the clock.
    pub async fn sleep_until(&self, deadline: Instant) {
        let Some(fd) = &self.fd else {
            tokio::time::sleep_until(deadline.into()).await;
            return;
        };
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            // Relative to now: Instant is CLOCK_MONOTONIC but does not
            // expose its timespec; the few µs between the two reads only
            // make the wake later, never early.
            let armed = fd.get_ref().0.set(
                Expiration::OneShot(TimeSpec::from_duration(deadline - now)),
                TimerSetTimeFlags::empty(),
            );
            if armed.is_err() || self.expired(fd).await.is_err() {
                tokio::time::sleep_until(deadline.into()).await;
                return;
            }
        }
    }

    /// Waits until the timerfd has an expiration and consumes it.
    async fn expired(&self, fd: &AsyncFd<Fd>) -> io::Result<()> {
        loop {
            let mut ready = fd.readable().await?;
            match ready.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(result) => return result,
                // Not expired yet (readiness was stale): wait again.
                Err(_would_block) => continue,
            }
        }
    }
}
