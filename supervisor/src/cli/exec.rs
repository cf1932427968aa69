//! `edgeward exec FILE.wasm`: one command module, once, in the same sandbox
//! as a supervised worker, with the user's stdin, stdout and stderr, exiting
//! with the module's exit code. How a vendor tests a module alone.
//!
//! The runbook: the policy (`--policy FILE`, else the defaults of an empty
//! one) with the command line's args, env and dirs on top; the wasm compiled
//! through the compile cache of `--state` (a temporary one when that is not
//! writable); a cgroup `exec-PID` with the policy's limits; a uid of its own
//! (`sandbox_plan::EXEC_UID_OFFSET`); each granted dir as an id-mapped mount
//! (`idmap.rs`), so the module writes the user's files as their owner and
//! nothing is chowned; then one `edgeward-worker serve` whose stdio are
//! ours. The worker applies every sandbox step itself, as under `run`.
//!
//! Exit codes: the module's own (0 when `_start` returns); 134 when it
//! trapped (as an abort); 128 + N when killed by signal N (a forbidden
//! system call: 159, SIGSYS); 125 when edgeward could not run it (bad
//! arguments or policy, a wasm that does not validate, a reactor, a
//! sandbox step that failed).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use edgeward_ipc::control::{FaultKind, FromWorker, LogLevel, ModuleKind, ToWorker};
use edgeward_ipc::frame::{self, FrameError};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::compile_cache::{CompileCache, Outcome};
use crate::policy::{self, DirMode, Policy};
use crate::sandbox_plan::HostSandbox;
use crate::worker_text;

/// Exit code when edgeward itself could not run the module.
pub const EXIT_CANNOT_RUN: i32 = 125;
/// Exit code of a module that trapped (128 + SIGABRT, as an abort).
pub const EXIT_TRAPPED: i32 = 134;

/// What `edgeward exec` was asked to do.
#[derive(Debug)]
pub struct ExecArgs {
    /// The module.
    pub wasm: PathBuf,
    /// `HOST[:GUEST][:ro|:rw]` grants.
    pub dirs: Vec<String>,
    /// `KEY=VALUE` variables.
    pub envs: Vec<String>,
    /// A policy to take limits and grants from.
    pub policy: Option<PathBuf>,
    /// Overrides the policy's `memory_mib`.
    pub memory_mib: Option<u32>,
    /// State dir whose compile cache is used.
    pub state: PathBuf,
    /// First uid of the module range (as `run`).
    pub uid_base: u32,
    /// MiB added to `memory_mib` for the cgroup limit (as `run`).
    pub runtime_overhead_mib: u64,
    /// The worker binary.
    pub worker_bin: PathBuf,
    /// The module's arguments (after `--`).
    pub args: Vec<String>,
}

/// Runs the module; returns the exit code to leave with.
///
/// # Errors
/// Anything that keeps the module from running (exit
/// [`EXIT_CANNOT_RUN`]); the message names the argument, file or step.
pub fn run(args: ExecArgs) -> anyhow::Result<i32> {
    let wasm = std::fs::canonicalize(&args.wasm)
        .with_context(|| format!("cannot open module {}", args.wasm.display()))?;
    let name = wasm
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module".into());
    let policy = exec_policy(&args, &wasm, &name)?;
    if !policy.channels.publish.is_empty() || !policy.channels.subscribe.is_empty() {
        eprintln!(
            "edgeward exec: note: the channels of {} have no peers here: sends are discarded and recv waits for ever",
            policy.file.display()
        );
    }
    let artifact = compile(&args, &wasm)?;

    let pid = std::process::id();
    let mut sandbox = HostSandbox::detect(args.uid_base, args.runtime_overhead_mib, &args.state);
    sandbox.favor_migrations();
    for warning in &sandbox.warnings {
        eprintln!("edgeward exec: sandbox degraded: {warning}");
    }
    sandbox.remove_stale_exec_cgroups();
    let identity = sandbox.exec_identity(pid);
    let mut cgroup_policy = policy.clone();
    cgroup_policy.name = format!("exec-{pid}");
    let cgroup = sandbox.cgroup(&cgroup_policy).with_context(|| {
        format!(
            "cannot create the cgroup of this run ({})",
            cgroup_policy.name
        )
    })?;
    let result = (|| {
        let dir_fds = grant_dirs(&policy, identity)?;
        let plan = HostSandbox::plan_for(&policy, identity, cgroup.as_ref());
        let mut init = crate::event_loop::init_message(&policy, &artifact.to_string_lossy(), plan);
        init.module = name.clone();
        init.stdin = true;
        for grant in &mut init.dirs {
            grant.passed = true;
        }
        supervise(&args.worker_bin, init, &dir_fds, &name)
    })();
    let oom_kills = cgroup.as_ref().map_or(0, |c| sandbox.oom_kills(c));
    if let Some(cgroup) = &cgroup {
        sandbox.remove_cgroup(cgroup);
    }
    let (status, fault) = result?;
    Ok(outcome(&name, status, fault, oom_kills, &policy))
}

