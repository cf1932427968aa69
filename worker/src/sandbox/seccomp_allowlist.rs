//! The seccomp allowlist: every system call a sandboxed worker may make,
//! with the reason it is needed. Everything else ends the worker with a
//! report naming the call (`SECCOMP_RET_TRAP`, see `sigsys.rs`).
//!
//! The list was made by tracing workers running every example and test guest
//! (`strace -f`), then removing whatever only the sandbox set-up needs. It
//! covers: the wasmtime runtime (memory, traps, signal stacks), WASI preview 1
//! file operations on preopened dirs, clocks and sleeps, the reactor's epoll
//! loop, the control socket, one tokio I/O thread, and the call-budget
//! timer. Explicitly absent: `socket`, `connect`, `bind`, `execve`,
//! `fork`/`vfork`/`clone` of processes, `ptrace`, `mount`, `bpf`,
//! `io_uring_*`, `userfaultfd`, `memfd_create`, `unshare`, `setns`, `kill`,
//! and any `open*` outside Landlock's and WASI's grants (`openat` is allowed,
//! but Landlock confines its paths).

/// When an allowed call is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// With any arguments.
    Always,
    /// When argument `arg` equals `value`.
    ArgEq {
        /// Argument index (0-based).
        arg: u32,
        /// Required value.
        value: u64,
    },
    /// When `args[arg] & mask == value`.
    ArgMasked {
        /// Argument index (0-based).
        arg: u32,
        /// Bits to test.
        mask: u64,
        /// Required value of those bits.
        value: u64,
    },
    /// When argument `arg` is a signal number other than `signal`.
    ///
    /// Not a plain `!=` on the argument: the filter sees 64 bits, but the
    /// kernel reads a signal number as an `int`, so `signal | 1 << 32` would
    /// pass such a filter and still name `signal`. The filter allows
    /// exactly `0..=MAX_SIGNAL` without `signal`, upper bits clear (the
    /// kernel refuses 0 itself).
    SignalOtherThan {
        /// Argument index (0-based).
        arg: u32,
        /// The one signal the call may not name.
        signal: u64,
    },
}

/// The highest signal number Linux has (`_NSIG`) on x86_64 and aarch64.
pub const MAX_SIGNAL: u64 = 64;

/// One allowlist entry.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    /// System call name (x86_64 / aarch64 names, resolved by libseccomp).
    pub name: &'static str,
    /// Argument condition.
    pub only: Only,
    /// Why a worker needs it.
    pub why: &'static str,
}

const fn always(name: &'static str, why: &'static str) -> Allowed {
    Allowed {
        name,
        only: Only::Always,
        why,
    }
}

const fn when(name: &'static str, only: Only, why: &'static str) -> Allowed {
    Allowed { name, only, why }
}

const PROT_EXEC: u64 = libc::PROT_EXEC as u64;
const SIGSYS: u64 = libc::SIGSYS as u64;
const CLONE_THREAD: u64 = libc::CLONE_THREAD as u64;

