//! End to end: a compromised worker is not trusted (issue 12, items 2, 6,
//! 7 and 8). Each test runs a gateway in the exec-per-worker model with
//! `rogue-worker` as the worker binary: modules named `rogue-*` get a
//! worker that speaks the protocol itself and misbehaves (the mode is the
//! module's first arg, see `tests/src/bin/rogue-worker.rs`); every other
//! module runs the real worker. The healthy modules must keep 90% of
//! their tick rate and `status` must keep answering; the rogue is killed
//! and named, and no innocent module is blamed.

use std::time::Duration;

use edgeward_tests::attack::{assert_unharmed, victim_policy, watch};
use edgeward_tests::{bin, module, policy, Gateway, GatewayDir};

const STARTUP: Duration = Duration::from_secs(20);

fn rogue(mode: &str, extra: &str) -> String {
    // The wasm is never run by a rogue; any valid one does.
    policy(
        "counter",
        &format!("[wasi]\nargs = [\"{mode}\"]\n[restart]\npolicy = \"never\"\n{extra}"),
    )
}

fn start(g: &GatewayDir) -> Gateway {
    let rogue = bin("rogue-worker");
    g.start_with(&[
        ("EDGEWARD_PROCESS_MODEL", "exec"),
        ("EDGEWARD_WORKER", rogue.to_str().expect("utf-8 path")),
    ])
}

fn last_error(status: &serde_json::Value, m: &str) -> String {
    module(status, m)["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_worker_flooding_log_messages_is_cut_off_and_killed() {
    let g = GatewayDir::new();
    g.add_policy("victim", &victim_policy());
    g.add_policy("rogue-flood", &rogue("log-flood", ""));
    let gateway = start(&g);
    gateway.wait_running(&["victim"], STARTUP);
    let watched = watch(&gateway, "victim", Duration::from_secs(4));
    assert_unharmed(&watched, "a worker flooding Log messages", &gateway);
    let status = gateway.wait_for(STARTUP, "the flooder killed", |s| {
        module(s, "rogue-flood")["state"] == "failed"
    });
    let error = last_error(&status, "rogue-flood");
    assert!(
        error.starts_with("protocol violation: flooding the control socket"),
        "{error}"
    );
    let log = gateway.log();
    // What it sent was limited on the supervisor's side, and never passed
    // for the supervisor's own lines.
    assert!(
        log.len() < 4 << 20,
        "the supervisor wrote {} bytes",
        log.len()
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("edgeward: module victim: forged")),
        "a forged supervisor line got through"
    );
}

#[test]
fn an_oversized_log_message_gets_the_worker_killed() {
    let g = GatewayDir::new();
    g.add_policy("victim", &victim_policy());
    g.add_policy("rogue-big", &rogue("log-oversized", ""));
    let gateway = start(&g);
    gateway.wait_running(&["victim"], STARTUP);
    let status = gateway.wait_for(STARTUP, "the sender killed", |s| {
        module(s, "rogue-big")["state"] == "failed"
    });
    let error = last_error(&status, "rogue-big");
    assert!(
        error.starts_with("protocol violation: a Log message of 61")
            && error.contains("bytes (at most 4096)"),
        "{error}"
    );
    assert!(!gateway.log().contains("forged line"), "{}", gateway.log());
    assert_eq!(module(&status, "victim")["state"], "running");
}

#[test]
fn worker_text_cannot_forge_lines_or_send_escape_codes() {
    let g = GatewayDir::new();
    g.add_policy("counter", &victim_policy());
    g.add_policy("rogue-text", &rogue("forge-text", ""));
    let gateway = start(&g);
    gateway.wait_running(&["counter"], STARTUP);
    gateway.wait_log("[rogue-text]", STARTUP);
    std::thread::sleep(Duration::from_millis(500));
    let log = gateway.log();
    assert!(!log.contains('\x1b'), "an escape code reached the log");
    assert!(!log.contains('\r'), "a carriage return reached the log");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("edgeward: module counter: failed")),
        "a forged supervisor line got through:\n{log}"
    );
    // The status table stays one row per module.
    let (code, table, err) = gateway.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| !l.starts_with("WARNING"))
        .collect();
    assert_eq!(rows.len(), 3, "header + 2 modules:\n{table}");
}

