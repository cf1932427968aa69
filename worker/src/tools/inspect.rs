//! `edgeward-worker inspect FILE...`: validate and link-check each module and
//! print one JSON line per file: `{"file","ok","kind","handles_messages","error"}`
//! (`error` on one line).

use serde::Serialize;

#[derive(Serialize)]
struct Report<'a> {
    file: &'a str,
    ok: bool,
    /// `reactor` or `command` when ok.
    kind: Option<&'static str>,
    /// Exports both `ew_on_message` and `ew_alloc` (a reactor needs them to
    /// subscribe to channels).
    handles_messages: bool,
    error: Option<String>,
}

/// Runs the job. Returns the exit code: 0 if every file is fine, 1 otherwise.
pub fn run(files: &[String]) -> i32 {
    let engine = match crate::engine::build() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("edgeward-worker inspect: {e:#}");
            return crate::exit_code::LOAD_FAILED;
        }
    };
    let mut all_ok = true;
    for file in files {
        let result = std::fs::read(file)
            .map_err(|e| wasmtime::format_err!("cannot read: {e}"))
            .and_then(|wasm| super::compile_and_link(&engine, &wasm));
        let report = match result {
            Ok(module) => Report {
                file,
                ok: true,
                kind: Some(if module.get_export("_start").is_some() {
                    "command"
                } else {
                    "reactor"
                }),
                handles_messages: module.get_export("ew_on_message").is_some()
                    && module.get_export("ew_alloc").is_some(),
                error: None,
            },
            Err(e) => {
                all_ok = false;
                Report {
                    file,
                    ok: false,
                    kind: None,
                    handles_messages: false,
                    error: Some(super::compile::one_line(&e)),
                }
            }
        };
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("edgeward-worker inspect: {e}"),
        }
    }
    if all_ok {
        0
    } else {
        1
    }
}
