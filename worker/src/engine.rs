//! The one wasmtime engine configuration every worker-side process uses.
//!
//! Compilation (`compile`, `inspect`) and execution (`serve`, `zygote`) must
//! agree on it exactly, or precompiled artifacts would not load: the
//! [`fingerprint`] of this configuration is part of the compile-cache key.

use std::hash::{Hash, Hasher};

use wasmtime::error::Context;
use wasmtime::{Config, Engine, OptLevel};

/// Largest native stack a guest may use, in bytes. Deep recursion traps with
/// "stack overflow" instead of crashing the worker.
pub const MAX_WASM_STACK_BYTES: usize = 512 * 1024;

/// Builds the engine. It starts no threads: parallel compilation is not
/// compiled in, which the fork server relies on.
///
/// # Errors
/// If wasmtime rejects the configuration on this host (e.g. an unsupported CPU).
pub fn build() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .cranelift_opt_level(OptLevel::Speed)
        // Map the initial linear memory image copy-on-write from the artifact:
        // an idle module's data pages stay shared with the page cache.
        .memory_init_cow(true)
        .max_wasm_stack(MAX_WASM_STACK_BYTES)
        // The per-call time budget (see budget.rs).
        .epoch_interruption(true)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32));
    Engine::new(&config).context("cannot configure the wasmtime engine")
}

/// A short hex string naming this engine configuration and worker build.
/// Artifacts made under one fingerprint are never loaded under another.
pub fn fingerprint(engine: &Engine) -> String {
    // `DefaultHasher::new()` uses fixed keys, so the value is stable for one
    // build of this binary, which is all a cache key needs (the worker version
    // is mixed in too).
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
