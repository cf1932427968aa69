//! gw-vib-alarm: grades the filtered bearing vibration `(n: u64,
//! mm_per_s: f64, t_ns: i64)` from `vib-filtered` in the zones of ISO
//! 10816 (a large machine on a rigid foundation): A/B up to 4.5 mm/s is
//! fine, C above 4.5 is a warning, D above 7.1 is an alarm. Each change of
//! zone (0.3 mm/s of hysteresis on the way down) goes to
//! `gw-alarm-manager` on `alarms` as `(active: u32, severity: u32,
//! mm_per_s: f64, tag "vib-high")`, and is logged.
//!
//! The number of zone D alarms survives restarts through a snapshot.

use edgeward::{Channel, Incoming, Message};

const ZONE_C: f64 = 4.5;
const ZONE_D: f64 = 7.1;
const HYSTERESIS: f64 = 0.3;

struct VibAlarm {
    alarms: Channel,
    /// 0: zones A/B, 1: zone C (warning), 2: zone D (alarm).
    severity: u32,
    zone_d: u64,
}

impl VibAlarm {
    /// The severity `x` calls for, with hysteresis below the current one.
    fn severity_for(&self, x: f64) -> u32 {
        let band = |limit: f64, level: u32| {
            if self.severity >= level {
                limit - HYSTERESIS
            } else {
                limit
            }
        };
        if x > band(ZONE_D, 2) {
            2
        } else if x > band(ZONE_C, 1) {
            1
        } else {
            0
        }
    }

    fn send(&self, active: bool, severity: u32, x: f64) -> Result<(), i32> {
        let mut message = (u32::from(active), severity, x).to_bytes();
        message.extend_from_slice(b"vib-high");
        self.alarms.send(&message)
    }
}

impl edgeward::Module for VibAlarm {
    fn init() -> Result<Self, i32> {
        Ok(VibAlarm {
            alarms: edgeward::channel("alarms")?,
            severity: 0,
            zone_d: 0,
        })
    }

    fn on_message(&mut self, reading: Incoming<'_>) -> Result<(), i32> {
        let Some((_n, x, _t)) = reading.value::<(u64, f64, i64)>() else {
            return Ok(());
        };
        let severity = self.severity_for(x);
        if severity == self.severity {
            return Ok(());
        }
        let zone = ["A/B", "C", "D"][severity as usize];
        if severity == 2 {
            self.zone_d += 1;
        }
        if severity > self.severity {
            edgeward::warn(&format!("vibration {x:.1} mm/s: zone {zone}"));
        } else {
            edgeward::info(&format!("vibration {x:.1} mm/s: back to zone {zone}"));
        }
        self.severity = severity;
        self.send(severity > 0, severity.max(1), x)
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.zone_d.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.zone_d = u64::decode(state).ok_or(-1)?;
        Ok(())
    }
}

edgeward::module!(VibAlarm);
