//! Step 9: `PR_SET_PDEATHSIG = SIGKILL`, then check the parent is still the
//! supervisor: if it died before the flag was set, the signal never comes,
//! so the worker must notice by itself.

use nix::unistd::Pid;

use super::SandboxError;

/// Arms the parent-death signal.
pub(super) fn arm(supervisor: Pid) -> Result<(), SandboxError> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(SandboxError::ParentDeath(
            nix::errno::Errno::last().to_string(),
        ));
    }
    let parent = nix::unistd::getppid();
    if parent != supervisor {
        return Err(SandboxError::ParentDeath(format!(
            "parent is pid {parent}, not the supervisor {supervisor}"
        )));
    }
    Ok(())
}