/// The allowlist.
pub const ALLOWLIST: &[Allowed] = &[
    // Memory. Code was mapped before the sandbox; nothing may become executable after it.
    when(
        "mmap",
        Only::ArgMasked {
            arg: 2,
            mask: PROT_EXEC,
            value: 0,
        },
        "linear memory, its copy-on-write image, heap and thread stacks; never executable",
    ),
    when(
        "mprotect",
        Only::ArgMasked {
            arg: 2,
            mask: PROT_EXEC,
            value: 0,
        },
        "growing linear memory and guard pages; never executable",
    ),
    always("munmap", "releasing memory"),
    always("mremap", "the allocator resizing large blocks"),
    always(
        "madvise",
        "resetting linear memory and returning freed pages",
    ),
    always("brk", "the C allocator's heap"),
    // Threads and synchronisation (the tokio I/O thread, the command control thread).
    when(
        "clone",
        Only::ArgMasked {
            arg: 0,
            mask: CLONE_THREAD,
            value: CLONE_THREAD,
        },
        "starting threads (never processes: CLONE_THREAD is required)",
    ),
    always("futex", "locks and thread parking"),
    always("sched_yield", "spin loops in locks"),
    always("sched_getaffinity", "tokio sizing its runtime"),
    always("set_robust_list", "thread start-up in glibc"),
    always("rseq", "thread start-up in glibc"),
    always("exit", "a thread ending"),
    always("exit_group", "the worker ending"),
    // Signals: wasmtime turns traps into SIGSEGV/SIGILL/SIGFPE handling.
    when(
        "rt_sigaction",
        Only::SignalOtherThan {
            arg: 0,
            signal: SIGSYS,
        },
        "installing trap and timer handlers; never for SIGSYS, so a compromised worker cannot replace the handler that reports denied calls (and make them fail silently). Ignoring SIGSYS is refused with it, and blocking it gains nothing: for a seccomp trap the kernel resets a blocked or ignored SIGSYS to its default action (force_sig_seccomp), which kills the worker",
    ),
    always(
        "rt_sigprocmask",
        "masking signals around thread creation; a blocked SIGSYS still ends the worker on a denied call (see rt_sigaction)",
    ),
    always("rt_sigreturn", "returning from trap and timer handlers"),
    always(
        "sigaltstack",
        "wasmtime's per-thread signal stack for stack-overflow traps",
    ),
    always(
        "restart_syscall",
        "resuming a sleep interrupted by a signal",
    ),
    always(
        "tgkill",
        "raise()/abort() on itself; other processes are out of reach anyway (own uid, no CAP_KILL)",
    ),
    always("setitimer", "arming the per-call time budget (SIGALRM)"),
    // Identity and time.
    always("getpid", "fault reports"),
    always("gettid", "thread bookkeeping in glibc"),
    always("getppid", "checking the supervisor is still the parent"),
    always(
        "getcwd",
        "Rust's panic message (a runtime panic must be reported as itself, not as a denied call)",
    ),
    always(
        "readlink",
        "Rust's panic backtrace finds its own binary (/proc/self/exe); a panic must be reported as itself",
    ),
    always("getrandom", "WASI random_get and hash-map seeds"),
    always(
        "clock_gettime",
        "WASI clocks and now_ns (when the vDSO is unavailable)",
    ),
    always("clock_getres", "WASI clock_res_get"),
    always("clock_nanosleep", "WASI sleeps"),
    always("nanosleep", "WASI sleeps"),
    // The worker's event loop and control socket.
    always("epoll_create1", "the reactor loop and tokio"),
    always("epoll_ctl", "the reactor loop and tokio"),
    always("epoll_wait", "the reactor loop and tokio"),
    always("epoll_pwait", "the reactor loop and tokio"),
    always("eventfd2", "tokio's wakeups"),
    always("timerfd_create", "the tick timer"),
    always("timerfd_settime", "the tick timer"),
    always("poll", "WASI poll_oneoff"),
    always("ppoll", "WASI poll_oneoff"),
    always("recvmsg", "control messages from the supervisor"),
    always("sendmsg", "control messages to the supervisor"),
    // File descriptors: stdio, the control socket, preopened dirs (Landlock confines paths).
    always("read", "stdin, the control socket, timerfd, granted files"),
    always("write", "stdout/stderr, granted files, fault reports"),
    always("readv", "WASI fd_read"),
    always("writev", "WASI fd_write"),
    always("pread64", "WASI fd_pread"),
    always("pwrite64", "WASI fd_pwrite"),
    always("preadv", "WASI fd_pread"),
    always("pwritev", "WASI fd_pwrite"),
    always("lseek", "WASI fd_seek"),
    always("close", "WASI fd_close and the worker's own fds"),
    always(
        "fcntl",
        "fd flags (non-blocking, close-on-exec, dup for stdio)",
    ),
    always("fstat", "WASI fd_filestat_get"),
    always("newfstatat", "WASI path_filestat_get"),
    always("statx", "WASI path_filestat_get"),
    always(
        "openat",
        "WASI path_open beneath a preopened dir (Landlock limits paths)",
    ),
    always(
        "openat2",
        "WASI path_open with RESOLVE_BENEATH (Landlock limits paths)",
    ),
    always("getdents64", "WASI fd_readdir"),
    always(
        "mkdirat",
        "WASI path_create_directory (rw grants only, by Landlock)",
    ),
    always(
        "unlinkat",
        "WASI path_unlink_file / path_remove_directory (rw grants only)",
    ),
    always("renameat", "WASI path_rename (rw grants only)"),
    always("renameat2", "WASI path_rename (rw grants only)"),
    always("linkat", "WASI path_link (rw grants only)"),
    always("symlinkat", "WASI path_symlink (rw grants only)"),
    always("readlinkat", "WASI path_readlink"),
    always("utimensat", "WASI fd/path_filestat_set_times"),
    always("ftruncate", "WASI fd_filestat_set_size"),
    always("fallocate", "WASI fd_allocate"),
    always("fsync", "WASI fd_sync"),
    always("fdatasync", "WASI fd_datasync"),
    always("fadvise64", "WASI fd_advise"),
    when(
        "ioctl",
        Only::ArgEq {
            arg: 1,
            value: libc::TCGETS,
        },
        "isatty() on stdout/stderr",
    ),
    when(
        "ioctl",
        Only::ArgEq {
            arg: 1,
            value: libc::TIOCGWINSZ,
        },
        "terminal size query on stdout",
    ),
    when(
        "ioctl",
        Only::ArgEq {
            arg: 1,
            value: libc::FIONBIO,
        },
        "tokio making fds non-blocking",
    ),
    when(
        "ioctl",
        Only::ArgEq {
            arg: 1,
            value: libc::FIOCLEX,
        },
        "setting close-on-exec",
    ),
    when(
        "prctl",
        Only::ArgEq {
            arg: 0,
            value: libc::PR_SET_NAME as u64,
        },
        "naming threads",
    ),
    when(
        "prctl",
        Only::ArgEq {
            arg: 0,
            value: libc::PR_GET_NAME as u64,
        },
        "reading thread names",
    ),
];

/// System calls a hostile module might want; none may be in the allowlist.
pub const FORBIDDEN: &[&str] = &[
    "socket",
    "connect",
    "bind",
    "listen",
    "accept4",
    "execve",
    "execveat",
    "fork",
    "vfork",
    "ptrace",
    "mount",
    "umount2",
    "bpf",
    "io_uring_setup",
    "io_uring_enter",
    "userfaultfd",
    "memfd_create",
    "unshare",
    "setns",
    "kill",
    "setuid",
    "chroot",
    "pivot_root",
    "init_module",
    "kexec_load",
    "perf_event_open",
    "process_vm_readv",
    "keyctl",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_gives_a_reason() {
        for entry in ALLOWLIST {
            assert!(
                entry.why.trim().len() >= 8,
                "seccomp allowlist entry {} has no real reason",
                entry.name
            );
        }
    }

    #[test]
    fn every_name_is_a_system_call_here() {
        for entry in ALLOWLIST {
            assert!(
                libseccomp::ScmpSyscall::from_name(entry.name).is_ok(),
                "{} is not a system call on this architecture",
                entry.name
            );
        }
    }

    #[test]
    fn nothing_forbidden_is_allowed() {
        for name in FORBIDDEN {
            assert!(
                !ALLOWLIST.iter().any(|e| e.name == *name),
                "{name} must not be in the allowlist"
            );
        }
    }
}
