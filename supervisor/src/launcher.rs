//! Starting worker processes: through the fork server (the default) or by
//! exec'ing `edgeward-worker serve` per module (`EDGEWARD_PROCESS_MODEL=exec`,
//! kept for comparison in the bench). Either way the worker is a child of
//! this process, with its control socket and output pipe as described in
//! `docs/architecture.md`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use edgeward_ipc::frame;
use edgeward_ipc::zygote::{FromZygote, ToZygote};
use edgeward_ipc::PROTOCOL_VERSION;
use nix::fcntl::OFlag;
use nix::unistd::Pid;

/// The fd number the worker expects its control socket on.
const CHILD_CONTROL_FD: i32 = 3;

/// How workers are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessModel {
    /// One `edgeward-worker zygote` forks every worker (default).
    Zygote,
    /// `edgeward-worker serve` is exec'd per worker.
    Exec,
}

impl ProcessModel {
    /// From `EDGEWARD_PROCESS_MODEL` (`zygote` or `exec`).
    ///
    /// # Errors
    /// On any other value.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("EDGEWARD_PROCESS_MODEL").as_deref() {
            Err(_) | Ok("zygote") | Ok("") => Ok(Self::Zygote),
            Ok("exec") => Ok(Self::Exec),
            Ok(other) => bail!("EDGEWARD_PROCESS_MODEL={other}: use \"zygote\" or \"exec\""),
        }
    }
}

/// A started worker: our ends of its channels.
pub struct Spawned {
    /// Its pid (our child), or, with the fork server, the number of the
    /// request whose [`FromZygote::Spawned`] reply, read by the event loop,
    /// will carry it.
    pub pid: WorkerPid,
    /// Our end of its control socketpair.
    pub control: OwnedFd,
    /// Read end of its stdout/stderr pipe.
    pub output: OwnedFd,
}

/// A new worker's pid: known at once (exec'd), or asked of the fork server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPid {
    /// Our child, running.
    Known(Pid),
    /// The fork server's reply to request number `.0` will carry it.
    Requested(u64),
}

/// A running fork server.
pub struct Zygote {
    /// Its pid (our child).
    pub pid: Pid,
    socket: OwnedFd,
    /// Engine fingerprint it reported.
    pub fingerprint: String,
}

/// Starts workers.
pub struct Launcher {
    model: ProcessModel,
    worker_bin: PathBuf,
    zygote: Option<Zygote>,
    /// A fork server started but not yet handshaken.
    starting: Option<(Pid, OwnedFd)>,
    /// Set when a new fork server socket appeared, for the event loop to watch.
    new_zygote: bool,
    /// The number of the next spawn request (unique for this launcher's life,
    /// across fork servers).
    next_request: u64,
}

impl Launcher {
    /// A launcher for `worker_bin`. Starts nothing yet.
    pub fn new(model: ProcessModel, worker_bin: PathBuf) -> Self {
        Self {
            model,
            worker_bin,
            zygote: None,
            starting: None,
            new_zygote: false,
            next_request: 1,
        }
    }

    /// Starts the fork server process without waiting for its handshake, so
    /// the caller can do other start-up work while it initialises.
    ///
    /// # Errors
    /// If the process cannot be started.
    pub fn prestart(&mut self) -> anyhow::Result<()> {
        if self.model == ProcessModel::Zygote && self.zygote.is_none() && self.starting.is_none() {
            self.starting = Some(self.spawn_zygote_process()?);
        }
        Ok(())
    }

