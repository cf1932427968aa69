//! Signals as events: the ones the supervisor acts on are blocked and read
//! from a signalfd in the event loop (no async-signal handlers at all).

use anyhow::Context;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// SIGCHLD (reap), SIGTERM/SIGINT (stop all), SIGHUP (reload).
pub fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

/// Blocks the handled signals and returns a signalfd for them. Also ignores
/// SIGPIPE (a closed client socket or stdout must not kill PID 1) and makes
/// this process the reaper of orphaned descendants when it is not PID 1.
///
/// The blocked mask survives `fork` and `exec`, and
/// `std::process::Command` does not reset it: every child the supervisor
/// starts (workers, the fork server, compilers, the volume tools) goes
/// through [`unblocked`], or SIGTERM and SIGINT would not end it.
///
/// # Errors
/// If the mask cannot be set or the signalfd created.
pub fn install() -> anyhow::Result<SignalFd> {
    let set = handled();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("cannot block signals")?;
    // SAFETY: SIG_IGN installs no handler code; no other thread exists yet.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }
        .context("cannot ignore SIGPIPE")?;
    if std::process::id() != 1 {
        // SAFETY: PR_SET_CHILD_SUBREAPER only sets a flag on this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("PR_SET_CHILD_SUBREAPER");
        }
    }
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("cannot create signalfd")
}

/// Makes `command`'s child start with no signal blocked (see [`install`]).
pub fn unblocked(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    let reset = || {
        // SAFETY: an all-zero sigset_t is a valid (empty) value.
        let mut none = unsafe { std::mem::zeroed::<libc::sigset_t>() };
        // SAFETY: initialises the local set; async-signal-safe.
        unsafe { libc::sigemptyset(&mut none) };
        // SAFETY: reads the local set; async-signal-safe.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) };
        match rc {
            0 => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    };
    // SAFETY: the closure runs in the forked child before exec and only
    // calls sigemptyset and pthread_sigmask, which are async-signal-safe.
    unsafe { command.pre_exec(reset) }
}

#[cfg(test)]
mod unblocked_tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_child_started_through_unblocked_has_nothing_blocked_and_others_inherit_our_mask() {
        // In a thread of its own: the mask is per thread.
        std::thread::spawn(|| {
            let set = handled();
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).unwrap();
            let blocked = |command: &mut std::process::Command| {
                let out = command.arg("/proc/self/status").output().unwrap();
                let status = String::from_utf8_lossy(&out.stdout).into_owned();
                let line = status.lines().find(|l| l.starts_with("SigBlk:"));
                line.unwrap_or_default().to_string()
            };
            let with_hook = || {
                let mut command = std::process::Command::new("cat");
                // SAFETY: an empty hook: nothing runs in the child.
                unsafe { command.pre_exec(|| Ok(())) };
                command
            };
            // std does not reset the mask, with or without a hook.
            assert_ne!(
                blocked(&mut std::process::Command::new("cat")),
                "SigBlk:\t0000000000000000"
            );
            assert_ne!(blocked(&mut with_hook()), "SigBlk:\t0000000000000000");
            assert_eq!(
                blocked(unblocked(&mut with_hook())),
                "SigBlk:\t0000000000000000"
            );
        })
        .join()
        .unwrap();
    }
}
