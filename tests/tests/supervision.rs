//! End to end: the real `edgeward` runs real guests; restarts, failures,
//! signals, the CLI and the compile cache, as an operator sees them.

use std::time::{Duration, Instant};

use edgeward_tests::{alive, bin, module, policy, repo_root, GatewayDir};
use nix::sys::signal::Signal;

const STARTUP: Duration = Duration::from_secs(20);

fn examples() -> (GatewayDir, edgeward_tests::Gateway) {
    let g = GatewayDir::new();
    let gateway = g.start_on(&repo_root().join("policies"), &[]);
    gateway.wait_running(&edgeward_tests::EXAMPLES, STARTUP);
    (g, gateway)
}

#[test]
fn the_examples_run_and_status_json_matches_the_schema() {
    let (_g, gateway) = examples();
    let status = gateway.try_status().expect("status");
    let modules = status["modules"].as_array().expect("modules array");
    assert_eq!(modules.len(), edgeward_tests::EXAMPLES.len());
    for m in modules {
        assert!(m["name"].is_string());
        assert!([
            "starting",
            "running",
            "backoff",
            "failed",
            "stopped",
            "upgrading"
        ]
        .contains(&m["state"].as_str().unwrap()));
        assert!(m["pid"].as_u64().unwrap() > 1);
        assert_eq!(m["restarts"].as_u64(), Some(0));
        assert!(m["uptime_ms"].is_u64());
        assert!(m["rss_kib"].as_u64().unwrap() > 0);
        assert!(m["snapshot_epoch"].is_null() || m["snapshot_epoch"].is_u64());
        assert!(m["msgs_in"].is_u64() && m["msgs_out"].is_u64());
        assert!(m["last_error"].is_null());
    }
    assert_eq!(module(&status, "counter")["kind"], "reactor");
    assert_eq!(module(&status, "hello-command")["kind"], "command");
    // Guest output and log lines reach the supervisor's output, prefixed.
    gateway.wait_log(
        "[hello-command] hello from a command module on line 3",
        STARTUP,
    );
    gateway.wait_log("[temp-alert] info: watching /sensor/temperature", STARTUP);
    gateway.wait_log("[counter] info: ticks=50", Duration::from_secs(10));
    // The human table names every module.
    let (code, table, _) = gateway.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("MODULE"));
    for name in ["counter", "temp-alert", "hello-command"] {
        assert!(table.contains(name), "{table}");
    }
}

#[test]
fn kill_9_restarts_only_that_worker_within_a_second() {
    let (_g, gateway) = examples();
    let before = gateway.try_status().unwrap();
    let pid = |s: &serde_json::Value, m: &str| module(s, m)["pid"].as_i64().unwrap();
    let victim = pid(&before, "counter");
    let killed_at = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let after = gateway.wait_for(Duration::from_secs(1), "counter restarted", |s| {
        let m = module(s, "counter");
        m["state"] == "running" && m["restarts"] == 1 && m["pid"].as_i64() != Some(victim)
    });
    assert!(killed_at.elapsed() < Duration::from_secs(1));
    assert_eq!(
        module(&after, "counter")["last_error"],
        "killed by signal 9 (SIGKILL)"
    );
    for other in edgeward_tests::EXAMPLES.iter().filter(|m| **m != "counter") {
        assert_eq!(
            pid(&after, other),
            pid(&before, other),
            "{other} was disturbed"
        );
        assert_eq!(module(&after, other)["restarts"], 0);
    }
}

