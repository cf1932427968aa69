//! End to end: edgeward as PID 1 of a real OCI container, run by `crun`
//! (Debian's package), from a root filesystem laid out as
//! `packaging/Containerfile` builds its `FROM scratch` image: the static
//! binaries in `/usr/bin`, the example policies and modules in
//! `/opt/edgeward`, the state and control volumes at `/var/lib/edgeward` and
//! `/run/edgeward`, `edgeward run` as the entrypoint. For the test only, a
//! static busybox sits at `/test/busybox` to make orphans from inside.
//!
//! The container gets a cgroup namespace and a writable cgroup mount (the
//! delegation edgeward's cgroup driver needs to make a cgroup per module
//! inside the container's own) and exactly the capabilities of
//! [`CAPABILITIES`], each with its reason (docs/operations.md, "Running in a
//! container"). What is checked, as a user sees it: the modules run with
//! every sandbox layer and their limits in cgroups below the container's;
//! `edgeward status` on the host answers through the control socket on the
//! volume; orphans made inside are adopted and reaped by edgeward; `crun
//! kill ID TERM` stops it with final snapshots and `crun run` exits 0; and
//! the next container on the same state volume goes on counting where the
//! last one stopped.
//!
//! Binaries: the static ones from `EDGEWARD_STATIC_DIR`, else
//! `$EDGEWARD_CACHE/static/x86_64` (`scripts/build-static x86_64`); a
//! `FROM scratch` image has no C library, so a dynamically linked binary is
//! refused with that message. The host side (`edgeward status`) uses the
//! release binaries, as the other tests do.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use edgeward_tests::{cli_on, guest, last_number_after, repo_root, wait_child};

/// Start-up, compiling included, on a cold two-core CI machine.
const STARTUP: Duration = Duration::from_secs(60);

/// The example gateway the image ships (`policies/` of the repo, unchanged).
const IMAGE_MODULES: [&str; 4] = ["alarm", "counter", "filter", "sensor"];

/// The image's ENTRYPOINT, ENV and VOLUMEs, as packaging/Containerfile
/// writes them (pinned by
/// [`the_bundle_has_the_layout_of_packaging_containerfile`]).
const ENTRYPOINT: [&str; 2] = ["/usr/bin/edgeward", "run"];
const ENV: [&str; 2] = ["PATH=/usr/bin", "EDGEWARD_POLICIES=/opt/edgeward/policies"];
const VOLUMES: [&str; 2] = ["/var/lib/edgeward", "/run/edgeward"];
/// The binaries `COPY --from=static` puts in `/usr/bin`.
const BINARIES: [&str; 3] = ["edgeward", "edgeward-worker", "edgeward-connector"];

/// Each module's memory limit in the image: the examples' `memory_mib = 16`
/// plus edgeward's default runtime overhead of 8 MiB.
const IMAGE_MEMORY_LIMIT: u64 = 24 << 20;

/// The capabilities edgeward needs as a container's PID 1, and why. With
/// them every sandbox layer is in force (no `degraded` layer in `status`).
/// Found by dropping each of the runtime's defaults and
/// `CAP_SYS_ADMIN` in turn; none of the others (`CAP_FOWNER`,
/// `CAP_FSETID`, `CAP_MKNOD`, `CAP_NET_*`, `CAP_SYS_CHROOT`,
/// `CAP_AUDIT_WRITE`, `CAP_SETFCAP`, `CAP_DAC_READ_SEARCH`, …) changed what
/// a gateway of modules, rw and ro dirs and an MQTT connector does.
const CAPABILITIES: [(&str, &str); 8] = [
    (
        "CAP_SETUID",
        "each worker switches to its module's own uid (sandbox step 4); without it every module fails at `setresuid`",
    ),
    (
        "CAP_SETGID",
        "and to its own gid with no supplementary groups; without it every module fails at `setgroups`",
    ),
    (
        "CAP_SETPCAP",
        "the fork server and every worker empty their bounding set; without it the fork server cannot start and `edgeward run` exits 1",
    ),
    (
        "CAP_SYS_ADMIN",
        "new mount, IPC and network namespaces for the workers (step 2) and a connector's /etc/hosts bind; without it they are reported as a missing layer and modules keep the container's network",
    ),
    (
        "CAP_KILL",
        "SIGKILL to workers that run under other uids (the stop timeout, the watchdog, a protocol violation); without it a worker that ignores Stop is never killed and the stop never ends",
    ),
    (
        "CAP_CHOWN",
        "rw dirs and a connector's state dir are given to the module's uid; without it those modules fail to start",
    ),
    (
        "CAP_DAC_OVERRIDE",
        "the supervisor writes into a connector's state dir it gave away, and opens granted dirs root does not own; without it connectors fail to start",
    ),
    (
        "CAP_SYS_PTRACE",
        "the supervisor reads the address a connector passes to `connect` from the connector's memory (`process_vm_readv`, another uid) to decide its grant; without it every connection of every connector is refused (EPERM)",
    ),
];

