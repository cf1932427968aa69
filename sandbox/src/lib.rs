//! The sandbox runbook: how a worker confines itself before any guest code
//! runs (a wasm module) or before it talks to any peer (a connector, see
//! [`Profile`]). One file per step, applied in this order:
//!
//! | step | file | why here |
//! | --- | --- | --- |
//! | 1 join the module's cgroup | `cgroup.rs` | needs root; every later allocation is charged to the module |
//! | 2 new mount, IPC, network namespaces | `namespaces.rs` | needs `CAP_SYS_ADMIN`; a new netns has no interfaces: no network at all. Connectors: then, still root, the granted hosts file is bound over `/etc/hosts` in the (private) mount namespace |
//! | 3 rlimits | `rlimits.rs` | no core dumps, bounded fds and threads (`RLIMIT_NPROC` counts per uid, so it binds after step 4) |
//! | 4 own uid/gid | `identity.rs` | needs `CAP_SETUID`; keeps `CAP_SETPCAP` in the permitted set for step 7 |
//! | 5 Landlock | `landlock.rs` | only the granted dirs, with their ro/rw modes; sets no_new_privs itself. Connectors: granted files ro, resolver files ro, state dir rw, TCP connect to granted ports only |
//! | 6 close fds not handed over | `fds.rs` | nothing inherited from the fork server leaks in |
//! | 7 drop all capabilities | `capabilities.rs` | bounding set first (needs `CAP_SETPCAP`), then every set |
//! | 8 `PR_SET_NO_NEW_PRIVS` | `no_new_privs.rs` | required by seccomp without `CAP_SYS_ADMIN` |
//! | 9 `PR_SET_PDEATHSIG` | `parent_death.rs` | the worker dies with the supervisor |
//! | 9a connect guard (connectors only) | `connect_guard.rs` | a seccomp filter: `connect` to the supervisor (user notification), non-TCP `socket` fails with `EACCES`; needs step 8, and must precede step 10, which refuses `seccomp` itself; no thread exists yet, as its listener flag excludes `TSYNC` |
//! | 10 seccomp allowlist | `seccomp.rs` (+ `seccomp_allowlist.rs`, `sigsys.rs`) | last: every earlier step needs syscalls the filter forbids |
//!
//! Each step has its own [`SandboxError`] variant, so a failure names the
//! step. A layer the host lacks (no cgroups, no Landlock, no namespaces, no
//! root to switch uid, no seccomp user notification) is not an error: it is
//! returned as a degraded layer, which the supervisor shows loudly in its
//! log and in `status`.

pub mod arch;
mod capabilities;
mod cgroup;
pub use cgroup::born_in as born_in_cgroups;
pub use cgroup::join_early as join_cgroups_early;
mod connect_guard;
#[cfg(test)]
mod connector_tests;
pub mod fds;
mod identity;
mod landlock;
pub mod namespaces;
mod no_new_privs;
mod parent_death;
mod profile;
pub use profile::{Applied, ConnectorGrants, Profile};
mod rlimits;
pub mod seccomp;
pub mod seccomp_allowlist;
mod seccomp_fast_path;
pub mod sigsys;
pub mod zygote_guard;

pub use seccomp_allowlist::Allowlist;

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
    /// Step 2, connectors: the hosts file over `/etc/hosts`.
    #[error("sandbox step 2 (hosts file): {0}")]
    Hosts(String),
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
    /// Step 9a, connectors.
    #[error("sandbox step 9a (connect guard): {0}")]
    ConnectGuard(String),
    /// Step 10.
    #[error("sandbox step 10 (seccomp): {0}")]
    Seccomp(String),
}

