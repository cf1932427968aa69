//! Tick lateness: how long after its due time each `ew_on_tick` call
//! started, over the last [`WINDOW`] ticks, reported in the heartbeats
//! (`status`: `tick_lateness_p50_us`, `…_p99_us`, `…_max_us`).
//!
//! The tick timer runs on absolute due times (`t0 + k × period`), so the
//! due time of every expiration is known exactly. When the loop was too
//! busy to take an expiration before the next one came, the kernel
//! coalesces them and one call covers both: that call is late by the time
//! since the *oldest* expiration it covers, so a missed tick shows as one
//! long lateness rather than disappearing.

use edgeward_ipc::control::{LatenessHistogram, TickLateness};

/// Ticks the statistic covers: about a second at 1 ms ticks, a ring of
/// 4 KiB, allocated only by modules that tick.
pub const WINDOW: usize = 1024;

/// The due times of an absolute interval timer.
#[derive(Debug)]
pub struct TickClock {
    /// Due time of the oldest expiration not yet served, ns (CLOCK_MONOTONIC).
    next_due_ns: u64,
    period_ns: u64,
}

impl TickClock {
    /// A timer whose first expiration is due at `first_due_ns`.
    pub fn new(first_due_ns: u64, period_ns: u64) -> Self {
        Self {
            next_due_ns: first_due_ns,
            period_ns: period_ns.max(1),
        }
    }

    /// `expirations` (the timerfd's count, ≥ 1) were read: returns the due
    /// time of the oldest of them, from which the call that serves them
    /// all counts its lateness.
    pub fn take(&mut self, expirations: u64) -> u64 {
        let oldest = self.next_due_ns;
        self.next_due_ns = oldest.saturating_add(expirations.saturating_mul(self.period_ns));
        oldest
    }
}

/// The lateness of the last [`WINDOW`] ticks.
pub struct LatenessWindow {
    /// µs, saturating at `u32::MAX` (71 minutes); a ring once full.
    samples: Vec<u32>,
    next: usize,
    /// Every tick since the worker started, by bucket.
    histogram: LatenessHistogram,
}

impl LatenessWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            samples: Vec::with_capacity(WINDOW),
            next: 0,
            histogram: LatenessHistogram::default(),
        }
    }

    /// A tick call started `lateness_ns` after its due time.
    pub fn record(&mut self, lateness_ns: u64) {
        self.histogram.record(lateness_ns / 1000);
        let us = u32::try_from(lateness_ns / 1000).unwrap_or(u32::MAX);
        if self.samples.len() < WINDOW {
            self.samples.push(us);
        } else {
            self.samples[self.next] = us;
            self.next = (self.next + 1) % WINDOW;
        }
    }

    /// Median, 99th percentile and maximum (nearest rank) of the window;
    /// `None` before the first tick. Sorts a copy on the stack: called at
    /// heartbeats (at most ten a second), never per tick.
    pub fn summary(&self) -> Option<TickLateness> {
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        let mut sorted = [0u32; WINDOW];
        let sorted = &mut sorted[..n];
        sorted.copy_from_slice(&self.samples);
        sorted.sort_unstable();
        // Nearest rank: the smallest value with at least pct % of the
        // samples at or below it.
        let rank = |pct: usize| sorted[(n * pct).div_ceil(100).clamp(1, n) - 1];
        Some(TickLateness {
            p50_us: u64::from(rank(50)),
            p99_us: u64::from(rank(99)),
            max_us: u64::from(sorted[n - 1]),
            ticks: n as u32,
            histogram: self.histogram,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_the_window() {
        let mut window = LatenessWindow::new();
        assert_eq!(window.summary(), None);
        // 1..=1000 µs, shuffled by a stride coprime to 1000.
        for i in 0..1000u64 {
            window.record((i * 7 % 1000 + 1) * 1000 + 999);
        }
        let s = window.summary().unwrap();
        assert_eq!(
            (s.p50_us, s.p99_us, s.max_us, s.ticks),
            (500, 990, 1000, 1000)
        );
    }

    #[test]
    fn the_window_forgets_the_oldest_ticks() {
        let mut window = LatenessWindow::new();
        // A full window of 5 ms lateness, then punctual ticks. The p99 of
        // 1024 samples is the 11th worst: 11 late ones left make it 5 ms.
        for _ in 0..WINDOW {
            window.record(5_000_000);
        }
        for _ in 0..WINDOW - 11 {
            window.record(20_000);
        }
        let s = window.summary().unwrap();
        assert_eq!((s.p50_us, s.p99_us, s.max_us), (20, 5000, 5000));
        window.record(20_000);
        assert_eq!(window.summary().unwrap().p99_us, 20);
        for _ in 0..10 {
            window.record(20_000);
        }
        let s = window.summary().unwrap();
        assert_eq!(
            (s.p50_us, s.p99_us, s.max_us, s.ticks),
            (20, 20, 20, WINDOW as u32)
        );
        // The histogram counts every tick, not just the window's.
        let h = window.summary().unwrap().histogram;
        assert_eq!(h.count(), 2 * WINDOW as u64);
        assert_eq!(h.counts[0], WINDOW as u64); // 20 µs ≤ 50 µs
        assert_eq!(h.counts[6], WINDOW as u64); // 5 ms ≤ 5 ms
                                                // Absurd lateness saturates instead of wrapping.
        window.record(u64::MAX);
        assert_eq!(window.summary().unwrap().max_us, u64::from(u32::MAX));
    }

    #[test]
    fn the_window_is_documented() {
        let doc = include_str!("../../../docs/operations.md");
        let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        let phrase = format!("last {WINDOW} ticks");
        assert!(flat.contains(&phrase), "operations.md lacks {phrase:?}");
    }

    #[test]
    fn a_coalesced_call_is_late_from_its_oldest_expiration() {
        let mut clock = TickClock::new(1_000_000, 1_000_000);
        assert_eq!(clock.take(1), 1_000_000);
        // Three expirations read at once (the loop was busy 2 ms): the
        // call is due since the first of them...
        assert_eq!(clock.take(3), 2_000_000);
        // ...and the next is due one period after the last.
        assert_eq!(clock.take(1), 5_000_000);
    }
}
