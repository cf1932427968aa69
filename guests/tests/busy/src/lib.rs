//! Test guest for the lifecycle tests (tests/tests/lifecycle.rs): a reactor
//! that is slow to start and busy on every tick, on purpose.
//!
//! - `--init-ms N` (default 0): `ew_init` sleeps N ms before it returns, so
//!   the module is `starting` that long (a slow predecessor for `after`).
//!   It logs `busy: init start` first and `busy: init done` last.
//! - `--spin-ms N` (default 0): every `ew_on_tick` busy-waits N ms of wall
//!   time (a module working most of its call budget).
//! - `--every N` (default 0 = never): logs `busy: ticks=T` every N ticks.
//!   Rare on purpose: every log line is a sign of life to the watchdog.
//!
//! The tick count is snapshotted and restored (`busy: restored ticks=T`).

use std::time::{Duration, Instant};

use edgeward::Message;

struct Busy {
    spin: Duration,
    every: u64,
    ticks: u64,
}

impl edgeward::Module for Busy {
    fn init() -> Result<Self, i32> {
        edgeward::info("busy: init start");
        let init_ms: u64 = edgeward::arg("--init-ms").unwrap_or(0);
        if init_ms > 0 {
            std::thread::sleep(Duration::from_millis(init_ms));
        }
        let spin_ms: u64 = edgeward::arg("--spin-ms").unwrap_or(0);
        edgeward::info("busy: init done");
        Ok(Busy {
            spin: Duration::from_millis(spin_ms),
            every: edgeward::arg("--every").unwrap_or(0),
            ticks: 0,
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        let start = Instant::now();
        let mut x: u64 = 0;
        while start.elapsed() < self.spin {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        self.ticks += 1;
        if self.every > 0 && self.ticks.is_multiple_of(self.every) {
            edgeward::info(&format!("busy: ticks={}", self.ticks));
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.ticks.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.ticks = u64::decode(state).ok_or(-1)?;
        edgeward::info(&format!("busy: restored ticks={}", self.ticks));
        Ok(())
    }
}

edgeward::module!(Busy);
