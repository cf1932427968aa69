//! Test kit for the end-to-end suite and the bench: start the real
//! `edgeward` binary on policies in a temporary directory, query it through
//! the real CLI, and clean up every process afterwards.
//!
//! Binaries come from `EDGEWARD_BIN_DIR` (set by `scripts/test`), else
//! `$CARGO_TARGET_DIR/release`, else `target/release`; guest modules from
//! `EDGEWARD_GUESTS_OUT`, else `guests/out`. Build both with `scripts/setup`.

pub mod attack;
pub mod floor;
pub mod orphans;
pub mod peers;
pub mod power_cut;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Directory holding the release `edgeward` and `edgeward-worker`.
///
/// # Panics
/// If `edgeward` is not there: the message says how to build it.
pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("EDGEWARD_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("release")))
        .unwrap_or_else(|| repo_root().join("target/release"));
    assert!(
        dir.join("edgeward").is_file() && dir.join("edgeward-worker").is_file(),
        "release binaries not found in {}: run scripts/setup (or set EDGEWARD_BIN_DIR)",
        dir.display()
    );
    dir
}

/// Path of a built binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Path of a built guest module, e.g. `guest("counter")`.
///
/// # Panics
/// If it has not been built.
pub fn guest(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGEWARD_GUESTS_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("guests/out"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "guest {} not built: run scripts/build-guests",
        path.display()
    );
    path
}

/// The modules of the example policy set in `policies/`.
pub const EXAMPLES: [&str; 6] = [
    "alarm",
    "counter",
    "filter",
    "hello-command",
    "sensor",
    "temp-alert",
];

/// A policy for guest `name` with extra TOML appended (sections after `[module]`).
pub fn policy(guest_name: &str, extra: &str) -> String {
    format!(
        "[module]\nwasm = \"{}\"\n{extra}\n",
        guest(guest_name).display()
    )
}

