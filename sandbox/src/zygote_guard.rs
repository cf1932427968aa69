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
//!   On x86_64 it also refuses every x32 call (numbers from `0x4000_0000`
//!   up, which arrive with the x86_64 audit arch): a denylist allows what it
//!   does not name, and names only x86_64 numbers.

use std::collections::BTreeMap;

use caps::{CapSet, Capability, CapsHashSet};
use seccompiler::{SeccompAction, SeccompFilter};

use super::arch::{Arch, X32_SYSCALL_BIT};
use super::seccomp::{early_answers, load, number, with_prefix, Early};

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
    let arch = Arch::native().ok_or_else(|| {
        format!(
            "no seccomp denylist for {} (workers run on x86_64 and aarch64)",
            std::env::consts::ARCH
        )
    })?;
    let program = compile(arch)?;
    load(&program, 0).map_err(|e| format!("seccomp: {e}"))
}

/// The denylist for `arch` as BPF: default ALLOW, [`ZYGOTE_DENIED`] and
/// (x86_64) every x32 call answer `EPERM`; a call of another architecture
/// (32-bit x86 or ARM) kills the process.
///
/// # Errors
/// If a name is not a system call on `arch` (a unit test checks they all
/// are), or seccompiler refuses the rules.
pub fn compile(arch: Arch) -> Result<Vec<libc::sock_filter>, String> {
    let mut rules = BTreeMap::new();
    for name in ZYGOTE_DENIED {
        rules.insert(number(arch, name)?, Vec::new());
    }
    let eperm = libc::EPERM as u32;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(eperm),
        arch.target(),
    )
    .map_err(|e| format!("seccomp denylist: {e}"))?;
    let compiled: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp denylist: {e}"))?;
    let x32 = match arch {
        Arch::X86_64 => vec![(
            Early::AtLeast(X32_SYSCALL_BIT),
            libc::SECCOMP_RET_ERRNO | (eperm & libc::SECCOMP_RET_DATA),
        )],
        Arch::Aarch64 => Vec::new(),
    };
    with_prefix(early_answers(arch, &x32), &compiled).map_err(|e| format!("seccomp denylist: {e}"))
}
