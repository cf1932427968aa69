//! Fault injection: ticks normally `--ticks N` times (default 2), then
//! spins forever inside `ew_on_tick`. The call budget must stop it.

struct LoopHandler {
    left: u32,
}

impl edgeward::Module for LoopHandler {
    fn init() -> Result<Self, i32> {
        Ok(LoopHandler { left: 2 })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        if self.left == 0 {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        self.left -= 1;
        Ok(())
    }
}

edgeward::module!(LoopHandler);
