//! The classic: alert when the temperature is above a threshold.
//! Reads the sensor file `/sensor/temperature` (a granted read-only dir) on
//! every tick; logs once when the reading crosses the threshold either way,
//! and once why, when the file cannot be read or parsed (the tick then
//! fails until it can).

pub fn alert_on_high_temp(t: f64, threshold: f64) -> bool {
    t > threshold
}

/// The sensor file.
const SENSOR: &str = "/sensor/temperature";

struct TempAlert {
    threshold: f64,
    alerting: bool,
    /// Why the last tick could not read the temperature (logged once).
    failing: Option<String>,
}

/// The temperature in the sensor file, or why there is none.
fn read_temperature() -> Result<f64, String> {
    let text = std::fs::read_to_string(SENSOR).map_err(|e| e.to_string())?;
    let text = text.trim();
    text.parse::<f64>()
        .map_err(|_| format!("\"{text}\" is not a number"))
}

impl edgeward::Module for TempAlert {
    fn init() -> Result<Self, i32> {
        let threshold = edgeward::arg("--threshold").unwrap_or(85.0);
        edgeward::info(&format!("watching {SENSOR}, threshold {threshold:.1}"));
        Ok(TempAlert {
            threshold,
            alerting: false,
            failing: None,
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        let t = match read_temperature() {
            Ok(t) => t,
            Err(why) => {
                if self.failing.as_ref() != Some(&why) {
                    edgeward::error(&format!("cannot read {SENSOR}: {why}"));
                    self.failing = Some(why);
                }
                return Err(-1);
            }
        };
        if self.failing.take().is_some() {
            edgeward::info(&format!("{SENSOR} is readable again"));
        }
        let high = alert_on_high_temp(t, self.threshold);
        if high != self.alerting {
            self.alerting = high;
            if high {
                edgeward::warn(&format!(
                    "ALERT: temperature {t:.1} > {:.1}",
                    self.threshold
                ))
            } else {
                edgeward::info(&format!("temperature back to {t:.1}"))
            }
        }
        Ok(())
    }
}

edgeward::module!(TempAlert);
