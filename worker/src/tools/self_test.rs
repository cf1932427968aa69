//! `edgeward-worker self-test`: proves the sandbox on this host, for the
//! test suite. For each forbidden system call it forks a child that applies
//! the full runbook and then makes the call. The call must end the child
//! with a seccomp report naming it. One more child checks Landlock: after
//! the sandbox, a granted dir is readable but not writable, and a path
//! outside it cannot be opened although `openat` itself is allowed. Others
//! check that the reporter of denied calls cannot be replaced: installing
//! any SIGSYS handler (or ignoring SIGSYS) is itself denied and reported,
//! and a worker that blocks SIGSYS still dies on a denied call instead of
//! going on.
//!
//! Prints one JSON line per check, `{"check","ok","detail"}`; exits 0 when
//! every check passed.

use std::os::fd::{AsRawFd, OwnedFd};

use edgeward_ipc::control::{DirGrant, FromWorker, SandboxPlan};
use edgeward_ipc::frame;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde::Serialize;

use edgeward_sandbox::arch::Arch;
use edgeward_sandbox::seccomp_allowlist::{forbidden_on, FORBIDDEN};
use edgeward_sandbox::{fds, sigsys, Profile, Runbook};

#[derive(Serialize)]
struct Check {
    check: String,
    ok: bool,
    detail: String,
}

/// Runs every check; returns the exit code.
pub fn run() -> i32 {
    let mut all_ok = true;
    let mut report = |check: Check| {
        all_ok &= check.ok;
        if let Ok(line) = serde_json::to_string(&check) {
            println!("{line}");
        }
    };
    match Arch::native() {
        Some(arch) => {
            for name in forbidden_on(arch) {
                report(forbidden_call(arch, name));
            }
            // Named so the output shows they were left out on purpose.
            for absent in FORBIDDEN.iter().filter(|f| !f.arch.has(arch)) {
                report(Check {
                    check: absent.name.into(),
                    ok: true,
                    detail: format!("not a system call on {}", arch.name()),
                });
            }
        }
        None => report(Check {
            check: "architecture".into(),
            ok: false,
            detail: format!(
                "no seccomp allowlist for {} (x86_64 and aarch64 only)",
                std::env::consts::ARCH
            ),
        }),
    }
    report(process_clone());
    report(sigsys_handler_replaced());
    report(sigsys_replaced_with_upper_bits());
    report(sigsys_blocked());
    report(other_handlers_allowed());
    report(landlock_check());
    if all_ok {
        0
    } else {
        1
    }
}

fn plan() -> SandboxPlan {
    SandboxPlan {
        cgroup_procs: Vec::new(),
        // An otherwise unused id, when we can switch at all.
        identity: nix::unistd::geteuid()
            .is_root()
            .then_some((299_999, 299_999)),
        max_fds: 64,
        max_threads: 8,
    }
}

/// Forks a child that sandboxes itself (control socket on fd 3) and then
/// runs `body`; returns what it sent and how it ended.
fn in_sandboxed_child(
    dirs: &[DirGrant],
    body: impl FnOnce() -> i32,
) -> (Option<FromWorker>, WaitStatus) {
    let (ours, theirs) = frame::seqpacket_pair().expect("socketpair");
    let parent = nix::unistd::getpid();
    // SAFETY: the self-test runs single-threaded; the child only runs the
    // runbook and the check body, then _exits.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(ours);
            // SAFETY: dup2 onto fd 3 in this fresh child.
            unsafe { libc::dup2(theirs.as_raw_fd(), sigsys::CONTROL_FD) };
            drop(theirs);
            let inherited = fds::open_fds();
            let plan = plan();
            let seccomp = match edgeward_sandbox::seccomp::compile() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("self-test: {e}");
                    // SAFETY: leave the forked child at once.
                    unsafe { libc::_exit(90) }
                }
            };
            let runbook = Runbook {
                plan: &plan,
                profile: Profile::Module,
                dirs,
                inherited_fds: &inherited,
                keep_fds: &[0, 1, 2, sigsys::CONTROL_FD],
                supervisor: parent,
                inherited_namespaces: None,
                seccomp: &seccomp,
            };
            let code = match runbook.apply() {
                Ok(_) => body(),
                Err(e) => {
                    eprintln!("self-test: {e}");
                    90
                }
            };
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let status = waitpid(child, None).expect("waitpid");
            let message = recv_nonblocking(&ours);
            (message, status)
        }
    }
}

