//! Step 4: become the module's own uid and gid (never root, different per
//! module), with no supplementary groups. `PR_SET_KEEPCAPS` keeps the
//! permitted capability set across the switch so that step 7 can still drop
//! the bounding set; step 7 then clears every set.

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use super::SandboxError;

/// Switches to `identity`, or reports the layer degraded when the plan has
/// none (the supervisor is not root).
pub(super) fn switch(
    identity: Option<(u32, u32)>,
    degraded: &mut Vec<String>,
) -> Result<(), SandboxError> {
    let Some((uid, gid)) = identity else {
        degraded
            .push("identity: supervisor is not root; module runs with the supervisor's uid".into());
        return Ok(());
    };
    let fail = |what: &'static str| {
        move |source| SandboxError::Identity {
            uid,
            gid,
            what,
            source,
        }
    };
    // SAFETY: prctl(PR_SET_KEEPCAPS) only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1) } != 0 {
        return Err(fail("PR_SET_KEEPCAPS")(nix::errno::Errno::last()));
    }
    setgroups(&[]).map_err(fail("setgroups"))?;
    let gid_ = Gid::from_raw(gid);
    setresgid(gid_, gid_, gid_).map_err(fail("setresgid"))?;
    let uid_ = Uid::from_raw(uid);
    setresuid(uid_, uid_, uid_).map_err(fail("setresuid"))?;
    Ok(())
}
