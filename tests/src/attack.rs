//! Watching a gateway while something attacks it: does a healthy module
//! keep its tick rate, and does the supervisor keep answering?
//!
//! A stalled supervisor shows twice: `status` takes long to answer, and,
//! once its socket buffers fill, its workers block on their reports and
//! stop ticking. [`watch`] measures both from the outside, through the
//! real CLI.

use std::time::{Duration, Instant};

use crate::{module, Gateway};

/// What [`watch`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    /// Ticks per second of the module over the window.
    pub rate: f64,
    /// The slowest `status` answer in the window.
    pub slowest_status: Duration,
    /// `status` calls that failed (no answer, or refused).
    pub failed_status: u32,
}

/// Polls `status` every 100 ms for `window` and measures `victim`'s tick
/// rate (from its `ticks`) and the answer times.
pub fn watch(gateway: &Gateway, victim: &str, window: Duration) -> Watched {
    let ticks = |status: &serde_json::Value| module(status, victim)["ticks"].as_u64().unwrap_or(0);
    let mut slowest = Duration::ZERO;
    let mut failed = 0;
    let mut first: Option<(Instant, u64)> = None;
    let mut last: Option<(Instant, u64)> = None;
    let end = Instant::now() + window;
    while Instant::now() < end || last.is_none() {
        let asked = Instant::now();
        match gateway.try_status() {
            Some(status) => {
                let answered = Instant::now();
                slowest = slowest.max(answered - asked);
                let sample = (answered, ticks(&status));
                first.get_or_insert(sample);
                last = Some(sample);
            }
            None => {
                slowest = slowest.max(asked.elapsed());
                failed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ((t0, n0), (t1, n1)) = (first.expect("a status"), last.expect("a status"));
    let seconds = (t1 - t0).as_secs_f64().max(1e-3);
    Watched {
        rate: n1.saturating_sub(n0) as f64 / seconds,
        slowest_status: slowest,
        failed_status: failed,
    }
}

/// A tick every 10 ms: the healthy module of the attack tests.
pub const VICTIM_TICK_US: u64 = 10_000;

/// Its nominal rate.
pub const VICTIM_RATE: f64 = 1e6 / VICTIM_TICK_US as f64;

/// The policy of a healthy module ticking at [`VICTIM_RATE`].
pub fn victim_policy() -> String {
    crate::policy(
        "counter",
        &format!("[schedule]\ntick_us = {VICTIM_TICK_US}"),
    )
}

/// Asserts what an attack must never do: slow `victim` below 90% of its
/// rate, or keep `status` waiting for a second.
pub fn assert_unharmed(watched: &Watched, what: &str, gateway: &Gateway) {
    assert!(
        watched.rate >= 0.9 * VICTIM_RATE,
        "{what}: the healthy module ticked at {:.1}/s, below 90% of {VICTIM_RATE}/s ({watched:?})\nlog tail:\n{}",
        watched.rate,
        tail(&gateway.log(), 40)
    );
    assert!(
        watched.slowest_status < Duration::from_secs(1) && watched.failed_status == 0,
        "{what}: status stalled ({watched:?})\nlog tail:\n{}",
        tail(&gateway.log(), 40)
    );
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
