//! Turning wasmtime errors into one line an operator understands.

use wasmtime::{Trap, WasmBacktrace};

/// Describes a failed guest call `export` as `trap: <what> in <function>`,
/// with the full wasm backtrace as a second part for the log.
pub fn describe_trap(export: &str, error: &wasmtime::Error) -> (String, String) {
    let what = match error.downcast_ref::<Trap>() {
        Some(trap) => trap_words(*trap).to_string(),
        None => format!("{error:#}"),
    };
    let backtrace = error.downcast_ref::<WasmBacktrace>();
    let function = backtrace
        .and_then(|bt| bt.frames().iter().find_map(|f| f.func_name().map(demangle)))
        .unwrap_or_else(|| export.to_string());
    let headline = if matches!(error.downcast_ref::<Trap>(), Some(Trap::StackOverflow)) {
        format!("stack overflow in {function}")
    } else {
        format!("trap: {what} in {function}")
    };
    let detail = backtrace.map(|bt| bt.to_string()).unwrap_or_default();
    (headline, detail)
}

/// Short words for a trap code.
fn trap_words(trap: Trap) -> &'static str {
    match trap {
        Trap::UnreachableCodeReached => "unreachable",
        Trap::MemoryOutOfBounds => "out-of-bounds memory access",
        Trap::HeapMisaligned => "misaligned memory access",
        Trap::TableOutOfBounds => "out-of-bounds table access",
        Trap::IndirectCallToNull => "call to a null function reference",
        Trap::BadSignature => "indirect call signature mismatch",
        Trap::IntegerOverflow => "integer overflow",
        Trap::IntegerDivisionByZero => "integer division by zero",
        Trap::BadConversionToInteger => "invalid conversion to integer",
        Trap::StackOverflow => "stack overflow",
        Trap::Interrupt => "interrupted",
        Trap::OutOfFuel => "out of fuel",
        _ => "wasm trap",
    }
}

/// A readable function name: Rust symbols demangled without their hash.
pub fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}
