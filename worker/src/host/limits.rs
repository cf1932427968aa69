//! Resource limits of one store: the linear-memory cap, and remembering
//! that a growth was refused so a trap that follows can be reported as
//! `wasm memory limit N MiB reached` instead of a bare `unreachable`.

use wasmtime::ResourceLimiter;

/// Largest table a module may have, in elements.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The store's limiter.
pub struct Limits {
    /// Cap on linear memory, bytes.
    pub memory_bytes: usize,
    /// Set once a `memory.grow` was refused.
    pub memory_refused: bool,
}

impl Limits {
    /// A limiter capping memory at `memory_bytes`.
    pub fn new(memory_bytes: usize) -> Self {
        Self {
            memory_bytes,
            memory_refused: false,
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }
}
