//! Fault injection: every tick keeps 4 MiB more (`--tick-kib N` to change
//! how much, `--chunk-kib N` the size of each allocation), touching every
//! page, until the allocator's `memory.grow` is refused (the module then
//! aborts) or the kernel's cgroup OOM killer ends it. With a small
//! `--tick-kib` it is a slow leak (`scripts/soak --leak KIB_PER_MIN`).

struct MemoryBomb {
    hoard: Vec<Vec<u8>>,
    chunk: usize,
    per_tick: usize,
}

impl edgeward::Module for MemoryBomb {
    fn init() -> Result<Self, i32> {
        let chunk_kib: usize = edgeward::arg("--chunk-kib").unwrap_or(4096);
        let tick_kib: usize = edgeward::arg("--tick-kib").unwrap_or(4096);
        Ok(MemoryBomb {
            hoard: Vec::new(),
            chunk: (chunk_kib << 10).max(1),
            per_tick: tick_kib << 10,
        })
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        // `per_tick` bytes (4 MiB by default), in chunks.
        let mut left = self.per_tick;
        while left > 0 {
            let n = left.min(self.chunk);
            self.hoard.push(vec![0xA5; n]);
            left -= n;
        }
        Ok(())
    }
}

edgeward::module!(MemoryBomb);
