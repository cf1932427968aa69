//! End to end: module state survives worker crashes, stops and supervisor
//! crashes through durable snapshots. The counter example snapshots its
//! tick count; the property checked everywhere is the durability contract:
//! the epoch restored is at least the last one `status` showed as
//! acknowledged, and the state restored never goes backwards.

use std::time::{Duration, Instant};

use edgeward_tests::{module, policy, Gateway, GatewayDir};

fn counter_policy() -> String {
    policy(
        "counter",
        "[wasi]\nargs = [\"--every\", \"100\"]\n[schedule]\ntick_us = 1000\n\
         [snapshot]\ninterval_ms = 20\n[restart]\nbackoff_ms = [1, 10]\n\
         intensity = { max = 1000, window_s = 60 }",
    )
}

/// The last `restored snapshot epoch E` and `restored ticks=T` in the log
/// of `gateway`, if any.
fn restored(gateway: &Gateway) -> Option<(u64, u64)> {
    let log = gateway.log();
    let epoch = log
        .lines()
        .rev()
        .find_map(|l| l.split("restored snapshot epoch ").nth(1))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let ticks = log
        .lines()
        .rev()
        .find_map(|l| l.split("restored ticks=").nth(1))?
        .trim()
        .parse()
        .ok()?;
    Some((epoch, ticks))
}

