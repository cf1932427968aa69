//! The next version of the counter example, for upgrade tests: the same
//! state (a tick count), restored from the old version's snapshot, and lines
//! that say which version speaks (`next: …`). The policy's args, ignored by
//! the old counter, make this version misbehave on purpose:
//! `--next-health N` (its `ew_health` answer, default 0), `--next-trap-after
//! N` (trap at tick N after start) and `--next-fail-init 1` (refuse to start).

use edgeward::Message;

struct CounterNext {
    ticks: u64,
    every: u64,
    started_at: u64,
    health: i32,
    trap_after: u64,
}

impl edgeward::Module for CounterNext {
    fn init() -> Result<Self, i32> {
        if edgeward::arg::<u32>("--next-fail-init").is_some() {
            edgeward::error("next: refusing to start (--next-fail-init)");
            return Err(-70);
        }
        Ok(CounterNext {
            ticks: 0,
            every: edgeward::arg("--every").unwrap_or(50),
            started_at: 0,
            health: edgeward::arg("--next-health").unwrap_or(0),
            trap_after: edgeward::arg("--next-trap-after").unwrap_or(0),
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        self.ticks += 1;
        if self.trap_after != 0 && self.ticks - self.started_at == self.trap_after {
            edgeward::error("next: trapping on purpose (--next-trap-after)");
            core::arch::wasm32::unreachable();
        }
        if self.ticks.is_multiple_of(self.every) {
            edgeward::info(&format!("next: ticks={}", self.ticks));
        }
        Ok(())
    }

    fn health(&self) -> i32 {
        self.health
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.ticks.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.ticks = u64::decode(state).ok_or(-1)?;
        self.started_at = self.ticks;
        edgeward::info(&format!("next: restored ticks={}", self.ticks));
        Ok(())
    }
}

edgeward::module!(CounterNext);
