//! End to end: edgeward as PID 1 of its own PID namespace, as in a
//! container (`unshare --pid --fork --mount-proc edgeward run …`). It reaps
//! every orphan, whoever created it, within a second of its exit; SIGHUP
//! reloads; SIGTERM, SIGINT and SIGQUIT stop every module with a final
//! snapshot (restored by the next run) and end the namespace with exit code
//! 0, SIGKILLing at `--stop-timeout-ms` a module that ignores Stop; a
//! signal edgeward gives no meaning is logged and changes nothing
//! (docs/operations.md, "Signals and PID 1").

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use edgeward_tests::{bin, children_of, policy, GatewayDir};

const STARTUP: Duration = Duration::from_secs(20);

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

/// `edgeward run` as PID 1 of a new PID namespace, its output in a log.
struct Pid1 {
    unshare: Child,
    /// edgeward's pid as seen from the test's namespace.
    pid: i32,
    log_path: PathBuf,
}

impl Pid1 {
    /// Starts `edgeward run` on `g` with `args` and `env`, and waits until
    /// its `modules` modules are ready.
    fn start(g: &GatewayDir, modules: usize, args: &[&str], env: &[(&str, &str)]) -> Pid1 {
        let log_path = g.dir.path().join("pid1.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new("unshare");
        command
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(bin("edgeward"))
            .arg("run")
            .arg("--policies")
            .arg(g.policies())
            .arg("--state")
            .arg(g.state())
            .arg("--control")
            .arg(g.control())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let unshare = command.spawn().expect("run unshare (util-linux)");
        let mut started = Pid1 {
            unshare,
            pid: 0,
            log_path,
        };
        let ready = format!("all {modules} module(s) ready");
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(pid) = pid_one_of(started.unshare.id() as i32) {
                if started.log().contains(&ready) {
                    started.pid = pid;
                    return started;
                }
            }
            assert!(
                Instant::now() < deadline,
                "not ready as PID 1:\n{}",
                started.log()
            );
            assert!(
                started.unshare.try_wait().unwrap().is_none(),
                "edgeward ended before it was ready:\n{}",
                started.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.pid), signal).unwrap();
    }

    fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the log never showed {needle:?} within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the namespace to end; its exit status is edgeward's.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.unshare.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `edgeward status --json` answers, with `module` running.
    fn answers_with_running(&self, g: &GatewayDir, module: &str) -> bool {
        let out = Command::new(bin("edgeward"))
            .args(["status", "--json", "--control"])
            .arg(g.control())
            .output()
            .unwrap();
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        out.status.success() && edgeward_tests::module(&status, module)["state"] == "running"
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        // SIGKILL sent from outside the namespace reaches its PID 1; its
        // end kills everything in the namespace.
        if let Ok(None) = self.unshare.try_wait() {
            if self.pid > 0 {
                let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

/// A counter that snapshots once a minute: only the final snapshot of a
/// stop can be restored by the next run of a short test.
fn counter_without_periodic_snapshots() -> String {
    policy(
        "counter",
        "[schedule]\ntick_us = 10000\n[snapshot]\ninterval_ms = 60000",
    )
}

#[test]
fn as_pid_1_it_reaps_100_orphans_it_did_not_create_within_a_second_of_their_exit() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_without_periodic_snapshots());
    let pid1 = Pid1::start(&g, 1, &[], &[]);
    let edgeward = pid1.pid;

    // A shell in its namespace starts 100 sleepers, each from a subshell
    // that exits at once: orphans, re-parented to edgeward, PID 1 there.
    let script = "i=0; while [ $i -lt 100 ]; do (sleep 2 &); i=$((i+1)); done; exit 0";
    let nsenter = Command::new("nsenter")
        .args(["--target", &edgeward.to_string(), "--pid", "--mount", "--"])
        .args(["sh", "-c", script])
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
            .collect::<Vec<_>>()
    };
    // Watch until all have exited: each must be adopted, and no zombie may
    // stay more than a second under edgeward.
    let mut adopted = HashSet::new();
    let mut zombie_since: HashMap<i32, Instant> = HashMap::new();
    let mut oldest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive = sleepers();
        adopted.extend(alive.iter().copied());
        let now = Instant::now();
        let zombies = zombies_under(edgeward);
        zombie_since.retain(|pid, _| zombies.contains(pid));
        for pid in zombies {
            let since = *zombie_since.entry(pid).or_insert(now);
            oldest = oldest.max(now - since);
        }
        assert!(
            oldest < Duration::from_secs(1),
            "a zombie stayed {oldest:?} under edgeward (PID 1):\n{}",
            pid1.log()
        );
        if alive.is_empty() && zombie_since.is_empty() && !adopted.is_empty() {
            break;
        }
        assert!(
            now < deadline,
            "{} sleepers still alive, {} zombies:\n{}",
            alive.len(),
            zombie_since.len(),
            pid1.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        adopted.len(),
        100,
        "not every orphan was adopted by edgeward"
    );
    eprintln!("100 orphans reaped; the longest-lived zombie was seen for {oldest:?}");
    // And it still supervises.
    assert!(pid1.answers_with_running(&g, "counter"), "{}", pid1.log());
}

#[test]
fn as_pid_1_sighup_reloads_and_sigterm_stops_with_final_snapshots_and_exit_0() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_without_periodic_snapshots());
    let mut pid1 = Pid1::start(&g, 1, &[], &[]);

    // SIGHUP reloads: a policy added meanwhile starts.
    g.add_policy("second", &policy("counter", "[schedule]\ntick_us = 10000"));
    pid1.signal(Signal::SIGHUP);
    pid1.wait_log("[second] info: ticks=", STARTUP);

    // SIGTERM: a final snapshot, then exit 0, which ends the namespace.
    pid1.signal(Signal::SIGTERM);
    let status = pid1.wait_exit(Duration::from_secs(10));
    let text = pid1.log();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("SIGTERM: stopping all modules"), "{text}");
    assert!(text.contains("all modules stopped; exiting"), "{text}");
    // The final snapshot (the periodic one is a minute away) is durable:
    // the next run restores it.
    let again = g.start();
    again.wait_log("restored snapshot epoch ", STARTUP);
}

/// `signal` to edgeward as PID 1 stops it like SIGTERM: exit 0, and a
/// final snapshot that the next run restores.
fn stops_with_a_final_snapshot(signal: Signal) {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_without_periodic_snapshots());
    let mut pid1 = Pid1::start(&g, 1, &[], &[]);
    pid1.wait_log("[counter] info: ticks=", STARTUP);
    pid1.signal(signal);
    let status = pid1.wait_exit(Duration::from_secs(10));
    let text = pid1.log();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("{signal}: stopping all modules")),
        "{text}"
    );
    assert!(text.contains("all modules stopped; exiting"), "{text}");
    assert!(
        !text.contains("did not stop within the stop timeout"),
        "{text}"
    );
    let again = g.start();
    again.wait_log("[counter] info: restored snapshot epoch ", STARTUP);
}

#[test]
fn as_pid_1_sigint_stops_with_final_snapshots_and_exit_0() {
    stops_with_a_final_snapshot(Signal::SIGINT);
}

#[test]
fn as_pid_1_sigquit_stops_with_final_snapshots_and_exit_0() {
    stops_with_a_final_snapshot(Signal::SIGQUIT);
}

