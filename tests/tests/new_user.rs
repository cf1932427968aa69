//! End to end: a new user's path works as written. The demo runs, alerts
//! and cleans up; the README's tour works pasted into a shell; the demo's
//! setup shows progress and builds only what the demo needs; a granted dir
//! the module's uid cannot reach is refused with the fix; a normal user
//! runs modules with reduced isolation; the example chain raises no false
//! alarms across runs, restarts and a reload; junk wasm is one line.
//!
//! These tests run one at a time: the demo's setup relinks the release
//! binaries the others run, and the tour uses fixed paths.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgeward_tests::{alive, bin, guest, module, policy, repo_root, GatewayDir};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Held by every test of this file (see the module doc).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Waits until `done` holds, or panics after `timeout` naming `what` and
/// showing `context()`.
fn wait_until(
    timeout: Duration,
    what: &str,
    context: impl Fn() -> String,
    done: impl Fn() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process group started for a test (the demo, the tour, a supervisor as
/// `nobody`): SIGKILLed with everything in it unless it ended.
struct Group {
    child: Child,
    log: PathBuf,
}

impl Group {
    /// Starts `command` in a new process group, stdout and stderr to `log`.
    fn start(mut command: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("create log");
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("spawn");
        Self { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_output(&self, needle: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("{needle:?} in the output"),
            || self.output(),
            || self.output().contains(needle),
        );
    }

    /// Waits up to `timeout` for the process to end.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal_group(&self, signal: nix::sys::signal::Signal) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, signal);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal_group(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Pids whose command line contains every one of `args`, in order.
fn processes_with(args: &[&str]) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        if words.windows(args.len()).any(|w| w == args) && alive(pid) {
            found.push(pid);
        }
    }
    found
}

// 14. A granted dir the module's uid cannot reach.

#[test]
fn a_granted_dir_behind_a_private_parent_works_one_its_uid_cannot_read_is_refused_with_the_fix() {
    let _serial = one_at_a_time();
    let g = GatewayDir::new();
    // The parent as `mktemp -d` makes it: 0700, so only root may walk
    // through. Granted dirs travel to the worker as fds: no matter.
    let private = g.dir.path().join("private");
    let data = private.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("temperature"), "91.5\n").unwrap();
    chmod(&private, 0o700);
    let data = std::fs::canonicalize(&data).unwrap();
    g.add_policy(
        "temp-alert",
        &policy(
            "temp_alert",
            &format!(
                "[wasi]\ndirs = [{{ host = \"{}\", guest = \"/sensor\", mode = \"ro\" }}]\n[schedule]\ntick_us = 100000",
                data.display()
            ),
        ),
    );
    let gateway = g.start();
    let alert = "[temp-alert] warn: ALERT: temperature 91.5 > 85.0";
    gateway.wait_log(alert, WAIT);

    // The granted dir itself private: the module's uid cannot read it.
    chmod(&data, 0o700);
    let (code, out, err) = gateway.cli(&["restart", "temp-alert"]);
    assert_eq!(code, 0, "{out}{err}");
    let status = gateway.wait_for(WAIT, "temp-alert refused", |s| {
        module(s, "temp-alert")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("out of reach"))
    });
    let error = module(&status, "temp-alert")["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    let file = g.policies().join("temp-alert.toml");
    assert!(
        error.starts_with(&format!(
            "{}:4:9: wasi.dirs host \"{}\" is out of reach of the module's uid ",
            file.display(),
            data.display()
        )),
        "{error}"
    );
    assert!(
        error.ends_with(&format!(
            ": its mode 0700 (owner root:root) gives it no read and search (r, x) permission; chmod o+rx {}",
            data.display()
        )),
        "{error}"
    );
    assert_ne!(module(&status, "temp-alert")["state"], "running");
    // `check` says the same, before anything runs.
    let check = Command::new(bin("edgeward"))
        .arg("check")
        .arg("--policies")
        .arg(g.policies())
        .output()
        .expect("run edgeward check");
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(
        out.contains("temp-alert           INVALID") && out.contains("chmod o+rx"),
        "{out}"
    );

    // The fix the error names works.
    let alerts = gateway.log().matches(alert).count();
    chmod(&data, 0o705);
    let (code, out, err) = gateway.cli(&["restart", "temp-alert"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until(
        WAIT,
        "a new ALERT",
        || gateway.log(),
        || gateway.log().matches(alert).count() > alerts,
    );
}

#[test]
fn temp_alert_says_once_why_it_cannot_read_its_sensor() {
    let _serial = one_at_a_time();
    let g = GatewayDir::new();
    let data = g.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("temperature"), "hot\n").unwrap();
    g.add_policy(
        "temp-alert",
        &policy(
            "temp_alert",
            &format!(
                "[wasi]\ndirs = [{{ host = \"{}\", guest = \"/sensor\", mode = \"ro\" }}]\n[schedule]\ntick_us = 50000",
                data.display()
            ),
        ),
    );
    let gateway = g.start();
    let not_a_number =
        "[temp-alert] error: cannot read /sensor/temperature: \"hot\" is not a number";
    gateway.wait_log(not_a_number, WAIT);
    // Ten more failing ticks say nothing new.
    let ticks = |s: &Value| module(s, "temp-alert")["ticks"].as_u64().unwrap_or(0);
    let now = ticks(&gateway.try_status().unwrap());
    gateway.wait_for(WAIT, "ten more ticks", |s| ticks(s) >= now + 10);
    assert_eq!(gateway.log().matches(not_a_number).count(), 1);

    std::fs::write(data.join("temperature"), "20.0\n").unwrap();
    gateway.wait_log(
        "[temp-alert] info: /sensor/temperature is readable again",
        WAIT,
    );
    std::fs::remove_file(data.join("temperature")).unwrap();
    gateway.wait_log(
        "[temp-alert] error: cannot read /sensor/temperature: No such file or directory",
        WAIT,
    );
}

// 15. Not root: what check says and what run does agree.

/// `edgeward` (or `edgeward-worker`) copied where `nobody` can run it.
fn as_nobody(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(program);
    command
}

#[test]
fn as_a_normal_user_modules_run_with_the_missing_layers_reported() {
    let _serial = one_at_a_time();
    let top = tempfile::Builder::new()
        .prefix("edgeward-nobody-")
        .tempdir()
        .unwrap();
    let top_path = top.path();
    chmod(top_path, 0o755);
    for name in ["edgeward", "edgeward-worker"] {
        std::fs::copy(bin(name), top_path.join(name)).unwrap();
    }
    std::fs::copy(guest("counter"), top_path.join("counter.wasm")).unwrap();
    std::fs::create_dir(top_path.join("policies")).unwrap();
    std::fs::write(
        top_path.join("policies/counter.toml"),
        format!(
            "[module]\nwasm = \"{}\"\n[schedule]\ntick_us = 10000\n",
            top_path.join("counter.wasm").display()
        ),
    )
    .unwrap();
    // The one directory `nobody` may write: state and control socket.
    let own = top_path.join("nobody");
    std::fs::create_dir(&own).unwrap();
    nix::unistd::chown(&own, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let edgeward = top_path.join("edgeward");
    let run = |command: &mut Command| {
        let out = command
            .current_dir(top_path)
            .output()
            .expect("run as nobody");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };

    let (code, out) = run(as_nobody(&edgeward).args(["check", "--sandbox"]));
    assert_eq!(code, 1, "{out}");
    let cgroups = out
        .lines()
        .find(|l| l.trim_start().starts_with("cgroups"))
        .unwrap_or_else(|| panic!("no cgroups line in:\n{out}"));
    assert!(
        cgroups.contains("MISSING") && cgroups.contains("not writable"),
        "{out}"
    );

    // The defaults are root's: the errors name the path and the flag.
    let (code, out) = run(as_nobody(&edgeward).args(["run", "--policies", "policies"]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("/var/lib/edgeward") && out.contains("--state"),
        "{out}"
    );
    let state = own.join("state");
    let (code, out) = run(as_nobody(&edgeward)
        .args(["run", "--policies", "policies", "--state"])
        .arg(&state));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("/run/edgeward"), "{out}");

    let socket = own.join("control.sock");
    let mut command = as_nobody(&edgeward);
    command
        .args(["run", "--policies", "policies", "--state"])
        .arg(&state)
        .arg("--control")
        .arg(&socket)
        .current_dir(top_path);
    let mut supervisor = Group::start(command, top_path.join("log"));
    let status = || -> Option<Value> {
        let (code, out) = run(as_nobody(&edgeward)
            .args(["status", "--json", "--control"])
            .arg(&socket));
        (code == 0)
            .then(|| serde_json::from_str(&out).ok())
            .flatten()
    };
    wait_until(
        WAIT,
        "counter running and ticking",
        || format!("{:?}\n{}", status(), supervisor.output()),
        || {
            status().is_some_and(|s| {
                module(&s, "counter")["state"] == "running"
                    && module(&s, "counter")["ticks"].as_u64() > Some(3)
            })
        },
    );
    let report = status().unwrap();
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("cgroups unavailable") && warnings.contains("not running as root"),
        "{report}"
    );
    let degraded = module(&report, "counter")["degraded"].to_string();
    for layer in ["cgroups:", "namespaces:", "identity:"] {
        assert!(degraded.contains(layer), "{layer} not in {degraded}");
    }
    let pid = module(&report, "counter")["pid"].as_i64().unwrap();
    let uid_line = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(uid_line.contains("65534"), "{uid_line}");
    assert_eq!(module(&report, "counter")["restarts"], 0, "{report}");

    let (code, out) = run(as_nobody(&edgeward)
        .args(["stop", "--control"])
        .arg(&socket));
    assert_eq!(code, 0, "{out}");
    assert!(supervisor.wait_exit(WAIT).success());
}

// 16. The README's 30-second tour works when pasted.

/// The README's `30-second tour` shell block, as written.
fn readme_tour() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("## 30-second tour")
        .nth(1)
        .expect("README has a 30-second tour");
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("the tour has a sh block");
    block
        .split("```")
        .next()
        .expect("the block ends")
        .to_string()
}

/// Removes the tour's fixed paths (before and after the test).
struct TourPaths;

impl TourPaths {
    fn clean() -> Self {
        Self::remove();
        TourPaths
    }

    fn remove() {
        let _ = std::fs::remove_dir_all("/tmp/ew");
        let _ = std::fs::remove_file("/tmp/ew.sock");
    }
}

impl Drop for TourPaths {
    fn drop(&mut self) {
        for pid in processes_with(&["--state", "/tmp/ew"]) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        Self::remove();
    }
}

#[test]
fn the_readme_tour_works_pasted_into_a_shell() {
    let _serial = one_at_a_time();
    let _paths = TourPaths::clean();
    let tour = readme_tour();
    let out_dir = tempfile::tempdir().unwrap();
    // A user's shell: a home, the system PATH, and (in CI) the target dir.
    let mut shell = Command::new("bash");
    shell
        .arg("-e")
        .arg("-c")
        .arg(&tour)
        .current_dir(repo_root())
        .env_clear()
        .env("HOME", std::env::var_os("HOME").expect("HOME"))
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        shell.env("CARGO_TARGET_DIR", target);
    }
    let mut tour_run = Group::start(shell, out_dir.path().join("out"));
    let status = tour_run.wait_exit(Duration::from_secs(120));
    let out = tour_run.output();
    assert!(
        status.success(),
        "the tour failed ({status}):\n{tour}\n{out}"
    );
    let expect = [
        "6 module(s), 6 valid, 0 invalid",
        "counter: snapshot epoch ",
        "counter: upgraded to ",
        "no change",
        "restarting counter",
        "stopped",
    ];
    for line in expect {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("counter") && l.contains("running")),
        "no status row for counter:\n{out}"
    );
    // The last `stop` ended the supervisor.
    wait_until(
        Duration::from_secs(5),
        "the supervisor gone",
        || format!("{:?}", processes_with(&["--state", "/tmp/ew"])),
        || processes_with(&["--state", "/tmp/ew"]).is_empty(),
    );
    assert!(!Path::new("/tmp/ew.sock").exists());
}

