//! End to end: the same AlertOnHighTemp written with each SDK (Rust
//! `guests/examples/rust-alert`, C `guests/c/c-alert` with
//! `guests/sdk-c/edgeward.h`, built with zig, Go `guests/go/go-alert`)
//! receives the Rust sensor's readings over a ring, warns above its
//! threshold, and keeps its count through a restart; a C trap is reported
//! with the C function's name (Go's own faults: `sdk_go.rs`).

use std::time::Duration;

use edgeward_tests::{module, policy, GatewayDir};

const WAIT: Duration = Duration::from_secs(20);

fn alerts_in(name: &str, log: &str) -> Vec<u64> {
    let prefix = format!("[{name}] warn: ALERT: temperature ");
    log.lines()
        .filter(|l| l.starts_with(&prefix))
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
fn a_c_module_gets_readings_over_a_ring_alerts_and_keeps_its_count_through_a_restart() {
    alerts_over_a_ring_and_keeps_its_count("c-alert", "c_alert", "c", "", WAIT);
}

#[test]
fn a_rust_module_gets_readings_over_a_ring_alerts_and_keeps_its_count_through_a_restart() {
    alerts_over_a_ring_and_keeps_its_count("rust-alert", "rust_alert", "rust", "", WAIT);
}

#[test]
fn a_go_module_gets_readings_over_a_ring_alerts_and_keeps_its_count_through_a_restart() {
    // Go's settings (docs/guest-abi.md); every start of the worker compiles
    // the 2.5 MB module for seconds.
    alerts_over_a_ring_and_keeps_its_count(
        "go-alert",
        "go_alert",
        "go",
        "env = { GOMEMLIMIT = \"48MiB\" }\n[resources]\nmemory_mib = 64\ncall_budget_ms = 100",
        Duration::from_secs(60),
    );
}

/// Runs the alert module `name` (guest `guest`, written in `language`)
/// behind the sensor; `extra` follows its `[wasi] args`; `start` bounds
/// each start of its worker.
fn alerts_over_a_ring_and_keeps_its_count(
    name: &str,
    guest: &str,
    language: &str,
    extra: &str,
    start: Duration,
) {
    let g = GatewayDir::new();
    g.add_policy(
        "sensor",
        &policy(
            "sensor",
            "[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 2000",
        ),
    );
    g.add_policy(
        name,
        &policy(
            guest,
            &format!(
                "[wasi]\nargs = [\"--threshold\", \"85\"]\n{extra}\n[channels]\n\
                 subscribe = [\"readings\"]\n[snapshot]\ninterval_ms = 50"
            ),
        ),
    );
    let gateway = g.start();
    gateway.wait_running(&["sensor", name], start);
    // The sensor sweeps 20..=119 C: every reading above 85 is an alert.
    gateway.wait_log("(alert 20)", WAIT);
    let log = gateway.log();
    let prefix = format!("[{name}] warn: ALERT: temperature ");
    let first = log
        .lines()
        .find(|l| l.starts_with(&prefix))
        .expect("an alert line");
    let celsius: f64 = first
        .trim_start_matches(&prefix)
        .split(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no temperature in {first:?}"));
    assert!(celsius > 85.0, "{first}");
    assert!(first.contains(" > 85.0 (alert 1)"), "{first}");
    let counts = alerts_in(name, &log);
    assert!(
        counts.windows(2).all(|w| w[1] == w[0] + 1),
        "alerts not counted one by one: {counts:?}"
    );

    // A snapshot has the count; after a restart it goes on from there.
    // A snapshot taken after the 20th alert, so the restored count is not 0.
    let epoch = |s: &serde_json::Value| module(s, name)["snapshot_epoch"].as_u64().unwrap_or(0);
    let seen = epoch(&gateway.try_status().expect("status"));
    gateway.wait_for(WAIT, "a snapshot after the alerts", |s| epoch(s) > seen);
    let (code, out, err) = gateway.cli(&["restart", name]);
    assert_eq!(code, 0, "{out}{err}");
    let restored_line = format!("[{name}] info: restored ");
    gateway.wait_log(&restored_line, start);
    let restored: u64 = gateway
        .log()
        .lines()
        .find_map(|l| l.strip_prefix(restored_line.as_str()))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .expect("restored count");
    assert!(restored >= 20, "restored {restored} alerts");
    // The first alert after the restore goes on from the restored count.
    let after_restore = |log: &str| -> Vec<u64> {
        let at = log.find(&restored_line).unwrap_or(0);
        alerts_in(name, &log[at..])
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
    assert_eq!(module(&status, name)["restarts"], 1);
    assert_eq!(module(&status, name)["last_error"], serde_json::Value::Null);
    assert_eq!(module(&status, name)["language"], language);
}

#[test]
fn a_c_trap_is_reported_with_the_c_function_name() {
    let g = GatewayDir::new();
    g.add_policy(
        "c-trap",
        &policy(
            "c_trap",
            "[wasi]\nargs = [\"--after\", \"2\"]\n[schedule]\ntick_us = 10000\n\
             [restart]\npolicy = \"never\"",
        ),
    );
    let gateway = g.start();
    let status = gateway.wait_for(WAIT, "c-trap failed", |s| {
        module(s, "c-trap")["state"] == "failed"
    });
    let error = module(&status, "c-trap")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        error.starts_with("trap: unreachable in check_valve_position"),
        "{error}"
    );
}
