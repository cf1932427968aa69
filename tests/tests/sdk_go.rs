//! End to end: modules written in Go with the SDK in `guests/sdk-go` and
//! built as wasip1 reactors (`scripts/build-guests`, `guests/go/`). The Go
//! AlertOnHighTemp receives the Rust sensor's readings over a ring, warns
//! above its threshold, and keeps its count through a restart; a Go fault
//! is reported with the Go function's name; a Go module whose handlers are
//! registered where a reactor never runs them refuses to start, saying so.
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

fn alerts_in(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.starts_with("[go-alert] warn: ALERT: temperature "))
        .filter_map(|l| {
            l.rsplit("(alert ")
                .next()?
                .trim_end_matches(')')
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn a_go_module_gets_readings_over_a_ring_alerts_and_keeps_its_count_through_a_restart() {
    let g = GatewayDir::new();
    g.add_policy(
        "sensor",
        &policy(
            "sensor",
            "[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 2000",
        ),
    );
    g.add_policy(
        "go-alert",
        &policy(
            "go_alert",
            &format!(
                "[wasi]\nargs = [\"--threshold\", \"85\"]\nenv = {{ GOMEMLIMIT = \"48MiB\" }}\n\
                 [channels]\nsubscribe = [\"readings\"]\n[snapshot]\ninterval_ms = 50\n{GO_RESOURCES}"
            ),
        ),
    );
    let gateway = g.start();
    gateway.wait_running(&["sensor", "go-alert"], START);
    // The sensor sweeps 20..=119 C: every reading above 85 is an alert.
    gateway.wait_log("(alert 20)", WAIT);
    let log = gateway.log();
    let first = log
        .lines()
        .find(|l| l.starts_with("[go-alert] warn: ALERT: temperature "))
        .expect("an alert line");
    let celsius: f64 = first
        .trim_start_matches("[go-alert] warn: ALERT: temperature ")
        .split(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no temperature in {first:?}"));
    assert!(celsius > 85.0, "{first}");
    assert!(first.contains(" > 85.0 (alert 1)"), "{first}");
    let counts = alerts_in(&log);
    assert!(
        counts.windows(2).all(|w| w[1] == w[0] + 1),
        "alerts not counted one by one: {counts:?}"
    );

    // A snapshot has the count; after a restart it goes on from there.
    // A snapshot taken after the 20th alert, so the restored count is not 0.
    let epoch = |s: &serde_json::Value| {
        module(s, "go-alert")["snapshot_epoch"]
            .as_u64()
            .unwrap_or(0)
    };
    let seen = epoch(&gateway.try_status().expect("status"));
    gateway.wait_for(WAIT, "a snapshot after the alerts", |s| epoch(s) > seen);
    let (code, out, err) = gateway.cli(&["restart", "go-alert"]);
    assert_eq!(code, 0, "{out}{err}");
    // The restarted worker compiles the module again.
    gateway.wait_log("[go-alert] info: restored ", START);
    let restored: u64 = gateway
        .log()
        .lines()
        .find_map(|l| l.strip_prefix("[go-alert] info: restored "))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .expect("restored count");
    assert!(restored >= 20, "restored {restored} alerts");
    // The first alert after the restore goes on from the restored count.
    let after_restore = |log: &str| -> Vec<u64> {
        let at = log.find("[go-alert] info: restored ").unwrap_or(0);
        alerts_in(&log[at..])
    };
    let status = gateway.wait_for(WAIT, "alerts after the restart", |_| {
        !after_restore(&gateway.log()).is_empty()
    });
    let next = after_restore(&gateway.log())[0];
    assert_eq!(
        next,
        restored + 1,
        "after restoring {restored} the count went on at {next}"
    );
    let go_alert = module(&status, "go-alert");
    assert_eq!(go_alert["restarts"], 1);
    assert_eq!(go_alert["last_error"], serde_json::Value::Null);
    assert_eq!(go_alert["language"], "go");
}

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