// 17. The demo shows progress and builds only what it needs.

/// Gives `file` a new modification time, and its old one back on drop, so
/// a build of its crate would show (and nothing is left to rebuild after).
struct Touched {
    file: PathBuf,
    was: std::time::SystemTime,
}

impl Touched {
    fn new(file: PathBuf) -> Self {
        let was = std::fs::metadata(&file).unwrap().modified().unwrap();
        let handle = std::fs::File::options().write(true).open(&file).unwrap();
        handle.set_modified(std::time::SystemTime::now()).unwrap();
        Self { file, was }
    }
}

impl Drop for Touched {
    fn drop(&mut self) {
        if let Ok(handle) = std::fs::File::options().write(true).open(&self.file) {
            let _ = handle.set_modified(self.was);
        }
    }
}

#[test]
fn the_demo_setup_shows_progress_and_builds_only_what_the_demo_needs() {
    let _serial = one_at_a_time();
    let root = repo_root();
    // A test guest and the test crate look changed: a build of either shows.
    let _trap = Touched::new(root.join("guests/faults/trap/src/lib.rs"));
    let _tests = Touched::new(root.join("tests/src/lib.rs"));
    let out = Command::new(root.join("scripts/setup"))
        .arg("--demo")
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/setup --demo");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // The guests the example policies and the demo's line name, and the
    // tour's upgrade and exec.
    let mut guests: Vec<String> = std::fs::read_dir(root.join("policies"))
        .unwrap()
        .chain(std::fs::read_dir(root.join("policies/gateway-32")).unwrap())
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let line = text.lines().find(|l| l.starts_with("wasm = "))?;
            let name = line.split("guests/out/").nth(1)?.split(".wasm\"").next()?;
            Some(name.replace('_', "-"))
        })
        .collect();
    guests.sort();
    // The line's Go modules share one wasm.
    guests.dedup();
    guests.extend(["counter-next".into(), "exec-probe".into()]);
    assert!(
        text.contains(&format!("building guest modules: {}", guests.join(" "))),
        "{text}"
    );
    // cargo's progress shows: one line per build at least.
    assert_eq!(
        text.matches("Finished `release` profile").count(),
        2,
        "{text}"
    );
    assert!(!text.contains("Compiling trap"), "{text}");
    assert!(!text.contains("Compiling edgeward-tests"), "{text}");
}

