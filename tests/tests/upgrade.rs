//! End to end: `edgeward upgrade` switches a running module to a new wasm
//! with its state, keeps it after a restart, and rolls back to the old
//! version and state when the new one is unhealthy, crashes, cannot start
//! or does not validate; a supervisor killed at any moment of an upgrade
//! comes back with exactly one version active and no state lost.

use std::process::{Command, Stdio};
use std::time::Duration;

use edgeward_tests::{bin, guest, last_number_after, module, policy, Gateway, GatewayDir};
use serde_json::Value;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(20);

/// The counter at 1 kHz, snapshots only when asked or stopped; `extra`
/// args are for the next version (the counter ignores them).
fn counter(extra: &str) -> String {
    policy(
        "counter",
        &format!(
            "[wasi]\nargs = [\"--every\", \"100\"{extra}]\n[schedule]\ntick_us = 1000\n\
             [snapshot]\ninterval_ms = 0\n[restart]\nbackoff_ms = [1, 10]"
        ),
    )
}

fn sha_of(name: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(guest(name)).unwrap()))
}

fn ticks(status: &Value, name: &str) -> u64 {
    module(status, name)["ticks"].as_u64().unwrap_or(0)
}

fn upgrade(gateway: &Gateway, name: &str, wasm: &str, health_ms: u64) -> (i32, String, String) {
    gateway.cli(&[
        "upgrade",
        name,
        &guest(wasm).to_string_lossy(),
        "--health-ms",
        &health_ms.to_string(),
    ])
}

/// Waits until `name` counted at least `n` ticks; returns the count then.
fn counted(gateway: &Gateway, name: &str, n: u64) -> u64 {
    let status = gateway.wait_for(WAIT, &format!("{name} counting"), |s| {
        module(s, name)["state"] == "running" && ticks(s, name) >= n
    });
    ticks(&status, name)
}

#[test]
fn an_upgrade_hands_the_state_over_and_stays_after_a_restart() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter(""));
    let gateway = g.start();
    let before = counted(&gateway, "counter", 300);
    let old_pid = gateway
        .try_status()
        .map(|s| module(&s, "counter")["pid"].clone());

    let (code, out, err) = upgrade(&gateway, "counter", "counter_next", 200);
    assert_eq!(code, 0, "upgrade failed: {out}{err}");
    let next = sha_of("counter_next");
    assert_eq!(
        out.trim(),
        format!(
            "counter: upgraded to {} with the state of snapshot epoch 1; it passed its probation and health check",
            &next[..12]
        )
    );
    let handed = gateway.wait_number_after("[counter] info: next: restored ticks=", WAIT);
    assert!(handed >= before, "handed {handed} < {before} ticks");
    let status = gateway.wait_running(&["counter"], WAIT);
    assert_eq!(module(&status, "counter")["wasm_sha256"], next.as_str());
    assert_ne!(Some(module(&status, "counter")["pid"].clone()), old_pid);

    // An unchanged policy keeps the upgrade through a reload…
    let pid = module(&status, "counter")["pid"].clone();
    assert_eq!(gateway.cli(&["reload"]).1.trim(), "no change");
    let status = gateway.try_status().unwrap();
    assert_eq!(module(&status, "counter")["pid"], pid);

    // …and through a restart of the gateway, with its state.
    let at_stop = counted(&gateway, "counter", handed + 200);
    let mut gateway = gateway;
    assert_eq!(gateway.cli(&["stop"]).0, 0);
    gateway.wait_exit(WAIT);
    let gateway = g.start();
    let restored = gateway.wait_number_after("[counter] info: next: restored ticks=", WAIT);
    assert!(restored >= at_stop, "restored {restored} < {at_stop}");
    let status = gateway.wait_running(&["counter"], WAIT);
    assert_eq!(module(&status, "counter")["wasm_sha256"], next.as_str());

    // Upgrading to what runs is refused; so is an unknown module.
    let (code, _, err) = upgrade(&gateway, "counter", "counter_next", 200);
    assert_eq!(code, 1);
    assert!(err.contains("already runs"), "{err}");
    let (code, _, err) = upgrade(&gateway, "nope", "counter_next", 200);
    assert_eq!(code, 1);
    assert!(err.contains("no module named \"nope\""), "{err}");

    // A policy pointing at another wasm wins over the upgrade.
    drop(gateway);
    g.add_policy(
        "counter",
        &counter("").replace(
            &guest("counter").to_string_lossy().into_owned(),
            &guest("big_state").to_string_lossy(),
        ),
    );
    let gateway = g.start();
    gateway.wait_log(
        "its policy names another wasm than when it was upgraded",
        WAIT,
    );
    let status = gateway.wait_running(&["counter"], WAIT);
    assert_eq!(
        module(&status, "counter")["wasm_sha256"],
        sha_of("big_state").as_str()
    );
}

