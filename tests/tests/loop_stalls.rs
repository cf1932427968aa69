//! End to end: nothing stalls the supervisor's loop (issue 12, items 1, 3,
//! 4 and 5). Each test attacks a real gateway one way while a healthy
//! module ticks every 10 ms, and checks from the outside that the healthy
//! module keeps 90% of its rate and that `status` answers within a second
//! throughout: a module printing without newlines, a stuck reader of the
//! supervisor's stdout, idle and one-byte-at-a-time control clients, and a
//! read-write dir of 300 000 files being handed to its module.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use edgeward_tests::attack::{assert_unharmed, victim_policy, watch};
use edgeward_tests::{module, policy, GatewayDir};

const STARTUP: Duration = Duration::from_secs(20);

/// Supervisor CPU time (user + system), from /proc.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("number"))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64((fields[0] + fields[1]) as f64 / hz)
}

#[test]
fn a_module_printing_without_newlines_costs_the_supervisor_little() {
    let g = GatewayDir::new();
    g.add_policy("victim", &victim_policy());
    g.add_policy(
        "spew",
        &policy(
            "no_newline",
            "[schedule]\ntick_us = 10000\n[resources]\ncpu_percent = 50",
        ),
    );
    let gateway = g.start();
    gateway.wait_running(&["victim", "spew"], STARTUP);
    let cpu_before = cpu_time(gateway.pid());
    let started = Instant::now();
    let watched = watch(&gateway, "victim", Duration::from_secs(5));
    let cpu = cpu_time(gateway.pid()) - cpu_before;
    assert_unharmed(&watched, "a module printing without newlines", &gateway);
    let share = cpu.as_secs_f64() / started.elapsed().as_secs_f64();
    assert!(
        share < 0.5,
        "the supervisor used {:.0}% of a core reading one module's output",
        share * 100.0
    );
    let log = gateway.log();
    // Printed in bounded pieces, the excess dropped and counted.
    assert!(log.contains("[spew] xxxx"), "no output piece in the log");
    assert!(log.contains("output lines dropped"), "no drop report");
    assert!(
        log.lines().all(|l| l.len() < 5000),
        "a line longer than a piece was printed"
    );
}

#[test]
fn a_stuck_reader_of_the_supervisors_output_stalls_nothing() {
    let g = GatewayDir::new();
    g.add_policy("victim", &victim_policy());
    // Long lines (pieces of 4 KiB) as fast as the output limit lets
    // through: the pipe and the supervisor's queue fill within seconds.
    g.add_policy(
        "flood",
        &policy("no_newline", "[schedule]\ntick_us = 10000"),
    );
    // A pipe whose reader never reads: once its 64 KiB are full, every
    // write to it blocks.
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    let gateway = g.start_with_stdout(&[], Stdio::from(writer));
    gateway.wait_running(&["victim", "flood"], STARTUP);
    let watched = watch(&gateway, "victim", Duration::from_secs(5));
    assert_unharmed(&watched, "a stuck stdout reader", &gateway);
    let status = gateway.try_status().expect("status");
    assert!(
        status["log_dropped"].as_u64().unwrap_or(0) > 0,
        "drops not counted: {status}"
    );
    let (code, table, _) = gateway.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(table.contains("log lines dropped"), "{table}");
    drop(reader);
}

#[test]
fn a_client_sending_one_byte_at_a_time_is_dropped_and_stalls_nothing() {
    let g = GatewayDir::new();
    g.add_policy("victim", &victim_policy());
    let gateway = g.start();
    gateway.wait_running(&["victim"], STARTUP);
    let mut slow = UnixStream::connect(g.control()).expect("connect");
    let request = br#"{"cmd":"status"}"#;
    let dripping = std::thread::spawn(move || {
        let started = Instant::now();
        for byte in request {
            if slow.write_all(&[*byte]).is_err() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        // Not dropped yet: the answer is a refusal, or nothing.
        let mut rest = String::new();
        let _ = slow.read_to_string(&mut rest);
        started.elapsed()
    });
    let watched = watch(&gateway, "victim", Duration::from_secs(5));
    assert_unharmed(&watched, "a one-byte-at-a-time client", &gateway);
    let dropped_after = dripping.join().expect("drip");
    assert!(
        dropped_after < Duration::from_secs(4),
        "the dripping client was kept for {dropped_after:?}"
    );
}

#[test]
fn a_hundred_idle_clients_are_capped_and_stall_nothing() {
    let g = GatewayDir::new();
    g.add_policy("victim", &victim_policy());
    let gateway = g.start();
    gateway.wait_running(&["victim"], STARTUP);
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(g.control()).expect("connect"))
        .collect();
    // Right away: a client is answered at once, if only with "busy".
    let asked = Instant::now();
    let (code, out, err) = gateway.cli(&["status"]);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert!(code == 0 || err.contains("busy"), "{code} {out} {err}");
    // The loop never stalled, and once the idle clients timed out, status
    // works again for everyone.
    let watched = watch(&gateway, "victim", Duration::from_secs(5));
    assert!(
        watched.rate >= 0.9 * edgeward_tests::attack::VICTIM_RATE,
        "{watched:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let status = gateway.try_status().expect("status after the idle clients");
    assert!(
        status["control_refused"].as_u64().unwrap_or(0) >= 60,
        "{status}"
    );
    drop(idle);
}

#[test]
fn handing_a_large_rw_dir_to_its_module_happens_off_the_loop() {
    let g = GatewayDir::new();
    let data = g.dir.path().join("big");
    for d in 0..300 {
        let sub = data.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..1000 {
            std::fs::File::create(sub.join(f.to_string())).expect("create");
        }
    }
    g.add_policy("victim", &victim_policy());
    let gateway = g.start();
    gateway.wait_running(&["victim"], STARTUP);
    g.add_policy(
        "owner",
        &policy(
            "counter",
            &format!(
                "[wasi]\ndirs = [{{ host = \"{}\", guest = \"/data\", mode = \"rw\", quota_mib = 0 }}]",
                data.display()
            ),
        ),
    );
    let (code, _, err) = gateway.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    let watched = watch(&gateway, "victim", Duration::from_secs(3));
    assert_unharmed(&watched, "handing 300 000 files to a module", &gateway);
    let status = gateway.wait_running(&["owner"], STARTUP);
    let pid = module(&status, "owner")["pid"].as_i64().expect("pid");
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
        .expect("uid");
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(data.join("d299/999"))
        .expect("stat")
        .uid();
    assert_eq!(
        owner.to_string(),
        uid,
        "the last file was not given to the module"
    );
}
