//! The fork server: set up the engine and linker once, map each artifact
//! once, then fork a worker per request so that all of it is shared
//! copy-on-write.
//!
//! Each worker is made with a double fork: the zygote forks an intermediate
//! process, which forks the worker, writes its pid to a pipe and exits at
//! once. The zygote does not wait for it: it goes on to the next request
//! and reports the pid when the pipe has it, so the second fork of one
//! spawn overlaps the first fork of the next (replies carry the request's
//! number and come in completion order). The kernel reaps the
//! intermediates (`SIGCHLD` is ignored here). The orphaned worker is
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

use std::os::fd::{AsRawFd, OwnedFd};

use edgeward_ipc::frame::{self, FrameError};
use edgeward_ipc::zygote::{FromZygote, Placement, ToZygote};
use edgeward_ipc::PROTOCOL_VERSION;
use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::{ForkResult, Pid};

use crate::clone_into_cgroup;
use crate::pid_pipe;
use crate::vfork_intermediate;
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
    // The kernel reaps the intermediate processes of spawns (`spawn`): the
    // zygote learns what it needs from their pid pipes, never their status.
    // SAFETY: ignoring a signal installs no handler.
    if let Err(e) = unsafe { nix::sys::signal::signal(Signal::SIGCHLD, SigHandler::SigIgn) } {
        eprintln!("edgeward-worker zygote: cannot ignore SIGCHLD: {e}");
        return exit_code::LOAD_FAILED;
    }
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
    // Where intermediates that share this process's memory run (cgroup v1).
    let stack = match vfork_intermediate::IntermediateStack::new() {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("edgeward-worker zygote: cannot map the intermediates' stack: {e}");
            return exit_code::LOAD_FAILED;
        }
    };
    serve_requests(&socket, |target, fds| {
        spawn(&mut prepared, &stack, &socket, supervisor, target, fds)
    })
}

/// A spawn whose intermediate process was forked: it reports the worker's
/// pid through `pid_pipe`.
struct Started {
    /// Read end of the pipe the intermediate writes the worker's pid to
    /// ([`pid_pipe::report`]); end of file if it died first.
    pid_pipe: OwnedFd,
    /// How the worker came to be in its cgroup.
    placement: Placement,
}

/// A spawn request not answered yet.
struct InFlight {
    request: u64,
    /// Count of spawn requests read before this one: a Ping waits for the
    /// spawns read before it, and only those.
    sequence: u64,
    started: Started,
}

/// Serves the supervisor's requests on `socket` until it closes it: reads
/// them in order, starts each spawn with `spawn` without waiting for the
/// worker's pid, and answers each spawn when its pid (or failure) is known.
/// Returns the process exit code.
fn serve_requests(
    socket: &OwnedFd,
    mut spawn: impl FnMut(&Target<'_>, Vec<OwnedFd>) -> wasmtime::Result<Started>,
) -> i32 {
    let mut in_flight: Vec<InFlight> = Vec::new();
    // Each unanswered Ping: the number of spawn requests read before it.
    let mut pings: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let mut spawns_read: u64 = 0;
    loop {
        let (socket_ready, finished) = match wait(socket, &in_flight) {
            Ok(ready) => ready,
            Err(e) => {
                eprintln!("edgeward-worker zygote: poll: {e}");
                return exit_code::LOAD_FAILED;
            }
        };
        // Highest index first, so the lower ones stay valid.
        for index in finished.into_iter().rev() {
            let done = in_flight.swap_remove(index);
            let reply = match pid_pipe::read(&done.started.pid_pipe) {
                Ok(pid) => FromZygote::Spawned {
                    request: done.request,
                    pid,
                    placement: done.started.placement,
                },
                Err(reason) => FromZygote::SpawnFailed {
                    request: done.request,
                    reason,
                },
            };
            if frame::send(socket, &reply, &[]).is_err() {
                return exit_code::SUPERVISOR_GONE;
            }
        }
        if socket_ready {
            match frame::recv::<ToZygote>(socket) {
                Ok((
                    ToZygote::Spawn {
                        request,
                        module,
                        artifact,
                        cgroup_procs,
                    },
                    fds,
                )) => {
                    let target = Target {
                        module: &module,
                        artifact: &artifact,
                        cgroup_procs: &cgroup_procs,
                    };
                    let sequence = spawns_read;
                    spawns_read += 1;
                    match spawn(&target, fds) {
                        Ok(started) => in_flight.push(InFlight {
                            request,
                            sequence,
                            started,
                        }),
                        Err(e) => {
                            let reply = FromZygote::SpawnFailed {
                                request,
                                reason: format!("{e:#}"),
                            };
                            if frame::send(socket, &reply, &[]).is_err() {
                                return exit_code::SUPERVISOR_GONE;
                            }
                        }
                    }
                }
                // Any fds that came with it close here.
                Ok((ToZygote::Ping, _)) => pings.push_back(spawns_read),
                Err(FrameError::Closed) => return exit_code::OK,
                Err(FrameError::WouldBlock) => {}
                Err(e) => {
                    eprintln!("edgeward-worker zygote: bad request from supervisor: {e}");
                    return exit_code::LOAD_FAILED;
                }
            }
        }
        // A Ping is answered once no spawn read before it is in flight.
        let oldest = in_flight.iter().map(|f| f.sequence).min();
        while pings
            .front()
            .is_some_and(|&before| oldest.is_none_or(|oldest| oldest >= before))
        {
            pings.pop_front();
            if frame::send(socket, &FromZygote::Pong, &[]).is_err() {
                return exit_code::SUPERVISOR_GONE;
            }
        }
    }
}

/// Blocks until the supervisor's socket or a spawn's pid pipe is readable
/// (or hung up). Returns whether the socket is, and the indices in
/// `in_flight` of the spawns whose pipes are, in increasing order.
fn wait(socket: &OwnedFd, in_flight: &[InFlight]) -> nix::Result<(bool, Vec<usize>)> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds: Vec<PollFd<'_>> = std::iter::once(socket.as_fd())
        .chain(in_flight.iter().map(|f| f.started.pid_pipe.as_fd()))
        .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    let finished = fds[1..]
        .iter()
        .enumerate()
        .filter(|(_, fd)| ready(fd))
        .map(|(i, _)| i)
        .collect();
    Ok((ready(&fds[0]), finished))
}

