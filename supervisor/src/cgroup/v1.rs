//! cgroup v1: one hierarchy per controller. The module's cgroup is
//! `<controller mount>/<own path>/<group>/<module>` for memory, cpu and pids.

use std::path::{Path, PathBuf};

use super::{mkdir, read_key, under, write, CgroupDriver, CgroupError, Limits, ModuleCgroup};

/// The CFS period used for CPU quotas, in µs.
const CPU_PERIOD_US: u64 = 100_000;

/// cgroup v1 driver.
pub struct V1 {
    memory: PathBuf,
    cpu: PathBuf,
    pids: PathBuf,
}

impl V1 {
    /// `root` is the v1 mount parent (`/sys/fs/cgroup`); the paths are this
    /// process's own cgroup in each controller's hierarchy.
    pub fn new(root: &Path, memory: &str, cpu: &str, pids: &str, group: &str) -> Self {
        Self {
            memory: under(&root.join("memory"), memory).join(group),
            cpu: under(&root.join("cpu"), cpu).join(group),
            pids: under(&root.join("pids"), pids).join(group),
        }
    }
}

impl CgroupDriver for V1 {
    fn is_v1(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "cgroup v1 (memory {}, cpu {}, pids {})",
            self.memory.display(),
            self.cpu.display(),
            self.pids.display()
        )
    }

    fn group_dirs(&self) -> Vec<PathBuf> {
        vec![self.memory.clone(), self.cpu.clone(), self.pids.clone()]
    }

    fn create(&self, module: &str, limits: &Limits) -> Result<ModuleCgroup, CgroupError> {
        let memory = self.memory.join(module);
        let cpu = self.cpu.join(module);
        let pids = self.pids.join(module);
        let mut fresh = true;
        for dir in [&memory, &cpu, &pids] {
            fresh &= mkdir(dir)?;
        }
        write(
            &memory,
            "memory.limit_in_bytes",
            &limits.memory_bytes.to_string(),
        )?;
        // Swap would let a module exceed its limit on disk; forbid it where supported.
        let _ = write(&memory, "memory.swappiness", "0");
        write(&cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
        let quota = CPU_PERIOD_US * u64::from(limits.cpu_percent) / 100;
        write(&cpu, "cpu.cfs_quota_us", &quota.to_string())?;
        write(&pids, "pids.max", &limits.pids.to_string())?;
        Ok(ModuleCgroup {
            procs: vec![
                memory.join("cgroup.procs"),
                cpu.join("cgroup.procs"),
                pids.join("cgroup.procs"),
            ],
            oom_events: memory.join("memory.oom_control"),
            memory_limit: memory.join("memory.limit_in_bytes"),
            dirs: vec![memory, cpu, pids],
            fresh,
        })
    }

    fn oom_kills(&self, cgroup: &ModuleCgroup) -> u64 {
        read_key(&cgroup.oom_events, "oom_kill")
    }
}