#[test]
fn crash_loop_ends_failed_after_its_intensity_while_others_run() {
    let g = GatewayDir::new();
    g.add_policy("steady", &policy("counter", "[schedule]\ntick_us = 10000"));
    g.add_policy(
        "crasher",
        &policy(
            "trap",
            "[wasi]\nargs = [\"--ticks\", \"0\"]\n[schedule]\ntick_us = 1000\n\
             [restart]\nbackoff_ms = [1, 20]\nintensity = { max = 3, window_s = 60 }",
        ),
    );
    let gateway = g.start();
    let steady_pid = gateway.wait_running(&["steady"], STARTUP)["modules"][1]["pid"].clone();
    let status = gateway.wait_for(Duration::from_secs(10), "crasher failed", |s| {
        module(s, "crasher")["state"] == "failed"
    });
    let crasher = module(&status, "crasher");
    assert_eq!(crasher["restarts"], 3);
    let error = crasher["last_error"].as_str().unwrap();
    assert!(error.contains("trap: unreachable"), "{error}");
    assert!(error.contains("gave up"), "{error}");
    let steady = module(&status, "steady");
    assert_eq!(steady["state"], "running");
    assert_eq!(steady["restarts"], 0);
    assert_eq!(steady["pid"], steady_pid);
    // An operator can bring it back by hand.
    let (code, out, err) = gateway.cli(&["restart", "crasher"]);
    assert_eq!(code, 0, "{out}{err}");
    gateway.wait_for(Duration::from_secs(5), "crasher restarted by hand", |s| {
        module(s, "crasher")["restarts"].as_u64() >= Some(4)
    });
}

#[test]
fn sigterm_stops_everything_within_two_seconds_and_leaves_no_process() {
    let (_g, mut gateway) = examples();
    let children = gateway.children();
    // The workers and the fork server.
    assert_eq!(
        children.len(),
        edgeward_tests::EXAMPLES.len() + 1,
        "children: {children:?}"
    );
    let start = Instant::now();
    gateway.signal(Signal::SIGTERM);
    let status = gateway
        .wait_exit(Duration::from_secs(2))
        .expect("edgeward did not exit within 2 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", gateway.log());
    assert!(start.elapsed() < Duration::from_secs(2));
    for pid in children {
        assert!(!alive(pid), "process {pid} survived the supervisor");
    }
    assert!(gateway.log().contains("all modules stopped"));
}

#[test]
fn sigint_and_stop_command_also_exit_cleanly() {
    let (_g, mut gateway) = examples();
    gateway.signal(Signal::SIGINT);
    assert_eq!(
        gateway
            .wait_exit(Duration::from_secs(2))
            .and_then(|s| s.code()),
        Some(0)
    );

    let (_g2, mut gateway) = examples();
    let children = gateway.children();
    let (code, out, err) = gateway.cli(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        gateway
            .wait_exit(Duration::from_secs(2))
            .and_then(|s| s.code()),
        Some(0)
    );
    assert!(children.iter().all(|p| !alive(*p)));
}

#[test]
fn restart_command_replaces_the_worker_and_rejects_unknown_modules() {
    let (_g, gateway) = examples();
    let before = gateway.try_status().unwrap();
    let old = module(&before, "temp-alert")["pid"].clone();
    let (code, out, _) = gateway.cli(&["restart", "temp-alert"]);
    assert_eq!(code, 0);
    assert!(out.contains("restarting temp-alert"));
    gateway.wait_for(Duration::from_secs(2), "temp-alert restarted", |s| {
        let m = module(s, "temp-alert");
        m["state"] == "running" && m["restarts"] == 1 && m["pid"] != old
    });
    let (code, _, err) = gateway.cli(&["restart", "no-such-module"]);
    assert_eq!(code, 1);
    assert!(err.contains("no module named \"no-such-module\""), "{err}");
}

#[test]
fn a_second_run_reuses_the_compile_cache() {
    let g = GatewayDir::new();
    g.add_policy("counter", &policy("counter", ""));
    let mut first = g.start();
    first.wait_running(&["counter"], STARTUP);
    assert!(
        first.log().contains("module counter: compiled"),
        "{}",
        first.log()
    );
    first.signal(Signal::SIGTERM);
    first.wait_exit(Duration::from_secs(2)).expect("exit");

    let second = g.start();
    second.wait_running(&["counter"], STARTUP);
    let log = second.log();
    assert!(log.contains("module counter: compile cache hit"), "{log}");
    assert!(!log.contains("compiled"), "recompiled:\n{log}");
}

