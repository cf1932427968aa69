//! gw-vibration-sensor: the main bearing's vibration transmitter (velocity
//! RMS in mm/s, as ISO 10816 grades it), simulated. Every tick (20 ms) it
//! publishes one reading `(n: u64, mm_per_s: f64, t_ns: i64)` on
//! `vib-raw`.
//!
//! The signal is a function of the reading number `n`: about 2.2 mm/s with
//! a slow swing, a little noise and bearing wear that creeps up 1.2 mm/s
//! over 30 minutes (then the bearing is "replaced" and it starts over);
//! and two deterministic faults:
//! - an impact every 250 readings (5 s): one reading of 25 mm/s, which
//!   `gw-vib-filter` rejects as a spike;
//! - a resonance every 2000 readings (40 s), 150 readings long (3 s, from
//!   reading 600 on): 8 mm/s, zone D, which `gw-vib-alarm` raises.
//!
//! `n` survives restarts through a snapshot.

use edgeward::{Channel, Message};

/// A deterministic value in [-1, 1) for reading `n` (splitmix64).
fn noise(n: u64) -> f64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// What the transmitter reads at reading `n`, in mm/s.
fn mm_per_s(n: u64) -> f64 {
    use std::f64::consts::TAU;
    if n % 250 == 125 {
        return 25.0; // impact
    }
    let x = n as f64;
    if (600..750).contains(&(n % 2000)) {
        return 8.0 + 0.4 * (TAU * x / 25.0).sin(); // resonance
    }
    let wear = 1.2 * (n % 90_000) as f64 / 90_000.0;
    2.2 + 0.4 * (TAU * x / 850.0).sin() + 0.15 * noise(n ^ 0x3C3C) + wear
}

struct Sensor {
    out: Channel,
    n: u64,
}

impl edgeward::Module for Sensor {
    fn init() -> Result<Self, i32> {
        Ok(Sensor {
            out: edgeward::channel("vib-raw")?,
            n: 0,
        })
    }

    fn on_tick(&mut self, now_ns: u64) -> Result<(), i32> {
        let n = self.n;
        self.n += 1;
        self.out.send_value(&(n, mm_per_s(n), now_ns))
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.n.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.n = u64::decode(state).ok_or(-1)?;
        edgeward::info(&format!("resuming at reading {}", self.n));
        Ok(())
    }
}

edgeward::module!(Sensor);
