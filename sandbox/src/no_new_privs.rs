//! Step 8: `PR_SET_NO_NEW_PRIVS`: no exec can ever grant privileges again
//! (setuid binaries, file capabilities). Landlock (step 5) usually set it
//! already; setting it again is harmless and makes the step explicit.

use super::SandboxError;

/// Sets no_new_privs.
pub(super) fn set() -> Result<(), SandboxError> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) only sets a flag.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SandboxError::NoNewPrivs(nix::errno::Errno::last()));
    }
    Ok(())
}
