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
    let names: Vec<String> = backtrace
        .map(|bt| {
            bt.frames()
                .iter()
                .filter_map(|f| f.func_name().map(demangle))
                .collect()
        })
        .unwrap_or_default();
    let detail = backtrace.map(|bt| bt.to_string()).unwrap_or_default();
    if let Some(site) = go_panic_site(&names) {
        return (format!("panic in {site}"), detail);
    }
    let function = names.first().cloned().unwrap_or_else(|| export.to_string());
    let headline = if matches!(error.downcast_ref::<Trap>(), Some(Trap::StackOverflow)) {
        format!("stack overflow in {function}")
    } else {
        format!("trap: {what} in {function}")
    };
    (headline, detail)
}

/// Where a Go panic happened. The Go runtime ends a panic by trapping in
/// `runtime.abort`, below `runtime.gopanic`; naming `runtime.abort` would
/// tell the user nothing. The function that panicked is the first frame
/// past `runtime.gopanic` outside the runtime (past `runtime.goPanicIndex`
/// and its kind for runtime errors). `names` run innermost first.
fn go_panic_site(names: &[String]) -> Option<&str> {
    let gopanic = names.iter().position(|n| n == "runtime.gopanic")?;
    names[gopanic + 1..]
        .iter()
        .find(|n| !n.starts_with("runtime."))
        .map(String::as_str)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_go_panic_names_the_function_that_panicked() {
        let panic = names(&[
            "runtime.abort",
            "runtime.fatalpanic",
            "runtime.gopanic",
            "main.checkValvePosition",
            "main.init.0.func1",
        ]);
        assert_eq!(go_panic_site(&panic), Some("main.checkValvePosition"));
        let index = names(&[
            "runtime.abort",
            "runtime.gopanic",
            "runtime.goPanicIndex",
            "main.lookup",
        ]);
        assert_eq!(go_panic_site(&index), Some("main.lookup"));
        // Not a Go panic: the innermost frame is named as before.
        assert_eq!(go_panic_site(&names(&["trap::on_tick_fails"])), None);
        assert_eq!(go_panic_site(&names(&["runtime.gopanic"])), None);
    }
}
