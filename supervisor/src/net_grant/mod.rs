//! Network grants of connectors: the supervisor makes every connection a
//! connector is granted, and nothing else gets out.
//!
//! A connector (`edgeward-connector`) runs in an empty network namespace
//! and traps its own `connect(2)` calls with a seccomp filter returning
//! `SECCOMP_RET_USER_NOTIF`; the filter's listener comes to the supervisor
//! with `FromWorker::ConnectGuard`. For each trapped connect the
//! [`ConnectGuard`] copies the address once out of the connector's memory,
//! and if its exact IP and port are granted, connects a socket of its own
//! (in the supervisor's network namespace) and installs it over the
//! connector's descriptor; the connector then sees an ordinary connect
//! (`EINPROGRESS`, writable when connected) and exchanges data with the
//! peer directly: the supervisor touches only the connect, never the data.
//! Anything else is refused with `EACCES` and reported as a
//! [`Verdict::Denied`] with the address the connector asked for, for the
//! event loop to count and log: denials are seen by the supervisor, not
//! left to the connector's goodwill.
//! `docs/research/issue-15/README.md` section 3 has the measurements.
//!
//! No time-of-check/time-of-use gap: the guard connects to its own copy of
//! the address and never lets the kernel run the connector's call
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE` is never used).
//!
//! Every call here is non-blocking: [`ConnectGuard::answer_one`] looks at
//! the listener before receiving, and the supervisor's own connect is
//! non-blocking; the event loop polls [`ConnectGuard::fd`].
//!
//! # Which task asks
//! A notification's `pid` is the id of the *thread* that called connect,
//! as the supervisor's pid namespace sees it, not its thread group: any
//! thread of the connector may connect (tokio runs connects on its
//! workers), and so could a process the connector forked (the filter is
//! inherited; the connector's allowlist does not let it fork). All of them
//! carry this connector's filter, so this connector's grants apply to all:
//! the guard does not require the thread to be the connector's main one.
//! It uses the thread id where the thread matters: the address is read
//! from that thread's memory (`process_vm_readv` takes any thread id), the
//! connector's socket is looked at through a pidfd of that thread
//! ([`ConnectGuard`]'s `open_task`), and `SECCOMP_IOCTL_NOTIF_ADDFD`
//! installs into the notifying thread's descriptor table. After each read
//! by id the guard checks that the notification is still pending: a thread
//! blocked in the trapped call cannot exit, so its id cannot have been
//! reused meanwhile.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    setsockopt, socket, sockopt, AddressFamily, SockFlag, SockProtocol, SockType,
};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

mod notify;
pub mod resolve;
#[cfg(test)]
mod tests;

use notify::Readiness;
use resolve::ResolvedGrants;

/// `AUDIT_ARCH_*` of the architecture the supervisor runs on: a
/// notification from another calling convention (a 32-bit call on a 64-bit
/// kernel) has other syscall numbers and argument layouts, and is refused.
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_ARCH: Option<u32> = None;

/// The largest address `connect` takes (`sizeof(struct sockaddr_storage)`).
const MAX_ADDRESS: usize = 128;
/// The shortest `sockaddr_in6` the kernel accepts (`SIN6_LEN_RFC2133`:
/// without the scope id).
const MIN_ADDRESS_V6: usize = 24;

/// The connect guard of one connector: its seccomp listener and its grants.
#[derive(Debug)]
pub struct ConnectGuard {
    listener: OwnedFd,
    pid: Pid,
    grants: ResolvedGrants,
}

/// What became of one connect.
#[derive(Debug)]
pub enum Verdict {
    /// Granted: the supervisor connected a socket of its own to `addr` and
    /// installed it in the connector (or, when that connect failed at once,
    /// e.g. `ECONNREFUSED`, the connector got its error).
    Granted {
        /// The address the connector asked for (the event loop counts
        /// grants without logging each; the tests read it).
        #[cfg_attr(not(test), allow(dead_code))]
        addr: SocketAddr,
    },
    /// Refused with `EACCES`: a denial.
    Denied {
        /// What the connector asked for, in words: `127.0.0.1:9999`, `an
        /// AF_UNIX address`, `10.0.0.5:502 over a non-TCP socket`...
        what: String,
    },
    /// Granted, but the supervisor could not carry it out: the connector's
    /// connect failed with the failing step's error (e.g. `EMFILE`); neither
    /// a grant nor a denial is counted. Log it.
    Failed {
        /// The step that failed.
        error: GuardError,
    },
}

