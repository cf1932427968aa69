//! Counts ticks and says so every `EVERY` ticks (args: `--every N`, default 50).
//! The count survives restarts and power cuts through snapshots.

use edgeward::Message;

struct Counter {
    ticks: u64,
    every: u64,
}

impl edgeward::Module for Counter {
    fn init() -> Result<Self, i32> {
        let every = edgeward::arg("--every").unwrap_or(50);
        Ok(Counter { ticks: 0, every })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        self.ticks += 1;
        if self.ticks.is_multiple_of(self.every) {
            edgeward::info(&format!("ticks={}", self.ticks));
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.ticks.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.ticks = u64::decode(state).ok_or(-1)?;
        edgeward::info(&format!("restored ticks={}", self.ticks));
        Ok(())
    }
}

edgeward::module!(Counter);
