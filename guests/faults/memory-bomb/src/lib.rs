//! Fault injection: every tick keeps 4 MiB more, touching every page, until
//! the allocator's `memory.grow` is refused (the module then aborts).

struct MemoryBomb {
    hoard: Vec<Vec<u8>>,
}

impl edgeward::Module for MemoryBomb {
    fn init() -> Result<Self, i32> {
        Ok(MemoryBomb { hoard: Vec::new() })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        self.hoard.push(vec![0xA5; 4 << 20]);
        Ok(())
    }
}

edgeward::module!(MemoryBomb);
