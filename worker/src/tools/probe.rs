//! `edgeward-worker probe`: which sandbox layers this host can enforce, as
//! one JSON object. Each layer is tried for real in a forked child (entering
//! namespaces, loading the seccomp filter), not guessed from version numbers.
//! `edgeward check --sandbox` adds the cgroup and uid layers it knows itself.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde::Serialize;

use edgeward_sandbox::arch::Arch;
use edgeward_sandbox::Allowlist;

#[derive(Serialize)]
struct Probe {
    /// Landlock ABI version, 0 when unavailable.
    landlock_abi: i64,
    /// A seccomp filter could be loaded.
    seccomp: bool,
    /// Entries in the seccomp allowlist on this architecture.
    seccomp_allowed: usize,
    /// New mount, IPC and network namespaces could be entered.
    namespaces: bool,
}

/// Prints the probe; returns the exit code.
pub fn run() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    // only returns the ABI version; it takes no pointer.
    let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) };
    let probe = Probe {
        landlock_abi: abi.max(0),
        seccomp: in_child(|| {
            let Ok(filter) = edgeward_sandbox::seccomp::compile() else {
                return false;
            };
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) only sets a flag on this child.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            edgeward_sandbox::seccomp::install(&filter).is_ok()
        }),
        seccomp_allowed: Arch::native().map_or(0, |arch| Allowlist::Module.entries_on(arch).len()),
        namespaces: in_child(|| {
            let mut degraded = Vec::new();
            edgeward_sandbox::namespaces::unshare(&mut degraded).is_ok() && degraded.is_empty()
        }),
    };
    match serde_json::to_string(&probe) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(_) => 1,
    }
}

/// Runs `test` in a forked child; true if it returned true.
fn in_child(test: impl FnOnce() -> bool) -> bool {
    // SAFETY: the probe is single-threaded; the child runs `test` and _exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let ok = test();
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => {
            matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0)))
        }
        Err(_) => false,
    }
}

/// `edgeward-worker seccomp-table`: the allowlist as a Markdown table.
pub fn seccomp_table() -> i32 {
    print!(
        "{}",
        edgeward_sandbox::seccomp_table(edgeward_sandbox::Allowlist::Module)
    );
    0
}