#[test]
fn run_marks_bad_modules_failed_and_runs_the_others() {
    let g = GatewayDir::new();
    g.add_policy("good", &policy("counter", ""));
    g.add_policy("typo", &policy("counter", "[resources]\nmemroy_mib = 32"));
    let bad_wasm = g.dir.path().join("bad.wasm");
    std::fs::write(&bad_wasm, b"\0asm\x01\0\0\0\x99garbage").unwrap();
    g.add_policy(
        "invalid",
        &format!("[module]\nwasm = \"{}\"\n", bad_wasm.display()),
    );
    let gateway = g.start();
    let status = gateway.wait_running(&["good"], STARTUP);
    let typo = module(&status, "typo");
    assert_eq!(typo["state"], "failed");
    let error = typo["last_error"].as_str().unwrap();
    assert!(error.contains("typo.toml:4:1"), "{error}");
    assert!(error.contains("did you mean \"memory_mib\""), "{error}");
    let invalid = module(&status, "invalid");
    assert_eq!(invalid["state"], "failed");
    assert!(
        invalid["last_error"]
            .as_str()
            .unwrap()
            .contains("does not compile"),
        "{invalid}"
    );
}

#[test]
fn a_worker_sending_a_malformed_frame_is_killed_and_reported() {
    let g = GatewayDir::new();
    g.add_policy("rogue", &policy("counter", "[restart]\npolicy = \"never\""));
    let rogue = bin("rogue-worker");
    let gateway = g.start_with(&[
        ("EDGEWARD_PROCESS_MODEL", "exec"),
        ("EDGEWARD_WORKER", rogue.to_str().unwrap()),
    ]);
    let status = gateway.wait_for(STARTUP, "rogue failed", |s| {
        module(s, "rogue")["state"] == "failed"
    });
    let error = module(&status, "rogue")["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with("protocol violation: malformed control frame"),
        "{error}"
    );
    assert!(error.contains("worker killed"), "{error}");
}

#[test]
fn exec_per_worker_model_runs_the_same_modules() {
    let g = GatewayDir::new();
    let gateway = g.start_on(
        &repo_root().join("policies"),
        &[("EDGEWARD_PROCESS_MODEL", "exec")],
    );
    gateway.wait_running(&edgeward_tests::EXAMPLES, STARTUP);
    // No fork server: only the workers are children.
    assert_eq!(gateway.children().len(), edgeward_tests::EXAMPLES.len());
}

#[test]
fn client_commands_read_the_control_socket_from_the_environment() {
    let g = GatewayDir::new();
    g.add_policy("counter", &policy("counter", ""));
    let gateway = g.start();
    gateway.wait_running(&["counter"], STARTUP);
    let out = std::process::Command::new(bin("edgeward"))
        .args(["status", "--json"])
        .env("EDGEWARD_CONTROL", g.control())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"name\":\"counter\""));
    // No supervisor there: a clear error, exit 1.
    let out = std::process::Command::new(bin("edgeward"))
        .args(["status"])
        .env("EDGEWARD_CONTROL", g.dir.path().join("nobody.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `edgeward run` running?"));
}

#[test]
fn a_module_refusing_to_start_is_reported_with_its_code() {
    let g = GatewayDir::new();
    g.add_policy(
        "refuser",
        &policy(
            "trap",
            "[wasi]\nargs = [\"--init-code\", \"-7\"]\n[restart]\npolicy = \"never\"",
        ),
    );
    let gateway = g.start();
    let status = gateway.wait_for(STARTUP, "refuser failed", |s| {
        module(s, "refuser")["state"] == "failed"
    });
    let error = module(&status, "refuser")["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.starts_with("ew_init returned -7"), "{error}");
    assert_eq!(module(&status, "refuser")["restarts"], 0);
}
