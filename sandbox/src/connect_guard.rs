//! Step 9a (connectors only): the network guard, a second seccomp filter
//! stacked under the allowlist. It decides the two calls the connector
//! allowlist marks as guarded:
//!
//! - `connect` returns `SECCOMP_RET_USER_NOTIF`: the call stops, and the
//!   supervisor, holding this filter's listener, reads the address, checks
//!   it against the grants, makes the connection itself (in its own network
//!   namespace) and installs it over the connector's socket, or answers
//!   `EACCES`. The connector's own network namespace is empty, so this is
//!   its only way out;
//! - `socket` is allowed for `AF_INET`/`AF_INET6`, `SOCK_STREAM` (with or
//!   without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`), protocol 0 or `IPPROTO_TCP`;
//!   anything else returns `EACCES`. Not a SIGSYS: glibc's `getaddrinfo`
//!   tries nscd (`AF_UNIX`) and UDP DNS, and must fail fast and fall back
//!   to `/etc/hosts`.
//!
//! Everything else is allowed here and left to the allowlist. Stacked
//! filters all run, and the kernel takes the result of highest precedence
//! (KILL > TRAP > ERRNO > USER_NOTIF > ALLOW), so the allowlist's TRAP still
//! ends any call it refuses, and the allowlist must allow `socket` and
//! `connect` for this filter's answer to count. A call from another
//! architecture (x32, 32-bit ARM) is allowed here: the allowlist's default
//! refuses it.
//!
//! Hand-written classic BPF, 17 instructions, loaded with raw `seccomp(2)`
//! rather than compiled by seccompiler: a seccompiler filter has one action
//! for every matching call, so it cannot give one call conditional ALLOW
//! rules and an ERRNO for the rest, and the raw call controls the flags
//! exactly (`SECCOMP_FILTER_FLAG_NEW_LISTENER` alone: `TSYNC` is refused
//! with it, and no thread exists yet) and returns the kernel's own error,
//! which tells "no user notification here" from a real failure.
//!
//! Placed after no_new_privs (step 8), which loading a filter without
//! `CAP_SYS_ADMIN` needs, and before the allowlist (step 10), which refuses
//! `seccomp` itself. A kernel without user notification (before 5.0) gets
//! the guard without it, reported as a degraded layer: connects then reach
//! only what Landlock's port rules and the network namespace allow.

use std::os::fd::{FromRawFd, OwnedFd};

use libc::sock_filter;

use super::arch::Arch;
use super::SandboxError;

/// This architecture's `AUDIT_ARCH_*`. No guard elsewhere: connectors
/// refuse to run.
const NATIVE_ARCH: Option<u32> = match Arch::native() {
    Some(arch) => Some(arch.audit()),
    None => None,
};

/// Offsets in `struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The word of `args[i]` the kernel reads for an `int` argument (the low
/// one). `socket`'s arguments are ints: the kernel ignores the high word, so
/// testing the low word tests exactly what the kernel will use.
const fn int_arg(i: u32) -> u32 {
    16 + 8 * i + if cfg!(target_endian = "big") { 4 } else { 0 }
}

const SOCK_FLAGS: u32 = (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u32;

/// Instructions in [`program`].
const LEN: usize = 17;

const fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `if A == k goto +jt else goto +jf` (offsets from the next instruction).
const fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

const fn load(offset: u32) -> sock_filter {
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

const fn ret(action: u32) -> sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, action)
}

/// The guard for `arch`. `notify`: `connect` goes to the listener;
/// otherwise it is allowed (the fallback without user notification).
fn program(arch: u32, notify: bool) -> [sock_filter; LEN] {
    // Targets of the jumps below.
    const EACCES: usize = 14;
    const CONNECT: usize = 15;
    const ALLOW: usize = 16;
    // A jump at `from` to `to` skips `to - from - 1` instructions.
    const fn to(from: usize, to: usize) -> u8 {
        (to - from - 1) as u8
    }
    let connect = if notify {
        libc::SECCOMP_RET_USER_NOTIF
    } else {
        libc::SECCOMP_RET_ALLOW
    };
    [
        /* 0 */ load(ARCH),
        /* 1 */ jeq(arch, 0, to(1, ALLOW)),
        /* 2 */ load(NR),
        /* 3 */ jeq(libc::SYS_connect as u32, to(3, CONNECT), 0),
        /* 4 */ jeq(libc::SYS_socket as u32, 0, to(4, ALLOW)),
        /* 5 */ load(int_arg(0)),
        /* 6 */ jeq(libc::AF_INET as u32, to(6, 8), 0),
        /* 7 */ jeq(libc::AF_INET6 as u32, 0, to(7, EACCES)),
        /* 8 */ load(int_arg(1)),
        /* 9 */ stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, !SOCK_FLAGS),
        /* 10 */ jeq(libc::SOCK_STREAM as u32, 0, to(10, EACCES)),
        /* 11 */ load(int_arg(2)),
        /* 12 */ jeq(0, to(12, ALLOW), 0),
        /* 13 */ jeq(libc::IPPROTO_TCP as u32, to(13, ALLOW), to(13, EACCES)),
        /* 14 EACCES */
        ret(libc::SECCOMP_RET_ERRNO | (libc::EACCES as u32 & libc::SECCOMP_RET_DATA)),
        /* 15 CONNECT */ ret(connect),
        /* 16 ALLOW */ ret(libc::SECCOMP_RET_ALLOW),
    ]
}