// 18. No false alarms in the example chain's logs.

/// The example chain, faster: a reading a millisecond, snapshots of the
/// sensor's numbering and the alarm's totals every 200 ms.
fn example_chain(g: &GatewayDir) {
    g.add_policy(
        "sensor",
        &policy(
            "sensor",
            "[channels]\npublish = [\"readings\"]\n[schedule]\ntick_us = 1000\n[snapshot]\ninterval_ms = 200",
        ),
    );
    g.add_policy(
        "filter",
        &policy(
            "filter",
            "[wasi]\nargs = [\"--threshold\", \"50\"]\n[channels]\nsubscribe = [\"readings\"]\npublish = [\"alarms\"]\non_full = \"drop\"",
        ),
    );
    g.add_policy(
        "alarm",
        &policy(
            "alarm",
            "[wasi]\nargs = [\"--report-every\", \"100\"]\n[channels]\nsubscribe = [\"alarms\"]\n[snapshot]\ninterval_ms = 200",
        ),
    );
}

fn msgs_in(status: &Value, name: &str) -> u64 {
    module(status, name)["msgs_in"].as_u64().unwrap_or(0)
}

fn pid_of(status: &Value, name: &str) -> i64 {
    module(status, name)["pid"].as_i64().unwrap_or(0)
}