fn recv_nonblocking(sock: &OwnedFd) -> Option<FromWorker> {
    nix::fcntl::fcntl(
        sock,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .ok()?;
    frame::recv::<FromWorker>(sock).ok().map(|(m, _)| m)
}

fn forbidden_call(arch: Arch, name: &str) -> Check {
    let Some(nr) = arch.number(name) else {
        return Check {
            check: name.into(),
            ok: false,
            detail: format!(
                "FORBIDDEN lists it for {}, which has no such call",
                arch.name()
            ),
        };
    };
    let (message, status) = in_sandboxed_child(&[], || {
        // SAFETY: a raw system call with zero arguments; if it were allowed
        // it would fail harmlessly (bad arguments) or be caught below.
        let rc = unsafe { libc::syscall(libc::c_long::from(nr), 0, 0, 0, 0, 0, 0) };
        if rc >= 0 {
            91
        } else {
            92
        }
    });
    let (ok, detail) = denied_and_reported(name, &message, status);
    Check {
        check: name.into(),
        ok,
        detail,
    }
}

/// `clone` is allowed for threads only: a process-creating clone (what
/// glibc's fork() does) must be denied.
fn process_clone() -> Check {
    let (message, status) = in_sandboxed_child(&[], || {
        // SAFETY: clone(SIGCHLD) with a null stack behaves like fork; if it
        // were allowed, both copies would just exit below.
        let rc = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
        if rc == 0 {
            // SAFETY: the accidental child leaves at once.
            unsafe { libc::_exit(93) }
        }
        93
    });
    let ok = matches!(&message, Some(FromWorker::Fault(f)) if f.message == "seccomp: denied syscall clone")
        && matches!(status, WaitStatus::Exited(_, code) if code == sigsys::EXIT_SECCOMP);
    Check {
        check: "clone (new process)".into(),
        ok,
        detail: format!("{message:?} ({status:?})"),
    }
}

/// Whether the child ended as a denied call must end it: the reporter's
/// `Fault` naming `name`, then exit code 4.
fn denied_and_reported(
    name: &str,
    message: &Option<FromWorker>,
    status: WaitStatus,
) -> (bool, String) {
    let expected = format!("seccomp: denied syscall {name}");
    let ok = matches!(message, Some(FromWorker::Fault(f)) if f.message == expected)
        && matches!(status, WaitStatus::Exited(_, code) if code == sigsys::EXIT_SECCOMP);
    let detail = match message {
        Some(FromWorker::Fault(f)) => format!("{} ({status:?})", f.message),
        other => format!("not denied: {other:?}, {status:?}"),
    };
    (ok, detail)
}

extern "C" fn swallow_signal(_signal: libc::c_int) {}

/// Installs [`swallow_signal`] for `signal`, as a compromised worker could
/// try to; `true` if the call succeeded.
fn install_swallowing_handler(signal: Signal) -> bool {
    let action = SigAction::new(
        SigHandler::Handler(swallow_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe; the
    // child making this call exits right after.
    unsafe { sigaction(signal, &action) }.is_ok()
}

/// A compromised worker replacing the SIGSYS reporter with a handler that
/// just returns would make denied calls fail silently: the call must be
/// denied, and reported by the reporter still in place.
fn sigsys_handler_replaced() -> Check {
    let (message, status) = in_sandboxed_child(&[], || {
        if install_swallowing_handler(Signal::SIGSYS) {
            91
        } else {
            92
        }
    });
    let (ok, detail) = denied_and_reported("rt_sigaction", &message, status);
    Check {
        check: "rt_sigaction(SIGSYS)".into(),
        ok,
        detail,
    }
}

/// The kernel reads the signal number as an `int`: upper bits set must not
/// sneak SIGSYS past the filter.
fn sigsys_replaced_with_upper_bits() -> Check {
    let (message, status) = in_sandboxed_child(&[], || {
        // The kernel's sigaction layout: handler, flags, restorer, mask.
        let ignore: [u64; 4] = [libc::SIG_IGN as u64, 0, 0, 0];
        // SAFETY: a raw rt_sigaction with a valid new action and no old one;
        // if it were allowed it would only make this child ignore SIGSYS.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                1u64 << 32 | libc::SIGSYS as u64,
                ignore.as_ptr(),
                std::ptr::null::<u64>(),
                8,
            )
        };
        if rc == 0 {
            91
        } else {
            92
        }
    });
    let (ok, detail) = denied_and_reported("rt_sigaction", &message, status);
    Check {
        check: "rt_sigaction(SIGSYS | 1 << 32)".into(),
        ok,
        detail,
    }
}

/// Blocking SIGSYS (`rt_sigprocmask` is allowed) must not let a denied
/// call return: the kernel then resets SIGSYS to its default action, which
/// kills the worker (no report, but the supervisor sees the signal).
fn sigsys_blocked() -> Check {
    let (message, status) = in_sandboxed_child(&[], || {
        if SigSet::from(Signal::SIGSYS).thread_block().is_err() {
            return 93;
        }
        // SAFETY: a raw socket(2) call outside the allowlist; if it were
        // allowed it would only give this child an fd.
        let rc = unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) };
        if rc >= 0 {
            91
        } else {
            92
        }
    });
    let ok = matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _));
    Check {
        check: "socket with SIGSYS blocked".into(),
        ok,
        detail: format!("killed by SIGSYS expected: {status:?}, sent {message:?}"),
    }
}