/// Why the guard could not do its part.
///
/// From [`ConnectGuard::answer_one`] the listener-level ones mean the guard
/// is done (drop it); the others come inside [`Verdict::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The filter has no task left: the connector exited.
    #[error("its connect listener hung up (the connector exited); drop its guard")]
    Gone,
    /// `poll` on the listener failed.
    #[error("polling its connect listener: {source}")]
    Poll {
        /// The error.
        source: Errno,
    },
    /// `SECCOMP_IOCTL_NOTIF_RECV` failed.
    #[error("receiving a connect notification (SECCOMP_IOCTL_NOTIF_RECV): {source}")]
    Receive {
        /// The error.
        source: Errno,
    },
    /// `SECCOMP_IOCTL_NOTIF_ID_VALID` failed.
    #[error("checking a connect notification (SECCOMP_IOCTL_NOTIF_ID_VALID): {source}")]
    Check {
        /// The error.
        source: Errno,
    },
    /// `SECCOMP_IOCTL_NOTIF_SEND` failed.
    #[error("answering a connect notification (SECCOMP_IOCTL_NOTIF_SEND): {source}")]
    Reply {
        /// The error.
        source: Errno,
    },
    /// The notifying task is not in the supervisor's pid namespace.
    #[error("a connect from a task outside the supervisor's pid namespace (the connector must be started by this supervisor)")]
    Invisible,
    /// Reading the address out of the connector's memory failed.
    #[error("reading the address of a connect from thread {tid} (process_vm_readv; the supervisor must run as root): {source}")]
    ReadAddress {
        /// The calling thread.
        tid: Pid,
        /// The error.
        source: Errno,
    },
    /// No pidfd for the calling thread.
    #[error("opening a pidfd of thread {tid} (kernel 5.3+): {source}")]
    OpenPidfd {
        /// The calling thread.
        tid: Pid,
        /// The error.
        source: Errno,
    },
    /// The connector's socket could not be copied.
    #[error("copying fd {fd} of thread {tid} (pidfd_getfd, kernel 5.6+; the supervisor must run as root): {source}")]
    GetFd {
        /// The calling thread.
        tid: Pid,
        /// The connector's descriptor.
        fd: RawFd,
        /// The error.
        source: Errno,
    },
    /// The connector's socket could not be looked at.
    #[error("reading the options of fd {fd} of thread {tid}: {source}")]
    InspectSocket {
        /// The calling thread.
        tid: Pid,
        /// The connector's descriptor.
        fd: RawFd,
        /// The error.
        source: Errno,
    },
    /// The supervisor's own socket could not be made ready.
    #[error("creating the supervisor's socket to {addr}: {source}")]
    CreateSocket {
        /// The granted address.
        addr: SocketAddr,
        /// The error.
        source: Errno,
    },
    /// The supervisor's socket could not be installed in the connector.
    #[error("installing the socket to {addr} as fd {fd} of thread {tid} (SECCOMP_IOCTL_NOTIF_ADDFD, kernel 5.9+): {source}")]
    Install {
        /// The granted address.
        addr: SocketAddr,
        /// The calling thread.
        tid: Pid,
        /// The connector's descriptor.
        fd: RawFd,
        /// The error.
        source: Errno,
    },
}

impl GuardError {
    /// The error the connector's connect fails with when this step failed.
    fn errno(&self) -> Errno {
        match self {
            Self::Gone | Self::Invisible => Errno::EACCES,
            Self::Poll { source, .. }
            | Self::Receive { source, .. }
            | Self::Check { source, .. }
            | Self::Reply { source, .. }
            | Self::ReadAddress { source, .. }
            | Self::OpenPidfd { source, .. }
            | Self::GetFd { source, .. }
            | Self::InspectSocket { source, .. }
            | Self::CreateSocket { source, .. }
            | Self::Install { source, .. } => *source,
        }
    }
}

/// The answer to one notification, before it is sent.
enum Answer {
    /// The task no longer waits: nothing to answer.
    Vanished,
    /// Answer with `errno` (0: success).
    Reply { errno: i32, verdict: Verdict },
}

