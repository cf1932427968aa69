//! Step 1: join the module's cgroup(s). The supervisor created them and
//! wrote the limits; the worker moves itself in, so every page it touches
//! from here on is charged to the module.

use super::SandboxError;

/// The `cgroup.procs` files joined before `Init` ([`join_early`]).
static JOINED_EARLY: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Joins the module's cgroups as soon as the worker is forked, before it
/// says Hello, so that a spare worker waiting for `Init` has already paid
/// for the migration. Any failure is left for [`join`] to report.
pub fn join_early(procs_files: &[String]) {
    let pid = std::process::id().to_string();
    if !procs_files.is_empty() && procs_files.iter().all(|p| std::fs::write(p, &pid).is_ok()) {
        let _ = JOINED_EARLY.set(procs_files.to_vec());
    }
}

/// Records that this process was created in the module's cgroup
/// (`clone3(CLONE_INTO_CGROUP)`, see `worker/src/clone_into_cgroup.rs`), so
/// that [`join`] writes nothing: writing one's pid into the cgroup one is
/// already in still takes the migration lock and pays its grace period.
pub fn born_in(procs_files: &[String]) {
    if !procs_files.is_empty() {
        let _ = JOINED_EARLY.set(procs_files.to_vec());
    }
}

/// Writes our pid to each `cgroup.procs` file (unless [`join_early`]
/// already did: a second write would migrate again, and pay again).
pub(super) fn join(procs_files: &[String], degraded: &mut Vec<String>) -> Result<(), SandboxError> {
    if procs_files.is_empty() {
        degraded.push("cgroups: none usable on this host (no memory/CPU/pids limits)".into());
        return Ok(());
    }
    if JOINED_EARLY.get().is_some_and(|early| early == procs_files) {
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
