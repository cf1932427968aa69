//! End to end: modules written in Go with the SDK in `guests/sdk-go` and
//! built as wasip1 reactors (`scripts/build-guests`, `guests/go/`). A Go
//! fault is reported with the Go function's name; a Go module whose
//! handlers are registered where a reactor never runs them refuses to
//! start, saying so. (The Go AlertOnHighTemp runs with the other
//! languages' in `sdks.rs`.)
//!
//! Go modules need more than the defaults (docs/guest-abi.md, SDKs): their
//! garbage collector runs inside handler calls, so a call budget of 100 ms,
//! and 64 MiB of memory with `GOMEMLIMIT` below it. Compiling a 2.5 MB Go
//! module in the worker takes seconds (more when several start at once on
//! two cores), hence the longer first wait.

use std::time::Duration;

use edgeward_tests::{module, policy, GatewayDir};

/// First start: the worker compiles the Go module (3-5 s alone, about 9 s
/// for two at once on two cores).
const START: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);

/// What every Go module's policy here adds: see the module docs.
const GO_RESOURCES: &str = "[resources]\nmemory_mib = 64\ncall_budget_ms = 100";

/// Starts go-trap with `--fault FAULT` and returns its `last_error` once it
/// failed, and the log.
fn go_trap_fails_with(fault: &str) -> (String, String) {
    let g = GatewayDir::new();
    g.add_policy(
        "go-trap",
        &policy(
            "go_trap",
            &format!(
                "[wasi]\nargs = [\"--after\", \"2\", \"--fault\", \"{fault}\"]\n\
                 [schedule]\ntick_us = 10000\n[restart]\npolicy = \"never\"\n{GO_RESOURCES}"
            ),
        ),
    );
    let gateway = g.start();
    let status = gateway.wait_for(START, "go-trap failed", |s| {
        module(s, "go-trap")["state"] == "failed"
    });
    let error = module(&status, "go-trap")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (error, gateway.log())
}

#[test]
fn a_go_trap_is_reported_with_the_go_function_name() {
    let (error, _) = go_trap_fails_with("memory");
    assert!(
        error.starts_with("trap: out-of-bounds memory access in main.checkValvePosition"),
        "{error}"
    );
}

#[test]
fn a_go_panic_is_reported_with_the_function_that_panicked_and_the_go_trace_in_the_log() {
    // The Go runtime prints the panic and its goroutine trace to stderr,
    // then executes `unreachable` in runtime.abort; the report names the
    // function past runtime.gopanic instead (worker/src/fault.rs).
    let (error, log) = go_trap_fails_with("panic");
    assert_eq!(error, "panic in main.checkValvePosition", "{log}");
    for line in [
        "[go-trap] panic: valve position out of range",
        "[go-trap] main.checkValvePosition()",
        "!main.checkValvePosition",
    ] {
        assert!(log.contains(line), "no {line:?} in the log:\n{log}");
    }
}

#[test]
fn a_go_module_with_no_handlers_refuses_to_start_and_says_why() {
    let g = GatewayDir::new();
    g.add_policy(
        "go-main-only",
        &policy(
            "go_main_only",
            &format!("[schedule]\ntick_us = 10000\n[restart]\npolicy = \"never\"\n{GO_RESOURCES}"),
        ),
    );
    let gateway = g.start();
    let status = gateway.wait_for(START, "go-main-only failed", |s| {
        module(s, "go-main-only")["state"] == "failed"
    });
    let error = module(&status, "go-main-only")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(error.starts_with("ew_init returned 1"), "{error}");
    gateway.wait_log(
        "[go-main-only] error: edgeward: no handlers registered (call edgeward.OnTick/OnMessage/... in init()",
        WAIT,
    );
}

#[test]
fn a_multi_module_go_wasm_runs_the_module_named_by_the_policy_and_refuses_an_unknown_name() {
    // gw_line.wasm holds the demo line's 14 Go modules (edgeward.Module).
    let g = GatewayDir::new();
    g.add_policy(
        "gw-setpoint-scheduler",
        &policy(
            "gw_line",
            &format!("[channels]\npublish = [\"pressure-setpoint\", \"current-setpoint\"]\n[schedule]\ntick_us = 1000000\n{GO_RESOURCES}"),
        ),
    );
    g.add_policy(
        "not-in-the-line",
        &policy(
            "gw_line",
            &format!("[schedule]\ntick_us = 10000\n[restart]\npolicy = \"never\"\n{GO_RESOURCES}"),
        ),
    );
    let gateway = g.start();
    let status = gateway.wait_for(START, "not-in-the-line failed", |s| {
        module(s, "not-in-the-line")["state"] == "failed"
    });
    assert!(
        module(&status, "not-in-the-line")["last_error"]
            .as_str()
            .unwrap_or("")
            .starts_with("ew_init returned 1"),
        "{status}"
    );
    gateway.wait_log(
        "[not-in-the-line] error: edgeward: this wasm holds the modules gw-current-alarm, gw-current-sensor,",
        WAIT,
    );
    gateway.wait_log("none is named \"not-in-the-line\"", WAIT);
    // The module named by its policy runs that module's code.
    gateway.wait_running(&["gw-setpoint-scheduler"], START);
    gateway.wait_log("[gw-setpoint-scheduler] info: recipe grade", WAIT);
}
