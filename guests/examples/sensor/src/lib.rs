//! A protocol adapter stand-in: publishes a reading `(n, celsius, start)`
//! on channel `readings` every tick, `--burst` per tick, `--count` in all
//! (0: forever). The temperature sweeps 20.0..=119.0 so filters have
//! something to decide.
//!
//! The reading number `n` survives restarts: it is kept in a snapshot
//! (`edgeward::state`), so a restarted sensor resumes its numbering (from
//! its last snapshot: after a crash some numbers come again). `start` is
//! the sensor's start time (`now_ns` at `init`), different after every
//! restart, so subscribers can tell a restarted sensor from readings out
//! of order.

use edgeward::Channel;
use serde::{Deserialize, Serialize};

/// What a restart must not lose.
#[derive(Serialize, Deserialize, Default)]
struct Numbering {
    next: u64,
}

struct Sensor {
    readings: Channel,
    numbering: Numbering,
    start: u64,
    count: u64,
    burst: u64,
}

/// The reading number `n` carries.
pub fn celsius(n: u64) -> f64 {
    20.0 + (n % 100) as f64
}

impl edgeward::Module for Sensor {
    fn init() -> Result<Self, i32> {
        Ok(Sensor {
            readings: edgeward::channel("readings")?,
            numbering: Numbering::default(),
            start: edgeward::now_ns(),
            count: edgeward::arg("--count").unwrap_or(0),
            burst: edgeward::arg("--burst").unwrap_or(1),
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        for _ in 0..self.burst {
            let n = self.numbering.next;
            if self.count != 0 && n >= self.count {
                return Ok(());
            }
            match self.readings.send_value(&(n, celsius(n), self.start)) {
                Ok(()) => self.numbering.next += 1,
                // Full even after blocking: try again next tick.
                Err(edgeward::error::FULL) => return Ok(()),
                Err(code) => return Err(code),
            }
            if self.numbering.next == self.count {
                edgeward::info(&format!("sent {} readings", self.numbering.next));
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        edgeward::state::save(&self.numbering)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.numbering = edgeward::state::load(state)?;
        edgeward::info(&format!(
            "sensor: resuming at reading {}",
            self.numbering.next
        ));
        Ok(())
    }
}

edgeward::module!(Sensor);