/// Handlers for every other signal stay allowed (wasmtime and the call
/// budget need them).
fn other_handlers_allowed() -> Check {
    let (message, status) = in_sandboxed_child(&[], || {
        if install_swallowing_handler(Signal::SIGUSR1) {
            0
        } else {
            92
        }
    });
    Check {
        check: "rt_sigaction(SIGUSR1)".into(),
        ok: matches!(status, WaitStatus::Exited(_, 0)),
        detail: format!("allowed expected: {status:?}, sent {message:?}"),
    }
}

fn landlock_check() -> Check {
    let dir = std::env::temp_dir().join(format!("edgeward-self-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("granted.txt"), "ok");
    let _ = std::fs::write(
        std::env::temp_dir().join("edgeward-self-test-outside.txt"),
        "secret",
    );
    let dirs = [DirGrant {
        host: dir.to_string_lossy().into_owned(),
        guest: "/ro".into(),
        writable: false,
        passed: false,
    }];
    let granted = dir.join("granted.txt");
    let outside = std::env::temp_dir().join("edgeward-self-test-outside.txt");
    let (_, status) = in_sandboxed_child(&dirs, || {
        let read_granted = std::fs::read(&granted).is_ok();
        let write_denied = std::fs::write(dir.join("new.txt"), "x").is_err();
        let outside_denied = matches!(
            std::fs::read(&outside),
            Err(e) if e.raw_os_error() == Some(libc::EACCES)
        );
        let etc_denied = std::fs::read("/etc/hostname").is_err();
        i32::from(read_granted)
            | i32::from(write_denied) << 1
            | i32::from(outside_denied) << 2
            | i32::from(etc_denied) << 3
    });
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("edgeward-self-test-{}", std::process::id())),
    );
    let _ = std::fs::remove_file(std::env::temp_dir().join("edgeward-self-test-outside.txt"));
    let ok = matches!(status, WaitStatus::Exited(_, 0b1111));
    Check {
        check: "landlock".into(),
        ok,
        detail: format!(
            "granted dir readable, not writable; outside paths refused with EACCES ({status:?}; bits: read, no-write, outside, /etc)"
        ),
    }
}
