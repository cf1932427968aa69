//! gw-vib-filter: cleans the bearing vibration readings `(n: u64, mm_per_s:
//! f64, t_ns: i64)` from `vib-raw` and publishes the same layout on
//! `vib-filtered`, one for each reading:
//! - a reading more than 8 mm/s above the average of the last 10 accepted
//!   ones is an impact (a spike) and is held over, unless three in a row
//!   are: then the vibration really rose, and it is accepted;
//! - readings that are not numbers or outside 0–50 mm/s are held over;
//! - the accepted ones go through a moving average of the last 10 (200 ms).
//!
//! The count of rejected readings survives restarts through a snapshot.

use edgeward::{Channel, Incoming, Message};

const WINDOW: usize = 10;
const SPIKE: f64 = 8.0;
const CONFIRM: u32 = 3;

struct Filter {
    out: Channel,
    window: [f64; WINDOW],
    filled: usize,
    next: usize,
    /// Readings in a row that were spikes.
    spikes: u32,
    rejected: u64,
}

impl Filter {
    fn average(&self) -> f64 {
        self.window[..self.filled].iter().sum::<f64>() / self.filled as f64
    }

    fn accept(&mut self, x: f64) {
        self.window[self.next] = x;
        self.next = (self.next + 1) % WINDOW;
        self.filled = (self.filled + 1).min(WINDOW);
    }
}

impl edgeward::Module for Filter {
    fn init() -> Result<Self, i32> {
        Ok(Filter {
            out: edgeward::channel("vib-filtered")?,
            window: [0.0; WINDOW],
            filled: 0,
            next: 0,
            spikes: 0,
            rejected: 0,
        })
    }

    fn on_message(&mut self, reading: Incoming<'_>) -> Result<(), i32> {
        let Some((n, x, t)) = reading.value::<(u64, f64, i64)>() else {
            return Ok(());
        };
        if !(0.0..=50.0).contains(&x) {
            self.rejected += 1; // also NaN
        } else if self.filled > 0 && x > self.average() + SPIKE && self.spikes + 1 < CONFIRM {
            self.spikes += 1;
            self.rejected += 1;
        } else {
            self.spikes = 0;
            self.accept(x);
        }
        if self.filled == 0 {
            return Ok(());
        }
        self.out.send_value(&(n, self.average(), t))
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.rejected.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.rejected = u64::decode(state).ok_or(-1)?;
        Ok(())
    }
}

edgeward::module!(Filter);
