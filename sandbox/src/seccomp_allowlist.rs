//! The seccomp allowlists: every system call a sandboxed worker may make,
//! with the reason it is needed. Everything else ends the worker with a
//! report naming the call (`SECCOMP_RET_TRAP`, see `sigsys.rs`). There are
//! two lists ([`Allowlist`]): the wasm module's ([`ALLOWLIST`]) and the
//! connector's (the module's plus [`CONNECTOR_EXTRA`]).
//!
//! The module list was made by tracing workers running every example and
//! test guest (`strace -f`), then removing whatever only the sandbox set-up
//! needs. It covers: the wasmtime runtime (memory, traps, signal stacks),
//! WASI preview 1 file operations on preopened dirs, clocks and sleeps, the
//! reactor's epoll loop, the control socket, one tokio I/O thread, and the
//! call-budget timer. Explicitly absent: `socket`, `connect`, `bind`,
//! `execve`, `fork`/`vfork`/`clone` of processes, `ptrace`, `mount`, `bpf`,
//! `io_uring_*`, `userfaultfd`, `memfd_create`, `unshare`, `setns`, `kill`,
//! and any `open*` outside Landlock's and WASI's grants (`openat` is allowed,
//! but Landlock confines its paths).
//!
//! Every entry says which architectures it applies to ([`Arches`]): x86_64
//! keeps old calls that aarch64 never had (`open`, `stat`, `lstat`,
//! `readlink`, `poll`, `epoll_wait`, `mkdir`, `rename`, `unlink`, `rmdir`,
//! `fork`, `vfork`), and the C libraries call them there (musl, in the
//! static build, more of them than glibc); aarch64 has only the `*at` and
//! `p*` forms, which are in the list for both. Names are the kernel's, resolved
//! per architecture by `arch.rs`.
//!
//! The connector extras were made by tracing a tokio (current-thread) TCP
//! client with `getaddrinfo` through `/etc/hosts`, a non-blocking connect,
//! `TCP_NODELAY`, reads, writes and shutdown, and a file-backed queue
//! (create, write, pwrite/pread, fsync/fdatasync, truncate, rename, fsync of
//! the directory, listing, unlink) run from tokio's blocking pool, then by
//! running rumqttc (QoS 1 publish to mosquitto), tokio-modbus (pymodbus) and
//! async-opcua (sample keypair in the state dir, a read from asyncua) under
//! the whole connector profile. rustls and ring make no system calls of
//! their own besides `getrandom`. The connector still has no `bind`,
//! `listen` or `accept*`: it is a client only.

use crate::arch::{Arch, Arches};

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
    /// When every test holds (AND; each on a different argument, so that
    /// the rule reads as the table shows it).
    AllOf(&'static [ArgTest]),
    /// Allowed by this filter, and decided by the connector's network guard,
    /// a second filter stacked on this one (`connect_guard.rs`): the
    /// combined result is the stricter of the two. `rule` says what the
    /// guard does, for the table.
    Guarded {
        /// The guard's rule, in words.
        rule: &'static str,
    },
}

/// One argument test: `args[arg] & mask == value` (`mask` all ones: plain
/// equality).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgTest {
    /// Argument index (0-based).
    pub arg: u32,
    /// Bits to test.
    pub mask: u64,
    /// Required value of those bits.
    pub value: u64,
}

impl std::fmt::Display for ArgTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.mask == u64::MAX {
            write!(f, "arg{} == {:#x}", self.arg, self.value)
        } else {
            write!(f, "arg{} & {:#x} == {:#x}", self.arg, self.mask, self.value)
        }
    }
}

impl std::fmt::Display for Only {
    /// The condition as the seccomp table shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Only::Always => f.write_str("always"),
            Only::ArgEq { arg, value } => write!(f, "arg{arg} == {value:#x}"),
            Only::ArgMasked { arg, mask, value } => {
                write!(f, "arg{arg} & {mask:#x} == {value:#x}")
            }
            Only::SignalOtherThan { arg, signal } => write!(
                f,
                "arg{arg} <= {MAX_SIGNAL} and != {signal} (all 64 bits compared)"
            ),
            Only::AllOf(tests) => {
                for (i, test) in tests.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    write!(f, "{test}")?;
                }
                Ok(())
            }
            Only::Guarded { rule } => f.write_str(rule),
        }
    }
}

/// The highest signal number Linux has (`_NSIG`) on x86_64 and aarch64.
pub const MAX_SIGNAL: u64 = 64;

