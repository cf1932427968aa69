//! Forwards readings above `--threshold` (default 85.0) from `readings` to
//! `alarms`, checking that readings arrive in order.

use edgeward::{Channel, Incoming};

struct Filter {
    alarms: Channel,
    threshold: f64,
    expected: u64,
}

impl edgeward::Module for Filter {
    fn init() -> Result<Self, i32> {
        Ok(Filter {
            alarms: edgeward::channel("alarms")?,
            threshold: edgeward::arg("--threshold").unwrap_or(85.0),
            expected: 0,
        })
    }

    fn on_message(&mut self, message: Incoming<'_>) -> Result<(), i32> {
        let Some((n, celsius)) = message.value::<(u64, f64)>() else {
            edgeward::warn("filter: a reading that does not decode");
            return Ok(());
        };
        if n != self.expected {
            edgeward::error(&format!(
                "filter: OUT OF ORDER: reading {n}, expected {}",
                self.expected
            ));
        }
        self.expected = n + 1;
        if celsius > self.threshold {
            self.alarms.send_value(&(n, celsius))?;
        }
        Ok(())
    }
}

edgeward::module!(Filter);