/// The static binary `name`, checked to need no C library.
///
/// # Panics
/// If it is missing or dynamically linked: the message says how to build it.
fn static_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGEWARD_STATIC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("EDGEWARD_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/edgeward")
                })
                .join("static/x86_64")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "static binary {} not found: run scripts/build-static x86_64 (or set EDGEWARD_STATIC_DIR)",
        path.display()
    );
    assert!(
        !has_interpreter(&path),
        "{} is dynamically linked (it names an ELF interpreter), so it cannot run in a FROM scratch image: run scripts/build-static x86_64",
        path.display()
    );
    path
}

/// Whether the ELF file at `path` has a `PT_INTERP` program header, i.e.
/// needs a dynamic loader and C library at run time.
fn has_interpreter(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let mut file = std::fs::File::open(path).expect("open the binary");
    let mut header = [0u8; 64];
    file.read_exact(&mut header).expect("read the ELF header");
    assert!(
        header.starts_with(b"\x7fELF") && header[4] == 2 && header[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let phoff = u64::from_le_bytes(header[0x20..0x28].try_into().expect("8 bytes"));
    let entry_size = usize::from(u16_at(&header, 0x36));
    let entries = usize::from(u16_at(&header, 0x38));
    let mut table = vec![0u8; entry_size * entries];
    file.seek(SeekFrom::Start(phoff)).expect("seek");
    file.read_exact(&mut table)
        .expect("read the program headers");
    table
        .chunks(entry_size)
        .any(|entry| u32::from_le_bytes(entry[0..4].try_into().expect("4 bytes")) == PT_INTERP)
}

/// Debian's `crun`, checked once.
fn crun_path() -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("crun"))
        .find(|p| p.is_file());
    found.expect("crun not found: apt-get install crun")
}

/// `crun --root ROOT ARGS…`. On a hybrid host whose cgroup v2 hierarchy
/// holds a controller (this CI box: `hugetlb`, which is mounted on no v1
/// hierarchy), crun 1.8 refuses every container ("cgroups in hybrid mode
/// not supported, drop all controllers from cgroupv2"); there, crun runs
/// in a private mount namespace of its own without that hierarchy, so it
/// sees the pure v1 host edgeward's driver uses anyway. The container and
/// edgeward are not changed by this.
fn crun(root: &Path) -> Command {
    let mut command = Command::new(crun_path());
    command.arg("--root").arg(root);
    let unified =
        std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").unwrap_or_default();
    if !unified.trim().is_empty() {
        // SAFETY: the closure runs in the child between fork and exec and
        // makes only raw system calls (unshare, mount, umount2), which are
        // async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(leave_the_unified_hierarchy);
        }
    }
    command
}

