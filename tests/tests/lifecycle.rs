//! End to end: the supervisor's lifecycle features as an operator sees
//! them: the liveness watchdog (`[restart] watchdog_ms`), restart groups
//! (`[group]`), start order (`[module] after`) and the stop order that
//! follows from it.
//!
//! Guests: the counter example (snapshots its tick count, logs
//! `ticks=N` and `restored ticks=N`) and `guests/tests/busy` (an `ew_init`
//! that sleeps `--init-ms`, ticks that spin `--spin-ms`).

use std::time::{Duration, Instant};

use edgeward_tests::{alive, check, last_number_after, module, policy, Gateway, GatewayDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Generous: the first start compiles the guests.
const STARTUP: Duration = Duration::from_secs(30);

fn pid_of(status: &Value, name: &str) -> i32 {
    module(status, name)["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no worker: {status}")) as i32
}

fn signal(pid: i32, signal: Signal) {
    kill(Pid::from_raw(pid), signal).unwrap_or_else(|e| panic!("kill {pid} {signal}: {e}"));
}

/// A counter that ticks every ms, logs `ticks=N` every 100 ticks and
/// snapshots every 20 ms, with `extra` TOML: `[module]` keys first (`after`),
/// then sections.
fn counter(module_keys: &str, sections: &str) -> String {
    policy(
        "counter",
        &format!(
            "{module_keys}\n[wasi]\nargs = [\"--every\", \"100\"]\n[schedule]\ntick_us = 1000\n\
             [snapshot]\ninterval_ms = 20\n[restart]\nbackoff_ms = [1, 50]\n\
             intensity = {{ max = 100, window_s = 60 }}\n{sections}"
        ),
    )
}

/// The last count module `name` logged (`[name] info: ticks=N`).
fn last_logged_ticks(gateway: &Gateway, name: &str) -> Option<u64> {
    last_number_after(&gateway.log(), &format!("[{name}] info: ticks="))
}