/// One allowlist entry.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    /// System call name, as the kernel spells it (resolved per architecture
    /// by [`Arch::number`]).
    pub name: &'static str,
    /// The architectures it applies to.
    pub arch: Arches,
    /// Argument condition.
    pub only: Only,
    /// Why a worker needs it.
    pub why: &'static str,
}

const fn always(name: &'static str, why: &'static str) -> Allowed {
    Allowed {
        name,
        arch: Arches::Both,
        only: Only::Always,
        why,
    }
}

const fn when(name: &'static str, only: Only, why: &'static str) -> Allowed {
    Allowed {
        name,
        arch: Arches::Both,
        only,
        why,
    }
}

/// `entry` on x86_64 only: a call aarch64 does not have.
const fn x86_64_only(entry: Allowed) -> Allowed {
    Allowed {
        arch: Arches::Only(Arch::X86_64),
        ..entry
    }
}

/// An ioctl request as the filter compares it (the whole 64-bit argument).
/// The constants are `c_ulong` in glibc's `libc` and `c_int` in musl's, and
/// the C libraries pass them on alike only below `0x8000_0000`: musl's
/// `ioctl(int, int, ...)` sign-extends its request into the 64-bit
/// argument, glibc's zero-extends it. Every request in the list is below
/// that (a unit test checks it), so both builds match the same value.
#[allow(clippy::unnecessary_cast, reason = "c_ulong on glibc, c_int on musl")]
const fn ioctl_request(request: libc::Ioctl) -> u64 {
    request as u64
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
    x86_64_only(always(
        "readlink",
        "Rust's panic backtrace finds its own binary (/proc/self/exe); a panic must be reported as itself (readlinkat elsewhere)",
    )),
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
    x86_64_only(always(
        "epoll_wait",
        "the reactor loop and tokio (epoll_pwait elsewhere)",
    )),
    always("epoll_pwait", "the reactor loop and tokio"),
    always("eventfd2", "tokio's wakeups"),
    always("timerfd_create", "the tick timer"),
    always("timerfd_settime", "the tick timer"),
    x86_64_only(always("poll", "WASI poll_oneoff (ppoll elsewhere)")),
    always("ppoll", "WASI poll_oneoff"),
    always("recvmsg", "control messages from the supervisor"),
    always("sendmsg", "control messages to the supervisor"),
    when(
        "socketpair",
        Only::ArgEq {
            arg: 0,
            value: libc::AF_UNIX as u64,
        },
        "tokio's signal driver opens a Unix socket pair when a runtime is built (wasmtime-wasi's in a worker, the driver's in a connector): the workspace builds tokio once, with the `signal` feature the connector's OPC UA client turns on; an unnamed pair reaches no one",
    ),
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
    x86_64_only(always(
        "stat",
        "musl's stat() (std::fs::metadata) in the static build (newfstatat elsewhere)",
    )),
    x86_64_only(always(
        "lstat",
        "musl's lstat() (std::fs::symlink_metadata) in the static build (newfstatat elsewhere)",
    )),
    x86_64_only(always(
        "open",
        "musl's open() (std's File::open, fopen) in the static build; Landlock limits its paths as openat's",
    )),
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
            value: ioctl_request(libc::TCGETS),
        },
        "isatty() on stdout/stderr",
    ),
    when(
        "ioctl",
        Only::ArgEq {
            arg: 1,
            value: ioctl_request(libc::TIOCGWINSZ),
        },
        "terminal size query on stdout",
    ),
    when(
        "ioctl",
        Only::ArgEq {
            arg: 1,
            value: ioctl_request(libc::FIONBIO),
        },
        "tokio making fds non-blocking",
    ),
    when(
        "ioctl",
        Only::ArgEq {
            arg: 1,
            value: ioctl_request(libc::FIOCLEX),
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

/// A call the self-test proves is denied, on the architectures it exists on.
#[derive(Debug, Clone, Copy)]
pub struct Forbidden {
    /// System call name, as the kernel spells it.
    pub name: &'static str,
    /// The architectures that have it.
    pub arch: Arches,
}

/// System calls a hostile module might want; none may be in the allowlist.
/// All exist on both architectures but `fork` and `vfork` (x86_64 only;
/// elsewhere a process is made with `clone`, which the allowlist allows for
/// threads only).
pub const FORBIDDEN: &[Forbidden] = &[
    Forbidden {
        name: "socket",
        arch: Arches::Both,
    },
    Forbidden {
        name: "connect",
        arch: Arches::Both,
    },
    Forbidden {
        name: "bind",
        arch: Arches::Both,
    },
    Forbidden {
        name: "listen",
        arch: Arches::Both,
    },
    Forbidden {
        name: "accept4",
        arch: Arches::Both,
    },
    Forbidden {
        name: "execve",
        arch: Arches::Both,
    },
    Forbidden {
        name: "execveat",
        arch: Arches::Both,
    },
    Forbidden {
        name: "fork",
        arch: Arches::Only(Arch::X86_64),
    },
    Forbidden {
        name: "vfork",
        arch: Arches::Only(Arch::X86_64),
    },
    Forbidden {
        name: "ptrace",
        arch: Arches::Both,
    },
    Forbidden {
        name: "mount",
        arch: Arches::Both,
    },
    Forbidden {
        name: "umount2",
        arch: Arches::Both,
    },
    Forbidden {
        name: "bpf",
        arch: Arches::Both,
    },
    Forbidden {
        name: "io_uring_setup",
        arch: Arches::Both,
    },
    Forbidden {
        name: "io_uring_enter",
        arch: Arches::Both,
    },
    Forbidden {
        name: "userfaultfd",
        arch: Arches::Both,
    },
    Forbidden {
        name: "memfd_create",
        arch: Arches::Both,
    },
    Forbidden {
        name: "unshare",
        arch: Arches::Both,
    },
    Forbidden {
        name: "setns",
        arch: Arches::Both,
    },
    Forbidden {
        name: "kill",
        arch: Arches::Both,
    },
    Forbidden {
        name: "setuid",
        arch: Arches::Both,
    },
    Forbidden {
        name: "chroot",
        arch: Arches::Both,
    },
    Forbidden {
        name: "pivot_root",
        arch: Arches::Both,
    },
    Forbidden {
        name: "init_module",
        arch: Arches::Both,
    },
    Forbidden {
        name: "kexec_load",
        arch: Arches::Both,
    },
    Forbidden {
        name: "perf_event_open",
        arch: Arches::Both,
    },
    Forbidden {
        name: "process_vm_readv",
        arch: Arches::Both,
    },
    Forbidden {
        name: "keyctl",
        arch: Arches::Both,
    },
];

const MSG_FASTOPEN: u64 = libc::MSG_FASTOPEN as u64;

/// What a connector needs beyond the module list. An entry naming a call the
/// module list has replaces the module's entries for that call (see
/// [`Allowlist::entries`]): that is how `sendmsg` is narrowed here. The
/// queue's other file calls (`openat`, `fsync`, `fdatasync`, `ftruncate`,
/// `renameat`/`renameat2`, `unlinkat`, `mkdirat`, `lseek`,
/// `pread64`/`pwrite64`, `fstat`/`newfstatat`/`statx`, `getdents64`) and
/// tokio's (`epoll_*`, `eventfd2`, `clone` of threads with `clone3`
/// answering `ENOSYS`, `futex`, `getrandom`) are in the module list already.
pub const CONNECTOR_EXTRA: &[Allowed] = &[
    when(
        "socket",
        Only::Guarded {
            rule: "AF_INET or AF_INET6, SOCK_STREAM (with or without SOCK_NONBLOCK and SOCK_CLOEXEC), protocol 0 or IPPROTO_TCP; any other socket fails with EACCES (network guard)",
        },
        "TCP client sockets for MQTT, Modbus TCP and OPC UA. Anything else fails with EACCES, not SIGSYS: glibc's getaddrinfo tries nscd (AF_UNIX) and UDP DNS first, and must fail fast and fall back to /etc/hosts",
    ),
    when(
        "connect",
        Only::Guarded {
            rule: "stopped by the network guard and handed to the supervisor (seccomp user notification), which connects only to granted addresses",
        },
        "reaching the granted endpoints. It must be allowed here too: filters stack, and this list's TRAP would take precedence over the guard's notification",
    ),
    always(
        "getsockopt",
        "SO_ERROR after a non-blocking connect (tokio)",
    ),
    always("setsockopt", "TCP_NODELAY and keepalive on client sockets"),
    always(
        "getsockname",
        "tokio and the client libraries reading the local address",
    ),
    always(
        "getpeername",
        "tokio and the client libraries reading the peer address",
    ),
    when(
        "sendto",
        Only::AllOf(&[
            ArgTest {
                arg: 4,
                mask: u64::MAX,
                value: 0,
            },
            ArgTest {
                arg: 3,
                mask: MSG_FASTOPEN,
                value: 0,
            },
        ]),
        "send() on a connected TCP socket (Rust's TcpStream writes with it); never to an address, never MSG_FASTOPEN: TCP Fast Open connects without connect, past the guard",
    ),
    always(
        "recvfrom",
        "recv() on a TCP socket (Rust's TcpStream reads with it)",
    ),
    when(
        "sendmsg",
        Only::ArgMasked {
            arg: 2,
            mask: MSG_FASTOPEN,
            value: 0,
        },
        "control messages to the supervisor (the connect guard's listener among them); never MSG_FASTOPEN, a connect past the guard",
    ),
    always("shutdown", "closing the write side of a TCP connection"),
    always(
        "uname",
        "glibc's getaddrinfo reads the host name while it loads resolv.conf",
    ),
    x86_64_only(always(
        "mkdir",
        "the durable queue: Rust's fs::create_dir on x86_64 (mkdirat elsewhere); Landlock allows writes beneath the state dir only",
    )),
    x86_64_only(always(
        "rename",
        "the durable queue: Rust's fs::rename on x86_64 (renameat elsewhere); state dir only, by Landlock",
    )),
    x86_64_only(always(
        "unlink",
        "the durable queue: Rust's fs::remove_file on x86_64 (unlinkat elsewhere); state dir only, by Landlock",
    )),
    x86_64_only(always(
        "rmdir",
        "the durable queue: Rust's fs::remove_dir on x86_64 (unlinkat elsewhere); state dir only, by Landlock",
    )),
];

/// The names in [`FORBIDDEN`] that exist on `arch`.
pub fn forbidden_on(arch: Arch) -> impl Iterator<Item = &'static str> {
    FORBIDDEN
        .iter()
        .filter(move |f| f.arch.has(arch))
        .map(|f| f.name)
}

/// The network calls a connector is allowed although [`FORBIDDEN`] lists
/// them: both are [`Only::Guarded`].
pub const CONNECTOR_GUARDED: &[&str] = &["socket", "connect"];

/// Which allowlist a filter is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowlist {
    /// A wasm worker: [`ALLOWLIST`].
    Module,
    /// A connector: [`ALLOWLIST`] with [`CONNECTOR_EXTRA`] (whose entries
    /// replace the module's for the same call).
    Connector,
}