impl Answer {
    fn denied(what: impl Into<String>) -> Self {
        Self::Reply {
            errno: libc::EACCES,
            verdict: Verdict::Denied { what: what.into() },
        }
    }

    fn failed(error: GuardError) -> Self {
        Self::Reply {
            errno: error.errno() as i32,
            verdict: Verdict::Failed { error },
        }
    }
}

/// One trapped connect, as received.
struct Request {
    id: u64,
    tid: Pid,
    fd: RawFd,
}

impl ConnectGuard {
    /// The guard of connector `pid` (as the supervisor sees it: the process
    /// it started), answering the notifications of `listener` with `grants`.
    pub fn new(listener: OwnedFd, pid: Pid, grants: ResolvedGrants) -> Self {
        Self {
            listener,
            pid,
            grants,
        }
    }

    /// The listener, for the event loop's epoll set: readable when a connect
    /// waits for an answer, hung up once every task of the connector has
    /// exited (already while it is a zombie; measured on 6.18).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Answers at most one waiting connect, without blocking.
    ///
    /// `Ok(None)`: nothing was waiting (a spurious wakeup, or the task was
    /// killed before its answer). Call again while [`Self::fd`] is readable.
    ///
    /// # Errors
    /// The listener is unusable: [`GuardError::Gone`] when the connector has
    /// exited, or a failed `poll`, receive, check or reply. Drop the guard:
    /// closing the listener makes the connector's connects fail (`ENOSYS`).
    pub fn answer_one(&self) -> Result<Option<Verdict>, GuardError> {
        match notify::readiness(self.fd()).map_err(|source| GuardError::Poll { source })? {
            Readiness::Pending => {}
            Readiness::Idle => return Ok(None),
            Readiness::Hangup => return Err(GuardError::Gone),
        }
        let notif = match notify::receive(self.fd()) {
            Ok(notif) => notif,
            Err(Errno::ENOENT | Errno::EINTR) => return Ok(None),
            Err(source) => return Err(GuardError::Receive { source }),
        };
        let (errno, verdict) = match self.decide(&notif)? {
            Answer::Vanished => return Ok(None),
            Answer::Reply { errno, verdict } => (errno, verdict),
        };
        match notify::reply(self.fd(), notif.id, errno) {
            // Killed after we decided: it still asked, so it still counts.
            Ok(()) | Err(Errno::ENOENT) => Ok(Some(verdict)),
            Err(source) => Err(GuardError::Reply { source }),
        }
    }

    /// Whether the notification `id` still waits for its answer.
    fn still_waiting(&self, id: u64) -> Result<bool, GuardError> {
        notify::still_waiting(self.fd(), id).map_err(|source| GuardError::Check { source })
    }

