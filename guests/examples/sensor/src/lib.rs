//! A protocol adapter stand-in: publishes a reading `(n: u64, celsius: f64)`
//! on channel `readings` every tick, `--burst` per tick, `--count` in all
//! (0: forever). The temperature sweeps 20.0..=119.0 so filters have
//! something to decide.

use edgeward::Channel;

struct Sensor {
    readings: Channel,
    next: u64,
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
            next: 0,
            count: edgeward::arg("--count").unwrap_or(0),
            burst: edgeward::arg("--burst").unwrap_or(1),
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        for _ in 0..self.burst {
            if self.count != 0 && self.next >= self.count {
                return Ok(());
            }
            match self.readings.send_value(&(self.next, celsius(self.next))) {
                Ok(()) => self.next += 1,
                // Full even after blocking: try again next tick.
                Err(edgeward::error::FULL) => return Ok(()),
                Err(code) => return Err(code),
            }
            if self.next == self.count {
                edgeward::info(&format!("sent {} readings", self.next));
            }
        }
        Ok(())
    }
}

edgeward::module!(Sensor);
