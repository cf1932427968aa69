//! The fork server: set up the engine and linker once, map each artifact
//! once, then fork a worker per request so that all of it is shared
//! copy-on-write.
//!
//! Each worker is made with a double fork: the zygote forks an intermediate
//! process, which forks the worker and exits at once. The orphaned worker is
//! re-parented to the nearest subreaper, the supervisor (PID 1, or a process
//! with `PR_SET_CHILD_SUBREAPER`), which therefore reaps every worker and
//! sees its real exit status. The worker is made with plain `fork(2)`, so
//! libc's own fork bookkeeping stays right in it (a raw `clone(CLONE_PARENT)`
//! would leave libc's cached thread id stale). The intermediate is made
//! with `clone3(CLONE_INTO_CGROUP)` where the kernel and cgroup v2 allow,
//! so the worker is born in its module's cgroup and never migrates
//! (`clone_into_cgroup.rs`).
//!
//! The zygote must stay single-threaded (forking a multi-threaded process
//! copies locks held by threads that do not exist in the child); it checks
//! this before every fork and refuses otherwise.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use edgeward_ipc::frame::{self, FrameError};
use edgeward_ipc::zygote::{FromZygote, Placement, ToZygote};
use edgeward_ipc::PROTOCOL_VERSION;
use nix::unistd::{fork, ForkResult, Pid};

use crate::clone_into_cgroup;
use wasmtime::bail;
use wasmtime::error::Context;

use crate::exit_code;
use crate::module::{self, Prepared};

/// Serves spawn requests on `socket` until the supervisor closes it.
/// Returns the process exit code.
pub fn run(socket: OwnedFd) -> i32 {
    let supervisor = nix::unistd::getppid();
    // If the supervisor dies, so does the fork server.
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut prepared = match Prepared::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("edgeward-worker zygote: {e:#}");
            return exit_code::LOAD_FAILED;
        }
    };
    // Fresh, empty namespaces once for every worker (see sandbox/namespaces.rs).
    let mut degraded = Vec::new();
    if let Err(e) = edgeward_sandbox::namespaces::unshare(&mut degraded) {
        eprintln!("edgeward-worker zygote: {e}");
        return exit_code::LOAD_FAILED;
    }
    prepared.namespaces = Some(degraded);
    if let Err(e) = edgeward_sandbox::zygote_guard::apply() {
        eprintln!("edgeward-worker zygote: cannot harden the fork server: {e}");
        return exit_code::LOAD_FAILED;
    }
    let hello = FromZygote::Hello {
        protocol_version: PROTOCOL_VERSION,
        engine_fingerprint: crate::engine::fingerprint(&prepared.engine),
    };
    if frame::send(&socket, &hello, &[]).is_err() {
        return exit_code::SUPERVISOR_GONE;
    }
    serve_requests(&socket, |target, fds| {
        spawn(&mut prepared, &socket, supervisor, target, fds)
    })
}

/// Answers the supervisor's requests on `socket` one at a time, in order,
/// until it closes the socket; `spawn` makes a worker. Returns the process
/// exit code.
fn serve_requests(
    socket: &OwnedFd,
    mut spawn: impl FnMut(&Target<'_>, Vec<OwnedFd>) -> wasmtime::Result<(Pid, Placement)>,
) -> i32 {
    loop {
        let (request, fds) = match frame::recv::<ToZygote>(socket) {
            Ok(r) => r,
            Err(FrameError::Closed) => return exit_code::OK,
            Err(FrameError::WouldBlock) => continue,
            Err(e) => {
                eprintln!("edgeward-worker zygote: bad request from supervisor: {e}");
                return exit_code::LOAD_FAILED;
            }
        };
        let reply = match request {
            ToZygote::Spawn {
                module,
                artifact,
                cgroup_procs,
            } => {
                let target = Target {
                    module: &module,
                    artifact: &artifact,
                    cgroup_procs: &cgroup_procs,
                };
                match spawn(&target, fds) {
                    Ok((pid, placement)) => FromZygote::Spawned {
                        pid: pid.as_raw() as u32,
                        placement,
                    },
                    Err(e) => FromZygote::SpawnFailed {
                        reason: format!("{e:#}"),
                    },
                }
            }
            // Alive and reading: the requests before it are answered. Any
            // fds that came with it close here.
            ToZygote::Ping => FromZygote::Pong,
        };
        if frame::send(socket, &reply, &[]).is_err() {
            return exit_code::SUPERVISOR_GONE;
        }
    }
}

/// What a spawn request asks for.
struct Target<'a> {
    module: &'a str,
    artifact: &'a str,
    cgroup_procs: &'a [String],
}

