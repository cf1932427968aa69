//! What the supervisor decides about each worker's sandbox: the cgroup
//! driver for this host, the module's uid/gid, its limits, and the
//! ownership of its read-write directories. The worker carries the plan out
//! (`worker/src/sandbox/`). Missing layers are collected as warnings, shown
//! loudly at start-up and in `status`.

use std::path::Path;

use edgeward_ipc::control::SandboxPlan;

use crate::cgroup::{self, CgroupDriver, Limits, ModuleCgroup};
use crate::policy::Policy;

/// Default memory a worker needs beside its guest's linear memory: the
/// wasmtime store, the WASI context, the I/O thread's stack and page tables.
/// Measured on the dev box: an idle example worker has 0.4–0.8 MiB charged to
/// its cgroup (`memory.max_usage_in_bytes`); 8 MiB leaves room for WASI
/// buffers under load. Operators can change it (`--runtime-overhead-mib`).
pub const DEFAULT_RUNTIME_OVERHEAD_MIB: u64 = 8;

/// fd limit of a worker: stdio, control, epoll, timer, tokio, preopens, files.
const MAX_FDS: u64 = 320;

/// Threads a worker itself needs beyond the module's `pids` grant.
const OWN_THREADS: u64 = 3;

/// The host's sandbox capabilities, detected once at start-up.
pub struct HostSandbox {
    cgroups: Option<Box<dyn CgroupDriver>>,
    overhead_mib: u64,
    uid_base: Option<u32>,
    /// This gateway's block of uids above `uid_base` (from the state dir's
    /// hash), so two gateways on one host do not share module uids (and with
    /// them `RLIMIT_NPROC` budgets and file ownership).
    uid_block: u32,
    /// On cgroup v1 as root: whether migrations skip the RCU grace period.
    migrations: Option<cgroup::favor_dynmods::Outcome>,
    /// Layers this host cannot enforce, in words.
    pub warnings: Vec<String>,
}

impl HostSandbox {
    /// Detects cgroups and whether identities can be switched.
    /// `state` names the gateway instance: its cgroups are
    /// `edgeward-<hash of state dir>`.
    pub fn detect(uid_base: u32, overhead_mib: u64, state: &Path) -> Self {
        let mut warnings = Vec::new();
        let proc_self = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let group = cgroup_group(state);
        let root = nix::unistd::geteuid().is_root();
        let cgroups = match cgroup::detect(Path::new("/sys/fs/cgroup"), &proc_self, &group) {
            // Without root, module cgroups can be made only in a cgroup
            // delegated to this user; finding that out now keeps a host
            // without one from failing every module at its first start.
            Ok(driver) => match (!root)
                .then(|| driver.group_dirs().into_iter().find(|d| !can_create_in(d)))
                .flatten()
            {
                Some(dir) => {
                    warnings.push(format!(
                        "cgroups unavailable (not root, and {} is not writable: no cgroup is delegated to this user): modules run without memory, CPU and pids limits",
                        nearest_existing(&dir).display()
                    ));
                    None
                }
                None => Some(driver),
            },
            Err(reason) => {
                warnings.push(format!(
                    "cgroups unavailable ({reason}): modules run without memory, CPU and pids limits"
                ));
                None
            }
        };
        if !root {
            warnings.push(
                "not running as root: modules share the supervisor's uid and get no mount, IPC or network namespaces"
                    .into(),
            );
        }
        Self {
            cgroups,
            migrations: None,
            overhead_mib,
            uid_base: root.then_some(uid_base),
            uid_block: instance_number(state),
            warnings,
        }
    }

    /// On cgroup v1 as root, turns on the kernel mode in which a worker's
    /// migration into its cgroups skips the RCU grace period
    /// (`cgroup/favor_dynmods.rs`); the outcome shows in
    /// [`Self::cgroup_description`]. For `run` and `exec`, not `check`.
    pub fn favor_migrations(&mut self) {
        let v1 = self.cgroups.as_ref().is_some_and(|d| d.is_v1());
        if v1 && nix::unistd::geteuid().is_root() {
            self.migrations = Some(cgroup::favor_dynmods::turn_on(&std::env::temp_dir()));
        }
    }

    /// One line describing the cgroup layer.
    pub fn cgroup_description(&self) -> String {
        let driver = self
            .cgroups
            .as_ref()
            .map_or_else(|| "none".to_string(), |c| c.describe());
        match &self.migrations {
            Some(outcome) => format!("{driver}, {}", outcome.describe()),
            None => driver,
        }
    }

    /// The uid/gid of the module in slot `index`, when identities are
    /// switched: `uid_base + UIDS_PER_GATEWAY × block + index`, the block
    /// chosen by the state dir's hash.
    pub fn identity(&self, index: usize) -> Option<(u32, u32)> {
        self.uid_base.map(|base| {
            let id = base + UIDS_PER_GATEWAY * self.uid_block + index as u32;
            (id, id)
        })
    }

