//! Fault injection: runs `--ticks N` ticks (default 3), then executes
//! `unreachable`. Under a restart policy it is a crash loop.
//! `--init-code C` makes `ew_init` refuse to start with code C instead.

struct Trap {
    left: u32,
}

#[inline(never)]
fn on_tick_fails() -> ! {
    core::arch::wasm32::unreachable()
}

impl edgeward::Module for Trap {
    fn init() -> Result<Self, i32> {
        let args: Vec<String> = std::env::args().collect();
        if let Some(code) = args
            .windows(2)
            .find(|w| w[0] == "--init-code")
            .and_then(|w| w[1].parse().ok())
        {
            return Err(code);
        }
        let left = args
            .windows(2)
            .find(|w| w[0] == "--ticks")
            .and_then(|w| w[1].parse().ok())
            .unwrap_or(3);
        Ok(Trap { left })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        if self.left == 0 {
            on_tick_fails();
        }
        self.left -= 1;
        Ok(())
    }
}

edgeward::module!(Trap);
