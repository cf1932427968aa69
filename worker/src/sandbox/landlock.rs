//! Step 5: Landlock. File-system access is limited to the granted
//! directories (read-only or read-write as granted), TCP bind/connect is
//! denied, and abstract Unix sockets and signals are scoped to the worker.
//! This is the second wall behind WASI's own capability handles: even a bug
//! in the WASI implementation cannot open a path outside the grants.

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};

use edgeward_ipc::control::DirGrant;

use super::SandboxError;

/// The newest ABI this code knows; older kernels get a best-effort subset,
/// reported as degraded.
const TARGET_ABI: ABI = ABI::V6;

/// Restricts this process (and its future threads) to the grants.
pub(super) fn restrict(dirs: &[DirGrant], degraded: &mut Vec<String>) -> Result<(), SandboxError> {
    let err = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
    let ro: Vec<&str> = dirs
        .iter()
        .filter(|d| !d.writable)
        .map(|d| d.host.as_str())
        .collect();
    let rw: Vec<&str> = dirs
        .iter()
        .filter(|d| d.writable)
        .map(|d| d.host.as_str())
        .collect();
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(err)?
        .handle_access(AccessNet::from_all(TARGET_ABI))
        .map_err(err)?
        .scope(Scope::from_all(TARGET_ABI))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(&ro, AccessFs::from_read(TARGET_ABI)))
        .map_err(err)?
        .add_rules(path_beneath_rules(&rw, AccessFs::from_all(TARGET_ABI)))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => {}
        RulesetStatus::PartiallyEnforced => degraded.push(format!(
            "landlock: only partly enforced (kernel below ABI {})",
            TARGET_ABI as i32
        )),
        RulesetStatus::NotEnforced => degraded.push(
            "landlock: not supported by this kernel (file access limited by WASI only)".into(),
        ),
    }
    Ok(())
}
