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
/// Children started through `std::process::Command` get an empty signal mask
/// and default dispositions back before exec.
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