/// What a spawn request asks for.
struct Target<'a> {
    module: &'a str,
    artifact: &'a str,
    cgroup_procs: &'a [String],
}

/// Forks the intermediate process of one spawn and returns at once; the
/// intermediate forks the worker and reports its pid ([`Started`]).
fn spawn(
    prepared: &mut Prepared,
    stack: &vfork_intermediate::IntermediateStack,
    zygote_socket: &OwnedFd,
    supervisor: Pid,
    target: &Target<'_>,
    fds: Vec<OwnedFd>,
) -> wasmtime::Result<Started> {
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

    // What the worker runs, whichever intermediate forks it: given the
    // intermediate's pid and whether it was born in its cgroup.
    let (mut control, mut output) = (Some(control), Some(output));
    let pid_write_raw = pid_write.as_raw_fd();
    let mut worker = |intermediate: Pid, born_in_cgroup: bool| -> i32 {
        // In the worker, a process of its own: close the pid pipe's end.
        // SAFETY: the fd is this process's copy; its `OwnedFd` is never
        // dropped here (the worker leaves through `_exit`).
        unsafe { libc::close(pid_write_raw) };
        if born_in_cgroup {
            edgeward_sandbox::born_in_cgroups(target.cgroup_procs);
        } else {
            // Sandbox step 1 ahead of time (it reports a failure itself,
            // later).
            edgeward_sandbox::join_cgroups_early(target.cgroup_procs);
        }
        let (Some(control), Some(output)) = (control.take(), output.take()) else {
            return exit_code::LOAD_FAILED;
        };
        become_worker(
            prepared,
            zygote_socket,
            supervisor,
            intermediate,
            target,
            control,
            output,
        )
    };
    // SAFETY: this process is single-threaded (checked above), so the child
    // may run arbitrary code after fork. The intermediate only forks,
    // writes a pid and `_exit`s, as `fork_into` requires.
    let why = match unsafe { clone_into_cgroup::fork_into(target.cgroup_procs) } {
        Ok(ForkResult::Child) => {
            drop(pid_read);
            let reported = vfork_intermediate::fork_worker(&pid_write, &mut |intermediate| {
                worker(intermediate, true)
            });
            let code = if reported {
                exit_code::OK
            } else {
                exit_code::LOAD_FAILED
            };
            // SAFETY: _exit ends this forked process without running the
            // zygote's destructors or atexit handlers a second time.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { .. }) => {
            return Ok(Started {
                pid_pipe: pid_read,
                placement: Placement::Clone3,
            })
        }
        Err(why) => why,
    };
    // No clone3 into the cgroup: an intermediate that shares our memory
    // forks the worker, which joins its cgroups itself.
    // SAFETY: single-threaded (checked above); `worker` runs only in the
    // forked worker, which may run anything, on its own copy of `stack`.
    unsafe {
        vfork_intermediate::spawn(stack, &pid_write, &mut |intermediate| {
            worker(intermediate, false)
        })
    }
    .context("clone of the intermediate")?;
    Ok(Started {
        pid_pipe: pid_read,
        placement: Placement::Joins { why },
    })
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

    /// A spawn as the test's fake `spawn` makes it: the pipe's write end
    /// plays the intermediate.
    fn started(placement: Placement) -> (Started, OwnedFd) {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (
            Started {
                pid_pipe: read,
                placement,
            },
            write,
        )
    }

    fn spawn_request(request: u64, module: &str) -> ToZygote {
        ToZygote::Spawn {
            request,
            module: module.into(),
            artifact: format!("/cache/{module}.cwasm"),
            cgroup_procs: vec![],
        }
    }

    #[test]
    fn spawns_are_answered_as_they_complete_and_a_ping_after_the_spawns_before_it() {
        let (supervisor, zygote) = frame::seqpacket_pair().unwrap();
        // A lost or withheld reply fails the test instead of hanging it.
        nix::sys::socket::setsockopt(
            &supervisor,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(10, 0),
        )
        .unwrap();
        let (slow_tx, slow_rx) = std::sync::mpsc::channel::<OwnedFd>();
        let server = std::thread::spawn(move || {
            let mut spawned = Vec::new();
            let code = serve_requests(&zygote, |target, fds| {
                spawned.push((target.module.to_string(), fds.len()));
                match target.module {
                    "broken" => bail!("fork: Resource temporarily unavailable"),
                    "slow" | "slower" => {
                        // Its intermediate reports later, when the test says.
                        let (started, write) = started(Placement::Clone3);
                        slow_tx.send(write).unwrap();
                        Ok(started)
                    }
                    "vanished" => Ok(started(Placement::Clone3).0),
                    _ => {
                        let (started, write) = started(Placement::Joins {
                            why: "cgroup v1".into(),
                        });
                        assert!(pid_pipe::report(&write, Ok(Pid::from_raw(4242))));
                        Ok(started)
                    }
                }
            });
            (code, spawned)
        });
        // All requests go out before any reply is read, as the supervisor's
        // event loop does.
        frame::send(&supervisor, &ToZygote::Ping, &[]).unwrap();
        frame::send(&supervisor, &spawn_request(1, "slow"), &[]).unwrap();
        frame::send(&supervisor, &ToZygote::Ping, &[]).unwrap();
        frame::send(&supervisor, &spawn_request(2, "counter"), &[]).unwrap();
        frame::send(&supervisor, &spawn_request(3, "broken"), &[]).unwrap();
        frame::send(&supervisor, &spawn_request(4, "vanished"), &[]).unwrap();
        // Read after the second Ping: that Pong does not wait for it.
        frame::send(&supervisor, &spawn_request(5, "slower"), &[]).unwrap();
        let mut replies = Vec::new();
        for _ in 0..4 {
            let (reply, fds) = frame::recv::<FromZygote>(&supervisor).unwrap();
            assert!(fds.is_empty());
            replies.push(reply);
        }
        // Nothing was in flight at the first Ping; the slow spawn has not
        // reported, so neither it nor the second Ping is answered yet, and
        // the spawns after it were not held up by it.
        assert_eq!(replies[0], FromZygote::Pong);
        replies[1..].sort_by_key(|r| format!("{r:?}"));
        assert_eq!(
            replies[1..],
            [
                FromZygote::SpawnFailed {
                    request: 3,
                    reason: "fork: Resource temporarily unavailable".into()
                },
                FromZygote::SpawnFailed {
                    request: 4,
                    reason: "worker fork failed: the intermediate process ended without reporting its pid".into()
                },
                FromZygote::Spawned {
                    request: 2,
                    pid: 4242,
                    placement: Placement::Joins {
                        why: "cgroup v1".into()
                    }
                },
            ]
        );
        let slow = slow_rx.recv().unwrap();
        assert!(pid_pipe::report(&slow, Ok(Pid::from_raw(777))));
        let (reply, _) = frame::recv::<FromZygote>(&supervisor).unwrap();
        assert_eq!(
            reply,
            FromZygote::Spawned {
                request: 1,
                pid: 777,
                placement: Placement::Clone3
            }
        );
        let (reply, _) = frame::recv::<FromZygote>(&supervisor).unwrap();
        assert_eq!(reply, FromZygote::Pong);
        let slower = slow_rx.recv().unwrap();
        assert!(pid_pipe::report(&slower, Ok(Pid::from_raw(778))));
        let (reply, _) = frame::recv::<FromZygote>(&supervisor).unwrap();
        assert_eq!(
            reply,
            FromZygote::Spawned {
                request: 5,
                pid: 778,
                placement: Placement::Clone3
            }
        );
        // Closing the socket ends the fork server; pings made no workers.
        drop(supervisor);
        let (code, spawned) = server.join().unwrap();
        assert_eq!(code, exit_code::OK);
        let names: Vec<&str> = spawned.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(names, ["slow", "counter", "broken", "vanished", "slower"]);
    }
}
