//! Bench and test sink. Counts messages; when `--count` arrived logs
//! `sink: N messages in T ns` (first to last arrival), and with `--latency`
//! (each payload starts with the sender's `now_ns`) the one-way latency
//! percentiles `sink: latency p50=X p99=Y ns`. `--spin-us` makes each
//! message take that long (a slow consumer). Its count is snapshotted;
//! after a restore the first message handled is logged with the time:
//! `sink: first message after restore at T ns (count C)` (the state bench's
//! recovery time).

use edgeward::{Incoming, Message};

struct Sink {
    count: u64,
    want: u64,
    first_ns: u64,
    latency: bool,
    latencies: Vec<u64>,
    spin_ns: u64,
    restored: bool,
}

impl edgeward::Module for Sink {
    fn init() -> Result<Self, i32> {
        let want: u64 = edgeward::arg("--count").unwrap_or(0);
        let latency = std::env::args().any(|a| a == "--latency");
        Ok(Sink {
            count: 0,
            want,
            first_ns: 0,
            latency,
            latencies: Vec::with_capacity(if latency { want as usize } else { 0 }),
            spin_ns: edgeward::arg::<u64>("--spin-us").unwrap_or(0) * 1000,
            restored: false,
        })
    }

    fn on_message(&mut self, message: Incoming<'_>) -> Result<(), i32> {
        let now = edgeward::now_ns();
        if self.restored {
            self.restored = false;
            edgeward::info(&format!(
                "sink: first message after restore at {now} ns (count {})",
                self.count
            ));
        }
        if self.count == 0 {
            self.first_ns = now;
        }
        self.count += 1;
        if self.latency {
            if let Some((sent, _)) = message.value::<(u64, Vec<u8>)>() {
                self.latencies.push(now.saturating_sub(sent));
            }
        }
        if self.spin_ns > 0 {
            while edgeward::now_ns() < now + self.spin_ns {}
        }
        if self.count == self.want {
            edgeward::info(&format!(
                "sink: {} messages in {} ns",
                self.count,
                now - self.first_ns
            ));
            if self.latency && !self.latencies.is_empty() {
                self.latencies.sort_unstable();
                let at = |q: f64| self.latencies[((self.latencies.len() - 1) as f64 * q) as usize];
                edgeward::info(&format!(
                    "sink: latency p50={} p99={} ns",
                    at(0.50),
                    at(0.99)
                ));
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.count.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.count = u64::decode(state).ok_or(-1)?;
        self.restored = true;
        Ok(())
    }
}

edgeward::module!(Sink);
