//! End to end: edgeward as PID 1 of its own PID namespace, as in a
//! container (`unshare --pid --fork --mount-proc edgeward run …`). It reaps
//! orphans it did not create, SIGHUP reloads, and SIGTERM stops every
//! module with a final snapshot (restored by the next run) and ends the
//! namespace with exit code 0 (docs/operations.md, "Signals and PID 1").

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeward_tests::{bin, children_of, policy, GatewayDir};

/// The pid (as seen from here) of the process in `children` whose
/// `/proc/PID/status` says it is PID 1 of its namespace.
fn pid_one_of(parent: i32) -> Option<i32> {
    children_of(parent).into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("NSpid:"))
                    .map(|l| l.split_whitespace().last() == Some("1"))
            })
            .unwrap_or(false)
    })
}

fn zombies_under(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
                let mut fields = after.split_whitespace();
                fields.next() == Some("Z")
                    && fields.next().and_then(|p| p.parse().ok()) == Some(parent)
            })
        })
        .collect()
}

#[test]
fn as_pid_1_of_a_namespace_it_reaps_orphans_and_stops_cleanly_on_sigterm() {
    let g = GatewayDir::new();
    g.add_policy(
        "counter",
        &policy(
            "counter",
            "[schedule]\ntick_us = 10000\n[snapshot]\ninterval_ms = 60000",
        ),
    );
    let log_path = g.dir.path().join("pid1.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(bin("edgeward"))
        .arg("run")
        .arg("--policies")
        .arg(g.policies())
        .arg("--state")
        .arg(g.state())
        .arg("--control")
        .arg(g.control())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run unshare (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(20);
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let edgeward = loop {
        if let Some(pid) = pid_one_of(unshare.id() as i32) {
            if read_log().contains("all 1 module(s) ready") {
                break pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not ready as PID 1:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // Orphans it did not create: a shell in its namespace starts two
    // sleepers and exits; they are re-parented to edgeward, PID 1 there.
    let nsenter = Command::new("nsenter")
        .args(["--target", &edgeward.to_string(), "--pid", "--mount", "--"])
        .args(["sh", "-c", "sleep 0.3 & sleep 0.5 & exit 0"])
        .status()
        .expect("run nsenter");
    assert!(nsenter.success());
    let sleepers = || {
        children_of(edgeward)
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .count()
    };
    assert_eq!(sleepers(), 2, "the sleepers were not adopted by edgeward");
    // Once they have exited, none stays a zombie.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(zombies_under(edgeward), Vec::<i32>::new(), "{}", read_log());

    // SIGHUP reloads: a policy added meanwhile starts.
    g.add_policy("second", &policy("counter", "[schedule]\ntick_us = 10000"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(edgeward),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let reloaded = Instant::now() + Duration::from_secs(20);
    while !read_log().contains("[second] info: ticks=") {
        assert!(
            Instant::now() < reloaded,
            "SIGHUP did not start the new module:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // SIGTERM: a final snapshot, then exit 0, which ends the namespace.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(edgeward),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopped = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = unshare.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < stopped, "still running:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = read_log();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("all modules stopped; exiting"), "{text}");
    // The final snapshot (the periodic one is a minute away) is durable:
    // the next run restores it.
    let again = g.start();
    again.wait_log("restored snapshot epoch ", Duration::from_secs(20));
}