/// In a private mount namespace, detaches `/sys/fs/cgroup/unified` (see
/// [`crun`]). Runs between fork and exec: raw system calls only.
fn leave_the_unified_hierarchy() -> std::io::Result<()> {
    // SAFETY: unshare takes no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the target is a NUL-terminated literal; the other pointers
    // may be null for a propagation change.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if private != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the path is a NUL-terminated literal.
    if unsafe { libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A container id no other run of any test shares.
fn unique_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "edgeward-test-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A root filesystem with the image's layout, its volumes and crun's state
/// directory, all in one temporary directory.
struct Bundle {
    dir: tempfile::TempDir,
    /// Whether a policy volume replaces the image's example policies.
    own_policies: bool,
}

impl Bundle {
    /// The image as `packaging/Containerfile` builds it, plus the test's busybox.
    fn image() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("edgeward-container-")
            .tempdir()
            .expect("tempdir");
        let bundle = Bundle {
            dir,
            own_policies: false,
        };
        let rootfs = bundle.rootfs();
        let mkdir = |p: &Path| std::fs::create_dir_all(p).expect("mkdir");
        let copy = |from: &Path, to: &Path| {
            mkdir(to.parent().expect("a parent"));
            std::fs::copy(from, to)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
        };
        // COPY --from=static …: the entrypoint and the two binaries it
        // finds beside itself.
        for name in BINARIES {
            copy(&static_binary(name), &rootfs.join("usr/bin").join(name));
        }
        // COPY policies/… and guests/out/…: the repo's example gateway,
        // unchanged (its wasm paths are relative to the policy files).
        for module in IMAGE_MODULES {
            copy(
                &repo_root().join(format!("policies/{module}.toml")),
                &rootfs.join(format!("opt/edgeward/policies/{module}.toml")),
            );
            copy(
                &guest(module),
                &rootfs.join(format!("opt/edgeward/guests/out/{module}.wasm")),
            );
        }
        // VOLUME: the mount points of the state and control volumes.
        for volume in VOLUMES {
            mkdir(&rootfs.join(&volume[1..]));
        }
        // For the test only: a shell to make orphans with.
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file() && !has_interpreter(busybox),
            "a static /bin/busybox is needed: apt-get install busybox-static"
        );
        copy(busybox, &rootfs.join("test/busybox"));
        mkdir(&bundle.state());
        mkdir(&bundle.control());
        mkdir(&bundle.dir.path().join("crun"));
        bundle
    }

    /// The image with its example policies replaced by a policy volume
    /// holding `policies` (name, text), as an operator mounts their own.
    fn with_policies(policies: &[(&str, String)]) -> Bundle {
        let mut bundle = Bundle::image();
        let dir = bundle.dir.path().join("policies");
        std::fs::create_dir(&dir).expect("mkdir policies");
        for (name, text) in policies {
            std::fs::write(dir.join(format!("{name}.toml")), text).expect("write policy");
        }
        bundle.own_policies = true;
        bundle
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The state volume (mounted at `/var/lib/edgeward`).
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The control volume (mounted at `/run/edgeward`).
    fn control(&self) -> PathBuf {
        self.dir.path().join("control")
    }

    /// The control socket, as the host reaches it on the volume.
    fn control_socket(&self) -> PathBuf {
        self.control().join("control.sock")
    }

    fn crun_root(&self) -> PathBuf {
        self.dir.path().join("crun")
    }

    /// The OCI runtime configuration of container `id`.
    fn config(&self, id: &str) -> Value {
        let caps: Vec<&str> = CAPABILITIES.iter().map(|(cap, _)| *cap).collect();
        let namespaces: Vec<Value> = ["pid", "mount", "ipc", "uts", "network", "cgroup"]
            .iter()
            .map(|t| json!({ "type": t }))
            .collect();
        let bind = |source: PathBuf, destination: &str, mode: &str| {
            json!({
                "destination": destination,
                "type": "bind",
                "source": source,
                "options": ["rbind", mode, "nosuid", "nodev"],
            })
        };
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                   "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                   "options": ["nosuid", "noexec", "nodev", "ro"]}),
            // The delegation: with the cgroup namespace below, the
            // container's own cgroup is the root of this mount, read-write,
            // and /proc/self/cgroup says "/", so edgeward makes its module
            // cgroups inside the container's.
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                   "options": ["nosuid", "noexec", "nodev", "relatime", "rw"]}),
            bind(self.state(), VOLUMES[0], "rw"),
            bind(self.control(), VOLUMES[1], "rw"),
        ];
        if self.own_policies {
            mounts.push(bind(
                self.dir.path().join("policies"),
                "/opt/edgeward/policies",
                "ro",
            ));
        }
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                // ENTRYPOINT and ENV of packaging/Containerfile.
                "args": ENTRYPOINT,
                "env": ENV,
                "cwd": "/",
                "capabilities": {
                    "bounding": caps,
                    "effective": caps,
                    "permitted": caps,
                    "inheritable": [],
                    "ambient": [],
                },
                // edgeward needs no privilege from exec: it holds its
                // capabilities already, and its workers set no_new_privs
                // themselves.
                "noNewPrivileges": true,
            },
            "root": {"path": self.rootfs(), "readonly": true},
            "hostname": "edgeward",
            "mounts": mounts,
            "linux": {
                // On the host: /sys/fs/cgroup/<controller>/<id>/…
                "cgroupsPath": format!("/{id}"),
                "namespaces": namespaces,
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                                "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                  "/proc/sysrq-trigger"],
            },
        })
    }

    /// `crun run` of a new container from this bundle, in the foreground
    /// (its exit status is edgeward's), its output in a log.
    fn run(&self) -> Container<'_> {
        let id = unique_id();
        let config_dir = self.dir.path().join(&id);
        std::fs::create_dir(&config_dir).expect("mkdir bundle");
        std::fs::write(
            config_dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config(&id)).expect("json"),
        )
        .expect("write config.json");
        let log_path = self.dir.path().join(format!("{id}.log"));
        let log = std::fs::File::create(&log_path).expect("create log");
        let child = crun(&self.crun_root())
            .arg("run")
            .arg("--bundle")
            .arg(&config_dir)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start crun run");
        Container {
            bundle: self,
            id,
            child,
            log_path,
        }
    }
}

