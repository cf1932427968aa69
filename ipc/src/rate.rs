//! Rate limits. [`LineLimit`]: by default a token bucket of 200 lines
//! refilled at 100 lines per second. Excess lines are dropped and counted;
//! the count is reported once lines flow again. Used for the `log` import
//! (in the worker) and for a module's stdout/stderr (in the supervisor), so
//! a log-flooding module costs the gateway at most 100 lines a second per
//! stream. The supervisor limits what a worker's `Log` messages carry too,
//! with its own bucket, since a compromised worker ignores its own limit.
//! [`Bucket`] is the plain token bucket underneath.

use std::time::Instant;

/// Lines per second allowed on average.
pub const LINES_PER_SECOND: f64 = 100.0;
/// Burst size.
pub const BURST: f64 = 200.0;
/// Drops are reported at most this often.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A token bucket: `rate` tokens a second on average, at most `burst` at once.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens if there are that many now.
    pub fn take(&mut self, n: f64) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }
}

/// The line limit: a bucket plus the count of lines it dropped.
pub struct LineLimit {
    bucket: Bucket,
    last_report: Instant,
    /// Lines dropped since the last report.
    pub dropped: u64,
}

impl Default for LineLimit {
    fn default() -> Self {
        Self::new(LINES_PER_SECOND, BURST)
    }
}

impl LineLimit {
    /// A limit of `rate` lines a second, `burst` at once.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            bucket: Bucket::new(rate, burst),
            last_report: Instant::now(),
            dropped: 0,
        }
    }

    /// Whether one more line may go out now. Returns `Err(dropped)` with the
    /// number dropped so far when this line is allowed after drops and the
    /// last report is at least a second old (the caller reports them first,
    /// so reports add at most one line a second), `Ok(true)` to send,
    /// `Ok(false)` to drop.
    pub fn admit(&mut self) -> Result<bool, u64> {
        if !self.bucket.take(1.0) {
            self.dropped += 1;
            return Ok(false);
        }
        let now = Instant::now();
        if self.dropped > 0 && now.duration_since(self.last_report) >= REPORT_EVERY {
            self.last_report = now;
            return Err(std::mem::take(&mut self.dropped));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_drops_are_counted() {
        let mut limit = LineLimit::default();
        let sent = (0..10_000)
            .filter(|_| matches!(limit.admit(), Ok(true)))
            .count();
        assert!((200..=202).contains(&sent), "{sent}");
        assert!(limit.dropped >= 9_790);
        // Lines flow again after a short pause, but drops are reported only
        // once a second has passed since the last report.
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(limit.admit(), Ok(true));
        std::thread::sleep(REPORT_EVERY);
        let dropped = limit.dropped;
        assert_eq!(limit.admit(), Err(dropped));
    }
}
