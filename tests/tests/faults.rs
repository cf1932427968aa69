//! End to end: every fault-injection guest runs beside three healthy
//! modules. The healthy ones keep their pids and their tick rate; each
//! faulty one is named in `last_error`, restarted with backoff, and ends
//! `failed` after its intensity.

use std::time::{Duration, Instant};

use edgeward_tests::{guest, module, policy, GatewayDir};

const HEALTHY: [&str; 3] = ["healthy-a", "healthy-b", "healthy-c"];

/// (module, guest, expected start of last_error)
const CRASHING: [(&str, &str, &str); 6] = [
    ("trap", "trap", "trap: unreachable in trap::on_tick_fails"),
    (
        "loop-handler",
        "loop_handler",
        "exceeded call budget of 20 ms in ew_on_tick",
    ),
    (
        "loop-init",
        "loop_init",
        "exceeded call budget of 20 ms in ew_init",
    ),
    (
        "memory-bomb",
        "memory_bomb",
        "wasm memory limit 16 MiB reached",
    ),
    (
        "stack-overflow",
        "stack_overflow",
        "stack overflow in stack_overflow::dive",
    ),
    (
        "huge-copy",
        "huge_copy",
        "trap: out-of-bounds memory access",
    ),
];

#[test]
fn faults_are_contained_named_and_end_failed_while_healthy_modules_tick_on() {
    let g = GatewayDir::new();
    for name in HEALTHY {
        g.add_policy(name, &policy("counter", "[schedule]\ntick_us = 10000"));
    }
    let faulty_rules =
        "[resources]\nmemory_mib = 16\ncpu_percent = 20\n[schedule]\ntick_us = 10000\n\
                        [restart]\nbackoff_ms = [20, 200]\nintensity = { max = 2, window_s = 60 }";
    for (name, guest_name, _) in CRASHING {
        // Filling 4 MiB a tick under a 20% CPU quota can outlast 20 ms: the
        // bomb gets a larger budget so that memory, not time, stops it.
        let rules = if name == "memory-bomb" {
            faulty_rules.replace(
                "cpu_percent = 20",
                "cpu_percent = 20\ncall_budget_ms = 2000",
            )
        } else {
            faulty_rules.to_string()
        };
        g.add_policy(name, &policy(guest_name, &rules));
    }
    g.add_policy(
        "log-flood",
        &policy("log_flood", "[schedule]\ntick_us = 10000"),
    );
    // The file-system escape guest gets one read-only dir with a way out planted in it.
    let ro = g.dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("input.txt"), "data").unwrap();
    std::fs::write(g.dir.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("../secret.txt", ro.join("link-out")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ro.join("abs-link")).unwrap();
    g.add_policy(
        "fs-escape",
        &policy(
            "fs_escape",
            &format!(
                "[wasi]\ndirs = [{{ host = \"{}\", guest = \"/ro\", mode = \"ro\" }}]",
                ro.display()
            ),
        ),
    );
    let _ = guest("counter");

    let gateway_started = Instant::now();
    let gateway = g.start();
    let first = gateway.wait_running(&HEALTHY, Duration::from_secs(20));
    let started = Instant::now();
    let ticks_at_start: Vec<u64> = HEALTHY
        .iter()
        .map(|h| module(&first, h)["ticks"].as_u64().unwrap())
        .collect();
    let status = gateway.wait_for(
        Duration::from_secs(20),
        "every crashing module failed",
        |s| {
            CRASHING
                .iter()
                .all(|(name, _, _)| module(s, name)["state"] == "failed")
        },
    );
    // Let the healthy modules run on for a while after the storm.
    std::thread::sleep(Duration::from_secs(2));
    let end = gateway.try_status().unwrap();
    let elapsed = started.elapsed().as_secs_f64();

    for (name, _, cause) in CRASHING {
        let m = module(&status, name);
        let error = m["last_error"].as_str().unwrap();
        assert!(error.starts_with(cause), "{name}: {error}");
        assert!(error.contains("gave up"), "{name}: {error}");
        assert_eq!(m["restarts"], 2, "{name}: {m}");
    }
    for (i, name) in HEALTHY.iter().enumerate() {
        let before = module(&first, name);
        let after = module(&end, name);
        assert_eq!(after["pid"], before["pid"], "{name} was restarted");
        assert_eq!(after["restarts"], 0, "{name}");
        assert_eq!(after["state"], "running");
        let rate = (after["ticks"].as_u64().unwrap() - ticks_at_start[i]) as f64 / elapsed;
        // 100 ticks/s configured; heartbeats (every 0.1 s) lag by up to 0.1 s,
        // allowed for on top of the ±10% the module itself must hold.
        let lag = 10.0 / elapsed;
        assert!(
            rate >= 90.0 - lag && rate <= 110.0,
            "{name} ticked at {rate:.1}/s (elapsed {elapsed:.1}s)"
        );
    }
    // The flood is cut to the limit and reported; the module keeps running.
    let flood = module(&end, "log-flood");
    assert_eq!(flood["state"], "running");
    gateway.wait_log("lines dropped (limit 100 lines/s)", Duration::from_secs(5));
    let flooding_for = gateway_started.elapsed().as_secs_f64();
    let flood_lines = gateway
        .log()
        .lines()
        .filter(|l| l.starts_with("[log-flood]"))
        .count() as f64;
    // Two streams (log import, stdout), each at most its burst, 100 lines/s
    // and one drop report a second.
    let bound = 2.0 * (200.0 + 101.0 * flooding_for + 1.0);
    assert!(
        flood_lines <= bound,
        "{flood_lines} flood lines in {flooding_for:.1}s (bound {bound:.0})"
    );
    // Every escape attempt was refused, inside the module.
    gateway.wait_log(
        "[fs-escape] escape: all 11 attempts refused",
        Duration::from_secs(5),
    );
    assert!(!gateway.log().contains("SUCCEEDED"), "{}", gateway.log());
    assert_eq!(module(&end, "fs-escape")["state"], "stopped");
    // The memory bomb hit its own wasm limit; nobody was OOM-killed.
    assert!(
        !gateway.log().contains("out of memory"),
        "{}",
        gateway.log()
    );
    assert!(
        gateway.children().len() >= 4,
        "supervisor lost its healthy workers"
    );
}
