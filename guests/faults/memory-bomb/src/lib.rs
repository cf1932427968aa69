//! Fault injection: every tick keeps 4 MiB more (`--chunk-kib N` to change),
//! touching every page, until the allocator's `memory.grow` is refused (the
//! module then aborts) or the kernel's cgroup OOM killer ends it.

struct MemoryBomb {
    hoard: Vec<Vec<u8>>,
    chunk: usize,
}

impl edgeward::Module for MemoryBomb {
    fn init() -> Result<Self, i32> {
        let chunk_kib: usize = edgeward::arg("--chunk-kib").unwrap_or(4096);
        Ok(MemoryBomb {
            hoard: Vec::new(),
            chunk: chunk_kib << 10,
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        // Up to 4 MiB per tick, in chunks.
        for _ in 0..(4 << 20) / self.chunk.max(1) {
            self.hoard.push(vec![0xA5; self.chunk]);
        }
        Ok(())
    }
}

edgeward::module!(MemoryBomb);
