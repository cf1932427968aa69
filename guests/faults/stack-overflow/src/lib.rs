//! Fault injection: unbounded recursion on the first tick. The recursion
//! goes through a function pointer with only integer arguments, so it uses
//! the wasm (native) call stack, not Rust's shadow stack in linear memory:
//! the host's stack limit is what stops it.

struct StackOverflow;

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[inline(never)]
fn dive(depth: u64) -> u64 {
    // SAFETY: NEXT holds `dive` itself (set in init); an indirect call keeps
    // the compiler from turning the recursion into a loop.
    let next: fn(u64) -> u64 =
        unsafe { std::mem::transmute(NEXT.load(std::sync::atomic::Ordering::Relaxed)) };
    next(depth + 1).wrapping_add(depth)
}

impl edgeward::Module for StackOverflow {
    fn init() -> Result<Self, i32> {
        NEXT.store(
            dive as fn(u64) -> u64 as usize,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(StackOverflow)
    }

    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        std::hint::black_box(dive(0));
        Ok(())
    }
}

edgeward::module!(StackOverflow);
