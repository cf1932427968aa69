//! The fork server's first fork, made straight into the module's cgroup.
//!
//! A process that writes itself into `cgroup.procs` migrates, and a
//! migration waits for an RCU grace period (10 to 20 ms) unless the
//! hierarchy is mounted with `favordynmods`. On cgroup v2 (Linux 5.7 and
//! later) `clone3(CLONE_INTO_CGROUP)` creates the child in the target
//! cgroup instead: no migration, no grace period.
//!
//! Only the *intermediate* process of the fork server's double fork is
//! made with the raw `clone3` system call; the worker itself is then forked
//! from it with libc's `fork`, and inherits the cgroup. The intermediate
//! only forks, writes a pid and `_exit`s, so the one thing a raw clone gets
//! wrong (libc's thread descriptor still holds the fork server's thread id)
//! never matters to anyone; libc's `fork` writes the right thread id into
//! the worker's descriptor (`CLONE_CHILD_SETTID`), so the worker is a
//! process like any other.
//!
//! Where `clone3(CLONE_INTO_CGROUP)` cannot be used (cgroup v1, several
//! hierarchies, an older kernel) [`fork_into`] says why and the caller
//! makes the worker another way (`vfork_intermediate.rs`); the worker then
//! joins its cgroup itself, and the supervisor logs the reason.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};

/// `CLONE_INTO_CGROUP` (linux/sched.h, Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Set once the kernel has said it does not know `clone3` or its
/// `cgroup` field: no need to ask it again for every worker.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Forks into the cgroup of `procs_files` with `clone3(CLONE_INTO_CGROUP)`
/// when that is a single cgroup v2 directory and the kernel can; the child
/// continues on a copy of this stack, as after `fork(2)`. `Err` says why
/// not, and nothing was forked.
///
/// # Safety
/// As for `fork(2)`: the calling process must be single-threaded, so that
/// the child may run arbitrary code.
pub unsafe fn fork_into(procs_files: &[String]) -> Result<ForkResult, String> {
    let dir = cgroup_v2_dir(procs_files)?;
    // SAFETY: single-threaded, as this function's contract demands.
    match unsafe { clone3_into(&dir) } {
        Ok(result) => Ok(result),
        Err(Errno::ENOSYS | Errno::E2BIG) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            Err("this kernel has no clone3(CLONE_INTO_CGROUP) (Linux 5.7)".to_string())
        }
        Err(e) => Err(format!("clone3(CLONE_INTO_CGROUP) failed: {e}")),
    }
}

/// The cgroup directory to clone into, or why there is none.
fn cgroup_v2_dir(procs_files: &[String]) -> Result<OwnedFd, String> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return Err("this kernel has no clone3(CLONE_INTO_CGROUP) (Linux 5.7)".into());
    }
    let [procs] = procs_files else {
        return Err(if procs_files.is_empty() {
            "no cgroup".into()
        } else {
            "cgroup v1 (one hierarchy per controller)".into()
        });
    };
    let dir = std::path::Path::new(procs)
        .parent()
        .ok_or_else(|| format!("{procs} has no directory"))?;
    let fd: OwnedFd = std::fs::File::open(dir)
        .map_err(|e| format!("cannot open {}: {e}", dir.display()))?
        .into();
    let fs = nix::sys::statfs::fstatfs(&fd).map_err(|e| format!("fstatfs: {e}"))?;
    if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return Err(format!("{} is not on cgroup v2", dir.display()));
    }
    Ok(fd)
}

/// `clone3` with `CLONE_INTO_CGROUP`, otherwise like `fork`: the child
/// continues on a copy of this stack and gets `SIGCHLD` semantics.
///
/// # Safety
/// The process must be single-threaded. The child must not rely on libc's
/// cached thread id (only async-signal-safe work, then `fork` or `_exit`).
unsafe fn clone3_into(cgroup: &OwnedFd) -> Result<ForkResult, Errno> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid `struct clone_args` of the size passed, and
    // lives across the call; with no stack given, the child runs on a
    // copy-on-write copy of this one, exactly as after fork(2), which the
    // caller made safe by being single-threaded.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::from_ref(&args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid as i32),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_matches_the_kernels_second_version() {
        // CLONE_ARGS_SIZE_VER2: the size that introduced `cgroup`.
        assert_eq!(std::mem::size_of::<CloneArgs>(), 88);
    }

    #[test]
    fn v1_and_missing_cgroups_say_why_they_are_not_cloned_into() {
        assert_eq!(cgroup_v2_dir(&[]).unwrap_err(), "no cgroup");
        let v1 = ["/a/cgroup.procs".to_string(), "/b/cgroup.procs".to_string()];
        assert!(cgroup_v2_dir(&v1).unwrap_err().starts_with("cgroup v1"));
        // A directory that is not on cgroup2.
        let procs = std::env::temp_dir().join("cgroup.procs");
        let why = cgroup_v2_dir(&[procs.to_string_lossy().into_owned()]).unwrap_err();
        assert!(why.ends_with("is not on cgroup v2"), "{why}");
    }
}
