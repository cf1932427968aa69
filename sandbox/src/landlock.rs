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

/// What each Landlock ABI after the first adds, as `(abi, feature, what a
/// worker loses on a kernel without it)`. A partly enforced ruleset is
/// reported with the features this kernel lacks ([`lacking`]), never
/// silently. docs/operations.md ("Supported platforms") shows this table;
/// a test keeps the two equal.
pub const ABI_FEATURES: [(i32, &str, &str); 5] = [
    (
        2,
        "moving files between directories (refer)",
        "nothing: without it every cross-directory rename or link is refused",
    ),
    (
        3,
        "truncate",
        "files under a read-only grant can be truncated past Landlock (WASI's rights and the file owner still stop it)",
    ),
    (
        4,
        "TCP bind/connect rules",
        "no port wall: modules keep their empty network namespace and seccomp; connectors keep the connect guard",
    ),
    (
        5,
        "ioctl on devices",
        "device ioctls are limited by seccomp's four allowed requests only",
    ),
    (
        6,
        "abstract Unix socket and signal scoping",
        "a worker could signal or reach an abstract socket of another process of its uid (each module has its own uid)",
    ),
];

/// The features of [`ABI_FEATURES`] a kernel at `abi` lacks, as the
/// degraded report names them.
pub fn lacking(abi: i32) -> Vec<String> {
    ABI_FEATURES
        .iter()
        .filter(|(needs, _, _)| *needs > abi && *needs <= TARGET_ABI as i32)
        .map(|(needs, feature, _)| format!("{feature} (ABI {needs})"))
        .collect()
}

/// The degraded report of a partly enforced ruleset.
fn partly(landlock: &LandlockStatus) -> String {
    match landlock {
        LandlockStatus::Available { effective_abi, .. } => {
            let abi = *effective_abi as i32;
            format!(
                "landlock: kernel ABI {abi} (edgeward uses up to {}); not enforced on this kernel: {}",
                TARGET_ABI as i32,
                lacking(abi).join(", ")
            )
        }
        _ => format!(
            "landlock: only partly enforced (kernel below ABI {})",
            TARGET_ABI as i32
        ),
    }
}

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
        RulesetStatus::PartiallyEnforced => degraded.push(partly(&status.landlock)),
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
        (RulesetStatus::PartiallyEnforced, landlock) => degraded.push(partly(&landlock)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/operations.md, "Supported platforms", has one row per
    /// [`ABI_FEATURES`] entry: `| ABI | Linux | feature | what is lost |`,
    /// with the same ABI, feature and loss, in the same order.
    #[test]
    fn the_documented_landlock_table_is_abi_features() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
        let docs = std::fs::read_to_string(path).expect("read docs/operations.md");
        let header = "| ABI | Linux | feature | what is lost without it |";
        let start = docs
            .find(header)
            .expect("the Landlock ABI table in docs/operations.md");
        let rows: Vec<Vec<&str>> = docs[start..]
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| line.trim_matches('|').split(" | ").map(str::trim).collect())
            .collect();
        let documented: Vec<(i32, &str, &str)> = rows
            .iter()
            .map(|row| {
                assert_eq!(row.len(), 4, "docs/operations.md Landlock row {row:?}");
                (row[0].parse().expect("an ABI number"), row[2], row[3])
            })
            .collect();
        assert_eq!(
            documented,
            ABI_FEATURES.to_vec(),
            "docs/operations.md's Landlock table and landlock::ABI_FEATURES differ: change both"
        );
        let last = ABI_FEATURES.last().expect("features").0;
        assert_eq!(
            last, TARGET_ABI as i32,
            "the table ends at the ABI edgeward asks for"
        );
    }

    #[test]
    fn a_kernel_below_the_target_abi_is_told_what_it_lacks() {
        // Debian 12's 6.1 kernel: ABI 2.
        assert_eq!(
            lacking(2),
            [
                "truncate (ABI 3)",
                "TCP bind/connect rules (ABI 4)",
                "ioctl on devices (ABI 5)",
                "abstract Unix socket and signal scoping (ABI 6)",
            ]
        );
        assert!(lacking(TARGET_ABI as i32).is_empty());
        assert!(lacking(7).is_empty());
        let report = partly(&LandlockStatus::Available {
            effective_abi: ABI::V2,
            kernel_abi: None,
        });
        assert!(
            report.starts_with("landlock: kernel ABI 2 (edgeward uses up to 6); not enforced on this kernel: truncate (ABI 3), "),
            "{report}"
        );
    }
}