/// Waits until module `name` logged `restored ticks=N` after its restart
/// (the log from `from` on) and returns N.
fn wait_restored_ticks(gateway: &Gateway, name: &str, from: usize) -> u64 {
    let needle = format!("[{name}] info: restored ticks=");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gateway.log();
        if let Some(n) = log.get(from..).and_then(|l| last_number_after(l, &needle)) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never logged {needle:?} after its restart; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every module in `names` has logged a count and shows an
/// acknowledged snapshot, so that a restart has state to restore.
fn wait_counting(gateway: &Gateway, names: &[&str]) -> Value {
    gateway.wait_running(names, STARTUP);
    for name in names {
        gateway.wait_log(&format!("[{name}] info: ticks="), STARTUP);
    }
    gateway.wait_for(STARTUP, "snapshots acknowledged", |s| {
        names
            .iter()
            .all(|n| module(s, n)["snapshot_epoch"].as_u64() >= Some(2))
    })
}

#[test]
fn a_stopped_worker_is_killed_by_the_watchdog_and_replaced_within_its_bound() {
    let g = GatewayDir::new();
    g.add_policy(
        "hung",
        &policy(
            "counter",
            "[schedule]\ntick_us = 10000\n[restart]\nwatchdog_ms = 500\nbackoff_ms = [10, 1000]",
        ),
    );
    let gateway = g.start();
    gateway.wait_running(&["hung"], STARTUP);
    // Past start-up: the worker heartbeats from its loop.
    std::thread::sleep(Duration::from_millis(500));
    let old = pid_of(&gateway.try_status().expect("status"), "hung");

    let stopped_at = Instant::now();
    signal(old, Signal::SIGSTOP);
    let mut killed_after = None;
    let replaced = loop {
        if killed_after.is_none() && !alive(old) {
            killed_after = Some(stopped_at.elapsed());
        }
        if let Some(status) = gateway.try_status() {
            let m = module(&status, "hung");
            if m["state"] == "running" && m["pid"].as_i64().is_some_and(|p| p != i64::from(old)) {
                break status;
            }
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "not replaced 10 s after SIGSTOP; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = stopped_at.elapsed();
    eprintln!(
        "watchdog: SIGSTOP -> old worker gone {killed_after:?}, -> new worker running {took:?}"
    );
    assert!(
        took <= Duration::from_millis(500 + 200),
        "replaced {took:?} after SIGSTOP (watchdog_ms 500 + 200 ms); old worker gone after \
         {killed_after:?}; log:\n{}",
        gateway.log()
    );
    assert!(!alive(old), "the stopped worker {old} is still there");
    let m = module(&replaced, "hung");
    assert_eq!(m["restarts"], 1, "{m}");
    let error = m["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("watchdog: no heartbeat for"),
        "last_error: {error:?}"
    );
    let silent = last_number_after(error, "no heartbeat for ").expect("a number of ms");
    assert!(
        (500..700).contains(&silent),
        "killed after {silent} ms of silence"
    );
    let log = gateway.log();
    assert!(
        log.contains("module hung: watchdog: no heartbeat for ")
            && log.contains(" ms; worker killed"),
        "{log}"
    );
}

#[test]
fn a_module_busy_for_most_of_its_call_budget_is_never_killed_by_the_watchdog() {
    let g = GatewayDir::new();
    // Every tick spins 45 of its 50 ms budget, back to back (1 ms period);
    // the watchdog is the shortest allowed, three budgets. A full core
    // so that the CPU quota never stretches a call past its budget.
    g.add_policy(
        "busy",
        &policy(
            "busy",
            "[wasi]\nargs = [\"--spin-ms\", \"45\", \"--every\", \"20\"]\n\
             [resources]\ncall_budget_ms = 50\ncpu_percent = 200\n\
             [schedule]\ntick_us = 1000\n[restart]\nwatchdog_ms = 150",
        ),
    );
    let gateway = g.start();
    let before = gateway.wait_running(&["busy"], STARTUP);
    let pid = pid_of(&before, "busy");
    let ticks_before = module(&before, "busy")["ticks"].as_u64().unwrap_or(0);
    let start = Instant::now();
    let mut last = before;
    while start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        last = gateway.try_status().expect("status");
        let m = module(&last, "busy");
        assert!(
            m["state"] == "running" && m["pid"] == pid && m["restarts"] == 0,
            "busy was disturbed after {:?}: {m}\nlog:\n{}",
            start.elapsed(),
            gateway.log()
        );
    }
    let m = module(&last, "busy");
    assert!(m["last_error"].is_null(), "{m}");
    let log = gateway.log();
    assert!(!log.contains("watchdog"), "{log}");
    assert!(!log.contains("exceeded call budget"), "{log}");
    // It did work all along: about 3 s / 45 ms ticks.
    let ticks = m["ticks"].as_u64().unwrap_or(0) - ticks_before;
    eprintln!("busy: {ticks} ticks of 45 ms in 3 s");
    assert!(ticks >= 40, "only {ticks} ticks in 3 s; log:\n{log}");
    assert!(log.contains("[busy] info: busy: ticks=40"), "{log}");
}

#[test]
fn one_for_all_restarts_every_member_with_its_state_and_no_one_else() {
    let g = GatewayDir::new();
    let group = "[group]\nname = \"line\"\nstrategy = \"one_for_all\"";
    for name in ["line-a", "line-b", "line-c"] {
        g.add_policy(name, &counter("", group));
    }
    g.add_policy("outsider", &counter("", ""));
    let all = ["line-a", "line-b", "line-c", "outsider"];
    let gateway = g.start();
    let before = wait_counting(&gateway, &all);
    let counts: Vec<u64> = ["line-a", "line-c"]
        .iter()
        .map(|n| last_logged_ticks(&gateway, n).expect("a count"))
        .collect();
    let acked_b = module(&before, "line-b")["snapshot_epoch"]
        .as_u64()
        .unwrap();
    let log_from = gateway.log().len();

    signal(pid_of(&before, "line-b"), Signal::SIGKILL);
    let after = gateway.wait_for(Duration::from_secs(10), "the group restarted", |s| {
        ["line-a", "line-b", "line-c"].iter().all(|n| {
            let m = module(s, n);
            m["state"] == "running" && m["pid"] != module(&before, n)["pid"]
        })
    });
    for name in ["line-a", "line-b", "line-c"] {
        assert_eq!(module(&after, name)["restarts"], 1, "{after}");
    }
    let outsider = module(&after, "outsider");
    assert_eq!(outsider["pid"], module(&before, "outsider")["pid"]);
    assert_eq!(outsider["restarts"], 0);
    let log = gateway.log();
    assert!(
        log.contains(
            "module line-b: restart group line (one_for_all): restarting line-a, line-c with it"
        ),
        "{log}"
    );
    // The members it took along were snapshotted before they stopped: no
    // count went back. The failed one restored at least its acknowledged
    // snapshot.
    for (name, count) in ["line-a", "line-c"].iter().zip(counts) {
        let restored = wait_restored_ticks(&gateway, name, log_from);
        assert!(
            restored >= count,
            "{name} restored {restored} < {count} it had counted before the kill"
        );
    }
    let restored_b = wait_restored_ticks(&gateway, "line-b", log_from);
    assert!(restored_b > 0);
    let epoch_b = last_number_after(
        &gateway.log()[log_from..],
        "[line-b] info: restored snapshot epoch ",
    )
    .expect("line-b restored a snapshot epoch");
    assert!(
        epoch_b >= acked_b,
        "line-b restored epoch {epoch_b} < acknowledged {acked_b}"
    );
}

#[test]
fn rest_for_one_restarts_the_failed_member_and_those_started_after_it() {
    let g = GatewayDir::new();
    let group = "[group]\nname = \"chain\"\nstrategy = \"rest_for_one\"";
    g.add_policy("a", &counter("", group));
    g.add_policy("b", &counter("after = [\"a\"]", group));
    g.add_policy("c", &counter("after = [\"b\"]", group));
    g.add_policy("outsider", &counter("", ""));
    let all = ["a", "b", "c", "outsider"];
    let gateway = g.start();
    let before = wait_counting(&gateway, &all);
    let count_c = last_logged_ticks(&gateway, "c").expect("a count");
    let log_from = gateway.log().len();

    signal(pid_of(&before, "b"), Signal::SIGKILL);
    let after = gateway.wait_for(Duration::from_secs(10), "b and c restarted", |s| {
        ["b", "c"].iter().all(|n| {
            let m = module(s, n);
            m["state"] == "running" && m["pid"] != module(&before, n)["pid"]
        })
    });
    for name in ["b", "c"] {
        assert_eq!(module(&after, name)["restarts"], 1, "{after}");
    }
    for name in ["a", "outsider"] {
        let m = module(&after, name);
        assert_eq!(
            m["pid"],
            module(&before, name)["pid"],
            "{name} was restarted"
        );
        assert_eq!(m["restarts"], 0, "{m}");
        assert_eq!(m["state"], "running", "{m}");
    }
    let log = gateway.log();
    assert!(
        log.contains("module b: restart group chain (rest_for_one): restarting c with it"),
        "{log}"
    );
    let restored = wait_restored_ticks(&gateway, "c", log_from);
    assert!(
        restored >= count_c,
        "c restored {restored} < {count_c} it had counted before the kill"
    );
}

#[test]
fn after_starts_each_module_once_those_it_names_are_ready() {
    let g = GatewayDir::new();
    // Each takes 400 ms in ew_init, so a successor that started too early
    // would show as `starting` beside a predecessor not yet `running`.
    let slow = |after: &str| {
        policy(
            "busy",
            &format!(
                "{after}\n[wasi]\nargs = [\"--init-ms\", \"400\"]\n\
                 [resources]\ncall_budget_ms = 5000"
            ),
        )
    };
    // File-name order alone would start them c, b, a.
    g.add_policy("c", &slow(""));
    g.add_policy("b", &slow("after = [\"c\"]"));
    g.add_policy("a", &slow("after = [\"b\"]"));
    let order = ["c", "b", "a"];
    let gateway = g.start();
    let started = Instant::now();
    let mut first_running: [Option<Duration>; 3] = [None; 3];
    let mut seen_waiting = [false; 3];
    while first_running.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < STARTUP,
            "not all running; log:\n{}",
            gateway.log()
        );
        let Some(status) = gateway.try_status() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let at = started.elapsed();
        let states: Vec<String> = order
            .iter()
            .map(|n| {
                module(&status, n)["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        for (k, state) in states.iter().enumerate() {
            if state == "running" && first_running[k].is_none() {
                first_running[k] = Some(at);
            }
            if state == "waiting" {
                seen_waiting[k] = true;
            }
            if k > 0 && (state == "starting" || state == "running") {
                assert_eq!(
                    states[k - 1],
                    "running",
                    "{} is {state} while {} (in its after) is not ready: {status}",
                    order[k],
                    order[k - 1]
                );
            }
        }
    }
    let times: Vec<Duration> = first_running.iter().map(|t| t.unwrap()).collect();
    eprintln!(
        "after: first seen running c {:?}, b {:?}, a {:?}",
        times[0], times[1], times[2]
    );
    assert!(
        seen_waiting[1] && seen_waiting[2],
        "b and a were never seen waiting"
    );
    // Each starts after the one before is ready, and its own ew_init takes 400 ms.
    for k in 1..3 {
        assert!(
            times[k] >= times[k - 1] + Duration::from_millis(300),
            "{} running at {:?}, {} at {:?}",
            order[k - 1],
            times[k - 1],
            order[k],
            times[k]
        );
    }
    // The log says the same: each init starts after the previous one is done.
    let log = gateway.log();
    let at = |needle: String| {
        log.find(&needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"))
    };
    let steps = [
        at("[c] info: busy: init start".into()),
        at("[c] info: busy: init done".into()),
        at("[b] info: busy: init start".into()),
        at("[b] info: busy: init done".into()),
        at("[a] info: busy: init start".into()),
        at("[a] info: busy: init done".into()),
    ];
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{log}");
}

#[test]
fn a_start_order_cycle_is_an_error_in_check_and_fails_its_modules_in_run() {
    let g = GatewayDir::new();
    g.add_policy("a", &policy("counter", "after = [\"b\"]"));
    g.add_policy("b", &policy("counter", "after = [\"a\"]"));
    g.add_policy("ok", &policy("counter", ""));
    let (code, out) = check(&g.policies());
    assert_eq!(code, 1, "{out}");
    let p = g.policies();
    // `after = ["b"]` on line 3: the entry starts at column 10.
    for file in ["a.toml", "b.toml"] {
        let place = format!("{}:3:10:", p.join(file).display());
        let line = out
            .lines()
            .find(|l| l.contains(&place))
            .unwrap_or_else(|| panic!("no error at {place}:\n{out}"));
        assert!(line.contains("cycle"), "{line}");
    }
    assert!(out.contains("a → b → a"), "{out}");
    assert!(out.contains("b → a → b"), "{out}");

    let gateway = g.start();
    let status = gateway.wait_running(&["ok"], STARTUP);
    for name in ["a", "b"] {
        let m = module(&status, name);
        assert_eq!(m["state"], "failed", "{m}");
        let error = m["last_error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("invalid policy:") && error.contains("cycle"),
            "{name}: {error}"
        );
    }
    assert_eq!(module(&status, "ok")["restarts"], 0);
}

#[test]
fn an_unknown_name_in_after_is_an_error_naming_it() {
    let g = GatewayDir::new();
    g.add_policy("a", &policy("counter", "after = [\"ghost\"]"));
    g.add_policy("ok", &policy("counter", ""));
    let (code, out) = check(&g.policies());
    assert_eq!(code, 1, "{out}");
    let place = format!("{}:3:10:", g.policies().join("a.toml").display());
    let line = out
        .lines()
        .find(|l| l.contains(&place))
        .unwrap_or_else(|| panic!("no error at {place}:\n{out}"));
    assert!(line.contains("\"ghost\""), "{line}");

    let gateway = g.start();
    let status = gateway.wait_running(&["ok"], STARTUP);
    let m = module(&status, "a");
    assert_eq!(m["state"], "failed", "{m}");
    let error = m["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("invalid policy:") && error.contains("\"ghost\""),
        "{error}"
    );
}

#[test]
fn a_watchdog_shorter_than_three_call_budgets_is_refused() {
    let g = GatewayDir::new();
    g.add_policy(
        "tight",
        &policy(
            "counter",
            "[resources]\ncall_budget_ms = 100\n[restart]\nwatchdog_ms = 250",
        ),
    );
    let (code, out) = check(&g.policies());
    assert_eq!(code, 1, "{out}");
    let file = g.policies().join("tight.toml").display().to_string();
    let line = out
        .lines()
        .find(|l| l.contains(&file))
        .unwrap_or_else(|| panic!("no error for {file}:\n{out}"));
    assert!(
        line.contains("watchdog_ms") && line.contains("call_budget_ms"),
        "{line}"
    );
}

/// Polls `pids` every 200 µs until all have ended (at most 10 s after
/// `since`). Returns, for each, the poll in which it was first seen gone
/// and when. Two ends seen in the same poll happened in an order the test
/// cannot know (its thread may oversleep under load), so orders are
/// compared by poll, not by time.
fn watch_ends(pids: &[i32; 3], since: Instant, gateway: &Gateway) -> [(u64, Duration); 3] {
    let mut gone: [Option<(u64, Duration)>; 3] = [None; 3];
    let mut poll = 0;
    while gone.iter().any(Option::is_none) {
        poll += 1;
        for (k, &pid) in pids.iter().enumerate() {
            if gone[k].is_none() && !alive(pid) {
                gone[k] = Some((poll, since.elapsed()));
            }
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "workers left 10 s later: {gone:?}; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    gone.map(|g| g.expect("all gone"))
}

#[test]
fn sigterm_stops_modules_in_the_reverse_of_their_start_order() {
    let g = GatewayDir::new();
    g.add_policy("a", &counter("", ""));
    g.add_policy("b", &counter("after = [\"a\"]", ""));
    // c is frozen below: no watchdog, so that only the stop ends it.
    g.add_policy("c", &counter("after = [\"b\"]", "watchdog_ms = 0"));
    let mut gateway = g.start_with(&[("EDGEWARD_STOP_TIMEOUT_MS", "20000")]);
    let status = gateway.wait_running(&["a", "b", "c"], STARTUP);
    let pids = ["a", "b", "c"].map(|n| pid_of(&status, n));

    // A frozen c cannot end, so b and a must not be told to stop.
    signal(pids[2], Signal::SIGSTOP);
    gateway.signal(Signal::SIGTERM);
    gateway.wait_log("SIGTERM: stopping all modules", Duration::from_secs(5));
    // The final snapshot round gives up on c after 500 ms; then the stops.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        alive(pids[0]) && alive(pids[1]),
        "a or b stopped while c, started after them, was still there; log:\n{}",
        gateway.log()
    );
    assert!(gateway.child.try_wait().unwrap().is_none());

    // Once c goes on, it ends, then b, then a.
    signal(pids[2], Signal::SIGCONT);
    let resumed = Instant::now();
    let gone = watch_ends(&pids, resumed, &gateway);
    eprintln!(
        "stop order: (poll, time) gone after SIGCONT c {:?}, b {:?}, a {:?}",
        gone[2], gone[1], gone[0]
    );
    assert!(
        gone[2].0 <= gone[1].0 && gone[1].0 <= gone[0].0,
        "ended in the wrong order (a, b, c): {gone:?}"
    );
    let exit = gateway.wait_exit(Duration::from_secs(10));
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "log:\n{}",
        gateway.log()
    );
    assert!(gateway.log().contains("all modules stopped"));
}

/// The fork server (a child of edgeward running `edgeward-worker zygote`).
fn fork_server_of(edgeward: i32) -> Option<i32> {
    edgeward_tests::children_of(edgeward)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == b"zygote"))
        })
}

