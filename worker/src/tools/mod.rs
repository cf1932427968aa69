//! One-shot worker-side jobs the supervisor runs as child processes, so
//! that validation and compilation never happen inside the supervisor.

pub mod compile;
pub mod inspect;
pub mod probe;
pub mod self_test;

use wasmtime::error::Context;
use wasmtime::Module;

use crate::host;

/// Compiles `wasm` and checks that every import is one edgeward provides.
///
/// # Errors
/// A validation error, or the first import edgeward does not provide.
pub fn compile_and_link(engine: &wasmtime::Engine, wasm: &[u8]) -> wasmtime::Result<Module> {
    let module = Module::new(engine, wasm).context("not a valid WebAssembly module")?;
    let linker = host::linker(engine)?;
    linker
        .instantiate_pre(&module)
        .context("imports something edgeward does not provide (see docs/guest-abi.md)")?;
    Ok(module)
}
