//! End to end: module state survives worker crashes, stops and supervisor
//! crashes through durable snapshots. The counter example snapshots its
//! tick count; the property checked everywhere is the durability contract:
//! the epoch restored is at least the last one `status` showed as
//! acknowledged, and the state restored never goes backwards.

use std::time::{Duration, Instant};

use edgeward_tests::power_cut::{Fault, PowerCutDisk};
use edgeward_tests::{last_number_after, module, policy, Gateway, GatewayDir};

fn counter_policy() -> String {
    policy(
        "counter",
        "[wasi]\nargs = [\"--every\", \"100\"]\n[schedule]\ntick_us = 1000\n\
         [snapshot]\ninterval_ms = 20\n[restart]\nbackoff_ms = [1, 10]\n\
         intensity = { max = 1000, window_s = 60 }",
    )
}

/// The last `restored snapshot epoch E` line of the log, as E.
fn restored_epoch(gateway: &Gateway) -> Option<u64> {
    last_number_after(&gateway.log(), "restored snapshot epoch ")
}

/// The last `restored snapshot epoch E` and `restored ticks=T` in the log
/// of `gateway`, if any.
fn restored(gateway: &Gateway) -> Option<(u64, u64)> {
    let log = gateway.log();
    Some((
        last_number_after(&log, "restored snapshot epoch ")?,
        last_number_after(&log, "restored ticks=")?,
    ))
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

/// SIGKILLs module `name`'s worker; returns the epoch `status` showed as
/// acknowledged just before.
fn kill_worker(gateway: &Gateway, name: &str) -> u64 {
    let status = gateway.try_status().expect("status");
    let m = module(&status, name);
    let pid = m["pid"].as_i64().expect("a worker");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    m["snapshot_epoch"].as_u64().unwrap_or(0)
}

/// Waits for `line` in the log of the restarted worker, then checks that
/// the epoch it restored is at least `acked`.
fn assert_restored_at_least(gateway: &Gateway, acked: u64, line: &str) {
    gateway.wait_log(line, Duration::from_secs(10));
    let epoch = restored_epoch(gateway).expect("a restored snapshot epoch line");
    assert!(
        epoch >= acked,
        "restored epoch {epoch} < acknowledged {acked}"
    );
}

#[test]
fn a_killed_worker_comes_back_with_its_last_acknowledged_state() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    let gateway = g.start();
    gateway.wait_for(Duration::from_secs(20), "snapshots acknowledged", |s| {
        module(s, "counter")["snapshot_epoch"].as_u64() >= Some(3)
    });
    let acked = kill_worker(&gateway, "counter");
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

/// Runs the counter `rounds` times on `g`, killing the supervisor and every
/// worker at a random moment of each run: `kill` does it (and may cut the
/// power too). Each time, the next run must restore at least the
/// epoch `status` showed as acknowledged before the kill, and the count
/// must never go backwards.
fn kill_and_restart(g: &GatewayDir, rounds: u32, mut kill: impl FnMut(u32, Gateway)) {
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
        kill(round, gateway);
    }
    assert!(
        restores + 2 >= rounds,
        "only {restores} of {rounds} runs restored a snapshot"
    );
}

fn rounds_from(var: &str) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200)
}

/// The supervisor and every worker are SIGKILLed at random moments.
/// `EDGEWARD_KILL_ROUNDS` (default 200) sets the number of kills.
#[test]
fn kill_9_of_everything_at_random_moments_never_loses_an_acknowledged_epoch() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    // Dropping the gateway SIGKILLs the supervisor and its children.
    kill_and_restart(&g, rounds_from("EDGEWARD_KILL_ROUNDS"), |_, gateway| {
        drop(gateway)
    });
}

/// `<state>/snapshots` on the power-cut disk, mounted before the first run.
fn on_power_cut_disk(g: &GatewayDir, seed: u64) -> PowerCutDisk {
    let dir = g.state().join("snapshots");
    std::fs::create_dir_all(&dir).unwrap();
    PowerCutDisk::mount(&dir, seed).expect("mount the FUSE power-cut disk (root and /dev/fuse)")
}