fn spawn(
    prepared: &mut Prepared,
    zygote_socket: &OwnedFd,
    supervisor: Pid,
    target: &Target<'_>,
    fds: Vec<OwnedFd>,
) -> wasmtime::Result<(Pid, Placement)> {
    let artifact = target.artifact;
    let [control, output]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|v: Vec<OwnedFd>| wasmtime::format_err!("spawn needs 2 fds, got {}", v.len()))?;
    // Map the artifact here, so every worker of it shares one mapping. A
    // failure is not a spawn failure: the worker is forked anyway, tries
    // again and reports it as a `FaultKind::Artifact` fault, so the
    // supervisor learns of a bad artifact the same way in both process
    // models and `SpawnFailed` never stands for one.
    let _ = prepared.artifact(artifact);
    ensure_single_threaded()?;
    let (pid_read, pid_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2")?;

    // SAFETY: this process is single-threaded (checked above), so the child
    // may run arbitrary code after fork. The intermediate only forks,
    // writes a pid and `_exit`s, as `fork_into` requires.
    let first = unsafe { clone_into_cgroup::fork_into(target.cgroup_procs) }.context("fork")?;
    let placement = first.placement;
    match first.result {
        ForkResult::Child => {
            drop(pid_read);
            // Taken before the second fork: by the time the worker runs, the
            // intermediate may already be gone.
            let intermediate = nix::unistd::getpid();
            // SAFETY: still single-threaded, as the parent was.
            let code = match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    drop(pid_write);
                    // Sandbox step 1 ahead of time (it reports a failure
                    // itself, later), unless the worker was born in its
                    // cgroup.
                    if placement == Placement::Clone3 {
                        edgeward_sandbox::born_in_cgroups(target.cgroup_procs);
                    } else {
                        edgeward_sandbox::join_cgroups_early(target.cgroup_procs);
                    }
                    become_worker(
                        prepared,
                        zygote_socket,
                        supervisor,
                        intermediate,
                        target,
                        control,
                        output,
                    )
                }
                Ok(ForkResult::Parent { child }) => {
                    let bytes = child.as_raw().to_le_bytes();
                    match nix::unistd::write(&pid_write, &bytes) {
                        Ok(4) => exit_code::OK,
                        _ => exit_code::LOAD_FAILED,
                    }
                }
                Err(_) => exit_code::LOAD_FAILED,
            };
            // SAFETY: _exit ends this forked process without running the
            // zygote's destructors or atexit handlers a second time.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent {
            child: intermediate,
        } => {
            drop(pid_write);
            drop(control);
            drop(output);
            let mut bytes = [0u8; 4];
            let read = std::fs::File::from(pid_read).read_exact(&mut bytes);
            let _ = nix::sys::wait::waitpid(intermediate, None);
            read.context("worker fork failed")?;
            Ok((Pid::from_raw(i32::from_le_bytes(bytes)), placement))
        }
    }
}

/// In the forked worker: wire stdio, wait to belong to the supervisor, run.
fn become_worker(
    prepared: &mut Prepared,
    zygote_socket: &OwnedFd,
    supervisor: Pid,
    intermediate: Pid,
    target: &Target<'_>,
    control: OwnedFd,
    output: OwnedFd,
) -> i32 {
    let module = target.module;
    // SAFETY: closing the zygote's socket in this process only; the
    // `OwnedFd` in the zygote's frame is never used again here (this process
    // leaves through `_exit`), so no double close is observed.
    unsafe { libc::close(zygote_socket.as_raw_fd()) };
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 onto the standard descriptors; `output` stays open.
        if unsafe { libc::dup2(output.as_raw_fd(), target) } < 0 {
            return exit_code::LOAD_FAILED;
        }
    }
    drop(output);
    set_process_name(module);
    // Wait until the intermediate has exited and we were re-parented.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while nix::unistd::getppid() == intermediate {
        if std::time::Instant::now() > deadline {
            let reporter = crate::report::Reporter::new(control, module.to_string());
            reporter.fault(
                edgeward_ipc::control::FaultKind::Load,
                "fork server: worker was not re-parented to the supervisor".into(),
            );
            return exit_code::LOAD_FAILED;
        }
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != supervisor {
        // Re-parented to someone else: the supervisor is gone or is not a
        // subreaper. Nobody would reap or supervise us.
        return exit_code::SUPERVISOR_GONE;
    }
    module::serve(prepared, control)
}

/// Names the process `ew:<module>` in `ps` (the kernel keeps 15 bytes).
pub fn set_process_name(module: &str) {
    let mut name = format!("ew:{module}").into_bytes();
    name.truncate(15);
    name.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
    // from the pointer; `name` is such a string and outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

fn ensure_single_threaded() -> wasmtime::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .context("cannot count threads in /proc/self/task")?
        .count();
    if threads != 1 {
        bail!("the fork server has {threads} threads; refusing to fork (it must stay single-threaded)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_is_answered_with_a_pong_in_order_with_spawn_replies() {
        let (supervisor, zygote) = frame::seqpacket_pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut spawned = Vec::new();
            let code = serve_requests(&zygote, |target, fds| {
                spawned.push((target.module.to_string(), fds.len()));
                if target.module == "broken" {
                    bail!("fork: Resource temporarily unavailable");
                }
                Ok((Pid::from_raw(4242), Placement::Clone3))
            });
            (code, spawned)
        });
        let spawn = |module: &str| ToZygote::Spawn {
            module: module.into(),
            artifact: format!("/cache/{module}.cwasm"),
            cgroup_procs: vec![],
        };
        // All requests go out before any reply is read, as the supervisor's
        // event loop does.
        frame::send(&supervisor, &ToZygote::Ping, &[]).unwrap();
        frame::send(&supervisor, &spawn("counter"), &[]).unwrap();
        frame::send(&supervisor, &ToZygote::Ping, &[]).unwrap();
        frame::send(&supervisor, &spawn("broken"), &[]).unwrap();
        frame::send(&supervisor, &ToZygote::Ping, &[]).unwrap();
        let mut replies = Vec::new();
        for _ in 0..5 {
            let (reply, fds) = frame::recv::<FromZygote>(&supervisor).unwrap();
            assert!(fds.is_empty());
            replies.push(reply);
        }
        assert_eq!(
            replies,
            [
                FromZygote::Pong,
                FromZygote::Spawned {
                    pid: 4242,
                    placement: Placement::Clone3
                },
                FromZygote::Pong,
                FromZygote::SpawnFailed {
                    reason: "fork: Resource temporarily unavailable".into()
                },
                FromZygote::Pong,
            ]
        );
        // Closing the socket ends the fork server; pings made no workers.
        drop(supervisor);
        let (code, spawned) = server.join().unwrap();
        assert_eq!(code, exit_code::OK);
        assert_eq!(
            spawned,
            [("counter".to_string(), 0), ("broken".to_string(), 0)]
        );
    }
}
