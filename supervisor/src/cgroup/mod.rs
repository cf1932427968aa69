//! Per-module cgroups: memory limit, CPU quota, pids limit, OOM detection.
//!
//! cgroup v1 (`v1.rs`) and v2 (`v2.rs`) sit behind one trait,
//! [`CgroupDriver`]. The `/sys/fs/cgroup` and `/proc/self/cgroup` inputs are
//! passed in, so both drivers are unit-tested on temp-dir fixtures. Every
//! module cgroup is created under the supervisor's own cgroup as
//! `<own>/<group>/<module>`, which works with a delegated subtree inside a
//! container. `<group>` is `edgeward-<id>`, with an id derived from the
//! gateway's state directory: two gateways on one host never share (or
//! remove) each other's cgroups, and a restarted gateway finds its own. The supervisor creates the cgroups and writes the limits;
//! the worker moves itself in (sandbox step 1).

pub mod favor_dynmods;
mod v1;
mod v2;

use std::path::{Path, PathBuf};

pub use v1::V1;
pub use v2::V2;

/// Limits for one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (guest memory cap plus runtime overhead).
    pub memory_bytes: u64,
    /// CPU quota, percent of one core.
    pub cpu_percent: u32,
    /// Maximum number of processes/threads.
    pub pids: u32,
}

/// A module's cgroup(s), as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleCgroup {
    /// Directories created (one per v1 controller, or one for v2).
    pub dirs: Vec<PathBuf>,
    /// `cgroup.procs` files the worker writes its pid into.
    pub procs: Vec<PathBuf>,
    /// The file that counts OOM kills (`memory.oom_control` or `memory.events`).
    pub oom_events: PathBuf,
    /// The memory limit file (`memory.limit_in_bytes` or `memory.max`).
    pub memory_limit: PathBuf,
    /// Every directory was made by this `create`: no earlier run left
    /// tasks in them, so there is nothing to evict.
    pub fresh: bool,
}