/// As the kill test, and after each kill the power goes too: the snapshot
/// directory loses everything that was not flushed (or keeps a torn part
/// of it). `EDGEWARD_CUT_ROUNDS` (default 200) sets the number of cuts.
#[test]
fn power_cuts_at_random_moments_never_lose_an_acknowledged_epoch() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    let mut disk = on_power_cut_disk(&g, 0xc0ffee);
    disk.set_flush_delay(Duration::from_millis(4));
    let mut lost = 0;
    kill_and_restart(&g, rounds_from("EDGEWARD_CUT_ROUNDS"), |round, gateway| {
        disk.power_off();
        drop(gateway);
        let report = disk
            .cut()
            .unwrap_or_else(|e| panic!("round {round}: power cut: {e}"));
        lost += u32::from(report.dropped_bytes > 0 || report.entries_undone > 0);
    });
    eprintln!("{lost} cuts dropped unflushed data or directory entries");
    // The cuts did hit unflushed data (else this tested nothing).
    assert!(lost > 0, "no cut ever dropped unflushed data");
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

/// A full disk, then a disk whose flushes fail: no epoch is acknowledged
/// while it lasts, `status` and `edgeward snapshot` say why, the module
/// keeps its worker and keeps counting, and once the disk is fine the next
/// round makes the state durable. A file whose flush failed stays unsafe
/// (its later flushes save nothing), so the power cut at the end would lose
/// any epoch acknowledged from it.
#[test]
fn a_full_or_failing_disk_acknowledges_nothing_and_the_module_keeps_running() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    let mut disk = on_power_cut_disk(&g, 7);
    let gateway = g.start();
    let status = gateway.wait_for(Duration::from_secs(20), "snapshots acknowledged", |s| {
        module(s, "counter")["snapshot_epoch"].as_u64() >= Some(2)
    });
    let pid = module(&status, "counter")["pid"].as_i64();
    for (fault, words) in [
        (Fault::NoSpace, "No space left on device"),
        (Fault::FlushIo, "Input/output error"),
    ] {
        disk.set_fault(fault);
        let status = gateway.wait_for(Duration::from_secs(10), words, |s| {
            s["snapshot_error"]
                .as_str()
                .is_some_and(|e| e.contains(words))
        });
        let error = status["snapshot_error"].as_str().unwrap();
        assert!(
            error.contains(&g.state().join("snapshots").display().to_string()),
            "the error names the directory: {error}"
        );
        let frozen = acknowledged(&gateway);
        let ticks = module(&status, "counter")["ticks"].as_u64().unwrap();
        let (code, _, err) = gateway.cli(&["snapshot", "counter"]);
        assert_eq!(code, 1, "a snapshot on a failing disk is refused");
        assert!(err.contains("not durable") && err.contains(words), "{err}");
        std::thread::sleep(Duration::from_millis(300));
        let status = gateway.try_status().unwrap();
        let counter = module(&status, "counter");
        assert_eq!(
            acknowledged(&gateway),
            frozen,
            "{fault:?}: acknowledged anyway"
        );
        assert_eq!(
            counter["pid"].as_i64(),
            pid,
            "{fault:?}: the worker changed"
        );
        assert_eq!(counter["state"], "running");
        assert!(
            counter["ticks"].as_u64().unwrap() > ticks,
            "{fault:?}: stopped counting"
        );
        assert_eq!(
            gateway.log().matches("snapshots not durable").count(),
            if fault == Fault::NoSpace { 1 } else { 2 },
            "one log line per failure, not one per round"
        );

        disk.set_fault(Fault::None);
        gateway.wait_for(Duration::from_secs(10), "durable again", |s| {
            s["snapshot_error"].is_null()
                && module(s, "counter")["snapshot_epoch"].as_u64() > Some(frozen)
        });
        assert!(gateway.log().contains("snapshots durable again"));
    }
    // Some acknowledged epochs after the flush failure, then the power goes.
    let acked = acknowledged(&gateway) + 3;
    gateway.wait_for(Duration::from_secs(10), "more epochs", |s| {
        module(s, "counter")["snapshot_epoch"].as_u64() >= Some(acked)
    });
    let acked = acknowledged(&gateway);
    disk.power_off();
    drop(gateway);
    disk.cut().unwrap();
    let gateway = g.start();
    let (epoch, _) = wait_restored(&gateway, Duration::from_secs(20));
    assert!(
        epoch >= acked,
        "restored epoch {epoch} < acknowledged {acked}"
    );
}

