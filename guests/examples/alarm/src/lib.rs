//! Raises alarms from channel `alarms`; logs every `--report-every`
//! (default 100) alarms, and any reading that arrives out of order.

use edgeward::Incoming;

struct Alarm {
    count: u64,
    last: Option<u64>,
    report_every: u64,
}

impl edgeward::Module for Alarm {
    fn init() -> Result<Self, i32> {
        edgeward::channel("alarms")?;
        Ok(Alarm {
            count: 0,
            last: None,
            report_every: edgeward::arg("--report-every").unwrap_or(100),
        })
    }

    fn on_message(&mut self, message: Incoming<'_>) -> Result<(), i32> {
        let Some((n, celsius)) = message.value::<(u64, f64)>() else {
            return Ok(());
        };
        if self.last.is_some_and(|last| n <= last) {
            edgeward::error(&format!(
                "alarm: OUT OF ORDER: reading {n} after {}",
                self.last.unwrap_or(0)
            ));
        }
        self.last = Some(n);
        self.count += 1;
        if self.count.is_multiple_of(self.report_every) {
            edgeward::warn(&format!(
                "alarm: {} alarms in order, last reading {n} at {celsius:.1} C",
                self.count
            ));
        }
        Ok(())
    }
}

edgeward::module!(Alarm);
