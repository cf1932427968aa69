//! The sandbox runbook: how a worker confines itself before any guest code
//! runs. One file per step, applied in this order:
//!
//! | step | file | why here |
//! | --- | --- | --- |
//! | 1 join the module's cgroup | `cgroup.rs` | needs root; every later allocation is charged to the module |
//! | 2 new mount, IPC, network namespaces | `namespaces.rs` | needs `CAP_SYS_ADMIN`; a new netns has no interfaces: no network at all |
//! | 3 rlimits | `rlimits.rs` | no core dumps, bounded fds and threads (`RLIMIT_NPROC` counts per uid, so it binds after step 4) |
//! | 4 own uid/gid | `identity.rs` | needs `CAP_SETUID`; keeps `CAP_SETPCAP` in the permitted set for step 7 |
//! | 5 Landlock | `landlock.rs` | only the granted dirs, with their ro/rw modes; sets no_new_privs itself |
//! | 6 close fds not handed over | `fds.rs` | nothing inherited from the fork server leaks in |
//! | 7 drop all capabilities | `capabilities.rs` | bounding set first (needs `CAP_SETPCAP`), then every set |
//! | 8 `PR_SET_NO_NEW_PRIVS` | `no_new_privs.rs` | required by seccomp without `CAP_SYS_ADMIN` |
//! | 9 `PR_SET_PDEATHSIG` | `parent_death.rs` | the worker dies with the supervisor |
//! | 10 seccomp allowlist | `seccomp.rs` (+ `seccomp_allowlist.rs`, `sigsys.rs`) | last: every earlier step needs syscalls the filter forbids |
//!
//! Each step has its own [`SandboxError`] variant, so a failure names the
//! step. A layer the host lacks (no cgroups, no Landlock, no namespaces, no
//! root to switch uid) is not an error: it is returned as a degraded layer,
//! which the supervisor shows loudly in its log and in `status`.

mod capabilities;
mod cgroup;
pub use cgroup::join_early as join_cgroups_early;
pub mod fds;
mod identity;
mod landlock;
pub mod namespaces;
mod no_new_privs;
mod parent_death;
mod rlimits;
pub mod seccomp;
pub mod seccomp_allowlist;
pub mod sigsys;
pub mod zygote_guard;

use std::os::fd::RawFd;

use edgeward_ipc::control::{DirGrant, SandboxPlan};

/// Why a sandbox step failed. The worker then refuses to run the guest.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Step 1.
    #[error("sandbox step 1 (join cgroup): cannot write pid to {path}: {source}")]
    Cgroup {
        /// The `cgroup.procs` file.
        path: String,
        /// The write error.
        source: std::io::Error,
    },
    /// Step 2.
    #[error("sandbox step 2 (namespaces): {0}")]
    Namespaces(nix::Error),
    /// Step 3.
    #[error("sandbox step 3 (rlimits): {what}: {source}")]
    Rlimits {
        /// Which limit.
        what: &'static str,
        /// The error.
        source: nix::Error,
    },
    /// Step 4.
    #[error("sandbox step 4 (uid/gid {uid}/{gid}): {what}: {source}")]
    Identity {
        /// Target uid.
        uid: u32,
        /// Target gid.
        gid: u32,
        /// Which call failed.
        what: &'static str,
        /// The error.
        source: nix::Error,
    },
    /// Step 5.
    #[error("sandbox step 5 (landlock): {0}")]
    Landlock(String),
    /// Step 6.
    #[error("sandbox step 6 (close inherited fds): {0}")]
    Fds(std::io::Error),
    /// Step 7.
    #[error("sandbox step 7 (drop capabilities): {0}")]
    Capabilities(String),
    /// Step 8.
    #[error("sandbox step 8 (no_new_privs): {0}")]
    NoNewPrivs(nix::Error),
    /// Step 9.
    #[error("sandbox step 9 (parent death signal): {0}")]
    ParentDeath(String),
    /// Step 10.
    #[error("sandbox step 10 (seccomp): {0}")]
    Seccomp(String),
}

/// What the runbook needs besides the plan.
pub struct Runbook<'a> {
    /// The supervisor's plan.
    pub plan: &'a SandboxPlan,
    /// The module's directory grants (Landlock allows exactly these).
    pub dirs: &'a [DirGrant],
    /// Fds open when the worker started (inherited).
    pub inherited_fds: &'a [RawFd],
    /// Inherited fds to keep: stdio, the control socket, the mapped artifact.
    pub keep_fds: &'a [RawFd],
    /// The supervisor's pid (for the parent-death check).
    pub supervisor: nix::unistd::Pid,
    /// `Some(degraded layers)` when the fork server already entered new
    /// namespaces for all its workers; `None` to enter them here.
    pub inherited_namespaces: Option<&'a [String]>,
    /// The seccomp allowlist, compiled.
    pub seccomp: &'a seccomp::CompiledFilter,
}

impl Runbook<'_> {
    /// Applies every step in order. Returns the layers this host could not
    /// apply, in words, e.g. `landlock: not supported by this kernel`.
    ///
    /// # Errors
    /// The first step that failed; the caller must not run guest code then.
    pub fn apply(&self) -> Result<Vec<String>, SandboxError> {
        let mut degraded = Vec::new();
        cgroup::join(&self.plan.cgroup_procs, &mut degraded)?;
        match self.inherited_namespaces {
            Some(from_fork_server) => degraded.extend(from_fork_server.iter().cloned()),
            None => namespaces::unshare(&mut degraded)?,
        }
        rlimits::apply(self.plan)?;
        identity::switch(self.plan.identity, &mut degraded)?;
        landlock::restrict(self.dirs, &mut degraded)?;
        fds::close_inherited(self.inherited_fds, self.keep_fds)?;
        capabilities::drop_all()?;
        no_new_privs::set()?;
        parent_death::arm(self.supervisor)?;
        sigsys::install();
        seccomp::install(self.seccomp)?;
        Ok(degraded)
    }
}