/// A temporary gateway directory: `policies/`, `state/`, `control.sock`, `log`.
pub struct GatewayDir {
    /// The temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl GatewayDir {
    /// An empty gateway directory.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("edgeward-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir policies");
        Self { dir }
    }

    /// Writes `policies/<name>.toml`.
    pub fn add_policy(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.policies().join(format!("{name}.toml")), text).expect("write policy");
        self
    }

    /// The policy directory.
    pub fn policies(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The control socket path.
    pub fn control(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// Starts `edgeward run` here, with extra environment variables.
    pub fn start_with(&self, env: &[(&str, &str)]) -> Gateway {
        self.start_on(&self.policies(), env)
    }

    /// Starts `edgeward run` on another policy directory, with state and
    /// control socket here.
    pub fn start_on(&self, policies: &Path, env: &[(&str, &str)]) -> Gateway {
        self.start_full(policies, env, None)
    }

    /// Starts `edgeward run` here with its stdout on `stdout` (its stderr
    /// goes to the log as usual).
    pub fn start_with_stdout(&self, env: &[(&str, &str)], stdout: Stdio) -> Gateway {
        self.start_full(&self.policies(), env, Some(stdout))
    }

    fn start_full(&self, policies: &Path, env: &[(&str, &str)], stdout: Option<Stdio>) -> Gateway {
        let log_path = self.dir.path().join(format!("log-{}", unique()));
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut command = Command::new(bin("edgeward"));
        command
            .arg("run")
            .arg("--policies")
            .arg(policies)
            .arg("--state")
            .arg(self.state())
            .arg("--control")
            .arg(self.control())
            .stdin(Stdio::null())
            .stdout(stdout.unwrap_or_else(|| log.try_clone().expect("dup log").into()))
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        // Its own process group, which its fork server and workers inherit:
        // how the orphan reaper knows them (`orphans.rs`).
        orphans::reap_adopted();
        command.process_group(0);
        let child = command.spawn().expect("start edgeward run");
        Gateway {
            child,
            control: self.control(),
            log_path,
        }
    }

    /// Starts `edgeward run` here.
    pub fn start(&self) -> Gateway {
        self.start_with(&[])
    }
}

impl Default for GatewayDir {
    fn default() -> Self {
        Self::new()
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running `edgeward run`. Dropping it kills the supervisor; its workers
/// follow (they die with their parent).
pub struct Gateway {
    /// The supervisor process.
    pub child: Child,
    control: PathBuf,
    log_path: PathBuf,
}

impl Gateway {
    /// The supervisor's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the supervisor printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs `edgeward ARGS --control <ours>` and returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        cli_on(&self.control, args)
    }

    /// `edgeward status --json`, parsed; `None` while the supervisor is not
    /// answering yet.
    pub fn try_status(&self) -> Option<Value> {
        let (code, stdout, _) = self.cli(&["status", "--json"]);
        if code != 0 {
            return None;
        }
        serde_json::from_str(&stdout).ok()
    }

    /// Polls status until `done` holds, or panics after `timeout` with the
    /// last status and the log.
    pub fn wait_for(&self, timeout: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(status) = self.try_status() {
                if done(&status) {
                    return status;
                }
                last = Some(status);
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\nlast status: {}\nlog:\n{}",
                    last.map_or("none".into(), |s| s.to_string()),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every listed module is `running`.
    pub fn wait_running(&self, modules: &[&str], timeout: Duration) -> Value {
        self.wait_for(timeout, &format!("{modules:?} running"), |s| {
            modules.iter().all(|m| module(s, m)["state"] == "running")
        })
    }

    /// Waits for log text to appear.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?} within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `needle` in the log and returns the number right after its
    /// last occurrence.
    pub fn wait_number_after(&self, needle: &str, timeout: Duration) -> u64 {
        self.wait_log(needle, timeout);
        last_number_after(&self.log(), needle).expect("a number after the needle")
    }

    /// The address of `--metrics` (started as `127.0.0.1:0`: the kernel
    /// picks the port, the log names it).
    pub fn metrics_addr(&self, timeout: Duration) -> std::net::SocketAddr {
        let needle = "metrics at http://";
        self.wait_log(needle, timeout);
        let log = self.log();
        let at = log.find(needle).expect("found") + needle.len();
        let addr = &log[at..at + log[at..].find('/').expect("a path after the address")];
        addr.parse().expect("a socket address")
    }

    /// `GET path` from the `--metrics` listener: (status code, body).
    pub fn metrics_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr(Duration::from_secs(10)), path)
    }

    /// Sends a signal to the supervisor.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Waits up to `timeout` for the supervisor to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// Pids of the supervisor's live children (workers and fork server).
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let children = self.children();
            let _ = self.child.kill();
            let _ = self.child.wait();
            for pid in children {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Runs the host's `edgeward ARGS --control CONTROL` and returns (exit
/// `GET path` over HTTP/1.1 from `addr`: (status code, body). Panics on a
/// connection error or no answer within 10 s.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

/// code, stdout, stderr).
pub fn cli_on(control: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("edgeward"))
        .args(args)
        .arg("--control")
        .arg(control)
        .output()
        .expect("run edgeward CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits up to `timeout` for `child` to exit; `None` if it still runs.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The module named `name` in a status report.
///
/// # Panics
/// If it is not there.
pub fn module<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["modules"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("module {name} not in status {status}"))
}

/// Pids whose parent is `parent`, from /proc.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The ppid is the second field after the parenthesised command.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        if state == Some("Z") {
            continue;
        }
        if fields.next().and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether a process exists (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .map(|i| &stat[i + 2..])
            .is_some_and(|s| !s.starts_with('Z')),
        Err(_) => false,
    }
}

/// A command whose child gets `fds[i]` as fd `3 + i` (for peers that take
/// their ring or socket on fixed descriptors).
pub fn command_with_fds(program: &Path, fds: &[std::os::fd::RawFd]) -> Command {
    use std::os::unix::process::CommandExt;
    let fds = fds.to_vec();
    let mut command = Command::new(program);
    let place = move || -> std::io::Result<()> {
        // Move every fd out of the way first (one may already sit on 3 or 4),
        // then onto 3, 4, …; dup2 results are not close-on-exec.
        let mut moved = Vec::with_capacity(fds.len());
        for &fd in &fds {
            // SAFETY: fcntl on an fd this child owns; async-signal-safe.
            let tmp = unsafe { libc::fcntl(fd, libc::F_DUPFD, 100) };
            if tmp < 0 {
                return Err(std::io::Error::last_os_error());
            }
            moved.push(tmp);
        }
        for (i, tmp) in moved.into_iter().enumerate() {
            // SAFETY: dup2 onto a fixed low fd in this child; async-signal-safe.
            if unsafe { libc::dup2(tmp, 3 + i as i32) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child before exec and only calls
    // async-signal-safe functions (the Vec was built before fork).
    unsafe { command.pre_exec(place) };
    command
}

/// The cgroup v1 directory of `pid` for `controller`, from `/proc/PID/cgroup`.
pub fn cgroup_dir(pid: i64, controller: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/PID/cgroup");
    let path = text
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("pid {pid} has no {controller} cgroup"));
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'))
}

/// The number right after the last `needle` in `log` (`restored ticks=` → 42).
pub fn last_number_after(log: &str, needle: &str) -> Option<u64> {
    let rest = log.lines().rev().find_map(|l| l.split(needle).nth(1))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `edgeward check --policies DIR`: its exit code, and its stdout and
/// stderr together.
pub fn check(dir: &Path) -> (i32, String) {
    let out = Command::new(bin("edgeward"))
        .args(["check", "--policies"])
        .arg(dir)
        .output()
        .expect("run edgeward check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}