/// What the runbook needs besides the plan.
pub struct Runbook<'a> {
    /// The supervisor's plan.
    pub plan: &'a SandboxPlan,
    /// What is confined: a module, or a connector with its grants.
    pub profile: Profile<'a>,
    /// The module's directory grants (Landlock allows exactly these).
    /// Modules only: must be empty for a connector, whose files are in its
    /// [`ConnectorGrants`].
    pub dirs: &'a [DirGrant],
    /// Fds open when the worker started (inherited).
    pub inherited_fds: &'a [RawFd],
    /// Inherited fds to keep: stdio, the control socket, the mapped artifact.
    pub keep_fds: &'a [RawFd],
    /// The supervisor's pid (for the parent-death check).
    pub supervisor: nix::unistd::Pid,
    /// `Some(degraded layers)` when the fork server already entered new
    /// namespaces for all its workers; `None` to enter them here (always
    /// `None` for a connector: it needs a mount namespace of its own).
    pub inherited_namespaces: Option<&'a [String]>,
    /// The seccomp allowlist, compiled for the profile's
    /// [`Profile::allowlist`].
    pub seccomp: &'a seccomp::CompiledFilter,
}

impl Runbook<'_> {
    /// Applies every step in order, in the calling thread, which must be
    /// the process's only thread (namespaces, Landlock and the connect
    /// guard apply to it and to the threads it starts later). Returns the
    /// layers this host could not apply, in words, e.g. `landlock: not
    /// supported by this kernel`, and a connector's connect-guard listener.
    ///
    /// # Errors
    /// The first step that failed; the caller must not run guest code (or
    /// talk to any peer) then.
    pub fn apply(&self) -> Result<Applied, SandboxError> {
        let wanted = self.profile.allowlist();
        if self.seccomp.allowlist() != wanted {
            return Err(SandboxError::Seccomp(format!(
                "the filter was compiled from the {} allowlist, the profile needs the {} one (seccomp::compile_for)",
                self.seccomp.allowlist().name(),
                wanted.name()
            )));
        }
        let mut degraded = Vec::new();
        cgroup::join(&self.plan.cgroup_procs, &mut degraded)?;
        match (self.profile, self.inherited_namespaces) {
            (Profile::Module, Some(from_fork_server)) => {
                degraded.extend(from_fork_server.iter().cloned())
            }
            (Profile::Module, None) => namespaces::unshare(&mut degraded)?,
            (Profile::Connector(_), Some(_)) => {
                return Err(SandboxError::Hosts(
                    "a connector must enter namespaces of its own (inherited_namespaces: None), to bind its hosts file privately".into(),
                ))
            }
            (Profile::Connector(grants), None) => {
                let refused = "namespaces: host refused new mount/IPC/net namespaces (connector keeps the host network; its connects still go through the connect guard)";
                if namespaces::enter(&mut degraded, refused)? {
                    namespaces::bind_hosts(&grants.hosts_file)?;
                } else {
                    degraded.push("hosts: no private mount namespace to bind the granted hosts file in: the connector resolves names with the host's /etc/hosts".into());
                }
            }
        }
        rlimits::apply(self.plan)?;
        identity::switch(self.plan.identity, &mut degraded)?;
        match self.profile {
            Profile::Module => landlock::restrict(self.dirs, &mut degraded)?,
            Profile::Connector(grants) => {
                if !self.dirs.is_empty() {
                    return Err(SandboxError::Landlock(
                        "dirs are a module's grants; a connector's files are its ConnectorGrants (read_files, state_dir)".into(),
                    ));
                }
                landlock::restrict_connector(grants, &mut degraded)?
            }
        }
        fds::close_inherited(self.inherited_fds, self.keep_fds)?;
        capabilities::drop_all()?;
        no_new_privs::set()?;
        parent_death::arm(self.supervisor)?;
        let connect_listener = match self.profile {
            Profile::Module => None,
            Profile::Connector(_) => connect_guard::install(&mut degraded)?,
        };
        sigsys::install();
        seccomp::install(self.seccomp)?;
        Ok(Applied {
            degraded,
            connect_listener,
        })
    }
}

/// The seccomp allowlist `list` as a Markdown table (`| system call |
/// allowed when | why |`, one row per rule), for `seccomp-table` commands
/// and docs/security.md.
pub fn seccomp_table(list: Allowlist) -> String {
    seccomp_allowlist::markdown_table(list)
}
