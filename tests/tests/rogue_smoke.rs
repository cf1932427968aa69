//! End to end: the hostile test worker (`src/bin/rogue-worker.rs`) runs in
//! a gateway beside a real module. Real modules are served by the real
//! worker it execs, a `rogue*` module by the rogue itself; an idle rogue
//! behaves, so the gateway runs and stops as usual.

use std::time::Duration;

use edgeward_tests::{bin, module, policy, GatewayDir};

const STARTUP: Duration = Duration::from_secs(20);

fn ticks(status: &serde_json::Value, name: &str) -> u64 {
    module(status, name)["ticks"].as_u64().unwrap_or(0)
}

#[test]
fn an_idle_rogue_runs_beside_a_real_module_and_the_gateway_stops_cleanly() {
    let g = GatewayDir::new();
    g.add_policy("counter", &policy("counter", "[schedule]\ntick_us = 10000"));
    // Its wasm is compiled (by the real worker) but never run.
    g.add_policy(
        "rogue-idle",
        &policy("counter", "[wasi]\nargs = [\"idle\"]"),
    );
    let rogue = bin("rogue-worker");
    let mut gateway = g.start_with(&[
        ("EDGEWARD_PROCESS_MODEL", "exec"),
        ("EDGEWARD_WORKER", rogue.to_str().unwrap()),
    ]);
    let status = gateway.wait_running(&["counter", "rogue-idle"], STARTUP);
    // The rogue speaks for itself: its process is the rogue binary, while
    // the counter's is the real worker it exec'd.
    let exe = |name: &str| {
        let pid = module(&status, name)["pid"].as_i64().unwrap();
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
    };
    assert_eq!(exe("rogue-idle"), rogue);
    assert_eq!(exe("counter"), bin("edgeward-worker"));
    let before = ticks(&status, "counter");
    let later = gateway.wait_for(STARTUP, "the counter's ticks to grow", |s| {
        ticks(s, "counter") > before + 10
    });
    assert_eq!(module(&later, "rogue-idle")["state"], "running");
    assert_eq!(module(&later, "rogue-idle")["restarts"], 0, "{later}");

    let (code, out, err) = gateway.cli(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let exit = gateway.wait_exit(Duration::from_secs(5));
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "log:\n{}",
        gateway.log()
    );
}
