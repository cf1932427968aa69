//! Hardening of the fork server itself. It must stay root with a few
//! capabilities, because its children need them for their own runbook
//! (join a cgroup, unshare, switch uid, drop the bounding set). Everything
//! else goes:
//!
//! - the bounding, permitted, effective and inheritable sets keep only
//!   `CAP_SETUID`, `CAP_SETGID`, `CAP_SETPCAP`, `CAP_SYS_ADMIN` (namespaces),
//!   `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` (opening granted dirs that
//!   root does not own);
//! - `PR_SET_NO_NEW_PRIVS`;
//! - a seccomp denylist: no sockets, no exec, no ptrace, no bpf, no
//!   io_uring, no userfaultfd, no module or kexec loading, no keyrings.
//!   Children inherit this filter, and their own allowlist is stacked on top.

use caps::{CapSet, Capability, CapsHashSet};
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};

/// Capabilities the fork server keeps for its children.
const KEEP: [Capability; 6] = [
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
];

/// Calls the fork server never needs, nor do its children before their own
/// filter is loaded.
pub const ZYGOTE_DENIED: &[&str] = &[
    "socket",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "execve",
    "execveat",
    "ptrace",
    "bpf",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "perf_event_open",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "pivot_root",
    "chroot",
    "swapon",
    "swapoff",
    "reboot",
    "open_by_handle_at",
];

/// Applies the fork server's hardening. Without root (no capabilities to
/// shed) only no_new_privs and the denylist apply.
///
/// # Errors
/// A description of the step that failed.
pub fn apply() -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        let keep: CapsHashSet = KEEP.into_iter().collect();
        let bounding = caps::read(None, CapSet::Bounding).map_err(|e| e.to_string())?;
        for cap in bounding.difference(&keep) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(|e| format!("bounding set: {e}"))?;
        }
        caps::clear(None, CapSet::Ambient).map_err(|e| e.to_string())?;
        caps::clear(None, CapSet::Inheritable).map_err(|e| e.to_string())?;
        let permitted = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
        let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
        caps::set(None, CapSet::Effective, &kept).map_err(|e| format!("effective set: {e}"))?;
        caps::set(None, CapSet::Permitted, &kept).map_err(|e| format!("permitted set: {e}"))?;
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) only sets a flag.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    let mut filter = ScmpFilterContext::new(ScmpAction::Allow).map_err(|e| e.to_string())?;
    for name in ZYGOTE_DENIED {
        if let Ok(syscall) = ScmpSyscall::from_name(name) {
            filter
                .add_rule(ScmpAction::Errno(libc::EPERM), syscall)
                .map_err(|e| format!("seccomp rule {name}: {e}"))?;
        }
    }
    filter.load().map_err(|e| format!("seccomp: {e}"))
}