/// Loads the guard. Returns the user-notification listener (close-on-exec),
/// or `None` where the kernel has no user notification (then `degraded`
/// says so, and the guard is loaded without it).
///
/// # Errors
/// If even the guard without notification cannot be loaded (no seccomp, no
/// no_new_privs), or on an architecture without a guard: the connector
/// allowlist alone would allow every socket.
pub(super) fn install(degraded: &mut Vec<String>) -> Result<Option<OwnedFd>, SandboxError> {
    let Some(arch) = NATIVE_ARCH else {
        return Err(SandboxError::ConnectGuard(
            "no guard for this architecture (connectors run on x86_64 and aarch64)".into(),
        ));
    };
    let missing = match user_notif_available() {
        Ok(()) => match load_filter(&program(arch, true), libc::SECCOMP_FILTER_FLAG_NEW_LISTENER) {
            // SAFETY: with NEW_LISTENER, seccomp(2) returns a new fd that
            // nothing else owns.
            Ok(fd) => return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
            Err(e) => format!("the kernel refused the notifying filter ({e})"),
        },
        Err(why) => why,
    };
    degraded.push(format!(
        "connect guard: {missing}; connects are not sent to the supervisor: they fail in the connector's own empty network namespace (unless that layer is missing too)"
    ));
    load_filter(&program(arch, false), 0)
        .map_err(|e| SandboxError::ConnectGuard(format!("cannot load the socket rules: {e}")))?;
    Ok(None)
}

/// Whether the kernel knows `SECCOMP_RET_USER_NOTIF`; the reason if not.
fn user_notif_available() -> Result<(), String> {
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 through the pointer,
    // which points at `action` for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    Err(match nix::errno::Errno::last() {
        nix::errno::Errno::EOPNOTSUPP => {
            "this kernel has no seccomp user notification (Linux 5.0+)".into()
        }
        nix::errno::Errno::EINVAL => {
            "this kernel cannot even list seccomp actions (Linux 4.14+), so it has no user notification".into()
        }
        e => format!("cannot ask the kernel for seccomp user notification: {e}"),
    })
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`: the return value
/// (a listener fd with `NEW_LISTENER`, else 0).
fn load_filter(program: &[sock_filter; LEN], flags: libc::c_ulong) -> Result<i32, nix::Error> {
    let fprog = libc::sock_fprog {
        len: LEN as u16,
        filter: program.as_ptr() as *mut sock_filter,
    };
    // SAFETY: `fprog` points at `program`, LEN valid instructions that
    // outlive the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(rc as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket rules alone (the fallback), loaded in a forked child: TCP
    /// sockets open, anything else fails with EACCES, the child lives on.
    #[test]
    fn the_fallback_guard_opens_tcp_sockets_only_and_answers_eacces() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        // SAFETY: the child makes system calls only and leaves with _exit.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let socket = |domain, kind, protocol| {
                    // SAFETY: socket(2) with integer arguments.
                    let fd = unsafe { libc::socket(domain, kind, protocol) };
                    if fd >= 0 {
                        // SAFETY: closing the fd just opened.
                        unsafe { libc::close(fd) };
                        0
                    } else {
                        nix::errno::Errno::last_raw()
                    }
                };
                let loaded = nix::sys::prctl::set_no_new_privs().is_ok()
                    && load_filter(&program(NATIVE_ARCH.unwrap(), false), 0).is_ok();
                let stream = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
                let ok = loaded
                    && socket(libc::AF_INET, stream, 0) == 0
                    && socket(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP) == 0
                    && socket(libc::AF_INET, libc::SOCK_DGRAM, 0) == libc::EACCES
                    && socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
                        == libc::EACCES
                    && socket(libc::AF_UNIX, stream, 0) == libc::EACCES
                    && socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) == libc::EACCES
                    && socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) == libc::EACCES
                    && socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP) == libc::EACCES;
                // SAFETY: leave the forked child at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).expect("waitpid");
                assert!(
                    matches!(status, WaitStatus::Exited(_, 0)),
                    "the guard's socket rules did not hold: {status:?}"
                );
            }
        }
    }
}
