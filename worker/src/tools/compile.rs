//! `edgeward-worker compile IN.wasm OUT.cwasm`: validate, link-check and
//! precompile one module. The supervisor moves OUT into its compile cache.

use wasmtime::error::Context;

/// Runs the job; the error is printed by `main`, on one line.
///
/// # Errors
/// Unreadable input, invalid wasm, unknown imports, or an unwritable output.
pub fn run(input: &str, output: &str) -> wasmtime::Result<()> {
    compile(input, output).map_err(|e| wasmtime::Error::msg(one_line(&e)))
}

fn compile(input: &str, output: &str) -> wasmtime::Result<()> {
    let engine = crate::engine::build()?;
    let wasm = std::fs::read(input).with_context(|| format!("cannot read {input}"))?;
    let module = super::compile_and_link(&engine, &wasm)?;
    let artifact = module
        .serialize()
        .context("cannot serialize the artifact")?;
    std::fs::write(output, artifact).with_context(|| format!("cannot write {output}"))?;
    Ok(())
}

/// An error and its causes on one line, `outer: cause: root`. The
/// supervisor puts the message in its log, in `check`'s report and in a
/// module's `last_error` (one `status` row), but wasmparser spreads its
/// messages over lines (`expected=[\n    0x0,\n …`): line breaks and
/// indentation are collapsed, and the lists closed up.
pub(super) fn one_line(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|cause| {
            cause
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace("[ ", "[")
                .replace(", ]", "]")
        })
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_file_is_one_line_naming_the_bad_magic() {
        let engine = crate::engine::build().unwrap();
        let error =
            super::super::compile_and_link(&engine, b"hello world\nthis is text\n").unwrap_err();
        let line = one_line(&error);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("not a valid WebAssembly module: ")
                && line.contains("magic header not detected")
                && line
                    .contains("expected=[0x0, 0x61, 0x73, 0x6d] actual=[0x68, 0x65, 0x6c, 0x6c]"),
            "{line}"
        );
    }
}