/// Kills module `name`'s worker and checks that the next one restored an
/// epoch at least as new as the acknowledged one (once `line` is logged),
/// with all `len` bytes of its state verified by the module.
fn survives_a_kill_whole(gateway: &Gateway, name: &str, line: &str, len: usize) {
    let acked = kill_worker(gateway, name);
    assert_restored_at_least(gateway, acked, line);
    let log = gateway.log();
    assert!(log.contains(&format!("{len} bytes verified")), "{log}");
}

/// A snapshot of 200 KiB travels to the supervisor in parts and back to the
/// restarted worker in a memfd; the module checks every byte.
#[test]
fn a_state_larger_than_one_message_is_saved_and_restored_whole() {
    let g = GatewayDir::new();
    g.add_policy(
        "big",
        &policy(
            "big_state",
            "[wasi]\nargs = [\"--kib\", \"200\"]\n[schedule]\ntick_us = 1000\n\
             [snapshot]\ninterval_ms = 50\n[resources]\nmemory_mib = 32",
        ),
    );
    let gateway = g.start();
    gateway.wait_for(Duration::from_secs(20), "snapshots acknowledged", |s| {
        module(s, "big")["snapshot_epoch"].as_u64() >= Some(2)
    });
    survives_a_kill_whole(&gateway, "big", "bytes verified", 8 + 200 * 1024);
}

/// A command module hands its state over with `snapshot_put` whenever it
/// likes and reads it back with `snapshot_get`: periodic rounds, the
/// `snapshot` command, and a restart all work as for a reactor, here with
/// a 100 KiB state.
#[test]
fn a_command_module_keeps_its_state_through_snapshots() {
    let g = GatewayDir::new();
    g.add_policy(
        "cmd",
        &policy(
            "command_counter",
            "[wasi]\nargs = [\"--kib\", \"100\"]\n[snapshot]\ninterval_ms = 100\n\
             [resources]\nmemory_mib = 32\n[restart]\nbackoff_ms = [1, 10]",
        ),
    );
    let gateway = g.start();
    gateway.wait_for(Duration::from_secs(20), "snapshots acknowledged", |s| {
        module(s, "cmd")["snapshot_epoch"].as_u64() >= Some(2)
    });
    let (code, out, err) = gateway.cli(&["snapshot", "cmd"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is durable"), "{out}");
    survives_a_kill_whole(
        &gateway,
        "cmd",
        "command-counter: restored count=",
        8 + 100 * 1024,
    );
}

/// With `[restart] spare = true` a forked worker waits in the module's
/// cgroups; a kill hands it the Init and the newest snapshot, a new spare
/// follows, and stopping edgeward leaves no spare behind.
#[test]
fn a_spare_worker_takes_over_with_the_restored_state_and_is_replaced() {
    let g = GatewayDir::new();
    g.add_policy(
        "counter",
        &counter_policy().replace("[restart]\n", "[restart]\nspare = true\n"),
    );
    let mut gateway = g.start();
    let status = gateway.wait_for(Duration::from_secs(20), "a spare and snapshots", |s| {
        let m = module(s, "counter");
        m["spare_pid"].is_u64() && m["snapshot_epoch"].as_u64() >= Some(2)
    });
    let counter = module(&status, "counter");
    let (pid, spare) = (
        counter["pid"].as_i64().unwrap() as i32,
        counter["spare_pid"].as_i64().unwrap() as i32,
    );
    assert_ne!(pid, spare);
    // The spare is already in the module's cgroups (memory among them).
    let cgroups = std::fs::read_to_string(format!("/proc/{spare}/cgroup")).unwrap();
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(cgroups, own, "the spare is not in the worker's cgroups");
    let acked = kill_worker(&gateway, "counter");
    assert_restored_at_least(&gateway, acked, "restored ticks=");
    let status = gateway.wait_for(Duration::from_secs(10), "a new spare", |s| {
        let m = module(s, "counter");
        m["state"] == "running" && m["spare_pid"].is_u64() && m["spare_pid"] != spare
    });
    let counter = module(&status, "counter");
    assert_eq!(
        counter["pid"].as_i64(),
        Some(i64::from(spare)),
        "the spare took over"
    );
    let new_spare = counter["spare_pid"].as_i64().unwrap() as i32;
    gateway.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        gateway
            .wait_exit(Duration::from_secs(5))
            .and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        !edgeward_tests::alive(new_spare),
        "the spare outlived edgeward"
    );
}