    /// What to answer to `notif`. Errors only for a listener-level failure.
    fn decide(&self, notif: &libc::seccomp_notif) -> Result<Answer, GuardError> {
        let data = &notif.data;
        if data.nr != libc::SYS_connect as i32 || NATIVE_ARCH.is_some_and(|a| a != data.arch) {
            // Only connect is meant to be trapped; refuse whatever else the
            // connector's filter sent rather than guess its arguments.
            return Ok(Answer::denied(format!(
                "system call {} of arch {:#x} (only connect is guarded)",
                data.nr, data.arch
            )));
        }
        let Ok(tid) = i32::try_from(notif.pid) else {
            return Ok(Answer::failed(GuardError::Invisible));
        };
        if tid == 0 {
            // 0 would be read as "ourselves" by process_vm_readv.
            return Ok(Answer::failed(GuardError::Invisible));
        }
        let request = Request {
            id: notif.id,
            tid: Pid::from_raw(tid),
            // connect takes `int fd, ..., int addrlen`: the kernel reads
            // the low 32 bits of each register, so do we.
            fd: data.args[0] as u32 as i32,
        };
        let len = data.args[2] as u32 as i32;
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|&l| (2..=MAX_ADDRESS).contains(&l))
        else {
            return Ok(Answer::denied(format!("an address of {len} bytes")));
        };
        let mut copy = [0u8; MAX_ADDRESS];
        let read = process_vm_readv(
            request.tid,
            &mut [std::io::IoSliceMut::new(&mut copy[..len])],
            &[RemoteIoVec {
                base: data.args[1] as usize,
                len,
            }],
        );
        // The memory read is only ours to trust if the thread is still the
        // one blocked in this connect.
        if !self.still_waiting(request.id)? {
            return Ok(Answer::Vanished);
        }
        match read {
            Ok(n) if n == len => {}
            Ok(_) | Err(Errno::EFAULT) => {
                return Ok(Answer::denied("an address at an unreadable pointer"));
            }
            Err(source) => {
                return Ok(Answer::failed(GuardError::ReadAddress {
                    tid: request.tid,
                    source,
                }))
            }
        }
        let addr = match parse_sockaddr(&copy[..len]) {
            Ok(addr) => addr,
            Err(what) => return Ok(Answer::denied(what)),
        };
        if !self.grants.allows(&addr) {
            return Ok(Answer::denied(addr.to_string()));
        }
        self.connect_for(&request, addr)
    }

    /// Connects a socket of the supervisor's to the granted `addr` and
    /// installs it as the connector's `request.fd`.
    fn connect_for(&self, request: &Request, addr: SocketAddr) -> Result<Answer, GuardError> {
        let tid = request.tid;
        let fd = request.fd;
        let task = match self.open_task(tid) {
            Ok(task) => task,
            Err(GuardError::OpenPidfd {
                source: Errno::ESRCH,
                ..
            }) => return Ok(Answer::Vanished),
            Err(error) => return Ok(Answer::failed(error)),
        };
        if !self.still_waiting(request.id)? {
            return Ok(Answer::Vanished);
        }
        let theirs = match notify::pidfd_getfd(task.as_fd(), fd) {
            Ok(theirs) => theirs,
            Err(Errno::ESRCH) => return Ok(Answer::Vanished),
            Err(source) => return Ok(Answer::failed(GuardError::GetFd { tid, fd, source })),
        };
        let socket_kind = match SocketKind::of(theirs.as_fd()) {
            Ok(kind) => kind,
            Err(source) => {
                return Ok(Answer::failed(GuardError::InspectSocket {
                    tid,
                    fd,
                    source,
                }));
            }
        };
        let Some(family) = socket_kind.tcp_family() else {
            return Ok(Answer::denied(format!("{addr} over a non-TCP socket")));
        };
        let (ours, connected) = match own_connection(family, &socket_kind, addr) {
            Ok(done) => done,
            Err(source) => return Ok(Answer::failed(GuardError::CreateSocket { addr, source })),
        };
        let errno = match connected {
            Ok(()) => 0,
            Err(Errno::EINPROGRESS) => libc::EINPROGRESS,
            // Failed at once (ECONNREFUSED, ENETUNREACH...): the connector
            // gets the error; its own socket stays, unconnected, as after a
            // failed connect of its own.
            Err(e) => {
                return Ok(Answer::Reply {
                    errno: e as i32,
                    verdict: Verdict::Granted { addr },
                })
            }
        };
        match notify::install(self.fd(), request.id, ours.as_fd(), fd) {
            Ok(()) => Ok(Answer::Reply {
                errno,
                verdict: Verdict::Granted { addr },
            }),
            Err(Errno::ENOENT) => Ok(Answer::Vanished),
            Err(source) => Ok(Answer::failed(GuardError::Install {
                addr,
                tid,
                fd,
                source,
            })),
        }
    }

    /// A pidfd of thread `tid`, whose descriptor table holds the socket.
    ///
    /// Kernel 6.9+ opens any thread (`PIDFD_THREAD`). Before, only a thread
    /// group leader can be opened: a leader directly, another thread of the
    /// connector through the connector itself, which shares its descriptor
    /// table (checked in /proc: a procfs lookup, which does not block).
    fn open_task(&self, tid: Pid) -> Result<OwnedFd, GuardError> {
        let opened = if tid == self.pid {
            notify::pidfd_open(tid, 0)
        } else {
            notify::pidfd_open(tid, libc::PIDFD_THREAD)
                .or_else(|e| match e {
                    Errno::EINVAL => notify::pidfd_open(tid, 0),
                    e => Err(e),
                })
                .or_else(|e| match e {
                    Errno::EINVAL
                        if Path::new(&format!("/proc/{}/task/{tid}", self.pid)).exists() =>
                    {
                        notify::pidfd_open(self.pid, 0)
                    }
                    e => Err(e),
                })
        };
        opened.map_err(|source| GuardError::OpenPidfd { tid, source })
    }
}