    /// The fork server's socket if it is new since the last call (the event
    /// loop then adds it to its epoll set).
    pub fn take_new_zygote_socket(&mut self) -> Option<std::os::fd::BorrowedFd<'_>> {
        if !std::mem::take(&mut self.new_zygote) {
            return None;
        }
        self.zygote
            .as_ref()
            .map(|z| std::os::fd::AsFd::as_fd(&z.socket))
    }

    /// Reads one reply of the fork server without blocking: a
    /// [`FromZygote::Spawned`] or [`FromZygote::SpawnFailed`] per `Spawn`,
    /// in completion order and numbered as the request
    /// ([`WorkerPid::Requested`]), a [`FromZygote::Pong`] per
    /// [`Launcher::ping_zygote`]. `Ok(None)`: nothing pending. `Err`: the
    /// fork server is gone.
    ///
    /// # Errors
    /// The fork server closed its socket or sent a bad frame; it is dropped.
    pub fn next_reply(&mut self) -> anyhow::Result<Option<FromZygote>> {
        let Some(zygote) = &self.zygote else {
            bail!("no fork server");
        };
        match frame::recv::<FromZygote>(&zygote.socket) {
            Ok((reply, _)) => Ok(Some(reply)),
            Err(frame::FrameError::WouldBlock) => Ok(None),
            Err(e) => {
                self.zygote = None;
                bail!("fork server unreachable: {e}")
            }
        }
    }

    /// Asks the fork server whether it is alive, without waiting: sends
    /// [`ToZygote::Ping`]. It answers [`FromZygote::Pong`] once the spawn
    /// requests sent before it are answered; [`Launcher::next_reply`] returns the Pong
    /// like any reply, and it answers no spawn request.
    ///
    /// `Ok(false)` when there is no fork server to watch: the exec process
    /// model, or none handshaken yet (a prestarted one is handshaken by the
    /// first spawn or [`Launcher::fingerprint`], with its own 10 s timeout),
    /// or none since the last one ended. `Ok(true)` also when its socket is
    /// full: the requests queued there are answered before any Ping would
    /// be, so their replies are the sign of life to wait for.
    ///
    /// # Errors
    /// Its socket is broken: it ended or is ending. It is not forgotten
    /// here: [`Launcher::next_reply`] reports the broken socket as usual (and
    /// the event loop then fails the pending spawns).
    pub fn ping_zygote(&self) -> anyhow::Result<bool> {
        let Some(zygote) = &self.zygote else {
            return Ok(false);
        };
        match frame::try_send(&zygote.socket, &ToZygote::Ping, &[]) {
            Ok(()) | Err(frame::FrameError::WouldBlock) => Ok(true),
            Err(e) => bail!("fork server (pid {}) unreachable: {e}", zygote.pid),
        }
    }

    /// Pid of the fork server, if one runs.
    pub fn zygote_pid(&self) -> Option<Pid> {
        self.zygote
            .as_ref()
            .map(|z| z.pid)
            .or(self.starting.as_ref().map(|(pid, _)| *pid))
    }

    /// The engine fingerprint (compile-cache key part). Starts the fork
    /// server if needed; in the exec model asks `edgeward-worker fingerprint`.
    ///
    /// # Errors
    /// If the worker binary cannot be started or answers nonsense.
    pub fn fingerprint(&mut self) -> anyhow::Result<String> {
        match self.model {
            ProcessModel::Zygote => Ok(self.zygote()?.fingerprint.clone()),
            ProcessModel::Exec => {
                let out = crate::signals::unblocked(&mut Command::new(&self.worker_bin))
                    .arg("fingerprint")
                    .stdin(Stdio::null())
                    .output()
                    .with_context(|| format!("cannot run {}", self.worker_bin.display()))?;
                let fp = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() || fp.is_empty() {
                    bail!(
                        "{} fingerprint failed: {}",
                        self.worker_bin.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                Ok(fp)
            }
        }
    }

    /// Notes that `pid` was reaped; returns `true` if it was the fork server
    /// (which is then started again on the next spawn).
    pub fn reaped(&mut self, pid: Pid) -> bool {
        if self.zygote_pid() == Some(pid) {
            self.zygote = None;
            self.starting = None;
            true
        } else {
            false
        }
    }

    /// Stops the fork server: closing its socket ends it.
    pub fn shutdown(&mut self) {
        self.zygote = None;
        self.starting = None;
    }

    /// Starts a worker for `module`, which will load `artifact`.
    ///
    /// # Errors
    /// If no socketpair, pipe or process can be made.
    pub fn spawn(
        &mut self,
        module: &str,
        artifact: &Path,
        cgroup_procs: Vec<String>,
    ) -> anyhow::Result<Spawned> {
        let (ours, theirs) = frame::seqpacket_pair().context("socketpair")?;
        let (output, output_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
        nix::fcntl::fcntl(&output, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .context("fcntl(O_NONBLOCK)")?;
        nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .context("fcntl(O_NONBLOCK)")?;
        let pid = match self.model {
            ProcessModel::Zygote => {
                let artifact = artifact.to_string_lossy().into_owned();
                let number = self.next_request;
                let zygote = self.zygote()?;
                let request = ToZygote::Spawn {
                    request: number,
                    module: module.to_string(),
                    artifact,
                    cgroup_procs,
                };
                // The reply (the pid) is read by the event loop: the
                // supervisor never waits for the fork server.
                if let Err(e) = frame::send(
                    &zygote.socket,
                    &request,
                    &[theirs.as_raw_fd(), output_write.as_raw_fd()],
                ) {
                    self.zygote = None;
                    bail!("fork server unreachable: {e}");
                }
                self.next_request += 1;
                WorkerPid::Requested(number)
            }
            ProcessModel::Exec => WorkerPid::Known(exec_serve(
                &self.worker_bin,
                module,
                &theirs,
                &output_write,
            )?),
        };
        Ok(Spawned {
            pid,
            control: ours,
            output,
        })
    }

    /// Starts a connector: `edgeward-connector serve`, exec'd (a native
    /// program: nothing for a fork server to share). It joins its cgroups
    /// itself, as the first step of its sandbox.
    ///
    /// # Errors
    /// If no socketpair, pipe or process can be made.
    pub fn spawn_connector(
        &mut self,
        module: &str,
        connector_bin: &Path,
    ) -> anyhow::Result<Spawned> {
        let (ours, theirs) = frame::seqpacket_pair().context("socketpair")?;
        let (output, output_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
        for fd in [&output, &ours] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .context("fcntl(O_NONBLOCK)")?;
        }
        let pid = exec_serve(connector_bin, module, &theirs, &output_write)?;
        Ok(Spawned {
            pid: WorkerPid::Known(pid),
            control: ours,
            output,
        })
    }

    fn zygote(&mut self) -> anyhow::Result<&Zygote> {
        if self.zygote.is_none() {
            let (pid, socket) = match self.starting.take() {
                Some(started) => started,
                None => self.spawn_zygote_process()?,
            };
            let zygote = self.handshake(pid, socket)?;
            nix::fcntl::fcntl(
                &zygote.socket,
                nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
            )
            .context("fcntl(O_NONBLOCK)")?;
            self.zygote = Some(zygote);
            self.new_zygote = true;
        }
        Ok(self.zygote.as_ref().expect("just set"))
    }

    fn spawn_zygote_process(&self) -> anyhow::Result<(Pid, OwnedFd)> {
        let (ours, theirs) = frame::seqpacket_pair().context("socketpair")?;
        let child = self
            .command("zygote", theirs.as_raw_fd())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", self.worker_bin.display()))?;
        drop(theirs);
        Ok((Pid::from_raw(child.id() as i32), ours))
    }

    fn handshake(&self, pid: Pid, ours: OwnedFd) -> anyhow::Result<Zygote> {
        set_recv_timeout(&ours, Duration::from_secs(10))?;
        let hello = frame::recv::<FromZygote>(&ours);
        match hello {
            Ok((
                FromZygote::Hello {
                    protocol_version,
                    engine_fingerprint,
                },
                _,
            )) if protocol_version == PROTOCOL_VERSION => Ok(Zygote {
                pid,
                socket: ours,
                fingerprint: engine_fingerprint,
            }),
            Ok((
                FromZygote::Hello {
                    protocol_version, ..
                },
                _,
            )) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                bail!(
                    "{} speaks protocol {protocol_version}, edgeward {PROTOCOL_VERSION}: install matching binaries",
                    self.worker_bin.display()
                )
            }
            other => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                bail!(
                    "fork server {} did not say hello: {:?}",
                    self.worker_bin.display(),
                    other.map(|(m, _)| m)
                )
            }
        }
    }

    /// `edgeward-worker MODE` with `fd` as its fd 3 and no stdin.
    fn command(&self, mode: &str, fd: i32) -> Command {
        worker_command(&self.worker_bin, mode, fd)
    }
}

/// Execs `BIN serve` for `module` with `control` as its fd 3 and its
/// stdout and stderr on `output`.
fn exec_serve(
    bin: &Path,
    module: &str,
    control: &OwnedFd,
    output: &OwnedFd,
) -> anyhow::Result<Pid> {
    // The module's name before its Init, for diagnostics (ps,
    // /proc/PID/environ) and for test workers that act by module
    // (tests/src/bin/rogue-worker.rs). The real worker ignores it.
    let child = worker_command(bin, "serve", control.as_raw_fd())
        .env("EDGEWARD_MODULE", module)
        .stdout(Stdio::from(output.try_clone()?))
        .stderr(Stdio::from(output.try_clone()?))
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// `WORKER MODE` with `fd` as its fd 3, no signal blocked and no stdin (a
/// caller may set another).
pub fn worker_command(worker_bin: &Path, mode: &str, fd: i32) -> Command {
    let mut command = Command::new(worker_bin);
    command.arg(mode).stdin(Stdio::null());
    let keep_control_fd = move || {
        let rc = if fd == CHILD_CONTROL_FD {
            // Already in place: just clear close-on-exec.
            // SAFETY: fcntl on an fd we own; async-signal-safe.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }
        } else {
            // SAFETY: dup2 of an fd we own onto fd 3; async-signal-safe.
            unsafe { libc::dup2(fd, CHILD_CONTROL_FD) }
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and only
    // calls dup2/fcntl, which are async-signal-safe.
    unsafe { command.pre_exec(keep_control_fd) };
    crate::signals::unblocked(&mut command);
    command
}

fn set_recv_timeout(fd: &OwnedFd, timeout: Duration) -> anyhow::Result<()> {
    let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as i64, 0);
    nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .context("setsockopt(SO_RCVTIMEO)")?;
    Ok(())
}