#[test]
fn a_stopped_fork_server_is_killed_by_the_watchdog_and_the_next_start_makes_a_new_one() {
    let g = GatewayDir::new();
    g.add_policy(
        "counter",
        &policy(
            "counter",
            "[schedule]\ntick_us = 10000\n[restart]\nbackoff_ms = [10, 1000]",
        ),
    );
    let gateway = g.start();
    gateway.wait_running(&["counter"], STARTUP);
    let fork_server = fork_server_of(gateway.pid()).expect("a fork server under edgeward");
    let stopped_at = Instant::now();
    signal(fork_server, Signal::SIGSTOP);
    // Pinged after 1 s of silence, killed after 2 s.
    let deadline = stopped_at + Duration::from_secs(10);
    while alive(fork_server) {
        assert!(
            Instant::now() < deadline,
            "the stopped fork server was not killed; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(3500),
        "fork server killed {took:?} after SIGSTOP (its watchdog is 2 s)"
    );
    gateway.wait_log("fork server (pid ", Duration::from_secs(2));
    assert!(
        gateway.log().contains("watchdog: no answer for"),
        "{}",
        gateway.log()
    );
    // The module is untouched, and its next start goes through a new fork
    // server.
    let status = gateway.try_status().expect("status");
    let old = pid_of(&status, "counter");
    assert!(alive(old));
    signal(old, Signal::SIGKILL);
    let replaced = gateway.wait_for(STARTUP, "counter restarted", |s| {
        let m = module(s, "counter");
        m["state"] == "running" && m["pid"].as_i64().is_some_and(|p| p != i64::from(old))
    });
    assert_eq!(module(&replaced, "counter")["restarts"], 1);
    let new_server = fork_server_of(gateway.pid()).expect("a new fork server");
    assert_ne!(new_server, fork_server);
}

#[test]
fn a_reload_that_removes_a_chain_stops_it_in_the_reverse_of_its_start_order() {
    let g = GatewayDir::new();
    g.add_policy("a", &counter("", ""));
    g.add_policy("b", &counter("after = [\"a\"]", ""));
    g.add_policy("c", &counter("after = [\"b\"]", "watchdog_ms = 0"));
    g.add_policy("keep", &counter("", ""));
    let gateway = g.start_with(&[("EDGEWARD_STOP_TIMEOUT_MS", "20000")]);
    let status = gateway.wait_running(&["a", "b", "c", "keep"], STARTUP);
    let pids = ["a", "b", "c"].map(|n| pid_of(&status, n));
    let keep = pid_of(&status, "keep");

    // A frozen c cannot end, so b and a must not be told to stop yet.
    signal(pids[2], Signal::SIGSTOP);
    for name in ["a", "b", "c"] {
        std::fs::remove_file(g.policies().join(format!("{name}.toml"))).unwrap();
    }
    let (code, out, err) = gateway.cli(&["reload"]);
    assert_eq!((code, out.trim()), (0, "removed a, b, c"), "{err}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        alive(pids[0]) && alive(pids[1]),
        "a or b stopped while c, started after them, was still there; log:\n{}",
        gateway.log()
    );

    signal(pids[2], Signal::SIGCONT);
    let resumed = Instant::now();
    let gone = watch_ends(&pids, resumed, &gateway);
    assert!(
        gone[2].0 <= gone[1].0 && gone[1].0 <= gone[0].0,
        "ended in the wrong order (a, b, c): {gone:?}"
    );
    let after = gateway.wait_for(STARTUP, "the chain removed", |s| {
        s["modules"].as_array().is_some_and(|ms| ms.len() == 1)
    });
    assert_eq!(pid_of(&after, "keep"), keep, "the bystander was restarted");
}
