//! Step 7: drop every capability: the bounding set first (which needs
//! `CAP_SETPCAP`, kept in the permitted set through step 4), then ambient,
//! inheritable, effective and permitted. Afterwards `CapEff` and `CapBnd` in
//! `/proc/self/status` are all zero.

use caps::{CapSet, Capability, CapsHashSet};

use super::SandboxError;

/// Drops all capabilities.
pub(super) fn drop_all() -> Result<(), SandboxError> {
    let err = |e: caps::errors::CapsError| SandboxError::Capabilities(e.to_string());
    let permitted = caps::read(None, CapSet::Permitted).map_err(err)?;
    // Without CAP_SETPCAP (edgeward not run as root) the bounding set cannot
    // be changed. Such a worker holds no capability to lose, and
    // no_new_privs and seccomp (no execve) keep it from gaining any.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        let mut only_setpcap = CapsHashSet::new();
        only_setpcap.insert(Capability::CAP_SETPCAP);
        caps::set(None, CapSet::Effective, &only_setpcap).map_err(err)?;
        for cap in caps::read(None, CapSet::Bounding).map_err(err)? {
            caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    caps::clear(None, CapSet::Effective).map_err(err)?;
    caps::clear(None, CapSet::Permitted).map_err(err)?;
    Ok(())
}
