//! Forwards readings above `--threshold` (default 85.0) from `readings` to
//! `alarms`, checking that readings arrive in order.
//!
//! In order means: within one run of the sensor (one `start`), each
//! reading is the one after the last. A restarted sensor (a new `start`)
//! resumes its numbering from its last snapshot, and a restarted filter
//! takes the first reading it gets as its starting point: both are normal
//! (the first is logged at info level). Only a reading out of sequence
//! within one run of both is an error.

use edgeward::{Channel, Incoming};

/// The run of the sensor being followed, and the reading expected next.
struct Stream {
    start: u64,
    next: u64,
}

struct Filter {
    alarms: Channel,
    threshold: f64,
    /// `None` until the first reading since this filter started.
    stream: Option<Stream>,
}

impl edgeward::Module for Filter {
    fn init() -> Result<Self, i32> {
        Ok(Filter {
            alarms: edgeward::channel("alarms")?,
            threshold: edgeward::arg("--threshold").unwrap_or(85.0),
            stream: None,
        })
    }

    fn on_message(&mut self, message: Incoming<'_>) -> Result<(), i32> {
        let Some((n, celsius, start)) = message.value::<(u64, f64, u64)>() else {
            edgeward::warn("filter: a reading that does not decode");
            return Ok(());
        };
        match &self.stream {
            Some(stream) if stream.start != start => edgeward::info(&format!(
                "filter: the sensor restarted; its readings resume at {n} (the last one before was {})",
                stream.next - 1
            )),
            Some(stream) if n != stream.next => edgeward::error(&format!(
                "filter: OUT OF ORDER: reading {n}, expected {}",
                stream.next
            )),
            _ => {}
        }
        self.stream = Some(Stream { start, next: n + 1 });
        if celsius > self.threshold {
            self.alarms.send_value(&(n, celsius, start))?;
        }
        Ok(())
    }
}

edgeward::module!(Filter);