    /// The uid/gid of an `edgeward exec` run with process id `pid`, when
    /// identities are switched: `uid_base + UIDS_PER_GATEWAY × 65536 + pid`,
    /// above every gateway's block, so a run never shares a module's uid
    /// (nor another run's: pids are unique while both live).
    pub fn exec_identity(&self, pid: u32) -> Option<(u32, u32)> {
        self.uid_base.map(|base| {
            let id = base + EXEC_UID_OFFSET + pid;
            (id, id)
        })
    }

    /// Removes the cgroups of `edgeward exec` runs (`exec-PID`) whose
    /// process is gone: a run killed with SIGKILL cannot remove its own
    /// (its worker died with it, so the cgroup is empty).
    pub fn remove_stale_exec_cgroups(&self) {
        let Some(driver) = &self.cgroups else {
            return;
        };
        for dir in driver.group_dirs() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("exec-"))
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
    }

    /// Creates the module's cgroup (idempotent) with its policy's limits.
    /// Returns `Ok(None)` on hosts without cgroups.
    ///
    /// # Errors
    /// If the cgroup cannot be created or a limit not written.
    pub fn cgroup(&self, policy: &Policy) -> Result<Option<ModuleCgroup>, cgroup::CgroupError> {
        let Some(driver) = &self.cgroups else {
            return Ok(None);
        };
        let limits = Limits {
            memory_bytes: self.memory_limit_bytes(policy),
            cpu_percent: policy.resources.cpu_percent,
            // A spare worker waits in the same cgroups: one more process.
            pids: policy.resources.pids + OWN_THREADS as u32 + u32::from(policy.restart.spare),
        };
        driver.create(&policy.name, &limits).map(Some)
    }

    /// Whether an earlier run left `policy`'s cgroup behind (it may hold
    /// that run's tasks, to evict before this run's workers exist).
    pub fn cgroup_left_over(&self, policy: &Policy) -> bool {
        self.cgroups.as_ref().is_some_and(|driver| {
            driver
                .group_dirs()
                .iter()
                .any(|group| group.join(&policy.name).is_dir())
        })
    }

    /// The cgroup memory limit: the guest's cap plus the runtime's overhead.
    pub fn memory_limit_bytes(&self, policy: &Policy) -> u64 {
        (u64::from(policy.resources.memory_mib) + self.overhead_mib) << 20
    }

    /// OOM kills so far in a module's cgroup.
    pub fn oom_kills(&self, cgroup: &ModuleCgroup) -> u64 {
        self.cgroups.as_ref().map_or(0, |d| d.oom_kills(cgroup))
    }

    /// Removes a module's cgroup.
    pub fn remove_cgroup(&self, cgroup: &ModuleCgroup) {
        if let Some(driver) = &self.cgroups {
            driver.remove(cgroup);
        }
    }

    /// The plan sent in `Init`.
    pub fn plan(
        &self,
        policy: &Policy,
        index: usize,
        cgroup: Option<&ModuleCgroup>,
    ) -> SandboxPlan {
        Self::plan_for(policy, self.identity(index), cgroup)
    }

    /// The plan for a worker with this identity (`edgeward exec`).
    pub fn plan_for(
        policy: &Policy,
        identity: Option<(u32, u32)>,
        cgroup: Option<&ModuleCgroup>,
    ) -> SandboxPlan {
        SandboxPlan {
            cgroup_procs: cgroup.map_or_else(Vec::new, ModuleCgroup::procs_files),
            identity,
            max_fds: MAX_FDS,
            max_threads: u64::from(policy.resources.pids) + OWN_THREADS,
        }
    }
}

/// Whether this process may create cgroups in `dir` (made with its parents
/// if missing): its nearest existing ancestor must be writable and
/// searchable by our effective ids.
fn can_create_in(dir: &Path) -> bool {
    use nix::unistd::{faccessat, AccessFlags};
    faccessat(
        nix::fcntl::AT_FDCWD,
        nearest_existing(dir),
        AccessFlags::W_OK | AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok()
}

/// `dir`, or its nearest ancestor that exists.
fn nearest_existing(dir: &Path) -> &Path {
    dir.ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"))
}

/// Module uids reserved per gateway instance; also the most modules one
/// gateway runs with distinct uids.
pub const UIDS_PER_GATEWAY: u32 = 1024;

/// Where `edgeward exec` uids start above `uid_base`: past the 65536
/// gateway blocks.
pub const EXEC_UID_OFFSET: u32 = UIDS_PER_GATEWAY * 65536;

/// A number for this gateway instance, 0..65536, from its state dir.
fn instance_number(state: &Path) -> u32 {
    use sha2::{Digest, Sha256};
    let state = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
    let digest = Sha256::digest(state.as_os_str().as_encoded_bytes());
    u32::from(u16::from_le_bytes([digest[0], digest[1]]))
}

/// `edgeward-<12 hex digits of sha256(canonical state dir)>`.
pub fn cgroup_group(state: &Path) -> String {
    use sha2::{Digest, Sha256};
    let state = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
    let digest = Sha256::digest(state.as_os_str().as_encoded_bytes());
    format!("edgeward-{}", &hex::encode(digest)[..12])
}
