//! gw-alarm-manager: the line's alarm list. Five modules report alarms on
//! `alarms` as `(active: u32, severity: u32, value: f64, tag)` (severity 1
//! warning, 2 alarm; the tag names the alarm, e.g. `temp-high`). This
//! module keeps which ones are active, drops repeats (an alarm raised
//! again at the same severity is no news), logs each change, and
//! publishes it on `alarm-events` as
//!
//! ```text
//! (active: u32, severity: u32, value: f64, active_count: u32, max_severity: u32, tag)
//! ```
//!
//! where `active_count` and `max_severity` describe the whole list after
//! the change, for `gw-line-state`, `gw-maintenance` and `gw-reporter`.
//!
//! How often each alarm was raised survives restarts through a snapshot
//! (the active list does not: the sources raise their alarms again).

use edgeward::{Channel, Incoming, Message};

struct Active {
    tag: String,
    severity: u32,
    since_ns: u64,
}

struct AlarmManager {
    events: Channel,
    active: Vec<Active>,
    /// (tag, times raised), in first-raised order.
    raised: Vec<(String, u64)>,
}

impl AlarmManager {
    fn count_raise(&mut self, tag: &str) -> u64 {
        match self.raised.iter_mut().find(|(t, _)| t == tag) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.raised.push((tag.to_string(), 1));
                1
            }
        }
    }

    fn publish(&self, active: bool, severity: u32, value: f64, tag: &str) -> Result<(), i32> {
        let max_severity = self.active.iter().map(|a| a.severity).max().unwrap_or(0);
        let mut message = (u32::from(active), severity, value).to_bytes();
        (self.active.len() as u32, max_severity).encode(&mut message);
        message.extend_from_slice(tag.as_bytes());
        self.events.send(&message)
    }
}

impl edgeward::Module for AlarmManager {
    fn init() -> Result<Self, i32> {
        Ok(AlarmManager {
            events: edgeward::channel("alarm-events")?,
            active: Vec::new(),
            raised: Vec::new(),
        })
    }

    fn on_message(&mut self, alarm: Incoming<'_>) -> Result<(), i32> {
        let bytes = alarm.bytes();
        let Some(((active, severity, value), tag)) = bytes
            .get(..16)
            .and_then(<(u32, u32, f64)>::decode)
            .zip(std::str::from_utf8(&bytes[16..]).ok())
        else {
            return Ok(());
        };
        let now = edgeward::now_ns();
        let at = self.active.iter().position(|a| a.tag == tag);
        match (active != 0, at) {
            (true, Some(i)) if self.active[i].severity == severity => Ok(()),
            (true, Some(i)) => {
                self.active[i].severity = severity;
                edgeward::warn(&format!(
                    "alarm {tag} now severity {severity} (value {value:.2})"
                ));
                self.publish(true, severity, value, tag)
            }
            (true, None) => {
                self.active.push(Active {
                    tag: tag.to_string(),
                    severity,
                    since_ns: now,
                });
                let times = self.count_raise(tag);
                edgeward::warn(&format!(
                    "alarm {tag} raised, severity {severity} (value {value:.2}; raised {times} times); {} active",
                    self.active.len()
                ));
                self.publish(true, severity, value, tag)
            }
            (false, Some(i)) => {
                let gone = self.active.remove(i);
                let lasted = now.saturating_sub(gone.since_ns) as f64 / 1e9;
                edgeward::info(&format!(
                    "alarm {tag} cleared after {lasted:.1} s; {} active",
                    self.active.len()
                ));
                self.publish(false, gone.severity, value, tag)
            }
            (false, None) => Ok(()),
        }
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let mut state = Vec::new();
        for (tag, times) in &self.raised {
            (*times, tag.len() as u32).encode(&mut state);
            state.extend_from_slice(tag.as_bytes());
        }
        Some(state)
    }

    fn restore(&mut self, mut state: &[u8]) -> Result<(), i32> {
        let mut raised = Vec::new();
        while !state.is_empty() {
            let ((times, len), rest) = <(u64, u32)>::decode_prefix(state).ok_or(-1)?;
            let tag = rest.get(..len as usize).ok_or(-1)?;
            raised.push((String::from_utf8(tag.to_vec()).map_err(|_| -1)?, times));
            state = &rest[len as usize..];
        }
        self.raised = raised;
        Ok(())
    }
}

edgeward::module!(AlarmManager);
