//! @NAME@: an edgeward module in Rust. Every tick it counts, publishes the
//! count on channel `@NAME@` and logs every 10th; the count survives
//! restarts in a snapshot. The SDK is in `edgeward-sdk/` (docs/guest-abi.md
//! in the edgeward repository describes the ABI underneath).

use edgeward::{Channel, Message};

struct Ticker {
    out: Channel,
    ticks: u64,
}

impl edgeward::Module for Ticker {
    fn init() -> Result<Self, i32> {
        Ok(Ticker {
            out: edgeward::channel("@NAME@")?,
            ticks: 0,
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        self.ticks += 1;
        if self.ticks % 10 == 0 {
            edgeward::info(&format!("@NAME@: {} ticks", self.ticks));
        }
        self.out.send_value(&self.ticks)
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.ticks.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.ticks = u64::decode(state).ok_or(-1)?;
        edgeward::info(&format!("@NAME@: restored {} ticks", self.ticks));
        Ok(())
    }
}

edgeward::module!(Ticker);
