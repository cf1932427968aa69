//! gw-pressure-pid: the pump's pressure loop, a PI controller ticking
//! every 1 ms (`[schedule] tick_us = 1000`). It holds the filtered
//! discharge pressure `(n: u64, bar: f64, t_ns: i64)` from
//! `pressure-filtered` at the setpoint from `pressure-setpoint` (same
//! layout; 4.0 bar until the recipe says otherwise) by setting the pump
//! speed, 0–100 %, which it publishes every 10 ticks (10 ms) on `pump-cmd`
//! as `(n: u64, speed: f64, t_ns: i64)` for the pump (`gw-pressure-sensor`).
//!
//! The measurement arrives every 20 ms; between two, the loop integrates on
//! the last one (a zero-order hold). Anti-windup: the integral stops while
//! the output is saturated in the same direction (during the leak, the
//! pump at full speed cannot hold the setpoint). The integral survives
//! restarts through a snapshot, for a bumpless restart.

use edgeward::{Channel, Incoming, Message};

const KP: f64 = 15.0; // % of speed per bar of error
const KI: f64 = 10.0; // % of speed per bar·s
const PUBLISH_EVERY: u64 = 10;
const MAX_STEP_S: f64 = 0.05;

struct Pid {
    measurement: Channel,
    setpoint_channel: Channel,
    pump: Channel,
    setpoint: f64,
    bar: Option<f64>,
    integral: f64,
    last_ns: u64,
    ticks: u64,
    sent: u64,
}

impl edgeward::Module for Pid {
    fn init() -> Result<Self, i32> {
        Ok(Pid {
            measurement: edgeward::channel("pressure-filtered")?,
            setpoint_channel: edgeward::channel("pressure-setpoint")?,
            pump: edgeward::channel("pump-cmd")?,
            setpoint: 4.0,
            bar: None,
            integral: 0.0,
            last_ns: 0,
            ticks: 0,
            sent: 0,
        })
    }

    fn on_message(&mut self, message: Incoming<'_>) -> Result<(), i32> {
        let Some((_n, value, _t)) = message.value::<(u64, f64, i64)>() else {
            return Ok(());
        };
        if value.is_nan() {
            return Ok(());
        }
        if message.channel() == self.measurement {
            self.bar = Some(value);
        } else if message.channel() == self.setpoint_channel && (0.0..=10.0).contains(&value) {
            self.setpoint = value;
        }
        Ok(())
    }

    fn on_tick(&mut self, now_ns: u64) -> Result<(), i32> {
        let dt = if self.last_ns == 0 {
            0.001
        } else {
            (now_ns.saturating_sub(self.last_ns) as f64 / 1e9).min(MAX_STEP_S)
        };
        self.last_ns = now_ns;
        let Some(bar) = self.bar else {
            return Ok(());
        };
        let error = self.setpoint - bar;
        let unclamped = KP * error + self.integral;
        if (unclamped < 100.0 || error < 0.0) && (unclamped > 0.0 || error > 0.0) {
            self.integral += KI * error * dt;
        }
        self.ticks += 1;
        if !self.ticks.is_multiple_of(PUBLISH_EVERY) {
            return Ok(());
        }
        let speed = (KP * error + self.integral).clamp(0.0, 100.0);
        let n = self.sent;
        self.sent += 1;
        self.pump.send_value(&(n, speed, now_ns))
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some((self.integral, self.sent).to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        let (integral, sent) = <(f64, u64)>::decode(state).ok_or(-1)?;
        (self.integral, self.sent) = (integral.clamp(0.0, 100.0), sent);
        edgeward::info(&format!(
            "restored the integral at {:.1} % speed",
            self.integral
        ));
        Ok(())
    }
}

edgeward::module!(Pid);
