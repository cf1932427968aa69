//! Fault injection: asks for a `memory.copy` of almost 4 GiB on the first
//! tick. The copy must trap as out of bounds, not make the host copy.

struct HugeCopy;

impl edgeward::Module for HugeCopy {
    fn init() -> Result<Self, i32> {
        Ok(HugeCopy)
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        let len = std::hint::black_box(0xFFFF_0000usize);
        let src = std::hint::black_box(16usize) as *const u8;
        let dst = std::hint::black_box(64usize) as *mut u8;
        // SAFETY: deliberately invalid: this guest exists to make the host
        // prove that an out-of-range memory.copy traps.
        unsafe { core::ptr::copy(src, dst, len) };
        Ok(())
    }
}

edgeward::module!(HugeCopy);
