//! cgroup v2: one unified hierarchy. Because of the "no internal processes"
//! rule, the module cgroups live in `<own>/<group>/<module>` with the
//! controllers enabled in `<own>/cgroup.subtree_control` and
//! `<own>/<group>/cgroup.subtree_control`. The supervisor's own cgroup must
//! be delegated (writable) for this; in a container it usually is.

use std::path::{Path, PathBuf};

use super::{mkdir, read_key, under, write, CgroupDriver, CgroupError, Limits, ModuleCgroup};

const CPU_PERIOD_US: u64 = 100_000;

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

impl CgroupDriver for V2 {
    fn describe(&self) -> String {
        format!("cgroup v2 ({})", self.base.display())
    }

    fn group_dirs(&self) -> Vec<PathBuf> {
        vec![self.base.clone()]
    }

    fn create(&self, module: &str, limits: &Limits) -> Result<ModuleCgroup, CgroupError> {
        mkdir(&self.base)?;
        // Enabling controllers for children may fail if they already are, or
        // if the parent still has processes (then the limits below fail loudly).
        let _ = write(&self.own, "cgroup.subtree_control", "+memory +cpu +pids");
        let _ = write(&self.base, "cgroup.subtree_control", "+memory +cpu +pids");
        let dir = self.base.join(module);
        mkdir(&dir)?;
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
        })
    }

    fn oom_kills(&self, cgroup: &ModuleCgroup) -> u64 {
        read_key(&cgroup.oom_events, "oom_kill")
    }
}
