//! gw-maintenance: predictive maintenance for the line's bearing and
//! barrel. It counts the run hours (every tick, 10 s), follows the trends
//! (exponential moving averages over about ten windows) of the mean
//! vibration and temperature from the windows on `stats` (sources 2 and
//! 1: `(source: u32, count: u32, min, max, mean, stddev: f64, name)`), and
//! the rate of alarms raised on `alarm-events` (a count that decays over
//! ten minutes). Every tick it publishes on `maintenance`
//!
//! ```text
//! (run_hours: f64, health: f64, vibration_mm_per_s: f64, alarms_per_hour: f64)
//! ```
//!
//! for `gw-historian` and `gw-reporter`. The health score starts at 100
//! and loses 25 points per mm/s of vibration trend above 2.8 (the bearing
//! wears: the simulated one drifts up over 30 minutes) and 2 per °C of
//! temperature trend above 70. Falling below 80 is logged as advice, once
//! until it recovers.
//!
//! The run hours, the trends and the alarm count survive restarts through
//! a snapshot.

use edgeward::{Channel, Incoming, Message};

const ADVISE_BELOW: f64 = 80.0;
const ALARM_MEMORY_S: f64 = 600.0;
/// Weight of a new statistics window in a trend.
const TREND_WEIGHT: f64 = 0.1;

struct Maintenance {
    stats: Channel,
    events: Channel,
    out: Channel,
    run_hours: f64,
    vibration: Option<f64>,
    temperature: Option<f64>,
    recent_alarms: f64,
    last_ns: u64,
    advised: bool,
}

impl Maintenance {
    fn health(&self) -> f64 {
        let wear = 25.0 * (self.vibration.unwrap_or(0.0) - 2.8).max(0.0);
        let heat = 2.0 * (self.temperature.unwrap_or(0.0) - 70.0).max(0.0);
        (100.0 - wear - heat).clamp(0.0, 100.0)
    }
}

/// `trend` moved towards `x`; the first value starts it.
fn follow(trend: &mut Option<f64>, x: f64) {
    *trend = Some(trend.map_or(x, |t| t + TREND_WEIGHT * (x - t)));
}

impl edgeward::Module for Maintenance {
    fn init() -> Result<Self, i32> {
        Ok(Maintenance {
            stats: edgeward::channel("stats")?,
            events: edgeward::channel("alarm-events")?,
            out: edgeward::channel("maintenance")?,
            run_hours: 0.0,
            vibration: None,
            temperature: None,
            recent_alarms: 0.0,
            last_ns: 0,
            advised: false,
        })
    }

    fn on_message(&mut self, message: Incoming<'_>) -> Result<(), i32> {
        let bytes = message.bytes();
        if message.channel() == self.stats {
            let Some(((source, _count), (_min, _max, mean))) = bytes
                .get(..8)
                .and_then(<(u32, u32)>::decode)
                .zip(bytes.get(8..32).and_then(<(f64, f64, f64)>::decode))
            else {
                return Ok(());
            };
            match source {
                1 => follow(&mut self.temperature, mean),
                2 => follow(&mut self.vibration, mean),
                _ => {}
            }
        } else if message.channel() == self.events && bytes.first() == Some(&1) {
            self.recent_alarms += 1.0;
        }
        Ok(())
    }

    fn on_tick(&mut self, now_ns: u64) -> Result<(), i32> {
        if self.last_ns != 0 {
            let dt = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
            self.run_hours += dt / 3600.0;
            self.recent_alarms *= (-dt / ALARM_MEMORY_S).exp();
        }
        self.last_ns = now_ns;
        let health = self.health();
        let vibration = self.vibration.unwrap_or(0.0);
        if health < ADVISE_BELOW && !self.advised {
            edgeward::warn(&format!(
                "maintenance advised: health {health:.0} (vibration trend {vibration:.2} mm/s, temperature trend {:.1} C)",
                self.temperature.unwrap_or(0.0)
            ));
        }
        self.advised = health < ADVISE_BELOW;
        let per_hour = self.recent_alarms * 3600.0 / ALARM_MEMORY_S;
        self.out
            .send_value(&(self.run_hours, health, vibration, per_hour))
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let (vibration, temperature) = (
            self.vibration.unwrap_or(f64::NAN),
            self.temperature.unwrap_or(f64::NAN),
        );
        Some((self.run_hours, self.recent_alarms, vibration, temperature).to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        let (run_hours, recent, vibration, temperature) =
            <(f64, f64, f64, f64)>::decode(state).ok_or(-1)?;
        self.run_hours = run_hours;
        self.recent_alarms = recent;
        self.vibration = Some(vibration).filter(|v| !v.is_nan());
        self.temperature = Some(temperature).filter(|t| !t.is_nan());
        edgeward::info(&format!("restored {:.3} run hours", self.run_hours));
        Ok(())
    }
}

edgeward::module!(Maintenance);
