//! End to end: goroutines and a `time.Ticker` in a Go command module
//! (`guests/go/go-ticker`, built as a plain wasip1 program) work between
//! messages. One goroutine receives the sensor's readings with
//! `Channel.Recv`, which parks only that goroutine on the channel's fd;
//! another publishes a heartbeat every 10 ms on its ticker, also while no
//! message arrives, and the idle module sleeps in WASI `poll_oneoff`
//! instead of spinning. Its counts survive a restart through
//! `PutSnapshot`/`RestoredSnapshot` (docs/guest-abi.md, "Goroutines and
//! timers").

use std::time::{Duration, Instant};

use edgeward_tests::{last_number_after, module, policy, GatewayDir};

/// First start: the worker compiles the 2.7 MB Go module (seconds, more
/// when tests start several at once on two cores).
const START: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);

/// Readings the sensor sends, one every 5 ms: then it stays silent.
const READINGS: u64 = 30;

/// A gateway with the sensor (`READINGS` readings), go-ticker receiving
/// them and publishing heartbeats, and a sink counting `heartbeats` of
/// them (`sink: N messages in T ns` once they are in).
fn gateway_with_ticker(heartbeats: u64) -> (GatewayDir, edgeward_tests::Gateway) {
    let g = GatewayDir::new();
    g.add_policy(
        "sensor",
        &policy(
            "sensor",
            &format!(
                "[wasi]\nargs = [\"--count\", \"{READINGS}\"]\n[channels]\n\
                 publish = [\"readings\"]\n[schedule]\ntick_us = 5000"
            ),
        ),
    );
    g.add_policy(
        "go-ticker",
        &policy(
            "go_ticker",
            "[wasi]\nenv = { GOMEMLIMIT = \"48MiB\" }\n[resources]\nmemory_mib = 64\n\
             [channels]\nsubscribe = [\"readings\"]\npublish = [\"heartbeat\"]\n\
             [snapshot]\ninterval_ms = 50",
        ),
    );
    g.add_policy(
        "heartbeats",
        &policy(
            "bench_sink",
            &format!(
                "[wasi]\nargs = [\"--count\", \"{heartbeats}\"]\n[channels]\n\
                 subscribe = [\"heartbeat\"]"
            ),
        ),
    );
    let gateway = g.start();
    gateway.wait_running(&["sensor", "go-ticker", "heartbeats"], START);
    (g, gateway)
}

/// The (tick, handled) of go-ticker's last `tick T, handled H messages`
/// line in `log`.
fn last_tick_line(log: &str) -> Option<(u64, u64)> {
    let tick = last_number_after(log, "[go-ticker] info: go-ticker: tick ")?;
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with("[go-ticker] info: go-ticker: tick "))?;
    let handled = last_number_after(line, ", handled ")?;
    Some((tick, handled))
}

/// Waits until go-ticker logged a tick line with a tick count of at least
/// `tick`, and returns it.
fn wait_tick(gateway: &edgeward_tests::Gateway, tick: u64) -> (u64, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = last_tick_line(&gateway.log()) {
            if line.0 >= tick {
                return line;
            }
        }
        assert!(
            Instant::now() < deadline,
            "go-ticker never logged tick {tick}; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// User plus system CPU time of process `pid`, from /proc.
fn cpu_time(pid: i64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().expect("number"))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}

#[test]
fn a_go_commands_ticker_goroutine_works_between_messages_while_another_receives_them() {
    let (_g, gateway) = gateway_with_ticker(200);
    gateway.wait_log(&format!("[sensor] info: sent {READINGS} readings"), WAIT);

    // Every reading is handled by the receiving goroutine...
    let deadline = Instant::now() + WAIT;
    while last_tick_line(&gateway.log()).is_none_or(|(_, handled)| handled < READINGS) {
        assert!(
            Instant::now() < deadline,
            "go-ticker never reported {READINGS} handled messages; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and the ticker goes on once no message comes any more: 200 more
    // ticks (2 s), the sensor silent all along.
    let (tick, handled) = last_tick_line(&gateway.log()).expect("a tick line");
    assert_eq!(handled, READINGS, "{}", gateway.log());
    let (later, handled_later) = wait_tick(&gateway, tick + 200);
    assert_eq!(
        handled_later, READINGS,
        "a message was handled that was never sent (tick {later})"
    );
    // The heartbeats reached their subscriber: 200 of them take 2 s, the
    // readings 150 ms.
    gateway.wait_log("[heartbeats] info: sink: 200 messages in ", WAIT);
    let status = gateway.try_status().expect("status");
    let ticker = module(&status, "go-ticker");
    assert_eq!(ticker["state"], "running", "{ticker}");
    assert_eq!(ticker["restarts"], 0, "{ticker}");

    // Idle between ticks, the module sleeps in poll_oneoff: its worker
    // uses a small share of a core (generous: this is about not spinning,
    // not about speed).
    let pid = ticker["pid"].as_i64().expect("go-ticker's pid");
    let (cpu_before, started) = (cpu_time(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let share = (cpu_time(pid) - cpu_before).as_secs_f64() / started.elapsed().as_secs_f64();
    assert!(
        share < 0.2,
        "the idle Go command used {:.0}% of a core",
        share * 100.0
    );
}

#[test]
fn a_go_command_restores_its_snapshot_after_a_restart() {
    let (_g, gateway) = gateway_with_ticker(1_000_000);
    gateway.wait_log(&format!("[sensor] info: sent {READINGS} readings"), WAIT);
    wait_tick(&gateway, 100);
    // A snapshot round after tick 100 (every 50 ms), then a restart.
    let epoch = |s: &serde_json::Value| {
        module(s, "go-ticker")["snapshot_epoch"]
            .as_u64()
            .unwrap_or(0)
    };
    let seen = epoch(&gateway.try_status().expect("status"));
    gateway.wait_for(WAIT, "a snapshot of go-ticker", |s| epoch(s) > seen + 1);
    let (code, out, err) = gateway.cli(&["restart", "go-ticker"]);
    assert_eq!(code, 0, "{out}{err}");
    let restored_line = "[go-ticker] info: go-ticker: restored ";
    let ticks = gateway.wait_number_after(restored_line, START);
    assert!(ticks >= 100, "restored {ticks} ticks");
    let log = gateway.log();
    let line = log
        .lines()
        .find(|l| l.starts_with(restored_line))
        .expect("the restored line");
    assert!(
        line.ends_with(&format!(", {READINGS} messages")),
        "the handled count was not restored: {line}"
    );
    // The ticker goes on from the restored count.
    let after_restore =
        |log: &str| -> Option<(u64, u64)> { last_tick_line(&log[log.find(restored_line)?..]) };
    let deadline = Instant::now() + WAIT;
    let (tick, handled) = loop {
        if let Some(line) = after_restore(&gateway.log()) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no tick line after the restore; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(tick > ticks, "tick {tick} after restoring {ticks}");
    assert_eq!(handled, READINGS);
    let status = gateway.try_status().expect("status");
    assert_eq!(module(&status, "go-ticker")["restarts"], 1);
    assert_eq!(
        module(&status, "go-ticker")["last_error"],
        serde_json::Value::Null
    );
}