impl ModuleCgroup {
    /// The `cgroup.procs` files as strings, for the worker's messages.
    pub fn procs_files(&self) -> Vec<String> {
        self.procs
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    /// Kills every process left in these cgroups (by a run of edgeward that
    /// crashed or was killed: its workers die with it, but may still be
    /// exiting, and would count against this run's pids limit) and waits up
    /// to `timeout` for them to be gone and reaped (a dead task counts in
    /// `pids.current` until its parent, by then init, reaps it). Returns how
    /// many it killed and how long it waited.
    pub fn evict_stale(&self, timeout: std::time::Duration) -> (usize, std::time::Duration) {
        let started = std::time::Instant::now();
        if self.fresh {
            return (0, std::time::Duration::ZERO);
        }
        let members = || -> Vec<i32> {
            let mut pids: Vec<i32> = self
                .procs
                .iter()
                .filter_map(|f| std::fs::read_to_string(f).ok())
                .flat_map(|text| {
                    text.lines()
                        .filter_map(|l| l.trim().parse().ok())
                        .collect::<Vec<i32>>()
                })
                .collect();
            pids.sort_unstable();
            pids.dedup();
            pids
        };
        // Tasks that left `cgroup.procs` still count in `pids.current`
        // (and against their uid's RLIMIT_NPROC) until reaped.
        let charged = || {
            self.dirs
                .iter()
                .filter_map(|d| std::fs::read_to_string(d.join("pids.current")).ok())
                .any(|n| n.trim() != "0")
        };
        let stale = members();
        let charged_at_start = charged();
        for &pid in &stale {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = std::time::Instant::now() + timeout;
        while (!stale.is_empty() || charged_at_start) && std::time::Instant::now() < deadline {
            // Ours to reap when edgeward is their subreaper (PID 1). Only
            // these pids: any other child's status belongs to the event
            // loop (the fork server's, say).
            for &pid in &stale {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
            if members().is_empty() && !charged() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        (stale.len(), started.elapsed())
    }

    /// The memory limit in force now, in bytes (an operator may have changed it).
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        std::fs::read_to_string(&self.memory_limit)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory could not be written.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// One cgroup hierarchy flavour.
pub trait CgroupDriver {
    /// `v1` or `v2`, and which controllers are used.
    fn describe(&self) -> String;

    /// Whether workers join by writing `cgroup.procs` of v1 hierarchies,
    /// where a migration waits for an RCU grace period unless the
    /// `favordynmods` mode is on (`favor_dynmods.rs`).
    fn is_v1(&self) -> bool {
        false
    }

    /// The directories module cgroups are created in (`<own>/<group>`, one
    /// per hierarchy used), which may not exist yet.
    fn group_dirs(&self) -> Vec<PathBuf>;

    /// Creates (or reuses) the module's cgroup and writes its limits.
    ///
    /// # Errors
    /// If a directory or limit file cannot be written.
    fn create(&self, module: &str, limits: &Limits) -> Result<ModuleCgroup, CgroupError>;

    /// OOM kills counted in the module's cgroup so far.
    fn oom_kills(&self, cgroup: &ModuleCgroup) -> u64;

    /// Removes the module's cgroup (it must be empty).
    fn remove(&self, cgroup: &ModuleCgroup) {
        for dir in cgroup.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Picks the driver for this host: v1 when the memory, cpu and pids
/// controllers are mounted as v1 hierarchies, else v2 when the unified
/// hierarchy offers them, else none (a degraded layer, reported).
///
/// `sys_cgroup` is normally `/sys/fs/cgroup`; `proc_self_cgroup` the text of
/// `/proc/self/cgroup`.
pub fn detect(
    sys_cgroup: &Path,
    proc_self_cgroup: &str,
    group: &str,
) -> Result<Box<dyn CgroupDriver>, String> {
    let memberships = parse_proc_cgroup(proc_self_cgroup);
    let v1_path = |controller: &str| {
        memberships
            .iter()
            .find(|(_, controllers, _)| controllers.split(',').any(|c| c == controller))
            .map(|(_, _, path)| path.clone())
    };
    if let (Some(memory), Some(cpu), Some(pids)) =
        (v1_path("memory"), v1_path("cpu"), v1_path("pids"))
    {
        if sys_cgroup.join("memory").is_dir()
            && sys_cgroup.join("cpu").is_dir()
            && sys_cgroup.join("pids").is_dir()
        {
            return Ok(Box::new(V1::new(sys_cgroup, &memory, &cpu, &pids, group)));
        }
    }
    let unified = memberships
        .iter()
        .find(|(id, controllers, _)| *id == 0 && controllers.is_empty())
        .map(|(_, _, path)| path.clone());
    if let Some(own) = unified {
        // Pure v2 mounts at /sys/fs/cgroup; hybrid hosts at /sys/fs/cgroup/unified.
        for root in [sys_cgroup.to_path_buf(), sys_cgroup.join("unified")] {
            let available =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| available.split_whitespace().any(|a| a == c);
            if has("memory") && has("cpu") && has("pids") {
                return Ok(Box::new(V2::new(&root, &own, group)));
            }
        }
        return Err(format!(
            "cgroup v2 at {} does not offer the memory, cpu and pids controllers (not delegated?)",
            sys_cgroup.display()
        ));
    }
    Err("no cgroup hierarchy with memory, cpu and pids controllers".into())
}

/// `(hierarchy id, controllers, path)` for each line of `/proc/self/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Vec<(u32, String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            Some((id, controllers, path))
        })
        .collect()
}

/// Writes `value` to `dir/file`.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| CgroupError::Io { path, source })
}

/// Creates `dir` and its parents.
/// Creates `dir` (and missing parents). Returns `true` if `dir` itself was
/// made now, `false` if it existed: a cgroup made now has no tasks.
pub(crate) fn mkdir(dir: &Path) -> Result<bool, CgroupError> {
    let io = |source| CgroupError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            match std::fs::create_dir(dir) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
                    Ok(false)
                }
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
    }
}

/// Reads `key N` from a flat-keyed cgroup file.
pub(crate) fn read_key(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let mut kv = l.split_whitespace();
            (kv.next() == Some(key)).then(|| kv.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

/// Joins a cgroup path like `/a/b` under `root` (a leading `/` is not absolute here).
pub(crate) fn under(root: &Path, cgroup_path: &str) -> PathBuf {
    root.join(cgroup_path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests;