/// The policy: `--policy`'s, else an empty one's defaults; then the
/// command line's module, args, env, dirs and memory on top.
fn exec_policy(args: &ExecArgs, wasm: &Path, name: &str) -> anyhow::Result<Policy> {
    let (file, text) = match &args.policy {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read policy {}", file.display()))?;
            (file.clone(), text)
        }
        None => {
            let wasm_text = toml::Value::String(wasm.to_string_lossy().into_owned()).to_string();
            (
                PathBuf::from("(edgeward exec defaults)"),
                format!("[module]\nwasm = {wasm_text}\n"),
            )
        }
    };
    let mut policy = match policy::parse_text(&file, name, &text) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!(
                "policy {} is not valid ({} error(s) above)",
                file.display(),
                errors.len()
            );
        }
    };
    policy.wasm = wasm.to_path_buf();
    if args.policy.is_none() || !args.args.is_empty() {
        policy.args = args.args.clone();
    }
    for pair in &args.envs {
        let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("--env {pair}: expected KEY=VALUE");
        };
        policy.env.retain(|(k, _)| k != key);
        policy.env.push((key.to_string(), value.to_string()));
    }
    for spec in &args.dirs {
        let dir = parse_dir(spec)?;
        if policy.dirs.iter().any(|d| d.guest == dir.guest) {
            bail!("--dir {spec}: guest path {} is granted twice", dir.guest);
        }
        policy.dirs.push(dir);
    }
    if let Some(mib) = args.memory_mib {
        policy.resources.memory_mib = mib;
    }
    Ok(policy)
}

/// `HOST[:GUEST][:ro|:rw]`: GUEST defaults to HOST, the mode to rw.
fn parse_dir(spec: &str) -> anyhow::Result<policy::Dir> {
    let mut parts: Vec<&str> = spec.split(':').collect();
    let mode = match parts.last() {
        Some(&"ro") if parts.len() > 1 => {
            parts.pop();
            DirMode::Ro
        }
        Some(&"rw") if parts.len() > 1 => {
            parts.pop();
            DirMode::Rw
        }
        _ => DirMode::Rw,
    };
    let (host, guest) = match parts.as_slice() {
        [host] => (*host, *host),
        [host, guest] => (*host, *guest),
        _ => bail!("--dir {spec}: expected HOST[:GUEST][:ro], e.g. --dir ./data:/data:ro"),
    };
    let host_path = std::fs::canonicalize(host)
        .with_context(|| format!("--dir {spec}: host dir {host} cannot be opened"))?;
    if !host_path.is_dir() {
        bail!("--dir {spec}: {} is not a directory", host_path.display());
    }
    let guest = if guest.starts_with('/') {
        guest.to_string()
    } else if guest == host {
        // A relative HOST alone: seen at the same relative place, as
        // `wasmtime run --dir .` does.
        guest.to_string()
    } else {
        bail!("--dir {spec}: the guest path {guest} must be absolute, e.g. /data")
    };
    if guest.split('/').any(|c| c == "..") {
        bail!("--dir {spec}: the guest path must not contain \"..\"");
    }
    Ok(policy::Dir {
        host: host_path,
        guest,
        mode,
        quota_mib: 0,
        location: (0, 0),
    })
}

