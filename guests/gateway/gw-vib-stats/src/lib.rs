//! gw-vib-stats: rolling statistics of the filtered bearing vibration
//! `(n: u64, mm_per_s: f64, t_ns: i64)` from `vib-filtered`, over windows
//! of `--window` readings (default 250: 5 s at 20 ms). At the end of each
//! window it publishes on `stats`
//!
//! ```text
//! (source: u32 = 2, count: u32, min: f64, max: f64, mean: f64, stddev: f64, name "vibration")
//! ```
//!
//! for `gw-maintenance`, `gw-historian` and `gw-reporter` (Welford's
//! algorithm: one pass, no stored samples). A window starts over after a
//! restart, so there is no snapshot.

use edgeward::{Channel, Incoming, Message};

const SOURCE: u32 = 2;

struct Stats {
    out: Channel,
    window: u32,
    count: u32,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn add(&mut self, x: f64) {
        if self.count == 0 {
            (self.min, self.max) = (x, x);
        }
        self.count += 1;
        let d = x - self.mean;
        self.mean += d / f64::from(self.count);
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    fn publish(&mut self) -> Result<(), i32> {
        let stddev = (self.m2 / f64::from(self.count - 1)).sqrt();
        let mut message = (SOURCE, self.count, self.min, self.max).to_bytes();
        (self.mean, stddev).encode(&mut message);
        message.extend_from_slice(b"vibration");
        (self.count, self.mean, self.m2) = (0, 0.0, 0.0);
        self.out.send(&message)
    }
}

impl edgeward::Module for Stats {
    fn init() -> Result<Self, i32> {
        Ok(Stats {
            out: edgeward::channel("stats")?,
            window: edgeward::arg("--window").unwrap_or(250u32).max(2),
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: 0.0,
            max: 0.0,
        })
    }

    fn on_message(&mut self, reading: Incoming<'_>) -> Result<(), i32> {
        match reading.value::<(u64, f64, i64)>() {
            Some((_n, x, _t)) if !x.is_nan() => self.add(x),
            _ => return Ok(()),
        }
        if self.count >= self.window {
            self.publish()?;
        }
        Ok(())
    }
}

edgeward::module!(Stats);