#[test]
fn as_pid_1_a_module_that_ignores_stop_is_sigkilled_at_the_stop_timeout() {
    let g = GatewayDir::new();
    // The rogue's wasm is never run; any valid one does.
    g.add_policy(
        "rogue-stubborn",
        &policy(
            "counter",
            "[wasi]\nargs = [\"ignore-stop\"]\n[restart]\npolicy = \"never\"",
        ),
    );
    g.add_policy("counter", &counter_without_periodic_snapshots());
    let rogue = bin("rogue-worker");
    let mut pid1 = Pid1::start(
        &g,
        2,
        &["--stop-timeout-ms", "500"],
        &[
            ("EDGEWARD_PROCESS_MODEL", "exec"),
            ("EDGEWARD_WORKER", rogue.to_str().expect("utf-8 path")),
        ],
    );
    pid1.wait_log("[counter] info: ticks=", STARTUP);

    let sent = Instant::now();
    pid1.signal(Signal::SIGTERM);
    let status = pid1.wait_exit(Duration::from_secs(10));
    let took = sent.elapsed();
    let text = pid1.log();
    eprintln!("SIGTERM to exit with a module ignoring Stop: {took:?}");
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("module rogue-stubborn: did not stop within the stop timeout; SIGKILL"),
        "{text}"
    );
    assert!(text.contains("all modules stopped; exiting"), "{text}");
    // The final snapshot round, Stop, then 500 ms before the SIGKILL.
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "stopping took {took:?}:\n{text}"
    );
    // Only the one that ignored Stop is named; the counter stopped in time
    // with its final snapshot.
    assert!(!text.contains("module counter: did not stop"), "{text}");
    let again = g.start();
    again.wait_log("[counter] info: restored snapshot epoch ", STARTUP);
}

/// Signals edgeward gives no meaning, as their log names them.
const MEANINGLESS: [(Signal, &str); 5] = [
    (Signal::SIGUSR1, "SIGUSR1"),
    (Signal::SIGUSR2, "SIGUSR2"),
    (Signal::SIGALRM, "SIGALRM"),
    (Signal::SIGTSTP, "SIGTSTP"),
    (Signal::SIGWINCH, "SIGWINCH"),
];

/// Whether the log has a line naming `name` as ignored.
fn logged_as_ignored(log: &str, name: &str) -> bool {
    log.lines()
        .any(|l| l.starts_with(&format!("edgeward: {name}: ")) && l.contains("; ignored"))
}

#[test]
fn as_pid_1_a_signal_without_meaning_is_logged_and_changes_nothing() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_without_periodic_snapshots());
    let mut pid1 = Pid1::start(&g, 1, &[], &[]);
    for (signal, _) in MEANINGLESS {
        pid1.signal(signal);
    }
    let realtime = libc::SIGRTMIN() + 1;
    // SAFETY: kill takes plain integers; the pid is edgeward's.
    assert_eq!(unsafe { libc::kill(pid1.pid, realtime) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pid1.unshare.try_wait().unwrap().is_none(),
        "edgeward ended:\n{}",
        pid1.log()
    );
    assert!(pid1.answers_with_running(&g, "counter"), "{}", pid1.log());

    // Still stops as usual.
    pid1.signal(Signal::SIGTERM);
    let status = pid1.wait_exit(Duration::from_secs(10));
    let text = pid1.log();
    assert_eq!(status.code(), Some(0), "{text}");
    // Each was seen and said to be ignored: none dropped in silence, as
    // the kernel would drop them for a PID 1 without a handler.
    let names = MEANINGLESS.iter().map(|(_, name)| *name);
    for name in names.chain(["SIGRTMIN+1"]) {
        assert!(
            logged_as_ignored(&text, name),
            "no line for {name}:\n{text}"
        );
    }
}

#[test]
fn not_as_pid_1_either_a_signal_without_meaning_is_logged_and_does_not_end_it() {
    // Before every signal was read from the signalfd, SIGUSR1 killed it
    // (its default action) when it was not PID 1.
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_without_periodic_snapshots());
    let mut gateway = g.start();
    gateway.wait_running(&["counter"], STARTUP);
    for (signal, _) in MEANINGLESS {
        gateway.signal(signal);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        gateway.child.try_wait().unwrap().is_none(),
        "{}",
        gateway.log()
    );
    gateway.wait_running(&["counter"], Duration::from_secs(5));
    gateway.signal(Signal::SIGTERM);
    let status = gateway.wait_exit(Duration::from_secs(10)).expect("stopped");
    assert_eq!(status.code(), Some(0), "{}", gateway.log());
    assert!(
        logged_as_ignored(&gateway.log(), "SIGUSR1"),
        "{}",
        gateway.log()
    );
}
