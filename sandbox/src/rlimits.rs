//! Step 3: resource limits. No core dumps (a dump would copy guest memory
//! to disk), a bounded fd table, and a bounded number of threads.

use edgeward_ipc::control::SandboxPlan;
use nix::sys::resource::{setrlimit, Resource};

use super::SandboxError;

/// Sets `RLIMIT_CORE` = 0, `RLIMIT_NOFILE`, and `RLIMIT_NPROC` when the
/// module has its own uid, from the plan.
pub(super) fn apply(plan: &SandboxPlan) -> Result<(), SandboxError> {
    let set = |what: &'static str, resource: Resource, limit: u64| {
        setrlimit(resource, limit, limit).map_err(|source| SandboxError::Rlimits { what, source })
    };
    set("RLIMIT_CORE", Resource::RLIMIT_CORE, 0)?;
    set("RLIMIT_NOFILE", Resource::RLIMIT_NOFILE, plan.max_fds)?;
    // RLIMIT_NPROC counts every task of the uid, so it bounds this module
    // alone only under its own uid; without one (edgeward not root) it would
    // count the supervisor and every other module too.
    if plan.identity.is_some() {
        set("RLIMIT_NPROC", Resource::RLIMIT_NPROC, plan.max_threads)?;
    }
    Ok(())
}
