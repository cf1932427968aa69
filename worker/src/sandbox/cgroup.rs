//! Step 1: join the module's cgroup(s). The supervisor created them and
//! wrote the limits; the worker moves itself in, so every page it touches
//! from here on is charged to the module.

use super::SandboxError;

/// Writes our pid to each `cgroup.procs` file.
pub(super) fn join(procs_files: &[String], degraded: &mut Vec<String>) -> Result<(), SandboxError> {
    if procs_files.is_empty() {
        degraded.push("cgroups: none usable on this host (no memory/CPU/pids limits)".into());
        return Ok(());
    }
    let pid = std::process::id().to_string();
    for path in procs_files {
        std::fs::write(path, &pid).map_err(|source| SandboxError::Cgroup {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
