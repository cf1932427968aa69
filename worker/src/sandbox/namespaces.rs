//! Step 2: new mount, IPC and network namespaces. The new network namespace
//! has only a loopback interface, down: the module has no network at all.
//! Mounts are made private so nothing the worker could mount propagates.
//!
//! With the fork server, the fork server enters these namespaces once at
//! start-up and every worker inherits them: creating a network namespace
//! per worker costs milliseconds each. The namespaces are empty, so sharing
//! them gives a module nothing: there is no interface to use, and System V
//! IPC and sockets are outside the seccomp allowlist anyway.

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare as unshare_ns, CloneFlags};

use super::SandboxError;

/// Enters new namespaces. Where the host refuses (no `CAP_SYS_ADMIN`,
/// namespaces disabled) the layer is reported as degraded.
pub fn unshare(degraded: &mut Vec<String>) -> Result<(), SandboxError> {
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWNET;
    match unshare_ns(flags) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::EINVAL) => {
            degraded.push("namespaces: host refused new mount/IPC/net namespaces (module keeps the host network)".into());
            return Ok(());
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
    .map_err(SandboxError::Namespaces)
}
