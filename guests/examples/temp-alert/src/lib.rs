//! The classic: alert when the temperature is above a threshold.
//! Reads the sensor file `/sensor/temperature` (a granted read-only dir) on
//! every tick; logs once when the reading crosses the threshold either way.

pub fn alert_on_high_temp(t: f64, threshold: f64) -> bool {
    t > threshold
}

struct TempAlert {
    threshold: f64,
    alerting: bool,
}

impl edgeward::Module for TempAlert {
    fn init() -> Result<Self, i32> {
        let threshold = edgeward::arg("--threshold").unwrap_or(85.0);
        edgeward::info(&format!(
            "watching /sensor/temperature, threshold {threshold:.1}"
        ));
        Ok(TempAlert {
            threshold,
            alerting: false,
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        let Some(t) = std::fs::read_to_string("/sensor/temperature")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
        else {
            return Err(-1);
        };
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