/// Validates and compiles `wasm` through the compile cache of the state
/// dir, else of the user's own cache dir. Returns the artifact.
fn compile(args: &ExecArgs, wasm: &Path) -> anyhow::Result<PathBuf> {
    // The exec model's launcher asks `edgeward-worker fingerprint`, as
    // `run` does without a fork server.
    let fingerprint = crate::launcher::Launcher::new(
        crate::launcher::ProcessModel::Exec,
        args.worker_bin.clone(),
    )
    .fingerprint()?;
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let sha = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&bytes))
    };
    // A user who cannot write the state dir (not root) compiles into a
    // cache of their own instead.
    let cache = match CompileCache::open(&args.state, fingerprint.clone()) {
        Ok(cache) => cache,
        Err(state_error) => {
            let Some(own) = user_cache_dir() else {
                return Err(state_error);
            };
            CompileCache::open(&own, fingerprint)
                .with_context(|| format!("{state_error:#}; nor in {}", own.display()))?
        }
    };
    match cache
        .ensure(&args.worker_bin, &[(sha, wasm.to_path_buf())])
        .pop()
    {
        Some(Outcome::Hit(path) | Outcome::Compiled(path, _)) => Ok(path),
        Some(Outcome::Failed(reason)) => bail!("{}: {reason}", wasm.display()),
        None => bail!("{}: not compiled", wasm.display()),
    }
}

/// `$XDG_CACHE_HOME/edgeward-exec`, else `$HOME/.cache/edgeward-exec`.
fn user_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("edgeward-exec"))
}

