//! AlertOnHighTemp in Rust: subscribes to sensor readings `(n, celsius,
//! start)`, warns above `--threshold` (default 85.0), and keeps its alert
//! count across restarts in a snapshot. The same module as
//! `guests/c/c-alert` and `guests/go/go-alert`, side by side in
//! docs/guest-abi.md.

use edgeward::{Incoming, Message};

struct Alert {
    threshold: f64,
    alerts: u64,
}

impl edgeward::Module for Alert {
    fn init() -> Result<Self, i32> {
        let threshold = edgeward::arg("--threshold").unwrap_or(85.0);
        Ok(Alert {
            threshold,
            alerts: 0,
        })
    }

    fn on_message(&mut self, reading: Incoming<'_>) -> Result<(), i32> {
        if let Some((_n, celsius, _start)) = reading.value::<(u64, f64, u64)>() {
            if celsius > self.threshold {
                self.alerts += 1;
                let (limit, n) = (self.threshold, self.alerts);
                edgeward::warn(&format!(
                    "ALERT: temperature {celsius:.1} > {limit:.1} (alert {n})"
                ));
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.alerts.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.alerts = u64::decode(state).ok_or(-1)?;
        edgeward::info(&format!("restored {} alerts", self.alerts));
        Ok(())
    }
}

edgeward::module!(Alert);
