//! End to end: what edgeward writes for itself around the snapshot store
//! survives power cuts and damage. The compile cache on a power-cut disk,
//! damaged artifacts under their final names, the worker's distinct fault
//! for an artifact that does not load, the state directory's lock, and the
//! private directories edgeward creates.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeward_ipc::control::{FaultKind, FromWorker, Init, OnFull, SandboxPlan, ToWorker};
use edgeward_ipc::{frame, PROTOCOL_VERSION};
use edgeward_tests::power_cut::PowerCutDisk;
use edgeward_tests::{bin, guest, module, policy, Gateway, GatewayDir};
use sha2::{Digest, Sha256};

/// A counter that ticks and snapshots, so a running module is busy.
fn counter_policy() -> String {
    policy(
        "counter",
        "[wasi]\nargs = [\"--every\", \"100\"]\n[schedule]\ntick_us = 1000",
    )
}

/// The `.cwasm` files in `cache`.
fn artifacts(cache: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    found.sort();
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Stops a gateway with SIGTERM and checks it exits 0.
fn stop(mut gateway: Gateway) {
    gateway.signal(nix::sys::signal::Signal::SIGTERM);
    let status = gateway.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "log:\n{}",
        gateway.log()
    );
}

/// Waits up to `timeout` for `child` to exit; kills it and panics if not.
fn exit_code_within(child: &mut Child, timeout: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until none of `pids` is alive (they were SIGKILLed).
fn wait_gone(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| edgeward_tests::alive(p)) {
        assert!(Instant::now() < deadline, "killed processes still alive");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes every file of the cache (on the power-cut disk), durably, so
/// that the next start compiles.
fn empty_cache(cache: &Path) {
    for entry in std::fs::read_dir(cache).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::File::open(cache).unwrap().sync_all().unwrap();
}

/// Waits until a temporary file shows up in `cache` (a compiler child
/// writes its artifact there), or, should this poll miss it on a busy
/// machine, until the log says the module was compiled.
fn wait_temp_file(cache: &Path, gateway: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let temp = std::fs::read_dir(cache)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
        if temp || gateway.log().contains("module counter: compiled") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no temporary artifact appeared; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The power goes shortly after a module's first compile, at a different
/// moment each time: on even cuts 0 to ~30 ms after the log says it was
/// compiled (the artifact must then be a cache hit: it was durable before
/// it was used), on odd cuts 0 to ~8 ms after the compiler's temporary
/// file appeared (inside the flushes and the rename: a hit or a new
/// compile). Whatever the disk kept, the next start on the same state dir
/// must bring the module to `running`. `EDGEWARD_CACHE_CUTS` (default 10)
/// sets the number of cuts.
#[test]
fn power_cuts_after_a_first_compile_never_leave_a_module_that_cannot_start() {
    let cuts: u32 = std::env::var("EDGEWARD_CACHE_CUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    let cache = g.state().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mut disk = PowerCutDisk::mount_executable(&cache, 0xcac4e)
        .expect("mount the FUSE power-cut disk (root and /dev/fuse)");
    disk.set_flush_delay(Duration::from_millis(4));
    let mut damaged = 0;
    for cut in 0..cuts {
        empty_cache(&cache);
        let gateway = g.start();
        let delay = if cut % 2 == 0 {
            gateway.wait_log("module counter: compiled", Duration::from_secs(60));
            Duration::from_millis(u64::from(cut / 2) * 7)
        } else {
            wait_temp_file(&cache, &gateway);
            Duration::from_millis(u64::from(cut / 2) * 2)
        };
        std::thread::sleep(delay);
        disk.power_off();
        let processes = gateway.children();
        drop(gateway);
        wait_gone(&processes);
        let report = disk
            .cut()
            .unwrap_or_else(|e| panic!("cut {cut}: power cut: {e}"));
        damaged += u32::from(report.dropped_bytes > 0 || report.entries_undone > 0);

        let gateway = g.start();
        gateway.wait_for(
            Duration::from_secs(60),
            &format!("counter running after cut {cut} ({delay:?}, {report:?})"),
            |s| module(s, "counter")["state"] == "running",
        );
        let log = gateway.log();
        if cut % 2 == 0 {
            // Logged as compiled only once durable: the artifact must be
            // there, whole, under its name.
            assert!(
                log.contains("module counter: compile cache hit")
                    && !log.contains("not a valid artifact"),
                "cut {cut}: the compiled artifact was lost: {log}"
            );
        } else {
            assert!(
                log.contains("module counter: compile cache hit")
                    || log.contains("module counter: compiled"),
                "cut {cut}: {log}"
            );
        }
        stop(gateway);
    }
    eprintln!("{damaged} of {cuts} cuts dropped unflushed data or directory entries");
    assert!(
        damaged > 0,
        "no cut ever dropped anything: nothing was tested"
    );
}

/// The final artifact name of `wasm` in `state`'s compile cache, as the
/// supervisor computes it: `<sha256>-<engine fingerprint>.cwasm`.
fn artifact_name(state: &Path, wasm: &Path) -> PathBuf {
    let sha = hex::encode(Sha256::digest(std::fs::read(wasm).unwrap()));
    let out = Command::new(bin("edgeward-worker"))
        .arg("fingerprint")
        .output()
        .unwrap();
    assert!(out.status.success());
    let fingerprint = String::from_utf8(out.stdout).unwrap();
    state
        .join("cache")
        .join(format!("{sha}-{}.cwasm", fingerprint.trim()))
}

/// A 0-byte artifact made by hand under the final name (what a power cut
/// used to leave), then a truncated one: each is reported, deleted and
/// compiled again, and the module runs.
#[test]
fn an_empty_or_truncated_artifact_is_deleted_compiled_again_and_the_module_runs() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    let artifact = artifact_name(&g.state(), &guest("counter"));
    std::fs::create_dir_all(artifact.parent().unwrap()).unwrap();
    std::fs::write(&artifact, b"").unwrap();
    let gateway = g.start();
    gateway.wait_running(&["counter"], Duration::from_secs(60));
    let log = gateway.log();
    assert!(
        log.contains(&format!(
            "compile cache: {} is not a valid artifact (empty file); deleted it, compiling again",
            artifact.display()
        )),
        "{log}"
    );
    assert!(log.contains("module counter: compiled"), "{log}");
    stop(gateway);
    let whole = std::fs::metadata(&artifact).unwrap().len();
    assert!(whole > 4096, "recompiled artifact of {whole} bytes");
    assert_eq!(
        artifacts(&g.state().join("cache")),
        std::slice::from_ref(&artifact)
    );

    // Half of it, as a disk that wrote back only part of it may leave.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&artifact)
        .unwrap()
        .set_len(whole / 2)
        .unwrap();
    let gateway = g.start();
    gateway.wait_running(&["counter"], Duration::from_secs(60));
    let log = gateway.log();
    assert!(
        log.contains(&format!(
            "compile cache: {} is not a valid artifact (truncated: {} bytes, the section headers end at byte {whole})",
            artifact.display(),
            whole / 2
        )),
        "{log}"
    );
    assert!(log.contains("module counter: compiled"), "{log}");
    stop(gateway);
    assert_eq!(std::fs::metadata(&artifact).unwrap().len(), whole);

    // Whole again: a plain hit.
    let gateway = g.start();
    gateway.wait_running(&["counter"], Duration::from_secs(60));
    let log = gateway.log();
    assert!(log.contains("module counter: compile cache hit"), "{log}");
    assert!(!log.contains("not a valid artifact"), "{log}");
}

/// An `Init` for `artifact` with no grants and no sandbox steps that need
/// a supervisor (the artifact is loaded before any of them).
fn init_for(artifact: &Path) -> Init {
    Init {
        protocol_version: PROTOCOL_VERSION,
        module: "counter".into(),
        artifact: artifact.display().to_string(),
        args: vec![],
        env: vec![],
        dirs: vec![],
        memory_limit_bytes: 32 << 20,
        tick_us: 0,
        call_budget_ms: 100,
        sandbox: SandboxPlan {
            cgroup_procs: vec![],
            identity: None,
            max_fds: 64,
            max_threads: 8,
        },
        channels: vec![],
        on_full: OnFull::Block,
        max_message_bytes: 1024,
        spin_us: 0,
        restore: None,
        stdin: false,
        connector: None,
    }
}

/// A real `edgeward-worker serve`, driven as the supervisor drives it, is
/// given an artifact that cannot be loaded: it reports a fault of its own
/// kind (`Artifact`, not `Load`), so the supervisor can tell a bad cache
/// entry from a bad module.
#[test]
fn a_worker_reports_an_artifact_that_does_not_load_as_an_artifact_fault() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.cwasm");
    let out = Command::new(bin("edgeward-worker"))
        .arg("compile")
        .arg(guest("counter"))
        .arg(&whole)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bytes = std::fs::read(&whole).unwrap();
    let empty = dir.path().join("empty.cwasm");
    std::fs::write(&empty, b"").unwrap();
    let truncated = dir.path().join("truncated.cwasm");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    for artifact in [empty, truncated] {
        let (ours, theirs) = frame::seqpacket_pair().unwrap();
        let mut worker =
            edgeward_tests::command_with_fds(&bin("edgeward-worker"), &[theirs.as_raw_fd()])
                .arg("serve")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
        drop(theirs);
        let (hello, _) = frame::recv::<FromWorker>(&ours).unwrap();
        assert!(matches!(hello, FromWorker::Hello { .. }), "{hello:?}");
        frame::send(&ours, &ToWorker::Init(Box::new(init_for(&artifact))), &[]).unwrap();
        let (reply, _) = frame::recv::<FromWorker>(&ours).unwrap();
        let FromWorker::Fault(fault) = reply else {
            panic!("{}: expected a fault, got {reply:?}", artifact.display());
        };
        assert_eq!(fault.kind, FaultKind::Artifact, "{fault:?}");
        assert!(
            fault.message.contains(&format!(
                "cannot load precompiled artifact {}",
                artifact.display()
            )),
            "{fault:?}"
        );
        assert_eq!(
            exit_code_within(&mut worker, Duration::from_secs(10), "worker"),
            1
        );
    }
}

/// `edgeward run` on `g`'s policies and state with another control socket;
/// stdout and stderr go to `log`.
fn run_with_control(g: &GatewayDir, control: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(bin("edgeward"))
        .arg("run")
        .arg("--policies")
        .arg(g.policies())
        .arg("--state")
        .arg(g.state())
        .arg("--control")
        .arg(control)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A second `edgeward run` on the same state dir (with another control
/// socket) is refused with a message naming the first one's pid, and
/// leaves the first gateway's workers alone.
#[test]
fn a_second_supervisor_on_the_same_state_dir_is_refused_and_the_first_keeps_its_workers() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    let gateway = g.start();
    let status = gateway.wait_running(&["counter"], Duration::from_secs(60));
    let pid = module(&status, "counter")["pid"].as_i64().unwrap();

    let other = g.dir.path().join("other.sock");
    let log = g.dir.path().join("second.log");
    let mut second = run_with_control(&g, &other, &log);
    let code = exit_code_within(&mut second, Duration::from_secs(10), "the second edgeward");
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(&format!(
            "state directory {} is in use by another edgeward (pid {}); stop it first or pass --state",
            g.state().display(),
            gateway.pid()
        )),
        "{said}"
    );
    assert!(!other.exists(), "the refused supervisor left its socket");
    // The first gateway's worker was not touched.
    std::thread::sleep(Duration::from_millis(300));
    let status = gateway.try_status().expect("the first gateway answers");
    let counter = module(&status, "counter");
    assert_eq!(counter["state"], "running");
    assert_eq!(counter["pid"].as_i64(), Some(pid), "the worker changed");
    assert_eq!(counter["restarts"].as_u64(), Some(0));
    assert!(!gateway.log().contains("left tasks"), "{}", gateway.log());
}

/// The directories edgeward creates for its control socket and its state
/// are private (0700); a directory it did not create keeps its mode; a
/// socket directory that cannot be made is an error naming it and the fix.
#[test]
fn directories_edgeward_creates_are_private_and_a_bad_control_path_says_what_to_do() {
    let g = GatewayDir::new();
    g.add_policy("counter", &counter_policy());
    let operator = g.dir.path().join("run");
    std::fs::create_dir(&operator).unwrap();
    std::fs::set_permissions(&operator, std::fs::Permissions::from_mode(0o755)).unwrap();
    let control = operator.join("edgeward/sockets/control.sock");
    let log = g.dir.path().join("run.log");
    let mut child = run_with_control(&g, &control, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Up once it supervises (the snapshot store is opened just before).
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("supervising")
    {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "edgeward did not start; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(control.exists(), "no control socket");
    for created in [
        operator.join("edgeward"),
        operator.join("edgeward/sockets"),
        g.state(),
        g.state().join("cache"),
        g.state().join("snapshots"),
    ] {
        assert_eq!(mode(&created), 0o700, "{}", created.display());
    }
    assert_eq!(mode(&operator), 0o755, "the operator's directory changed");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        exit_code_within(&mut child, Duration::from_secs(10), "edgeward"),
        0
    );

    // A file where a directory should be.
    let file = g.dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let mut child = run_with_control(&g, &file.join("sub/control.sock"), &log);
    assert_eq!(
        exit_code_within(&mut child, Duration::from_secs(10), "edgeward"),
        1
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains(&format!(
            "cannot create the control socket's directory {}: Not a directory (os error 20); \
             pass --control PATH or set EDGEWARD_CONTROL",
            file.join("sub").display()
        )),
        "{said}"
    );
}
