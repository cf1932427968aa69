//! Command modules: a plain WASI program whose `_start` runs as a long-lived
//! service. The guest owns the main thread, so a small control thread
//! answers the supervisor (Stop ends the process).

use std::sync::Arc;

use edgeward_ipc::control::{FaultKind, ModuleKind, ToWorker};
use edgeward_ipc::frame::{self, FrameError};
use wasmtime_wasi::I32Exit;

use super::{report_trap, Loaded};
use crate::exit_code;
use crate::report::Reporter;

/// Reports Ready, runs `_start` to its end and returns the exit code.
pub fn run(loaded: Loaded, reporter: &Arc<Reporter>, degraded: Vec<String>) -> i32 {
    let Loaded {
        mut store,
        instance,
        ..
    } = loaded;
    let start = match instance
        .get_func(&mut store, "_start")
        .map(|f| f.typed::<(), ()>(&store))
    {
        Some(Ok(f)) => f,
        _ => {
            reporter.fault(
                FaultKind::Load,
                "export _start must have type () -> () (see docs/guest-abi.md)".into(),
            );
            return exit_code::LOAD_FAILED;
        }
    };
    let control = Arc::clone(reporter);
    let spawned = std::thread::Builder::new()
        .name("control".into())
        .stack_size(64 * 1024)
        .spawn(move || control_thread(&control));
    if let Err(e) = spawned {
        reporter.fault(FaultKind::Load, format!("cannot start control thread: {e}"));
        return exit_code::LOAD_FAILED;
    }
    reporter.ready(ModuleKind::Command, degraded);
    // A command owns its thread for its whole life: no per-call budget.
    crate::budget::unbounded(&mut store);
    match start.call(&mut store, ()) {
        Ok(()) => exit_code::OK,
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => exit_code::OK,
            Some(I32Exit(code)) => {
                reporter.fault(FaultKind::Exit, format!("exited with code {code}"));
                *code
            }
            None => report_trap(reporter, &store, "_start", 0, &e),
        },
    }
}

/// Waits for Stop (exit 0) or the supervisor's disappearance.
fn control_thread(reporter: &Reporter) {
    loop {
        match frame::recv::<ToWorker>(reporter.socket()) {
            Ok((ToWorker::Stop, _)) => std::process::exit(exit_code::OK),
            Ok((other, _)) => {
                reporter.fault(
                    FaultKind::Protocol,
                    format!("protocol: unexpected {other:?} while running"),
                );
                std::process::exit(exit_code::LOAD_FAILED);
            }
            Err(FrameError::WouldBlock) => {}
            Err(_) => std::process::exit(exit_code::SUPERVISOR_GONE),
        }
    }
}