#[test]
fn the_example_chain_raises_no_false_alarms_across_runs_restarts_and_a_reload() {
    let _serial = one_at_a_time();
    let g = GatewayDir::new();
    example_chain(&g);
    let chain = ["sensor", "filter", "alarm"];

    let first = g.start();
    let status = first.wait_for(WAIT, "alarms flowing", |s| {
        chain.iter().all(|m| module(s, m)["state"] == "running") && msgs_in(s, "alarm") > 200
    });
    // The sensor crashes: it resumes from its last snapshot, so numbers
    // come again, from a new run of the sensor.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_of(&status, "sensor") as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    first.wait_log("[sensor] info: sensor: resuming at reading ", WAIT);
    // The filter crashes: it starts over from whatever reading comes next.
    let status = first.wait_for(WAIT, "sensor back", |s| {
        module(s, "sensor")["state"] == "running" && module(s, "filter")["state"] == "running"
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_of(&status, "filter") as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = first.wait_for(WAIT, "filter back and alarms flowing", |s| {
        module(s, "filter")["state"] == "running"
            && module(s, "filter")["restarts"] == 1
            && msgs_in(s, "alarm") > msgs_in(&status, "alarm") + 200
    });
    // A reload adds a subscriber to `readings`: the sensor restarts.
    g.add_policy(
        "logger",
        &policy(
            "bench_sink",
            "[channels]\nsubscribe = [\"readings\"]\n[snapshot]\ninterval_ms = 0",
        ),
    );
    let (code, out, err) = first.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    first.wait_for(
        WAIT,
        "the sensor restarted by the reload, alarms flowing",
        |s| {
            module(s, "logger")["state"] == "running"
                && pid_of(s, "sensor") != pid_of(&status, "sensor")
                && module(s, "sensor")["state"] == "running"
                && msgs_in(s, "alarm") > msgs_in(&status, "alarm") + 200
        },
    );
    let (code, out, err) = first.cli(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let first_log = first.log();

    // A second run on the same state: the sensor resumes its numbering,
    // the alarm its totals.
    let second = g.start();
    let status = second.wait_for(WAIT, "alarms flowing again", |s| {
        chain.iter().all(|m| module(s, m)["state"] == "running") && msgs_in(s, "alarm") > 200
    });
    second.wait_log("[alarm] info: alarm: restored ", WAIT);
    second.wait_log("[sensor] info: sensor: resuming at reading ", WAIT);
    let (code, out, err) = second.cli(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let log = first_log + &second.log();

    for false_alarm in [
        "OUT OF ORDER",
        "Some(",
        "[sensor] error",
        "[filter] error",
        "[alarm] error",
    ] {
        assert!(
            !log.contains(false_alarm),
            "{false_alarm:?} in the log:\n{log}"
        );
    }
    // Each restart of the sensor is one info line for each of its
    // subscribers down the chain, not one per reading.
    let resumed = log
        .matches("[filter] info: filter: the sensor restarted")
        .count();
    assert!((1..=2).contains(&resumed), "{resumed} in:\n{log}");
    for name in chain {
        assert_eq!(module(&status, name)["restarts"], 0, "{name}: {status}");
    }
}

// 19. Junk wasm is one line.

#[test]
fn a_junk_wasm_is_one_line_in_the_log_and_one_row_in_status() {
    let _serial = one_at_a_time();
    let g = GatewayDir::new();
    let junk = g.dir.path().join("junk.wasm");
    std::fs::write(&junk, "hello, I am a text file\nwith two lines\n").unwrap();
    g.add_policy(
        "junk",
        &format!("[module]\nwasm = \"{}\"\n", junk.display()),
    );
    g.add_policy("counter", &policy("counter", ""));
    let gateway = g.start();
    let status = gateway.wait_for(WAIT, "junk failed, counter running", |s| {
        module(s, "junk")["state"] == "failed" && module(s, "counter")["state"] == "running"
    });
    let error = module(&status, "junk")["last_error"].as_str().unwrap();
    assert!(!error.contains('\n'), "{error:?}");
    assert!(
        error.contains(
            "not a valid WebAssembly module: failed to parse WebAssembly module: magic header not detected: bad magic number - expected=[0x0, 0x61, 0x73, 0x6d] actual=[0x68, 0x65, 0x6c, 0x6c]"
        ),
        "{error}"
    );
    let (code, table, err) = gateway.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| !l.starts_with("WARNING:"))
        .collect();
    assert_eq!(rows.len(), 3, "header and one row per module:\n{table}");
    assert!(
        rows[1].starts_with("counter ") && rows[2].starts_with("junk "),
        "{table}"
    );
    let log = gateway.log();
    let junk_lines: Vec<&str> = log.lines().filter(|l| l.contains("magic header")).collect();
    assert!(!junk_lines.is_empty(), "{log}");
    assert!(
        junk_lines.iter().all(|l| l.contains("actual=[0x68")),
        "a multi-line message in the log:\n{log}"
    );
}

// Also: the demo runs end to end exactly as written.

#[test]
fn the_demo_runs_alerts_and_cleans_up_after_ctrl_c() {
    let _serial = one_at_a_time();
    let cache = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(repo_root().join("scripts/demo"));
    // Its own state dir (and so its own cgroups), not the user's demo's;
    // the Go and zig build caches of the user's (rebuilding Go's standard
    // library and wasi-libc would take minutes).
    let user_cache = std::env::var_os("EDGEWARD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/edgeward")
        });
    demo.current_dir(repo_root())
        .env("EDGEWARD_CACHE", cache.path());
    for (var, dir) in [
        ("GOCACHE", "go-build"),
        ("ZIG_GLOBAL_CACHE_DIR", "zig-cache"),
    ] {
        if std::env::var_os(var).is_none() {
            demo.env(var, user_cache.join(dir));
        }
    }
    let mut demo = Group::start(demo, out_dir.path().join("out"));
    // Setup is a no-op once set up, or a build of the demo's binaries.
    demo.wait_output("edgeward status", Duration::from_secs(1200));
    let out = demo.output();
    let inject_file = PathBuf::from(
        out.split("echo 91.5 > ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no hint to enter a reading:\n{out}")),
    );
    let copy = inject_file
        .ancestors()
        .nth(5)
        .expect("the demo's temp dir")
        .to_path_buf();
    assert!(
        copy.starts_with("/tmp") && copy.is_dir(),
        "{}",
        copy.display()
    );
    // The live table (not `check`'s listing above it), redrawn every
    // second: the alert and the operator's input running.
    let running_in_last_frame = |name: &str| {
        let out = demo.output();
        let Some(table) = out.split("==> edgeward status").nth(1) else {
            return false;
        };
        table
            .lines()
            .rev()
            .find(|l| l.starts_with(&format!("{name} ")))
            .is_some_and(|row| row.contains(" running "))
    };
    wait_until(
        Duration::from_secs(600),
        "gw-temp-alert and gw-manual-entry running in the live table",
        || demo.output(),
        || running_in_last_frame("gw-temp-alert") && running_in_last_frame("gw-manual-entry"),
    );

    // The line's alarm events go to the demo's local broker over MQTT
    // (policies/connectors/mqtt-north.toml): listen before the alarm.
    let mqtt = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "1883",
            "-t",
            "plant1/line1/alarm-events",
        ])
        .args(["-q", "1", "-C", "1", "-W", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (scripts/setup installs mosquitto-clients)");
    std::thread::sleep(Duration::from_millis(500)); // subscribed
                                                    // An operator's reading reaches the Go AlertOnHighTemp (the simulated
                                                    // line's own overheats peak below 90).
    std::fs::write(&inject_file, "91.5\n").unwrap();
    let log = cache.path().join("demo.log");
    wait_until(
        Duration::from_secs(10),
        "the ALERT of the operator's reading in the demo's log",
        || std::fs::read_to_string(&log).unwrap_or_default(),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("[gw-temp-alert] warn: ALERT: temperature 91.5 > 85.0")
        },
    );

    let mqtt = mqtt.wait_with_output().expect("mosquitto_sub");
    let event = String::from_utf8_lossy(&mqtt.stdout);
    assert!(
        mqtt.status.success() && event.contains("\"channel\":\"alarm-events\""),
        "an alarm event over MQTT: {event} {}",
        String::from_utf8_lossy(&mqtt.stderr)
    );

    // Ctrl-C: the terminal signals the whole foreground group.
    demo.signal_group(nix::sys::signal::Signal::SIGINT);
    let status = demo.wait_exit(WAIT);
    let out = demo.output();
    assert!(status.success(), "{status}:\n{out}");
    assert!(
        out.contains("edgeward: all modules stopped; exiting"),
        "{out}"
    );
    assert!(!copy.exists(), "{} left behind", copy.display());
    let group = demo.child.id() as i32;
    assert!(
        in_process_group(group).is_empty(),
        "processes of the demo left: {:?}",
        in_process_group(group)
    );
}

/// Live processes in process group `group`.
fn in_process_group(group: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the parenthesised command: state, ppid, pgrp.
        let pgrp = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(2)?.parse::<i32>().ok());
        if pgrp == Some(group) && alive(pid) {
            found.push(pid);
        }
    }
    found
}
