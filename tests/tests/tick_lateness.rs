//! End to end: `status` reports how late each module's ticks start
//! (`tick_lateness_p50_us`, `…_p99_us`, `…_max_us`), and a module whose
//! tick handler overruns its period shows it.

use std::time::Duration;

use edgeward_tests::{module, policy, GatewayDir};

#[test]
fn status_shows_tick_lateness_and_an_overrunning_tick_handler_is_late() {
    let g = GatewayDir::new();
    g.add_policy(
        "counter",
        &policy(
            "counter",
            "[wasi]\nargs = [\"--every\", \"1000000\"]\n[schedule]\ntick_us = 10000",
        ),
    );
    // Each 1 ms tick spins 5 ms: every call after the first starts at
    // least 4 ms after the oldest period it covers.
    g.add_policy(
        "overrun",
        &policy(
            "bench_hog",
            "[wasi]\nargs = [\"--spin-ms\", \"5\"]\n[schedule]\ntick_us = 1000\n\
             [resources]\ncpu_percent = 100\ncall_budget_ms = 1000",
        ),
    );
    g.add_policy("quiet", &policy("c_alert", ""));
    let gateway = g.start();
    gateway.wait_running(&["counter", "overrun", "quiet"], Duration::from_secs(30));
    let status = gateway.wait_for(Duration::from_secs(30), "tick lateness reported", |s| {
        ["counter", "overrun"]
            .iter()
            .all(|m| module(s, m)["ticks"].as_u64().unwrap_or(0) >= 20)
            && module(s, "overrun")["tick_lateness_p50_us"].is_u64()
    });
    for name in ["counter", "overrun"] {
        let m = module(&status, name);
        let (p50, p99, max) = (
            m["tick_lateness_p50_us"].as_u64(),
            m["tick_lateness_p99_us"].as_u64(),
            m["tick_lateness_max_us"].as_u64(),
        );
        assert!(
            matches!((p50, p99, max), (Some(a), Some(b), Some(c)) if a <= b && b <= c),
            "{name}: {m}"
        );
    }
    let overrun = module(&status, "overrun");
    assert!(
        overrun["tick_lateness_p50_us"].as_u64() >= Some(3000),
        "{overrun}"
    );
    // Fast-ticking modules (every 10 ms or more often) get the short
    // scheduler slice (worker/src/module/slice.rs), others the default;
    // kernels without per-task slices (before 6.12) show no `se.slice`.
    let slice = |name: &str| -> Option<u64> {
        let pid = module(&status, name)["pid"].as_u64().expect("pid");
        let sched = std::fs::read_to_string(format!("/proc/{pid}/sched")).ok()?;
        sched
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|v| v.trim().parse().ok())
    };
    if let Some(quiet_slice) = slice("quiet") {
        assert_ne!(quiet_slice, 100_000, "quiet");
        for name in ["counter", "overrun"] {
            assert_eq!(slice(name), Some(100_000), "{name}");
        }
    }
    // A module that does not tick has no lateness to report.
    let quiet = module(&status, "quiet");
    for field in [
        "tick_lateness_p50_us",
        "tick_lateness_p99_us",
        "tick_lateness_max_us",
    ] {
        assert!(quiet[field].is_null(), "{field}: {quiet}");
    }
}
