//! End to end: `edgeward exec` runs one ordinary WASI program once, in a
//! worker's sandbox, the way `wasmtime run` would: args, env, stdio, dirs,
//! clocks, random and exit codes pass through; what is not granted is
//! denied; a granted dir is written as its owner without chowning it; a
//! wasm that does not validate, or a reactor, gets a clear error.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgeward_tests::{bin, children_of, guest};

/// `edgeward exec` with a state dir of its own and these arguments.
fn exec(state: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin("edgeward"));
    command
        .arg("exec")
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("EDGEWARD_STATE");
    command
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `edgeward exec` with `input` on its stdin; returns its output and
/// both texts together, for assertion messages.
fn run_with_input(command: &mut Command, input: &[u8]) -> (Output, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    (out, format!("{stdout}\n--- stderr:\n{stderr}"))
}

/// `exec` of the probe waiting for a line on its stdin, once it says so.
fn waiting_probe(state: &Path) -> Child {
    let mut child = exec(state, &[&probe(), "--", "wait-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "waiting: ok");
    child
}

fn probe() -> String {
    guest("exec_probe").to_string_lossy().into_owned()
}

#[test]
fn args_env_stdio_clocks_random_and_exit_codes_pass_through() {
    let state = tempfile::tempdir().unwrap();
    let (out, all) = run_with_input(
        &mut exec(
            state.path(),
            &[
                &probe(),
                "--env",
                "GREETING=hello there",
                "--",
                "args",
                "env:GREETING",
                "env:PATH",
                "stdin",
                "stderr:to stderr",
                "clocks",
                "random",
                "exit:7",
            ],
        ),
        b"from the terminal\n",
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(7), "{all}");
    assert!(
        stdout.contains(r#"args: ok ["exec_probe", "args", "env:GREETING""#),
        "{all}"
    );
    assert!(
        stdout.contains(r#"env: ok GREETING=Some("hello there")"#),
        "{all}"
    );
    // The host's environment is not the module's.
    assert!(stdout.contains("env: ok PATH=None"), "{all}");
    assert!(stdout.contains("stdin: ok from the terminal"), "{all}");
    assert!(stdout.contains("clocks: ok"), "{all}");
    assert!(stdout.contains("random: ok"), "{all}");
    assert!(stderr.contains("to stderr"), "{all}");

    // Exit 0 when _start returns; the same cache serves the second run.
    let out = exec(state.path(), &[&probe(), "--", "args"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[test]
fn granted_dirs_are_used_as_their_owner_and_nothing_else_is_reachable() {
    let state = tempfile::tempdir().unwrap();
    let top = tempfile::tempdir().unwrap();
    let (rw, ro) = (top.path().join("rw"), top.path().join("ro"));
    let owner = (4242, 4343);
    for dir in [&rw, &ro] {
        std::fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let input = ro.join("input.txt");
    std::fs::write(&input, "only for its owner").unwrap();
    std::os::unix::fs::chown(&input, Some(owner.0), Some(owner.1)).unwrap();
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before: Vec<(u32, u32, u32)> = [&rw, &ro, &input]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap();
            (m.uid(), m.gid(), m.mode())
        })
        .collect();

    let out = exec(
        state.path(),
        &[
            "--dir",
            &format!("{}:/rw", rw.display()),
            "--dir",
            &format!("{}:/ro:ro", ro.display()),
            &probe(),
            "--",
            "read:/ro/input.txt",
            "write:/rw/out.txt",
            "ls:/rw",
            "write:/ro/new.txt",
            "read:/etc/passwd",
            "read:/ro/../rw/out.txt",
        ],
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}\n--- stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        stdout.contains("read:/ro/input.txt: ok only for its owner"),
        "{all}"
    );
    assert!(stdout.contains("write:/rw/out.txt: ok"), "{all}");
    assert!(stdout.contains("ls:/rw: ok out.txt"), "{all}");
    assert!(stdout.contains("write:/ro/new.txt: denied"), "{all}");
    assert!(stdout.contains("read:/etc/passwd: denied"), "{all}");
    assert!(stdout.contains("read:/ro/../rw/out.txt: denied"), "{all}");

    // What the module made belongs to the dir's owner; nothing of the
    // user's was chowned or chmodded.
    let made = std::fs::metadata(rw.join("out.txt")).unwrap();
    assert_eq!((made.uid(), made.gid()), owner);
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).unwrap(),
        "written by exec-probe"
    );
    let after: Vec<(u32, u32, u32)> = [&rw, &ro, &input]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap();
            (m.uid(), m.gid(), m.mode())
        })
        .collect();
    assert_eq!(before, after);
    assert!(!ro.join("new.txt").exists());
}

#[test]
fn the_module_runs_in_a_workers_sandbox_with_its_own_uid_and_cgroup() {
    let state = tempfile::tempdir().unwrap();
    let mut child = waiting_probe(state.path());
    let exec_pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    let worker = loop {
        if let Some(&pid) = children_of(exec_pid).first() {
            break pid;
        }
        assert!(Instant::now() < deadline, "no worker under edgeward exec");
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    // seccomp filter, no new privileges, no capabilities, a uid of its own.
    assert_eq!(field("Seccomp"), "2", "{status}");
    assert_eq!(field("NoNewPrivs"), "1", "{status}");
    assert_eq!(field("CapEff"), "0000000000000000", "{status}");
    assert_eq!(field("CapPrm"), "0000000000000000", "{status}");
    let uid: u32 = field("Uid").parse().unwrap();
    assert!(uid >= 300_000 + 1024 * 65536, "uid {uid}");
    // Its own cgroup, named after the run, and its own mount and network
    // namespaces.
    let cgroups = std::fs::read_to_string(format!("/proc/{worker}/cgroup")).unwrap();
    assert!(cgroups.contains(&format!("/exec-{exec_pid}")), "{cgroups}");
    for ns in ["mnt", "net"] {
        let theirs = std::fs::read_link(format!("/proc/{worker}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "{ns} namespace shared");
    }
    // A run killed with SIGKILL leaves its cgroup behind: the next run
    // removes it (this one's sibling, named after a pid that is gone).
    let own = cgroups
        .lines()
        .find_map(|l| l.split_once(":pids:").map(|(_, path)| path.to_string()))
        .expect("a pids cgroup");
    let stale_pid = (4_000_000..4_194_304)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let stale = Path::new("/sys/fs/cgroup/pids")
        .join(own.trim_start_matches('/'))
        .with_file_name(format!("exec-{stale_pid}"));
    std::fs::create_dir(&stale).unwrap();
    // Its stdin is ours: a line ends the wait, and the run ends with 0.
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let out = exec(state.path(), &[&probe(), "--", "args"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(!stale.exists(), "{} left behind", stale.display());
    // The run's cgroup is gone with it.
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert!(!mine.is_empty());
    let leftovers = Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "4", "-name"])
        .arg(format!("exec-{exec_pid}"))
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "cgroup left behind: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}

#[test]
fn traps_invalid_modules_reactors_and_bad_arguments_get_clear_errors() {
    let state = tempfile::tempdir().unwrap();
    let out = exec(state.path(), &[&probe(), "--", "trap"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(134), "{stderr}");
    assert!(stderr.contains("trap"), "{stderr}");

    let bad = state.path().join("broken.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0this is not a module").unwrap();
    let out = exec(state.path(), &[bad.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("broken.wasm"), "{stderr}");
    assert!(stderr.contains("does not compile"), "{stderr}");

    let reactor = guest("counter");
    let out = exec(state.path(), &[reactor.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("is a reactor"), "{stderr}");

    for (args, needle) in [
        (vec!["--env", "NOEQUALS", &probe()], "--env NOEQUALS"),
        (
            vec!["--dir", "/nonexistent/dir:/d", &probe()],
            "/nonexistent/dir",
        ),
        (vec!["/nonexistent/module.wasm"], "/nonexistent/module.wasm"),
    ] {
        let out = exec(state.path(), &args).output().unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_policy_gives_limits_and_grants_and_its_errors_name_file_and_line() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "from the policy's dir").unwrap();
    let policy = dir.path().join("probe.toml");
    std::fs::write(
        &policy,
        format!(
            "[module]\nwasm = \"{}\"\n[wasi]\nargs = [\"read:/data/in.txt\", \"env:MODE\"]\nenv = {{ MODE = \"policy\" }}\ndirs = [{{ host = \"data\", guest = \"/data\", mode = \"ro\" }}]\n",
            probe()
        ),
    )
    .unwrap();
    let out = exec(
        state.path(),
        &["--policy", policy.to_str().unwrap(), &probe()],
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("read:/data/in.txt: ok from the policy's dir"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"env: ok MODE=Some("policy")"#),
        "{stdout}"
    );

    std::fs::write(&policy, "[module]\nwasm = 7\n").unwrap();
    let out = exec(
        state.path(),
        &["--policy", policy.to_str().unwrap(), &probe()],
    )
    .output()
    .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2:", policy.display())),
        "{stderr}"
    );
}

#[test]
fn an_ordinary_go_program_runs_with_its_goroutines_timers_files_and_exit_code() {
    let state = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let go = guest("exec_probe_go");
    let (out, all) = run_with_input(
        &mut exec(
            state.path(),
            &[
                "--dir",
                &format!("{}:/out", out_dir.path().display()),
                "--env",
                "GREETING=hi",
                go.to_str().unwrap(),
                "--",
                "a",
                "b c",
            ],
        ),
        b"line one\n",
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(42), "{all}");
    for line in [
        r#"go args: ["a" "b c"]"#,
        r#"go env: GREETING="hi""#,
        "go stdin: line one",
        "go ticks: 3",
        "go write: ok",
        "go read /etc/passwd: denied",
    ] {
        assert!(stdout.contains(line), "{line}: {all}");
    }
    assert!(stderr.contains("go stderr: hello"), "{all}");
    assert_eq!(
        std::fs::read_to_string(out_dir.path().join("from-go.txt")).unwrap(),
        "written by Go"
    );
}

#[test]
fn a_signal_to_exec_reaches_the_module_and_sets_the_exit_code() {
    let state = tempfile::tempdir().unwrap();
    let mut child = waiting_probe(state.path());
    // Child::wait closes stdin first, and the probe ends (exit 0) at EOF:
    // hold stdin open so that only the signal can end it.
    let stdin = child.stdin.take();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(128 + 15));
}
