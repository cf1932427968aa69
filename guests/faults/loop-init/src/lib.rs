//! Fault injection: never returns from `ew_init`.

struct LoopInit;

impl edgeward::Module for LoopInit {
    fn init() -> Result<Self, i32> {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

edgeward::module!(LoopInit);
