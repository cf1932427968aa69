//! Fault injection: 200 log lines and 200 stdout lines per tick (20 000 a second each at a 10 ms tick).

struct LogFlood {
    n: u64,
}

impl edgeward::Module for LogFlood {
    fn init() -> Result<Self, i32> {
        Ok(LogFlood { n: 0 })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        for _ in 0..200 {
            self.n += 1;
            edgeward::info(&format!("flood {}", self.n));
            println!("stdout flood {}", self.n);
        }
        Ok(())
    }
}

edgeward::module!(LogFlood);
