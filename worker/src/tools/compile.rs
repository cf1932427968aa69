//! `edgeward-worker compile IN.wasm OUT.cwasm`: validate, link-check and
//! precompile one module. The supervisor moves OUT into its compile cache.

use wasmtime::error::Context;

/// Runs the job; the error is printed by `main`.
///
/// # Errors
/// Unreadable input, invalid wasm, unknown imports, or an unwritable output.
pub fn run(input: &str, output: &str) -> wasmtime::Result<()> {
    let engine = crate::engine::build()?;
    let wasm = std::fs::read(input).with_context(|| format!("cannot read {input}"))?;
    let module = super::compile_and_link(&engine, &wasm)?;
    let artifact = module
        .serialize()
        .context("cannot serialize the artifact")?;
    std::fs::write(output, artifact).with_context(|| format!("cannot write {output}"))?;
    Ok(())
}
