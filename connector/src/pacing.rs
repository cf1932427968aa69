//! Pacing shared by the drivers: exponential backoff between connection
//! attempts, and at most one log line per kind of event per interval, so
//! a module that floods refused writes or a peer that fails every poll
//! cannot flood the connector's log. The lines held back are counted and
//! reported with the next one.

use std::time::{Duration, Instant};

/// Exponential backoff between connection attempts: `min`, doubling up to
/// `max`, back to `min` after a successful connection.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt (and doubles the one after).
    pub fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Connected: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// How often a rate-limited kind of line may be logged.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// One kind of log line's limiter.
#[derive(Debug, Default)]
pub struct LogLimit {
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimit {
    /// Whether to log now: `Some(n)` = yes, and `n` lines were held back
    /// since the last one; `None` = no (counted as held back).
    pub fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// " (N similar lines held back)" for a count above zero, else "".
pub fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar lines held back)")
    }
}
