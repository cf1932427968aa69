//! Denials counted and logged (`audit.rs` has the limit).

use std::time::Instant;

use super::Supervisor;
use crate::log_sink::{Event, Level, Stream};
use crate::metrics::counters::DenialKind;

impl Supervisor {
    /// Slot `i` was refused `count` times `what` (in words, after
    /// "denied "): counted, and logged unless the limit holds it back.
    pub(crate) fn audit(&mut self, i: usize, kind: DenialKind, count: u64, what: &str) {
        let slot = &mut self.slots[i];
        let total = slot.counters.denials.entry(kind).or_default();
        *total += count;
        let total = *total;
        let Some(held) = slot.audit.admit(kind, count, Instant::now()) else {
            return;
        };
        let more = if held > 0 {
            format!(" ({held} more since the last report)")
        } else {
            String::new()
        };
        let msg = format!("denied {what}{more} (denials: {total})");
        let name = &slot.name;
        crate::log_sink::emit(
            Stream::Err,
            Event {
                level: Level::Warn,
                module: Some(name),
                event: "denied",
                msg: &msg,
                fields: &[
                    ("kind", kind.as_str().into()),
                    ("count", count.into()),
                    ("held_back", held.into()),
                    ("total", total.into()),
                ],
            },
            || format!("edgeward: module {name}: {msg}"),
        );
    }
}