#[test]
fn forged_ring_corruption_reports_blame_nobody_but_their_sender() {
    let g = GatewayDir::new();
    g.add_policy(
        "sensor",
        &policy(
            "sensor",
            "[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 10000",
        ),
    );
    g.add_policy(
        "alarm",
        &policy("alarm", "[channels]\nsubscribe = [\"alarms\"]"),
    );
    // Subscribes to the sensor's readings and publishes to the alarm: it
    // reports both rings corrupt, again and again, without touching them.
    g.add_policy(
        "rogue-ring",
        &rogue(
            "forge-corrupt",
            "[channels]\nsubscribe = [\"readings\"]\npublish = [\"alarms\"]",
        ),
    );
    let gateway = start(&g);
    let before = gateway.wait_running(&["sensor", "alarm"], STARTUP);
    let status = gateway.wait_for(STARTUP, "the forger killed", |s| {
        module(s, "rogue-ring")["state"] == "failed"
    });
    let error = last_error(&status, "rogue-ring");
    assert!(
        error.contains("ring corruption reports within 60 s that the supervisor could not confirm"),
        "{error}"
    );
    // The innocent ends were never touched.
    for m in ["sensor", "alarm"] {
        assert_eq!(module(&status, m)["state"], "running", "{m}: {status}");
        assert_eq!(
            module(&status, m)["pid"],
            module(&before, m)["pid"],
            "{m} restarted"
        );
        assert_eq!(module(&status, m)["restarts"], 0, "{m} restarted");
    }
    assert!(
        gateway.log().contains("not acted on"),
        "unconfirmed reports not logged"
    );
}

#[test]
fn a_snapshot_nobody_asked_for_gets_the_worker_killed() {
    let g = GatewayDir::new();
    g.add_policy("victim", &victim_policy());
    g.add_policy("rogue-push", &rogue("push-snapshots", ""));
    let gateway = start(&g);
    gateway.wait_running(&["victim"], STARTUP);
    let status = gateway.wait_for(STARTUP, "the pusher killed", |s| {
        module(s, "rogue-push")["state"] == "failed"
    });
    let error = last_error(&status, "rogue-push");
    assert!(
        error.starts_with("protocol violation: a snapshot nobody asked for"),
        "{error}"
    );
    // Nothing of it was kept: the supervisor stays small.
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", gateway.pid()))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    assert!(rss_kib < 64 * 1024, "supervisor RSS {rss_kib} KiB");
    assert!(
        module(&status, "rogue-push")["snapshot_epoch"].is_null(),
        "{status}"
    );
}

#[test]
fn a_zero_byte_datagram_gets_the_worker_killed_not_detached() {
    let g = GatewayDir::new();
    g.add_policy("victim", &victim_policy());
    g.add_policy("rogue-empty", &rogue("empty-datagram", ""));
    let gateway = start(&g);
    let running = gateway.wait_running(&["victim"], STARTUP);
    let _ = running;
    let status = gateway.wait_for(STARTUP, "the sender of an empty datagram killed", |s| {
        module(s, "rogue-empty")["state"] == "failed"
    });
    let error = last_error(&status, "rogue-empty");
    assert!(
        error.starts_with("protocol violation: malformed control frame (empty frame"),
        "{error}"
    );
    // No rogue process is left running beside the gateway.
    std::thread::sleep(Duration::from_millis(200));
    let rogues: Vec<i32> = gateway
        .children()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.contains("EDGEWARD_MODULE=rogue-empty"))
        })
        .collect();
    assert!(rogues.is_empty(), "rogue still running: {rogues:?}");
}
