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
        if let Some(code) = edgeward::arg("--init-code") {
            return Err(code);
        }
        let left = edgeward::arg("--ticks").unwrap_or(3);
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