fn wait_restored(gateway: &Gateway, timeout: Duration) -> (u64, u64) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = restored(gateway) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no restore within {timeout:?}; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn acknowledged(gateway: &Gateway) -> u64 {
    gateway
        .try_status()
        .and_then(|s| module(&s, "counter")["snapshot_epoch"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_killed_worker_comes_back_with_its_last_acknowledged_state() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    let gateway = g.start();
    let status = gateway.wait_for(Duration::from_secs(20), "snapshots acknowledged", |s| {
        module(s, "counter")["snapshot_epoch"].as_u64() >= Some(3)
    });
    let pid = module(&status, "counter")["pid"].as_i64().unwrap();
    let acked = acknowledged(&gateway);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (epoch, ticks) = wait_restored(&gateway, Duration::from_secs(10));
    assert!(
        epoch >= acked,
        "restored epoch {epoch} < acknowledged {acked}"
    );
    // 20 ms snapshots of a 1 kHz counter: a few ticks each.
    assert!(ticks >= epoch, "ticks {ticks} at epoch {epoch}");
    assert!(gateway.log().contains(&format!("restored ticks={ticks}")));
}

#[test]
fn a_stop_takes_a_final_snapshot_that_the_next_run_restores() {
    let g = GatewayDir::new();
    g.add_policy(
        "counter",
        &counter_policy().replace("interval_ms = 20", "interval_ms = 0"),
    );
    let mut gateway = g.start();
    gateway.wait_log("[counter] info: ticks=300", Duration::from_secs(20));
    assert_eq!(acknowledged(&gateway), 0, "no periodic snapshots");
    gateway.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        gateway
            .wait_exit(Duration::from_secs(5))
            .and_then(|s| s.code()),
        Some(0)
    );
    let last_logged: u64 = gateway
        .log()
        .lines()
        .rev()
        .find_map(|l| l.split("info: ticks=").nth(1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gateway = g.start();
    let (epoch, ticks) = wait_restored(&gateway, Duration::from_secs(20));
    assert_eq!(epoch, 1, "one snapshot: the final one");
    assert!(
        ticks >= last_logged,
        "final snapshot {ticks} older than the last logged count {last_logged}"
    );
    assert_eq!(acknowledged(&gateway), 1);
}

/// The supervisor and every worker are SIGKILLed at random moments; each
/// time, the next run restores at least the epoch acknowledged before the
/// kill, and the count never goes backwards. `EDGEWARD_KILL_ROUNDS`
/// (default 200) sets the number of kills.
#[test]
fn kill_9_of_everything_at_random_moments_never_loses_an_acknowledged_epoch() {
    let rounds: u32 = std::env::var("EDGEWARD_KILL_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    let mut seed = 0x5eed_u64;
    let mut last = (0u64, 0u64);
    let mut restores = 0;
    for round in 0..rounds {
        let gateway = g.start();
        // Before the first acknowledged epoch there may be nothing to restore.
        let found = if last.0 > 0 {
            Some(wait_restored(&gateway, Duration::from_secs(20)))
        } else {
            gateway.wait_running(&["counter"], Duration::from_secs(20));
            restored(&gateway)
        };
        if let Some((epoch, ticks)) = found {
            assert!(
                epoch >= last.0,
                "round {round}: restored epoch {epoch} < acknowledged {}",
                last.0
            );
            assert!(
                ticks >= last.1,
                "round {round}: count went back from {} to {ticks}",
                last.1
            );
            last = (epoch, ticks);
            restores += 1;
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::thread::sleep(Duration::from_millis(10 + (seed >> 33) % 90));
        let acked = acknowledged(&gateway);
        assert!(
            acked >= last.0,
            "round {round}: status shows epoch {acked} < {}",
            last.0
        );
        last.0 = acked;
        // Dropping the gateway SIGKILLs the supervisor and its children.
        drop(gateway);
    }
    assert!(
        restores + 2 >= rounds,
        "only {restores} of {rounds} runs restored a snapshot"
    );
}

#[test]
fn snapshot_command_returns_the_durable_epoch_and_refuses_what_it_cannot_do() {
    let g = GatewayDir::new();
    g.add_policy(
        "counter",
        &counter_policy().replace("interval_ms = 20", "interval_ms = 0"),
    );
    g.add_policy("hello", &policy("hello_command", ""));
    let gateway = g.start();
    gateway.wait_running(&["counter", "hello"], Duration::from_secs(20));
    let (code, out, err) = gateway.cli(&["snapshot", "counter"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "counter: snapshot epoch 1 is durable");
    assert_eq!(acknowledged(&gateway), 1);
    gateway.wait_log("[counter] info: ticks=100", Duration::from_secs(10));
    let (_, out, _) = gateway.cli(&["snapshot", "counter"]);
    assert_eq!(out.trim(), "counter: snapshot epoch 2 is durable");

    let (code, _, err) = gateway.cli(&["snapshot", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no module named \"nobody\""), "{err}");
    let (code, _, err) = gateway.cli(&["snapshot", "hello"]);
    assert_eq!(code, 1);
    assert!(err.contains("takes no snapshots"), "{err}");
}

#[test]
fn a_damaged_newest_record_is_reported_and_the_previous_epoch_restored() {
    let g = GatewayDir::new();
    g.add_policy(
        "counter",
        &counter_policy().replace("interval_ms = 20", "interval_ms = 0"),
    );
    let mut gateway = g.start();
    gateway.wait_running(&["counter"], Duration::from_secs(20));
    // Ticks in between, so each snapshot holds new state (equal state
    // would keep its epoch).
    for ticks in [100, 200] {
        gateway.wait_log(
            &format!("[counter] info: ticks={ticks}"),
            Duration::from_secs(10),
        );
        assert_eq!(gateway.cli(&["snapshot", "counter"]).0, 0);
    }
    gateway.wait_log("[counter] info: ticks=300", Duration::from_secs(10));
    gateway.signal(nix::sys::signal::Signal::SIGTERM);
    gateway.wait_exit(Duration::from_secs(5)).expect("stopped");
    // Epochs 1 and 2 by command, 3 at the stop: damage the payload of 3,
    // the last record of the segment.
    let dir = g.state().join("snapshots");
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    let gateway = g.start();
    let (epoch, _) = wait_restored(&gateway, Duration::from_secs(20));
    assert_eq!(epoch, 2);
    gateway.wait_log(
        "snapshot counter epoch 3 is damaged (payload CRC mismatch); an older epoch is used",
        Duration::from_secs(5),
    );
    let status = gateway.wait_running(&["counter"], Duration::from_secs(5));
    assert!(module(&status, "counter")["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("epoch 3 is damaged")));
}