/// A running container. Dropping it deletes it (`crun delete -f`), also
/// when the test panics.
struct Container<'a> {
    bundle: &'a Bundle,
    id: String,
    /// `crun run`.
    child: Child,
    log_path: PathBuf,
}

impl Container<'_> {
    /// What edgeward (and crun) printed so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Panics with the log if the container has ended.
    fn assert_alive(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "the container ended ({status}) while waiting for {what}; its log:\n{}",
                self.log()
            );
        }
    }

    /// The host's `edgeward ARGS --control <the volume's socket>`: exit
    /// code, stdout, stderr.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        cli_on(&self.bundle.control_socket(), args)
    }

    /// `edgeward status --json`, when it answers.
    fn status(&self) -> Option<Value> {
        let (code, stdout, _) = self.cli(&["status", "--json"]);
        (code == 0).then(|| serde_json::from_str(&stdout).ok())?
    }

    /// Waits until `status` shows every one of `modules` running.
    fn wait_running(&mut self, modules: &[&str]) -> Value {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.status() {
                let running = |m: &&str| {
                    status["modules"].as_array().is_some_and(|all| {
                        all.iter()
                            .any(|s| s["name"] == *m && s["state"] == "running")
                    })
                };
                if modules.iter().all(running) {
                    return status;
                }
            }
            self.assert_alive("its modules to run");
            assert!(
                Instant::now() < deadline,
                "{modules:?} not running within {STARTUP:?}; last status: {:?}; log:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for `needle` in the log and returns the number after its last
    /// occurrence.
    fn wait_number_after(&mut self, needle: &str, at_least: u64) -> u64 {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(n) = last_number_after(&self.log(), needle).filter(|&n| n >= at_least) {
                return n;
            }
            self.assert_alive(needle);
            assert!(
                Instant::now() < deadline,
                "the log never showed {needle:?} with a number >= {at_least} within {STARTUP:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host pid of the container's init process, from `crun state`.
    fn init_pid(&self) -> i32 {
        let out = crun(&self.bundle.crun_root())
            .arg("state")
            .arg(&self.id)
            .output()
            .expect("run crun state");
        let state: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "crun state {}: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        state["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_else(|| panic!("no pid in crun state {state}"))
    }

    /// `crun exec` of `args` in the container.
    fn exec(&self, args: &[&str]) -> Output {
        crun(&self.bundle.crun_root())
            .arg("exec")
            .arg(&self.id)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run crun exec")
    }

    /// `crun kill ID SIGNAL`.
    fn kill(&self, signal: &str) {
        let out = crun(&self.bundle.crun_root())
            .args(["kill", &self.id, signal])
            .output()
            .expect("run crun kill");
        assert!(
            out.status.success(),
            "crun kill {} {signal}: {}",
            self.id,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits for `crun run` to exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_child(&mut self.child, timeout).unwrap_or_else(|| {
            panic!(
                "the container still runs {timeout:?} after it was told to stop; log:\n{}",
                self.log()
            )
        })
    }

    /// The directory of module `module`'s cgroup in `controller`, as the
    /// host sees it: below the container's cgroup (`/<id>`), in edgeward's
    /// group (`edgeward-<hash of its state dir>`).
    fn module_cgroup(&self, controller: &str, module: &str) -> PathBuf {
        let container = Path::new("/sys/fs/cgroup").join(controller).join(&self.id);
        let group = std::fs::read_dir(&container)
            .unwrap_or_else(|e| panic!("the container's cgroup {}: {e}", container.display()))
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("edgeward-"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no edgeward-* group in the container's cgroup {}; log:\n{}",
                    container.display(),
                    self.log()
                )
            });
        group.join(module)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = crun(&self.bundle.crun_root())
            .args(["delete", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The foreground `crun run` ends with its container.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The pid namespace pids of `pid` (`NSpid:` of /proc/PID/status, outermost
/// first).
fn ns_pids(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The state letter and parent of `pid`, from /proc/PID/stat.
fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 2..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Every pid in /proc.
fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The policies of the tests that stop and start again: a counter that
/// ticks every 10 ms, logs every 10 ticks and takes a periodic snapshot
/// only once a minute, so what the next run restores is the final snapshot
/// of the stop; and the image's sensor beside it. Both name their wasm as
/// the image's policies do, relative to the policy dir it is mounted on.
fn counting_policies() -> Vec<(&'static str, String)> {
    vec![
        (
            "counter",
            "[module]\nwasm = \"../guests/out/counter.wasm\"\n\
             [wasi]\nargs = [\"--every\", \"10\"]\n\
             [schedule]\ntick_us = 10000\n\
             [snapshot]\ninterval_ms = 60000\n"
                .into(),
        ),
        (
            "sensor",
            std::fs::read_to_string(repo_root().join("policies/sensor.toml"))
                .expect("policies/sensor.toml"),
        ),
    ]
}

#[test]
fn the_image_runs_its_modules_as_pid_1_with_every_layer_and_their_cgroups_inside_the_container() {
    let bundle = Bundle::image();
    let mut container = bundle.run();
    let status = container.wait_running(&IMAGE_MODULES);

    // edgeward is the container's PID 1.
    let init = container.init_pid();
    assert_eq!(
        ns_pids(init).last().map(String::as_str),
        Some("1"),
        "the container's init is not PID 1 in its namespace"
    );
    let comm = std::fs::read_to_string(format!("/proc/{init}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "edgeward",
        "the container's PID 1 is not edgeward"
    );

    // Every sandbox layer is in force: no warning, no degraded module.
    assert_eq!(
        status["warnings"],
        json!([]),
        "warnings in the container; log:\n{}",
        container.log()
    );
    for module in status["modules"].as_array().expect("modules") {
        assert_eq!(
            module["degraded"],
            json!([]),
            "module {} runs with a layer missing; log:\n{}",
            module["name"],
            container.log()
        );
    }
    let log = container.log();
    assert!(
        log.contains("edgeward: sandbox: cgroup v1 (memory /sys/fs/cgroup/memory/edgeward-"),
        "{log}"
    );

    // Each module's limits are in its own cgroup, made inside the
    // container's delegated cgroup, and its worker is in it.
    for module in IMAGE_MODULES {
        let memory = container.module_cgroup("memory", module);
        let limit = std::fs::read_to_string(memory.join("memory.limit_in_bytes"))
            .unwrap_or_else(|e| panic!("{}: {e}", memory.display()));
        assert_eq!(
            limit.trim().parse::<u64>().ok(),
            Some(IMAGE_MEMORY_LIMIT),
            "module {module}'s memory limit"
        );
        let pids = container.module_cgroup("pids", module);
        let max = std::fs::read_to_string(pids.join("pids.max")).unwrap_or_default();
        assert!(
            max.trim().parse::<u32>().is_ok(),
            "module {module}'s pids.max is {max:?}"
        );
        let members = std::fs::read_to_string(memory.join("cgroup.procs")).unwrap_or_default();
        assert!(
            !members.trim().is_empty(),
            "no worker in module {module}'s cgroup {}",
            memory.display()
        );
    }
}

#[test]
fn edgeward_status_on_the_host_answers_through_the_control_socket_on_the_volume() {
    let bundle = Bundle::image();
    let mut container = bundle.run();
    container.wait_running(&IMAGE_MODULES);

    let (code, table, stderr) = container.cli(&["status"]);
    assert_eq!(code, 0, "edgeward status: {stderr}");
    for module in IMAGE_MODULES {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(module) && l.contains("running")),
            "no running row for {module} in:\n{table}"
        );
    }
    // A command that acts, through the same socket: the alarm module takes
    // a snapshot now, durable on the state volume.
    let (code, stdout, stderr) = container.cli(&["snapshot", "alarm"]);
    assert_eq!(code, 0, "edgeward snapshot alarm: {stderr}");
    assert!(
        stdout.contains("alarm: snapshot epoch ") && stdout.contains(" is durable"),
        "{stdout}"
    );
}

/// The script each orphan runs: it waits for the test's signal, a file on
/// the control volume, so it is certainly adopted before it ends.
const ORPHAN: &str =
    "while [ ! -e /run/edgeward/release-orphans ]; do /test/busybox sleep 0.05; done";

/// How many orphans the test makes.
const ORPHANS: usize = 20;

#[test]
fn orphans_made_in_the_container_are_adopted_and_reaped_by_edgeward_as_pid_1() {
    let bundle = Bundle::image();
    let mut container = bundle.run();
    container.wait_running(&IMAGE_MODULES);
    let edgeward = container.init_pid();

    // A shell exec'd into the container starts each orphan from a subshell
    // that exits at once; the shell exits too. The orphans must not keep
    // crun exec's output pipes open, or `exec` would wait for them. Their parent gone, the
    // kernel gives them to the PID 1 of their namespace: edgeward.
    let script = format!(
        "i=0; while [ $i -lt {ORPHANS} ]; do (/test/busybox sh -c '{ORPHAN}' </dev/null >/dev/null 2>&1 &); i=$((i+1)); done"
    );
    let out = container.exec(&["/test/busybox", "sh", "-c", &script]);
    assert!(
        out.status.success(),
        "crun exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let orphans = || -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    c.split(|&b| b == 0)
                        .nth(3)
                        .is_some_and(|arg| arg == ORPHAN.as_bytes())
                })
            })
            .collect()
    };

    // All are adopted by edgeward.
    let deadline = Instant::now() + STARTUP;
    let adopted = loop {
        let found = orphans();
        let parents: Vec<Option<i32>> = found
            .iter()
            .map(|&p| state_and_parent(p).map(|(_, parent)| parent))
            .collect();
        if found.len() == ORPHANS && parents.iter().all(|&p| p == Some(edgeward)) {
            break found;
        }
        container.assert_alive("the orphans");
        assert!(
            Instant::now() < deadline,
            "{} of {ORPHANS} orphans found, parents {parents:?} (edgeward is {edgeward}); log:\n{}",
            found.len(),
            container.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    // Released, they exit; none stays a zombie under edgeward.
    std::fs::write(bundle.control().join("release-orphans"), b"").expect("release");
    let deadline = Instant::now() + STARTUP;
    loop {
        let left: Vec<(i32, char)> = adopted
            .iter()
            .filter_map(|&pid| {
                state_and_parent(pid)
                    .filter(|&(_, parent)| parent == edgeward)
                    .map(|(state, _)| (pid, state))
            })
            .collect();
        if left.is_empty() {
            break;
        }
        container.assert_alive("the orphans to be reaped");
        assert!(
            Instant::now() < deadline,
            "orphans still under edgeward (pid, state): {left:?}; log:\n{}",
            container.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // As a user inside sees it: no zombie in the container.
    let ps = container.exec(&["/test/busybox", "ps", "-o", "pid,stat,comm"]);
    let table = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps.status.success(),
        "ps: {}",
        String::from_utf8_lossy(&ps.stderr)
    );
    assert!(
        !table.lines().skip(1).any(|l| l
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('Z'))),
        "a zombie in the container:\n{table}"
    );
    // And edgeward still supervises.
    container.wait_running(&IMAGE_MODULES);
}

#[test]
fn crun_kill_term_stops_it_with_final_snapshots_and_crun_run_exits_0() {
    let bundle = Bundle::with_policies(&counting_policies());
    let mut container = bundle.run();
    container.wait_running(&["counter", "sensor"]);
    container.wait_number_after("[counter] info: ticks=", 10);

    container.kill("TERM");
    let status = container.wait_exit(STARTUP);
    let log = container.log();
    assert_eq!(
        status.code(),
        Some(0),
        "crun run's exit status; log:\n{log}"
    );
    assert!(
        log.contains("edgeward: SIGTERM: stopping all modules"),
        "{log}"
    );
    assert!(
        log.contains("edgeward: all modules stopped; exiting"),
        "{log}"
    );
    assert!(
        !log.contains("did not stop within the stop timeout"),
        "a module had to be killed:\n{log}"
    );
    // The control socket is gone from the volume.
    assert!(
        !bundle.control_socket().exists(),
        "the control socket is still on the volume"
    );
    // The final snapshot round wrote the counter's state to the volume (its
    // periodic snapshot is a minute away).
    let snapshots = bundle.state().join("snapshots");
    let holds_counter = std::fs::read_dir(&snapshots)
        .unwrap_or_else(|e| panic!("{}: {e}", snapshots.display()))
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .any(|bytes| bytes.windows(b"counter".len()).any(|w| w == b"counter"));
    assert!(
        holds_counter,
        "no snapshot of counter in {}; log:\n{log}",
        snapshots.display()
    );
}

#[test]
fn the_next_container_on_the_same_state_volume_counts_on_from_the_final_snapshot() {
    let bundle = Bundle::with_policies(&counting_policies());
    let last = {
        let mut first = bundle.run();
        first.wait_running(&["counter", "sensor"]);
        first.wait_number_after("[counter] info: ticks=", 20);
        first.kill("TERM");
        let status = first.wait_exit(STARTUP);
        assert_eq!(status.code(), Some(0), "{}", first.log());
        last_number_after(&first.log(), "[counter] info: ticks=").expect("a count")
    };

    let mut second = bundle.run();
    second.wait_running(&["counter", "sensor"]);
    // It restores what the first had counted at its stop, at least the last
    // count it logged, and counts on from there.
    let restored = second.wait_number_after("[counter] info: restored ticks=", 0);
    assert!(
        restored >= last,
        "restored ticks={restored}, but the first container had logged ticks={last}; log:\n{}",
        second.log()
    );
    let next = second.wait_number_after("[counter] info: ticks=", restored + 1);
    assert!(next > restored);
    eprintln!("first container counted to at least {last}; the second restored {restored} and counted on to {next}");
}

/// The bundle these tests run is the image `packaging/Containerfile`
/// builds: same entrypoint, environment, volumes, binaries and example
/// gateway. Needs neither crun nor the static binaries.
#[test]
fn the_bundle_has_the_layout_of_packaging_containerfile() {
    let path = repo_root().join("packaging/Containerfile");
    let text = std::fs::read_to_string(&path).expect("read packaging/Containerfile");
    let instructions: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .collect();
    let one = |keyword: &str| -> &str {
        let found: Vec<&str> = instructions
            .iter()
            .filter_map(|line| line.strip_prefix(keyword))
            .map(str::trim)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: one {keyword} expected, found {found:?}",
            path.display()
        );
        found[0]
    };
    assert_eq!(one("FROM "), "scratch", "the image is FROM scratch");
    let entrypoint: Vec<String> =
        serde_json::from_str(one("ENTRYPOINT ")).expect("ENTRYPOINT is a JSON array");
    assert_eq!(entrypoint, ENTRYPOINT, "ENTRYPOINT");
    let env: Vec<&str> = one("ENV ").split_whitespace().collect();
    assert_eq!(env, ENV, "ENV");
    let volumes: Vec<String> =
        serde_json::from_str(one("VOLUME ")).expect("VOLUME is a JSON array");
    assert_eq!(volumes, VOLUMES, "VOLUME");
    let copies: Vec<Vec<&str>> = instructions
        .iter()
        .filter_map(|line| line.strip_prefix("COPY "))
        .map(|rest| rest.split_whitespace().collect())
        .collect();
    let expect_copy = |sources: Vec<String>, destination: &str| {
        let mut wanted: Vec<&str> = sources.iter().map(String::as_str).collect();
        wanted.push(destination);
        assert!(
            copies.contains(&wanted),
            "{}: no `COPY {}` (the test's bundle has it; COPYs: {copies:?})",
            path.display(),
            wanted.join(" ")
        );
    };
    let mut binaries = vec!["--from=static".to_owned()];
    binaries.extend(BINARIES.iter().map(|b| (*b).to_owned()));
    expect_copy(binaries, "/usr/bin/");
    expect_copy(
        IMAGE_MODULES
            .iter()
            .map(|m| format!("policies/{m}.toml"))
            .collect(),
        "/opt/edgeward/policies/",
    );
    expect_copy(
        IMAGE_MODULES
            .iter()
            .map(|m| format!("guests/out/{m}.wasm"))
            .collect(),
        "/opt/edgeward/guests/out/",
    );
    assert_eq!(
        copies.len(),
        3,
        "{}: COPYs beyond the test's bundle: {copies:?}",
        path.display()
    );
}

/// docs/operations.md, "Running in a container", lists exactly
/// [`CAPABILITIES`] with the same reasons: the capabilities these tests
/// give the container are the ones an operator is told to give.
#[test]
fn the_documented_capabilities_are_the_ones_the_container_gets() {
    let path = repo_root().join("docs/operations.md");
    let docs = std::fs::read_to_string(&path).expect("read docs/operations.md");
    let header = "| capability | why |";
    let start = docs
        .find(header)
        .expect("the capability table in docs/operations.md");
    let documented: Vec<(String, String)> = docs[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line
                .trim_matches('|')
                .splitn(2, " | ")
                .map(str::trim)
                .collect();
            (cells[0].trim_matches('`').to_owned(), cells[1].to_owned())
        })
        .collect();
    let ours: Vec<(String, String)> = CAPABILITIES
        .iter()
        .map(|(cap, why)| ((*cap).to_owned(), (*why).to_owned()))
        .collect();
    assert_eq!(
        documented, ours,
        "docs/operations.md's capability table and CAPABILITIES in tests/tests/container.rs differ: change both"
    );
}