#[test]
fn a_failed_upgrade_rolls_back_to_the_old_version_and_its_state() {
    let g = GatewayDir::new();
    g.add_policy("sick", &counter(", \"--next-health\", \"3\""));
    g.add_policy("crashy", &counter(", \"--next-trap-after\", \"30\""));
    g.add_policy("refuser", &counter(", \"--next-fail-init\", \"1\""));
    g.add_policy("plain", &counter(""));
    let gateway = g.start();
    let old = sha_of("counter");
    for (name, reason) in [
        (
            "sick",
            "the new version is unhealthy (ew_health returned 3)",
        ),
        ("crashy", "the new version ended"),
        ("refuser", "the new version ended"),
    ] {
        let before = counted(&gateway, name, 300);
        let (code, out, err) = upgrade(&gateway, name, "counter_next", 300);
        assert_eq!(code, 1, "{name}: the upgrade must fail: {out}{err}");
        assert!(
            err.contains(&format!("{name}: upgrade rolled back: {reason}"))
                && err.contains("runs again from its pre-upgrade state"),
            "{name}: {err}"
        );
        // The old version is back, from the pre-upgrade snapshot.
        let restored = gateway.wait_number_after(&format!("[{name}] info: restored ticks="), WAIT);
        assert!(restored >= before, "{name}: restored {restored} < {before}");
        let status = gateway.wait_running(&[name], WAIT);
        assert_eq!(module(&status, name)["wasm_sha256"], old.as_str(), "{name}");
        assert!(module(&status, name)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("upgrade rolled back")));
    }

    // A file that is not wasm is refused before anything changes.
    let status = gateway.wait_running(&["plain"], WAIT);
    let pid = module(&status, "plain")["pid"].clone();
    let junk = g.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let (code, _, err) = gateway.cli(&["upgrade", "plain", &junk.to_string_lossy()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("junk.wasm") && err.contains("nothing changed"),
        "{err}"
    );
    let status = gateway.try_status().unwrap();
    assert_eq!(module(&status, "plain")["pid"], pid);
    assert_eq!(module(&status, "plain")["wasm_sha256"], old.as_str());
}

/// Rounds of the crash test: `EDGEWARD_UPGRADE_CRASH_ROUNDS`, default 12.
fn crash_rounds() -> u32 {
    std::env::var("EDGEWARD_UPGRADE_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12)
}

#[test]
fn a_supervisor_killed_during_an_upgrade_comes_back_with_one_version_and_its_state() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter(""));
    let (old, next) = (sha_of("counter"), sha_of("counter_next"));
    let mut seed = 0x0bad_5eed_u64;
    let mut floor = 0u64;
    let mut outcomes = [0u32; 2];
    for round in 0..crash_rounds() {
        let gateway = g.start();
        let status = gateway.wait_running(&["counter"], WAIT);
        let running = module(&status, "counter")["wasm_sha256"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            running == old || running == next,
            "round {round}: runs {running}"
        );
        // The count now: what was restored at this start plus the ticks since.
        let before = floor + counted(&gateway, "counter", 50);
        let target = if running == old {
            "counter_next"
        } else {
            "counter"
        };
        let client = Command::new(bin("edgeward"))
            .args(["upgrade", "counter"])
            .arg(guest(target))
            .args(["--health-ms", "100", "--control"])
            .arg(g.control())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 300));
        drop(gateway); // kill -9 of the supervisor and every worker
        let answer = client.wait_with_output().unwrap();
        let committed = answer.status.success();

        let gateway = g.start();
        let status = gateway.wait_running(&["counter"], WAIT);
        let now = module(&status, "counter")["wasm_sha256"]
            .as_str()
            .unwrap()
            .to_string();
        let target_sha = if target == "counter" { &old } else { &next };
        if committed {
            assert_eq!(&now, target_sha, "round {round}: committed, yet {now} runs");
        }
        assert!(now == old || now == next, "round {round}: runs {now}");
        outcomes[usize::from(&now == target_sha)] += 1;
        // The state never goes back past what the module had before.
        let needle = if now == next {
            "[counter] info: next: restored ticks="
        } else {
            "[counter] info: restored ticks="
        };
        // Restoring happens before Ready: the line is there if a snapshot was.
        let restored = last_number_after(&gateway.log(), needle);
        assert!(
            floor == 0 || restored.is_some(),
            "round {round}: nothing restored after a durable snapshot; log:\n{}",
            gateway.log()
        );
        let restored = restored.unwrap_or(0);
        assert!(
            restored >= floor,
            "round {round}: restored {restored} < {floor}"
        );
        assert!(
            !committed || restored >= before,
            "round {round}: committed with {before} ticks, restored {restored}"
        );
        floor = restored;
        drop(gateway);
    }
    eprintln!(
        "upgrade crash rounds: {} kept the old version, {} the new",
        outcomes[0], outcomes[1]
    );
}
