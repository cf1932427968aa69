//! Raises alarms from channel `alarms`; logs every `--report-every`
//! (default 100) alarms, and any reading that arrives out of order. Its
//! totals survive restarts through snapshots (a serde struct, saved with
//! `edgeward::state`).

use edgeward::Incoming;
use serde::{Deserialize, Serialize};

/// What a restart must not lose.
#[derive(Serialize, Deserialize, Default)]
struct Totals {
    count: u64,
    last: Option<u64>,
}

struct Alarm {
    totals: Totals,
    report_every: u64,
}

impl edgeward::Module for Alarm {
    fn init() -> Result<Self, i32> {
        edgeward::channel("alarms")?;
        Ok(Alarm {
            totals: Totals::default(),
            report_every: edgeward::arg("--report-every").unwrap_or(100),
        })
    }

    fn on_message(&mut self, message: Incoming<'_>) -> Result<(), i32> {
        let Some((n, celsius)) = message.value::<(u64, f64)>() else {
            return Ok(());
        };
        let totals = &mut self.totals;
        if totals.last.is_some_and(|last| n <= last) {
            edgeward::error(&format!(
                "alarm: OUT OF ORDER: reading {n} after {}",
                totals.last.unwrap_or(0)
            ));
        }
        totals.last = Some(n);
        totals.count += 1;
        if totals.count.is_multiple_of(self.report_every) {
            edgeward::warn(&format!(
                "alarm: {} alarms in order, last reading {n} at {celsius:.1} C",
                totals.count
            ));
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        edgeward::state::save(&self.totals)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.totals = edgeward::state::load(state)?;
        edgeward::info(&format!(
            "alarm: restored {} alarms, last reading {:?}",
            self.totals.count, self.totals.last
        ));
        Ok(())
    }
}

edgeward::module!(Alarm);
