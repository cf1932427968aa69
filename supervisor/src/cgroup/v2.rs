//! cgroup v2: one unified hierarchy. Because of the "no internal processes"
//! rule, the module cgroups live in `<own>/<group>/<module>` with the
//! controllers enabled in `<own>/cgroup.subtree_control` and
//! `<own>/<group>/cgroup.subtree_control`. The supervisor's own cgroup must
//! be delegated (writable) for this; in a container it usually is.
//!
//! The rule also bars enabling controllers for children of a cgroup that
//! has processes of its own (the root excepted). A supervisor that is not
//! in the root cgroup (a container's init with its own cgroup namespace, a
//! systemd service with `Delegate=yes`) therefore first moves the
//! processes of its own cgroup into a leaf beside the module cgroups,
//! `<own>/edgeward-supervisor` (see [`SUPERVISOR_LEAF`]).

use std::path::{Path, PathBuf};

use super::{mkdir, read_key, under, write, CgroupDriver, CgroupError, Limits, ModuleCgroup};

const CPU_PERIOD_US: u64 = 100_000;

/// The leaf the supervisor's own processes move to when their cgroup must
/// enable controllers for its children.
pub const SUPERVISOR_LEAF: &str = "edgeward-supervisor";

/// What the module cgroups need from their parents.
const CONTROLLERS: &str = "+memory +cpu +pids";

/// cgroup v2 driver.
pub struct V2 {
    own: PathBuf,
    base: PathBuf,
}

impl V2 {
    /// `root` is the unified mount; `own` this process's cgroup path in it.
    pub fn new(root: &Path, own: &str, group: &str) -> Self {
        let own = under(root, own);
        Self {
            base: own.join(group),
            own,
        }
    }
}

impl V2 {
    /// Enables the controllers in the supervisor's own cgroup, first moving
    /// its processes into [`SUPERVISOR_LEAF`] if the kernel refuses because
    /// they are there (`EBUSY`: the "no internal processes" rule).
    fn enable_controllers(&self) -> Result<(), CgroupError> {
        match write(&self.own, "cgroup.subtree_control", CONTROLLERS) {
            Err(CgroupError::Io { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
                let leaf = self.own.join(SUPERVISOR_LEAF);
                let _ = mkdir(&leaf)?;
                move_processes(&self.own, &leaf)?;
                write(&self.own, "cgroup.subtree_control", CONTROLLERS)
            }
            // Anything else (already enabled, not delegated) is left for
            // the limit files to report with their path.
            _ => Ok(()),
        }
    }
}

/// Moves every process of cgroup `from` into `to` (a few passes: one may
/// fork while it is being moved).
fn move_processes(from: &Path, to: &Path) -> Result<(), CgroupError> {
    for _ in 0..8 {
        let procs = std::fs::read_to_string(from.join("cgroup.procs")).map_err(|source| {
            CgroupError::Io {
                path: from.join("cgroup.procs"),
                source,
            }
        })?;
        let pids: Vec<&str> = procs.split_whitespace().collect();
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            // A process that exited meanwhile is gone from `from` too.
            match write(to, "cgroup.procs", pid) {
                Err(CgroupError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ESRCH) => {}
                other => other?,
            }
        }
    }
    Ok(())
}

impl CgroupDriver for V2 {
    fn describe(&self) -> String {
        format!("cgroup v2 ({})", self.base.display())
    }

    fn group_dirs(&self) -> Vec<PathBuf> {
        vec![self.base.clone()]
    }

    fn create(&self, module: &str, limits: &Limits) -> Result<ModuleCgroup, CgroupError> {
        let _ = mkdir(&self.base)?;
        self.enable_controllers()?;
        // An error here (controllers already enabled, say) is left for the
        // limit files below to report.
        let _ = write(&self.base, "cgroup.subtree_control", CONTROLLERS);
        let dir = self.base.join(module);
        let fresh = mkdir(&dir)?;
        write(&dir, "memory.max", &limits.memory_bytes.to_string())?;
        let _ = write(&dir, "memory.swap.max", "0");
        let quota = CPU_PERIOD_US * u64::from(limits.cpu_percent) / 100;
        write(&dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
        write(&dir, "pids.max", &limits.pids.to_string())?;
        Ok(ModuleCgroup {
            procs: vec![dir.join("cgroup.procs")],
            oom_events: dir.join("memory.events"),
            memory_limit: dir.join("memory.max"),
            dirs: vec![dir],
            fresh,
        })
    }

    fn oom_kills(&self, cgroup: &ModuleCgroup) -> u64 {
        read_key(&cgroup.oom_events, "oom_kill")
    }
}