impl Allowlist {
    /// The entries that apply on `arch`, in table order.
    pub fn entries_on(self, arch: Arch) -> Vec<Allowed> {
        self.entries()
            .into_iter()
            .filter(|e| e.arch.has(arch))
            .collect()
    }

    /// The entries for every architecture, in table order.
    pub fn entries(self) -> Vec<Allowed> {
        match self {
            Allowlist::Module => ALLOWLIST.to_vec(),
            Allowlist::Connector => ALLOWLIST
                .iter()
                .filter(|e| !CONNECTOR_EXTRA.iter().any(|x| x.name == e.name))
                .chain(CONNECTOR_EXTRA)
                .copied()
                .collect(),
        }
    }

    /// `module` or `connector`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Allowlist::Module => "module",
            Allowlist::Connector => "connector",
        }
    }
}

/// The allowlist as a Markdown table (`| system call | arch | allowed when |
/// why |`, both architectures), as `edgeward-worker seccomp-table` prints
/// it and docs/security.md shows it.
pub fn markdown_table(list: Allowlist) -> String {
    let mut table =
        String::from("| system call | arch | allowed when | why |\n| --- | --- | --- | --- |\n");
    for entry in list.entries() {
        table.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            entry.name, entry.arch, entry.only, entry.why
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [Allowlist; 2] = [Allowlist::Module, Allowlist::Connector];

    #[test]
    fn every_entry_gives_a_reason() {
        for list in BOTH {
            for entry in list.entries() {
                assert!(
                    entry.why.trim().len() >= 8,
                    "seccomp {} allowlist entry {} has no real reason",
                    list.name(),
                    entry.name
                );
            }
        }
    }

    #[test]
    fn every_name_is_a_system_call_on_each_architecture_it_claims_and_only_there() {
        for list in BOTH {
            for entry in list.entries() {
                for arch in Arch::ALL {
                    assert_eq!(
                        arch.number(entry.name).is_some(),
                        entry.arch.has(arch),
                        "{} allowlist: {} is marked {} but {} a system call on {}",
                        list.name(),
                        entry.name,
                        entry.arch,
                        if arch.number(entry.name).is_some() {
                            "is"
                        } else {
                            "is not"
                        },
                        arch.name()
                    );
                }
            }
        }
        for forbidden in FORBIDDEN {
            for arch in Arch::ALL {
                assert_eq!(
                    arch.number(forbidden.name).is_some(),
                    forbidden.arch.has(arch),
                    "FORBIDDEN {} on {}",
                    forbidden.name,
                    arch.name()
                );
            }
        }
    }

    #[test]
    fn the_aarch64_lists_have_none_of_the_x86_64_only_calls() {
        for list in BOTH {
            let names: Vec<&str> = list
                .entries_on(Arch::Aarch64)
                .iter()
                .map(|e| e.name)
                .collect();
            for x86_only in [
                "open",
                "stat",
                "lstat",
                "poll",
                "readlink",
                "epoll_wait",
                "mkdir",
                "rename",
                "unlink",
                "rmdir",
                "fork",
                "vfork",
            ] {
                assert!(
                    !names.contains(&x86_only),
                    "{} list on aarch64 has {x86_only}",
                    list.name()
                );
            }
            // Their replacements are there, and aarch64's stat call by its kernel name.
            for name in [
                "newfstatat",
                "ppoll",
                "readlinkat",
                "epoll_pwait",
                "mkdirat",
                "unlinkat",
                "renameat",
            ] {
                assert!(
                    names.contains(&name),
                    "{} list on aarch64 lacks {name}",
                    list.name()
                );
            }
        }
        let forbidden: Vec<&str> = forbidden_on(Arch::Aarch64).collect();
        assert!(!forbidden.contains(&"fork") && forbidden.contains(&"execve"));
        assert_eq!(forbidden.len(), FORBIDDEN.len() - 2);
        assert_eq!(forbidden_on(Arch::X86_64).count(), FORBIDDEN.len());
    }

    #[test]
    fn ioctl_requests_read_the_same_from_glibc_and_musl() {
        for entry in ALLOWLIST.iter().filter(|e| e.name == "ioctl") {
            let Only::ArgEq { value, .. } = entry.only else {
                panic!("ioctl entry without a request: {entry:?}");
            };
            assert!(value < 0x8000_0000, "request {value:#x} has bit 31 set");
        }
    }

    #[test]
    fn nothing_forbidden_is_allowed() {
        for name in FORBIDDEN.iter().map(|f| f.name) {
            assert!(
                !ALLOWLIST.iter().any(|e| e.name == name),
                "{name} must not be in the allowlist"
            );
        }
    }

    #[test]
    fn a_connector_gets_only_guarded_sockets_and_no_server_calls() {
        let connector = Allowlist::Connector.entries();
        let forbidden = FORBIDDEN.iter().map(|f| f.name);
        for name in forbidden.chain(["accept", "sendmmsg", "recvmmsg"]) {
            let entries: Vec<_> = connector.iter().filter(|e| e.name == name).collect();
            if CONNECTOR_GUARDED.contains(&name) {
                assert!(
                    entries.len() == 1 && matches!(entries[0].only, Only::Guarded { .. }),
                    "{name} must be allowed once, guarded: {entries:?}"
                );
            } else {
                assert!(
                    entries.is_empty(),
                    "{name} must not be in the connector allowlist"
                );
            }
        }
        // The narrowed sendmsg replaced the module's unconditional one.
        let sendmsg: Vec<_> = connector.iter().filter(|e| e.name == "sendmsg").collect();
        assert_eq!(sendmsg.len(), 1);
        assert_ne!(sendmsg[0].only, Only::Always);
    }

    #[test]
    fn the_module_table_is_the_module_list_and_renders_every_condition() {
        let table = markdown_table(Allowlist::Module);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "| system call | arch | allowed when | why |");
        assert_eq!(lines[1], "| --- | --- | --- | --- |");
        assert_eq!(lines.len(), ALLOWLIST.len() + 2);
        assert!(table.contains(
            "| `rt_sigaction` | both | arg0 <= 64 and != 31 (all 64 bits compared) | installing trap"
        ));
        assert!(table.contains("| `mmap` | both | arg2 & 0x4 == 0x0 | "));
        assert!(table.contains("| `ioctl` | both | arg1 == 0x5401 | isatty()"));
        assert!(table.contains("| `poll` | x86_64 | always | "));
        let connector = markdown_table(Allowlist::Connector);
        assert!(
            connector.contains("| `sendto` | both | arg4 == 0x0 and arg3 & 0x20000000 == 0x0 | ")
        );
        assert!(connector.contains("| `socket` | both | AF_INET or AF_INET6, SOCK_STREAM"));
        assert!(connector.contains("| `rmdir` | x86_64 | always | "));
    }
}
