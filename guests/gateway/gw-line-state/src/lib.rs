//! gw-line-state: the line's state for the operator's stack light. From
//! the alarm list's changes on `alarm-events` (`active_count` and
//! `max_severity` at bytes 16 and 20) it derives RUNNING (no alarm),
//! WARNING (warnings only) or ALARM, logs each change, and publishes
//! `(state: u32, active_alarms: u32)` on `line-state` (0 RUNNING, 1
//! WARNING, 2 ALARM) at each change and every 5 s, for `gw-reporter`.
//! Ticks every second to count the time spent in each state.
//!
//! The seconds spent in each state survive restarts through a snapshot.

use edgeward::{Channel, Incoming, Message};

const NAMES: [&str; 3] = ["RUNNING", "WARNING", "ALARM"];
const REPUBLISH_S: f64 = 5.0;

struct LineState {
    out: Channel,
    state: u32,
    active: u32,
    seconds: [f64; 3],
    last_ns: u64,
    since_published: f64,
}

impl LineState {
    fn publish(&mut self) -> Result<(), i32> {
        self.since_published = 0.0;
        self.out.send_value(&(self.state, self.active))
    }
}

impl edgeward::Module for LineState {
    fn init() -> Result<Self, i32> {
        Ok(LineState {
            out: edgeward::channel("line-state")?,
            state: 0,
            active: 0,
            seconds: [0.0; 3],
            last_ns: 0,
            since_published: 0.0,
        })
    }

    fn on_message(&mut self, event: Incoming<'_>) -> Result<(), i32> {
        let Some((active, max_severity)) = event.bytes().get(16..24).and_then(<(u32, u32)>::decode)
        else {
            return Ok(());
        };
        let state = if active == 0 { 0 } else { max_severity.min(2) };
        self.active = active;
        if state == self.state {
            return Ok(());
        }
        edgeward::info(&format!(
            "line {} -> {} ({active} alarm(s) active)",
            NAMES[self.state as usize], NAMES[state as usize]
        ));
        self.state = state;
        self.publish()
    }

    fn on_tick(&mut self, now_ns: u64) -> Result<(), i32> {
        if self.last_ns != 0 {
            let dt = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
            self.seconds[self.state as usize] += dt;
            self.since_published += dt;
        }
        self.last_ns = now_ns;
        if self.since_published >= REPUBLISH_S {
            self.publish()?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some((self.seconds[0], self.seconds[1], self.seconds[2]).to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        let (running, warning, alarm) = <(f64, f64, f64)>::decode(state).ok_or(-1)?;
        self.seconds = [running, warning, alarm];
        edgeward::info(&format!(
            "restored: {running:.0} s running, {warning:.0} s in warning, {alarm:.0} s in alarm"
        ));
        Ok(())
    }
}

edgeward::module!(LineState);
