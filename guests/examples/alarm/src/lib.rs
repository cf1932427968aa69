//! Raises alarms from channel `alarms`; logs every `--report-every`
//! (default 100) alarms, and any reading that arrives out of order. Its
//! totals survive restarts through snapshots (a serde struct, saved with
//! `edgeward::state`).
//!
//! Out of order means: an older reading than the last one, from the same
//! run of the sensor (the same `start`). A restarted sensor resumes its
//! numbering from its last snapshot, so its readings may go back: that is
//! logged once at info level. The same reading twice in a row is the
//! filter's at-least-once delivery after a crash: logged at info level and
//! counted once. Readings may skip numbers (the filter forwards only the
//! hot ones, and drops for a full `alarms` ring).

use edgeward::Incoming;
use serde::{Deserialize, Serialize};

/// The last reading counted: its number and the sensor run it came from.
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Reading {
    n: u64,
    start: u64,
}

/// What a restart must not lose.
#[derive(Serialize, Deserialize, Default)]
struct Totals {
    count: u64,
    last: Option<Reading>,
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
        let Some((n, celsius, start)) = message.value::<(u64, f64, u64)>() else {
            return Ok(());
        };
        let totals = &mut self.totals;
        match totals.last {
            Some(last) if last.start != start => edgeward::info(&format!(
                "alarm: the sensor restarted; its readings resume at {n} (the last one before was {})",
                last.n
            )),
            Some(last) if n == last.n => {
                edgeward::info(&format!(
                    "alarm: reading {n} came again (delivered at least once after a crash); counted once"
                ));
                return Ok(());
            }
            Some(last) if n < last.n => edgeward::error(&format!(
                "alarm: OUT OF ORDER: reading {n} after {}",
                last.n
            )),
            _ => {}
        }
        totals.last = Some(Reading { n, start });
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
        let last = self
            .totals
            .last
            .map_or_else(|| "none yet".to_string(), |r| r.n.to_string());
        edgeward::info(&format!(
            "alarm: restored {} alarms, last reading {last}",
            self.totals.count
        ));
        Ok(())
    }
}

edgeward::module!(Alarm);