/// What the connector's socket is, and the settings its copy inherits.
struct SocketKind {
    domain: libc::c_int,
    ty: libc::c_int,
    protocol: libc::c_int,
    nonblocking: bool,
    nodelay: bool,
}

impl SocketKind {
    fn of(socket: BorrowedFd<'_>) -> Result<Self, Errno> {
        let flags = fcntl(socket, FcntlArg::F_GETFL)?;
        Ok(Self {
            domain: notify::int_option(socket, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
            ty: notify::int_option(socket, libc::SOL_SOCKET, libc::SO_TYPE)?,
            protocol: notify::int_option(socket, libc::SOL_SOCKET, libc::SO_PROTOCOL)?,
            nonblocking: OFlag::from_bits_retain(flags).contains(OFlag::O_NONBLOCK),
            nodelay: notify::int_option(socket, libc::IPPROTO_TCP, libc::TCP_NODELAY)
                .is_ok_and(|v| v != 0),
        })
    }

    /// The family, when this is a TCP socket over IPv4 or IPv6 (UDP, MPTCP,
    /// SCTP, raw and other sockets are refused: grants are TCP).
    fn tcp_family(&self) -> Option<AddressFamily> {
        if self.ty != libc::SOCK_STREAM || self.protocol != libc::IPPROTO_TCP {
            return None;
        }
        match self.domain {
            libc::AF_INET => Some(AddressFamily::Inet),
            libc::AF_INET6 => Some(AddressFamily::Inet6),
            _ => None,
        }
    }
}

/// The supervisor's socket to `addr`, like the connector's (same family,
/// `TCP_NODELAY`, `O_NONBLOCK`), with its connect started: the outer error
/// is about the socket, the inner one is the connect's own result.
///
/// The connect itself is always non-blocking: the event loop must not wait
/// for a peer. A connector whose socket is blocking gets its socket back
/// blocking but its connect answered `EINPROGRESS` (it would have to wait
/// for writability); the connectors' libraries (tokio) connect non-blocking.
fn own_connection(
    family: AddressFamily,
    kind: &SocketKind,
    addr: SocketAddr,
) -> Result<(OwnedFd, Result<(), Errno>), Errno> {
    let ours = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::Tcp,
    )?;
    if kind.nodelay {
        setsockopt(&ours, sockopt::TcpNoDelay, &true)?;
    }
    // Our own copy of the address: IP and port only (no flow label, no
    // scope id: grants name neither).
    let target = match addr {
        SocketAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(*v4.ip(), v4.port())),
        SocketAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0)),
    };
    let connected = notify::connect_inet(ours.as_fd(), target);
    if !kind.nonblocking {
        let flags = OFlag::from_bits_retain(fcntl(&ours, FcntlArg::F_GETFL)?);
        fcntl(&ours, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    }
    Ok((ours, connected))
}

/// The IPv4 or IPv6 address and port in a copied `struct sockaddr`, or
/// what it is in words when it is neither.
fn parse_sockaddr(bytes: &[u8]) -> Result<SocketAddr, String> {
    let family = i32::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
    let port = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
    match family {
        libc::AF_INET if bytes.len() >= size_of_sockaddr_in() => {
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Ok(SocketAddr::new(IpAddr::V4(ip), port(bytes)))
        }
        libc::AF_INET6 if bytes.len() >= MIN_ADDRESS_V6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes[8..24]);
            Ok(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port(bytes),
            ))
        }
        libc::AF_INET | libc::AF_INET6 => Err(format!(
            "a short {} address ({} bytes)",
            if family == libc::AF_INET {
                "AF_INET"
            } else {
                "AF_INET6"
            },
            bytes.len()
        )),
        libc::AF_UNIX => Err("an AF_UNIX address".to_string()),
        libc::AF_UNSPEC => Err("an AF_UNSPEC address (a disconnect)".to_string()),
        libc::AF_NETLINK => Err("an AF_NETLINK address".to_string()),
        libc::AF_PACKET => Err("an AF_PACKET address".to_string()),
        other => Err(format!("an address of family {other}")),
    }
}

/// `sizeof(struct sockaddr_in)`.
const fn size_of_sockaddr_in() -> usize {
    std::mem::size_of::<libc::sockaddr_in>()
}