/// One fd per granted dir, in grant order: an id-mapped mount when the
/// module has its own uid, else the dir itself.
fn grant_dirs(policy: &Policy, identity: Option<(u32, u32)>) -> anyhow::Result<Vec<OwnedFd>> {
    policy
        .dirs
        .iter()
        .map(|dir| {
            let writable = dir.mode == DirMode::Rw;
            match identity {
                Some(ids) => crate::idmap::mapped_dir(&dir.host, ids, writable)
                    .with_context(|| format!("cannot grant --dir {}", dir.host.display())),
                None => {
                    use nix::fcntl::{open, OFlag};
                    open(
                        &dir.host,
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .with_context(|| format!("cannot open --dir {}", dir.host.display()))
                }
            }
        })
        .collect()
}

/// The worker's last fault: kind, message, and whether a log line said it
/// already.
type LastFault = (FaultKind, String, bool);

/// Starts the worker with our stdio, sends Init, relays its log lines and
/// our signals until it exits. Returns its wait status and its last fault
/// (kind, message, and whether a log line said it already).
fn supervise(
    worker_bin: &Path,
    init: edgeward_ipc::control::Init,
    dir_fds: &[OwnedFd],
    name: &str,
) -> anyhow::Result<(WaitStatus, Option<LastFault>)> {
    // Signals for the worker are read from a signalfd; the worker gets the
    // default mask back (std's spawn resets it).
    let mut forwarded = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        forwarded.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None)
        .context("cannot block signals")?;
    let signals = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;
    let (ours, theirs) = frame::seqpacket_pair().context("socketpair")?;
    nix::fcntl::fcntl(
        &ours,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .context("fcntl(O_NONBLOCK)")?;
    let child = crate::launcher::worker_command(worker_bin, "serve", theirs.as_raw_fd())
        .stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", worker_bin.display()))?;
    drop(theirs);
    let worker = Pid::from_raw(child.id() as i32);
    let hello = wait_for(&ours, Duration::from_secs(10));
    match hello {
        Ok(FromWorker::Hello { .. }) => {}
        other => {
            let _ = nix::sys::signal::kill(worker, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(worker, None);
            bail!("{} did not say hello: {other:?}", worker_bin.display());
        }
    }
    let raw: Vec<i32> = dir_fds.iter().map(AsRawFd::as_raw_fd).collect();
    frame::send(&ours, &ToWorker::Init(Box::new(init)), &raw).context("cannot send Init")?;
    let mut fault = None;
    let mut logged_error: Option<String> = None;
    loop {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [
            PollFd::new(ours.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("poll: {e}"),
        }
        while let Ok(Some(info)) = signals.read_signal() {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                let _ = nix::sys::signal::kill(worker, signal);
            }
        }
        match frame::recv::<FromWorker>(&ours) {
            Ok((FromWorker::Ready { kind, degraded, .. }, _)) => {
                for layer in degraded {
                    eprintln!(
                        "edgeward exec: sandbox degraded: {}",
                        worker_text::message(&layer)
                    );
                }
                if kind == ModuleKind::Reactor {
                    let _ = nix::sys::signal::kill(worker, Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(worker, None);
                    bail!("{name} is a reactor (it exports ew_* handlers), not a command: exec runs WASI programs with a _start; run a reactor with `edgeward run` and a policy");
                }
            }
            Ok((FromWorker::Log { level, text }, _)) => {
                let lines = worker_text::lines(&text, worker_text::MAX_MESSAGE_LINES);
                if level == LogLevel::Error {
                    logged_error = lines.first().cloned();
                }
                for line in lines {
                    eprintln!("{name}: {}: {line}", level.as_str());
                }
            }
            Ok((FromWorker::Fault(f), _)) => {
                let message = worker_text::message(&f.message);
                // A trap's report was logged already, with its backtrace.
                let said = logged_error.as_deref() == Some(message.as_str());
                fault = Some((f.kind, message, said));
            }
            // Counters and snapshot offers mean nothing for one run.
            Ok(_) => {}
            Err(FrameError::WouldBlock) => {}
            // Closed: the worker is gone (or going).
            Err(_) => break,
        }
    }
    let status = loop {
        match nix::sys::wait::waitpid(worker, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.context("waitpid")?,
        }
    };
    Ok((status, fault))
}

/// Reads one message from the worker within `timeout`.
fn wait_for(socket: &OwnedFd, timeout: Duration) -> anyhow::Result<FromWorker> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    if poll(&mut fds, PollTimeout::from(ms))? == 0 {
        bail!("no answer within {timeout:?}");
    }
    Ok(frame::recv::<FromWorker>(socket)?.0)
}

/// The exit code for how the worker ended, with a line on stderr for
/// anything but a normal exit.
fn outcome(
    name: &str,
    status: WaitStatus,
    fault: Option<LastFault>,
    oom_kills: u64,
    policy: &Policy,
) -> i32 {
    let say = |message: &str, said: bool| {
        if !said {
            eprintln!("edgeward exec: {name}: {message}");
        }
    };
    match (status, fault) {
        (WaitStatus::Exited(_, 0), None) => 0,
        (WaitStatus::Exited(_, code), Some((FaultKind::Exit, ..))) => code,
        (WaitStatus::Exited(..), Some((FaultKind::Trap | FaultKind::Budget, message, said))) => {
            say(&message, said);
            EXIT_TRAPPED
        }
        (WaitStatus::Exited(..), Some((FaultKind::Seccomp, message, said))) => {
            say(&message, said);
            128 + Signal::SIGSYS as i32
        }
        (WaitStatus::Exited(_, code), Some((_, message, _))) => {
            say(
                &format!("cannot run: {message} (worker exit {code})"),
                false,
            );
            EXIT_CANNOT_RUN
        }
        (WaitStatus::Exited(_, code), None) => {
            say(
                &format!("worker exited with {code} without saying why"),
                false,
            );
            EXIT_CANNOT_RUN
        }
        (WaitStatus::Signaled(_, signal, _), _) => {
            if oom_kills > 0 {
                say(
                    &format!(
                        "killed: out of memory (memory_mib = {} plus the runtime's share)",
                        policy.resources.memory_mib
                    ),
                    false,
                );
            } else if !matches!(signal, Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP) {
                say(&format!("killed by {signal}"), false);
            }
            128 + signal as i32
        }
        (other, _) => {
            say(&format!("worker ended unexpectedly: {other:?}"), false);
            EXIT_CANNOT_RUN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_specs_parse_with_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().to_str().unwrap();
        let d = parse_dir(&format!("{host}:/data:ro")).unwrap();
        assert_eq!((d.guest.as_str(), d.mode), ("/data", DirMode::Ro));
        let d = parse_dir(&format!("{host}:/data")).unwrap();
        assert_eq!((d.guest.as_str(), d.mode), ("/data", DirMode::Rw));
        let d = parse_dir(host).unwrap();
        assert_eq!(d.guest, host);
        let err = parse_dir(&format!("{host}:data")).unwrap_err().to_string();
        assert!(err.contains("must be absolute"), "{err}");
        let err = parse_dir("/nonexistent/x:/x").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x"), "{err}");
        let err = parse_dir(&format!("{host}:/a/../b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(".."), "{err}");
    }
}
