//! Step 2: new mount, IPC and network namespaces. The new network namespace
//! has only a loopback interface, down: the module has no network at all.
//! Mounts are made private so nothing the worker could mount propagates.
//!
//! With the fork server, the fork server enters these namespaces once at
//! start-up and every worker inherits them: creating a network namespace
//! per worker costs milliseconds each. The namespaces are empty, so sharing
//! them gives a module nothing: there is no interface to use, and System V
//! IPC and sockets are outside the seccomp allowlist anyway.
//!
//! A connector is exec'd and enters its own. Its connects leave the empty
//! network namespace only through the supervisor (the connect guard). In
//! its private mount namespace, the supervisor's hosts file is then bound
//! over `/etc/hosts` ([`bind_hosts`]), so name lookups find the granted
//! hosts and nothing else; the host's `/etc/hosts` is untouched, as the
//! whole tree was made private first.

use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare as unshare_ns, CloneFlags};

use super::SandboxError;

/// What a module loses when the host refuses the namespaces.
const MODULE_REFUSED: &str =
    "namespaces: host refused new mount/IPC/net namespaces (module keeps the host network)";

/// Enters new namespaces. Where the host refuses (no `CAP_SYS_ADMIN`,
/// namespaces disabled) the layer is reported as degraded.
///
/// # Errors
/// Any other `unshare` or `mount` failure.
pub fn unshare(degraded: &mut Vec<String>) -> Result<(), SandboxError> {
    enter(degraded, MODULE_REFUSED).map(|_| ())
}

/// Enters new namespaces and makes every mount private; true if it did.
/// Where the host refuses, pushes `refused` to `degraded` and returns false.
pub(super) fn enter(degraded: &mut Vec<String>, refused: &str) -> Result<bool, SandboxError> {
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWNET;
    match unshare_ns(flags) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::EINVAL) => {
            degraded.push(refused.into());
            return Ok(false);
        }
        Err(e) => return Err(SandboxError::Namespaces(e)),
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(SandboxError::Namespaces)?;
    Ok(true)
}

/// Binds `hosts_file` over `/etc/hosts`, read-only. Only call it in a
/// private mount namespace of this process's own ([`enter`] returned true):
/// elsewhere it would change the host's `/etc/hosts`.
pub(super) fn bind_hosts(hosts_file: &Path) -> Result<(), SandboxError> {
    let target = "/etc/hosts";
    let fail = |what: &str, e: nix::Error| {
        SandboxError::Hosts(format!(
            "{what} {} over {target}: {e} (the supervisor writes the connector's hosts file; check it exists, and that {target} exists on this host)",
            hosts_file.display()
        ))
    };
    mount(
        Some(hosts_file),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| fail("cannot bind", e))?;
    // A bind mount keeps the source's flags; remounting makes this one
    // read-only whatever the file's permissions say.
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| fail("cannot make read-only the bind of", e))
}
