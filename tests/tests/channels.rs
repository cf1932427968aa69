//! End to end: modules talk through the rings the supervisor wires from
//! their policies. A sensor → filter → alarm chain delivers every message
//! in order; `error` and `drop` backpressure count and report as
//! documented; an oversized send and an ungranted channel get their error
//! codes; a ring scribbled on from outside is reported, reset, and its
//! publisher restarted while the subscriber goes on.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use edgeward_tests::{module, policy, Gateway, GatewayDir};
use serde_json::Value;

const READINGS: u64 = 3000;
/// Readings above 50.0 C: `20 + n % 100 > 50`, 69 of every 100.
const ALARMS: u64 = READINGS / 100 * 69;

fn chain(sensor_args: &str) -> (GatewayDir, Gateway) {
    let g = GatewayDir::new();
    g.add_policy(
        "sensor",
        &policy(
            "sensor",
            &format!(
                "[wasi]\nargs = [{sensor_args}]\n[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 1000"
            ),
        ),
    );
    g.add_policy(
        "filter",
        &policy(
            "filter",
            "[wasi]\nargs = [\"--threshold\", \"50\"]\n[channels]\nsubscribe = [\"readings\"]\npublish = [\"alarms\"]",
        ),
    );
    g.add_policy(
        "alarm",
        // 2070 alarms are a multiple of 90: the last report is the total.
        &policy(
            "alarm",
            "[wasi]\nargs = [\"--report-every\", \"90\"]\n[channels]\nsubscribe = [\"alarms\"]",
        ),
    );
    let gateway = g.start();
    (g, gateway)
}

fn ring<'a>(status: &'a Value, channel: &str) -> &'a Value {
    status["rings"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["channel"] == channel))
        .unwrap_or_else(|| panic!("no ring for {channel} in {status}"))
}

#[test]
fn sensor_filter_alarm_chain_delivers_every_message_in_order() {
    let (_g, gateway) = chain(&format!("\"--count\", \"{READINGS}\", \"--burst\", \"10\""));
    gateway.wait_log(
        &format!("alarm: {ALARMS} alarms in order"),
        Duration::from_secs(30),
    );
    // Counters arrive with heartbeats, each module's on its own clock:
    // wait until every one has reported its last.
    let status = gateway.wait_for(Duration::from_secs(5), "counters settle", |s| {
        module(s, "alarm")["msgs_in"] == ALARMS
            && module(s, "filter")["msgs_out"] == ALARMS
            && module(s, "filter")["msgs_in"] == READINGS
            && module(s, "sensor")["msgs_out"] == READINGS
    });
    for name in ["sensor", "filter", "alarm"] {
        assert_eq!(module(&status, name)["restarts"], 0, "{name}");
        assert_eq!(module(&status, name)["denials"], 0, "{name}");
    }
    for channel in ["readings", "alarms"] {
        let r = ring(&status, channel);
        assert_eq!(r["depth"], 0, "{r}");
        assert_eq!(r["drops"], 0, "{r}");
        assert_eq!(r["corrupt"], 0, "{r}");
    }
    assert_eq!(ring(&status, "readings")["from"], "sensor");
    assert_eq!(ring(&status, "readings")["to"], "filter");
    let log = gateway.log();
    assert!(!log.contains("OUT OF ORDER"), "{log}");
}

