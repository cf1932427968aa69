//! Step 5: Landlock. File-system access is limited to the granted
//! directories (read-only or read-write as granted), TCP bind/connect is
//! denied, and abstract Unix sockets and signals are scoped to the worker.
//! This is the second wall behind WASI's own capability handles: even a bug
//! in the WASI implementation cannot open a path outside the grants.
//!
//! A connector ([`restrict_connector`]) gets its granted files read-only,
//! the resolver's files in `/etc` read-only, its state dir read-write, and
//! TCP connects to its granted ports only. Landlock checks ports, never
//! addresses: the address of every connect is checked by the supervisor
//! behind the connect guard (`connect_guard.rs`); these port rules are the
//! wall behind it.

use std::path::Path;

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, LandlockStatus, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use edgeward_ipc::control::DirGrant;

use super::profile::ConnectorGrants;
use super::SandboxError;

/// What glibc's `getaddrinfo` reads besides `/etc/hosts` (the bound hosts
/// file). Each is granted read-only when present; a missing one is skipped,
/// as glibc skips it too.
const RESOLVER_FILES: [&str; 4] = [
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
];

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

/// Restricts a connector (this process and its future threads) to its
/// grants: see the module docs.
pub(super) fn restrict_connector(
    grants: &ConnectorGrants,
    degraded: &mut Vec<String>,
) -> Result<(), SandboxError> {
    let err = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
    let mut read: Vec<PathFd> = Vec::new();
    for path in &grants.read_files {
        let fd = open_granted(path, "read_files")?;
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(SandboxError::Landlock(format!(
                "read_files: {} is a directory; grant files only (the state dir is the connector's one directory)",
                path.display()
            )));
        }
        read.push(fd);
    }
    for path in std::iter::once("/etc/hosts")
        .chain(RESOLVER_FILES)
        .map(Path::new)
    {
        match PathFd::new(path) {
            Ok(fd) => read.push(fd),
            Err(_) if !path.exists() => {}
            Err(e) => {
                return Err(SandboxError::Landlock(format!(
                    "cannot open {} for its read-only rule: {e}",
                    path.display()
                )))
            }
        }
    }
    let state = open_granted(&grants.state_dir, "state_dir")?;
    let status =
        Ruleset::default()
            .handle_access(AccessFs::from_all(TARGET_ABI))
            .map_err(err)?
            .handle_access(AccessNet::from_all(TARGET_ABI))
            .map_err(err)?
            .scope(Scope::from_all(TARGET_ABI))
            .map_err(err)?
            .create()
            .map_err(err)?
            // Files only: directory rights on a file are refused by the kernel.
            .add_rules(read.into_iter().map(|fd| {
                Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, AccessFs::ReadFile))
            }))
            .map_err(err)?
            .add_rule(PathBeneath::new(state, AccessFs::from_all(TARGET_ABI)))
            .map_err(err)?
            .add_rules(grants.ports.iter().map(|&port| {
                Ok::<_, landlock::RulesetError>(NetPort::new(port, AccessNet::ConnectTcp))
            }))
            .map_err(err)?
            .restrict_self()
            .map_err(err)?;
    match (status.ruleset, status.landlock) {
        (RulesetStatus::NotEnforced, _) => degraded.push(
            "landlock: not supported by this kernel (connector files limited by its uid's permissions only; connects still go through the connect guard)".into(),
        ),
        (_, LandlockStatus::Available { effective_abi, .. }) if effective_abi < ABI::V4 => {
            degraded.push(format!(
                "landlock: kernel ABI {} has no network rules (ABI 4, Linux 6.7): no port wall behind the connect guard, and bind is refused by seccomp only",
                effective_abi as i32
            ))
        }
        (RulesetStatus::PartiallyEnforced, _) => degraded.push(format!(
            "landlock: only partly enforced (kernel below ABI {})",
            TARGET_ABI as i32
        )),
        (RulesetStatus::FullyEnforced, _) => {}
    }
    Ok(())
}

/// Opens a granted path for its rule; a missing grant is an error naming
/// the field, as the connector could not work without it.
fn open_granted(path: &Path, field: &str) -> Result<PathFd, SandboxError> {
    PathFd::new(path).map_err(|e| {
        SandboxError::Landlock(format!(
            "{field}: cannot open {}: {e} (the supervisor must create it before starting the connector)",
            path.display()
        ))
    })
}