/// The alarm keeps its totals as a serde struct (`edgeward::state`): a
/// snapshot, a killed worker, and the new worker counts on from them.
#[test]
fn the_alarm_totals_survive_its_worker_through_a_serde_snapshot() {
    let (_g, gateway) = chain(&format!("\"--count\", \"{READINGS}\", \"--burst\", \"10\""));
    gateway.wait_log(
        &format!("alarm: {ALARMS} alarms in order"),
        Duration::from_secs(30),
    );
    let (code, out, err) = gateway.cli(&["snapshot", "alarm"]);
    assert_eq!(code, 0, "{out}{err}");
    let status = gateway.try_status().unwrap();
    let pid = module(&status, "alarm")["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The last alarm is reading 2999 (20 + 99 C).
    gateway.wait_log(
        &format!("alarm: restored {ALARMS} alarms, last reading 2999"),
        Duration::from_secs(10),
    );
}

const BURST: u64 = 200;

/// A flood guest sending a burst of 64-byte messages in one call to a sink
/// that takes 2 ms per message, through a 4 KiB ring (about 50 frames).
fn flood(on_full: &str) -> (GatewayDir, Gateway) {
    flood_with(on_full, 2000, 20)
}

/// As [`flood`], with the sink's time per message and the flood's call budget.
fn flood_with(on_full: &str, sink_spin_us: u32, budget_ms: u32) -> (GatewayDir, Gateway) {
    let g = GatewayDir::new();
    g.add_policy(
        "flood",
        &policy(
            "flood",
            &format!(
                "[wasi]\nargs = [\"--burst\", \"{BURST}\", \"--size\", \"64\", \"--oversize\", \"5000\", \"--deny\", \"secrets\"]\n\
                 [channels]\npublish = [\"flood\"]\nmax_message_kib = 1\non_full = \"{on_full}\"\n[schedule]\ntick_us = 100000\n\
                 [resources]\ncall_budget_ms = {budget_ms}"
            ),
        ),
    );
    g.add_policy(
        "sink",
        &policy(
            "bench_sink",
            &format!(
                "[wasi]\nargs = [\"--spin-us\", \"{sink_spin_us}\"]\n[channels]\nsubscribe = [\"flood\"]\ncapacity_kib = 4\n\
                 [resources]\ncall_budget_ms = 100"
            ),
        ),
    );
    let gateway = g.start();
    (g, gateway)
}

/// The `flood: k=v ...` numbers the guest logged.
fn flood_report(gateway: &Gateway) -> std::collections::HashMap<String, i64> {
    gateway.wait_log("flood: ok=", Duration::from_secs(20));
    let log = gateway.log();
    let line = log.lines().find(|l| l.contains("flood: ok=")).unwrap();
    line.split("flood: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn on_full_error_refuses_at_once_and_counts_every_refusal() {
    let (_g, gateway) = flood("error");
    let report = flood_report(&gateway);
    let (ok, full) = (report["ok"], report["full"]);
    assert_eq!(ok + full, BURST as i64, "{report:?}");
    assert!(
        full > 0 && ok >= 40,
        "a 4 KiB ring takes about 50: {report:?}"
    );
    assert_eq!(report["other"], 0);
    assert_eq!(report["oversize"], -3, "EW_ERR_TOO_LARGE");
    assert_eq!(report["denied"], -1, "EW_ERR_DENIED");
    let status = gateway.wait_for(Duration::from_secs(5), "flood counters", |s| {
        module(s, "flood")["msgs_out"] == ok
    });
    let flood = module(&status, "flood");
    // Every full refusal plus the oversized send.
    assert_eq!(flood["refused"], full + 1, "{flood}");
    assert_eq!(flood["denials"], 1, "{flood}");
    assert_eq!(flood["dropped"], 0, "{flood}");
    assert_eq!(ring(&status, "flood")["drops"], 0);
    // Nothing refused reached the sink: exactly `ok` messages arrive.
    gateway.wait_for(Duration::from_secs(10), "sink drains", |s| {
        module(s, "sink")["msgs_in"] == ok
    });
}

#[test]
fn on_full_drop_accepts_every_send_and_counts_the_dropped() {
    let (_g, gateway) = flood("drop");
    let report = flood_report(&gateway);
    assert_eq!(report["ok"], BURST as i64, "{report:?}");
    assert_eq!(report["full"], 0, "{report:?}");
    assert_eq!(report["oversize"], -3);
    let status = gateway.wait_for(Duration::from_secs(5), "flood counters", |s| {
        module(s, "flood")["msgs_out"] == BURST
    });
    let dropped = module(&status, "flood")["dropped"].as_i64().unwrap();
    assert!(dropped > 0, "{status}");
    assert_eq!(ring(&status, "flood")["drops"], dropped);
    assert_eq!(
        module(&status, "flood")["refused"],
        1,
        "only the oversized send"
    );
    let delivered = BURST as i64 - dropped;
    gateway.wait_for(Duration::from_secs(10), "sink drains", |s| {
        module(s, "sink")["msgs_in"] == delivered
    });
}

#[test]
fn on_full_block_waits_for_room_within_the_call_budget() {
    // A sink at 50 µs a message frees room well within a 2 s budget: every
    // send of the burst succeeds, none is refused or dropped.
    let (_g, gateway) = flood_with("block", 50, 2000);
    let report = flood_report(&gateway);
    assert_eq!(report["ok"], BURST as i64, "{report:?}");
    assert_eq!(report["full"], 0, "{report:?}");
    let status = gateway.wait_for(Duration::from_secs(10), "sink drains", |s| {
        module(s, "sink")["msgs_in"] == BURST && module(s, "flood")["msgs_out"] == BURST
    });
    assert_eq!(
        module(&status, "flood")["refused"],
        1,
        "only the oversized send"
    );
    assert_eq!(module(&status, "flood")["dropped"], 0);

    // A sink at 2 ms a message cannot make room for 150 more frames within
    // a 100 ms budget: blocking gives up with EW_ERR_FULL, sends nothing for
    // those, and the module is not killed for it.
    let (_g, gateway) = flood_with("block", 2000, 100);
    let report = flood_report(&gateway);
    assert!(report["full"] > 0, "{report:?}");
    assert_eq!(report["ok"] + report["full"], BURST as i64, "{report:?}");
    let status = gateway.wait_for(Duration::from_secs(5), "flood counters", |s| {
        module(s, "flood")["msgs_out"] == report["ok"]
    });
    assert_eq!(module(&status, "flood")["restarts"], 0, "{status}");
}

/// The memfd of the ring `name` (`edgeward:<channel>:<from>><to>`) as the
/// supervisor holds it.
fn open_ring(supervisor: i32, name: &str) -> std::fs::File {
    for entry in std::fs::read_dir(format!("/proc/{supervisor}/fd")).unwrap() {
        let path = entry.unwrap().path();
        let target = std::fs::read_link(&path).unwrap_or_default();
        if target.to_string_lossy().contains(name) {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
        }
    }
    panic!("no memfd {name} among the supervisor's fds");
}

fn read_u64(file: &mut std::fs::File, offset: u64) -> u64 {
    let mut word = [0u8; 8];
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut word).unwrap();
    u64::from_le_bytes(word)
}

#[test]
fn a_scribbled_ring_is_reported_reset_and_its_publisher_restarted() {
    let (_g, gateway) = chain("\"--burst\", \"1\"");
    let status = gateway.wait_running(&["sensor", "filter", "alarm"], Duration::from_secs(20));
    gateway.wait_for(Duration::from_secs(10), "readings flow", |s| {
        module(s, "filter")["msgs_in"].as_u64() > Some(100)
    });
    let filter =
        nix::unistd::Pid::from_raw(module(&status, "filter")["pid"].as_i64().unwrap() as i32);
    let mut memfd = open_ring(gateway.pid(), "edgeward:readings:sensor>filter");
    // Freeze the subscriber, let frames queue, then scribble over the frame
    // it reads next, as a compromised publisher could.
    nix::sys::signal::kill(filter, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut word = [0u8; 4];
    memfd.seek(SeekFrom::Start(12)).unwrap();
    memfd.read_exact(&mut word).unwrap();
    let capacity = u64::from(u32::from_le_bytes(word));
    let read = read_u64(&mut memfd, 128);
    let write = read_u64(&mut memfd, 64);
    assert!(write > read, "frames queued while the filter was stopped");
    memfd.seek(SeekFrom::Start(4096 + read % capacity)).unwrap();
    memfd.write_all(&[0xab; 16]).unwrap();
    nix::sys::signal::kill(filter, nix::sys::signal::Signal::SIGCONT).unwrap();

    gateway.wait_log(
        "ring corrupt: channel readings from sensor at seq",
        Duration::from_secs(10),
    );
    let status = gateway.wait_for(Duration::from_secs(10), "sensor restarted", |s| {
        module(s, "sensor")["restarts"] == 1 && module(s, "sensor")["state"] == "running"
    });
    assert_eq!(ring(&status, "readings")["corrupt"], 1);
    assert_eq!(
        module(&status, "filter")["restarts"],
        0,
        "the subscriber goes on"
    );
    assert_eq!(
        module(&status, "filter")["pid"].as_i64(),
        Some(filter.as_raw() as i64)
    );
    assert!(module(&status, "filter")["last_error"]
        .as_str()
        .is_some_and(|e| e.starts_with("ring corrupt: channel readings from sensor")));
    // Messages flow again through the reset ring.
    let before = module(&status, "filter")["msgs_in"].as_u64().unwrap();
    gateway.wait_for(Duration::from_secs(10), "readings flow again", |s| {
        module(s, "filter")["msgs_in"].as_u64() > Some(before + 100)
    });
    let log = gateway.log();
    assert!(log.contains("restarting sensor"), "{log}");
}
