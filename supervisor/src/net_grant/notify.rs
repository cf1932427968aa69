//! The few raw calls behind the connect guard: the seccomp user
//! notification ioctls on a connector's listener, `pidfd_open` /
//! `pidfd_getfd`, and integer socket options nix has no wrapper for.
//!
//! Each is a thin, safe function; every `unsafe` block in `net_grant` is
//! here. The structs are libc's copies of `linux/seccomp.h`.

use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

/// What the listener has for us right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Readiness {
    /// A notification waits to be received.
    Pending,
    /// Nothing to receive (a spurious wakeup, or one whose task was killed).
    Idle,
    /// No task uses the filter any more: the connector is gone (and reaped).
    Hangup,
}

/// Looks at the listener without waiting.
///
/// `SECCOMP_IOCTL_NOTIF_RECV` sleeps until a notification arrives whatever
/// the fd's flags, so the guard asks first: the event loop must never block.
///
/// # Errors
/// `poll` fails (EINTR is reported as [`Readiness::Idle`]: the loop polls again).
pub(super) fn readiness(listener: BorrowedFd<'_>) -> Result<Readiness, Errno> {
    let mut fds = [PollFd::new(listener, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok(Readiness::Idle),
        Err(e) => return Err(e),
    }
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    // A pending notification first: its task is blocked in connect and
    // must get an answer, even when the filter is about to lose its users.
    if revents.contains(PollFlags::POLLIN) {
        Ok(Readiness::Pending)
    } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
        Ok(Readiness::Hangup)
    } else {
        Ok(Readiness::Idle)
    }
}

/// Receives one notification (`SECCOMP_IOCTL_NOTIF_RECV`).
///
/// Call only after [`readiness`] said [`Readiness::Pending`]: with nothing
/// queued the ioctl sleeps.
///
/// # Errors
/// `ENOENT`: the task was killed or interrupted before we took the
/// notification (nothing to answer); anything else: the listener is unusable.
pub(super) fn receive(listener: BorrowedFd<'_>) -> Result<libc::seccomp_notif, Errno> {
    // SAFETY: seccomp_notif is plain integers; all zeroes is a valid value,
    // and the kernel requires the buffer zeroed.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the request matches the argument: a pointer to a writable
    // seccomp_notif (the size is encoded in the request number).
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &raw mut notif,
        )
    };
    Errno::result(rc).map(|_| notif)
}

/// Whether the notification `id` still waits for an answer, i.e. its task
/// is still blocked in the call (`SECCOMP_IOCTL_NOTIF_ID_VALID`). Checked
/// after reading the task's memory or opening a pidfd by its id: a false
/// answer means the id may now name another task.
///
/// # Errors
/// The ioctl fails for another reason than an invalid id.
pub(super) fn still_waiting(listener: BorrowedFd<'_>, id: u64) -> Result<bool, Errno> {
    // SAFETY: the request takes a pointer to a readable u64 id.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &raw const id,
        )
    };
    match Errno::result(rc) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Answers notification `id`: the blocked call returns 0 when `errno` is
/// 0, else fails with `errno` (`SECCOMP_IOCTL_NOTIF_SEND`). Never with
/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the kernel would then run the call
/// with the task's memory, which it may have changed since we read it.
///
/// # Errors
/// `ENOENT`: the task no longer waits (killed or interrupted); else the
/// listener is unusable.
pub(super) fn reply(listener: BorrowedFd<'_>, id: u64, errno: i32) -> Result<(), Errno> {
    let response = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: the request takes a pointer to a readable seccomp_notif_resp.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &raw const response,
        )
    };
    Errno::result(rc).map(drop)
}

/// Installs `ours` in the notifying task as its descriptor `target`,
/// closing what `target` was, like `dup2` done by the task itself
/// (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SETFD`, kernel
/// 5.9+). Always close-on-exec: a connector never execs, and a socket the
/// supervisor made must not outlive it into another program.
///
/// # Errors
/// `ENOENT`: the task no longer waits; others: the descriptor could not be
/// installed (e.g. `EMFILE` in the task).
pub(super) fn install(
    listener: BorrowedFd<'_>,
    id: u64,
    ours: BorrowedFd<'_>,
    target: RawFd,
) -> Result<(), Errno> {
    let (Ok(srcfd), Ok(newfd)) = (u32::try_from(ours.as_raw_fd()), u32::try_from(target)) else {
        return Err(Errno::EBADF);
    };
    let addfd = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd,
        newfd,
        newfd_flags: libc::O_CLOEXEC as u32,
    };
    // SAFETY: the request takes a pointer to a readable seccomp_notif_addfd;
    // `ours` stays open for the call (the kernel takes its own reference).
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &raw const addfd,
        )
    };
    Errno::result(rc).map(drop)
}

/// `pidfd_open(pid, flags)` (kernel 5.3+; `PIDFD_THREAD` for a thread that
/// is not its group's leader, 6.9+).
///
/// # Errors
/// `ESRCH`: no such task; `EINVAL`: `pid` is not a thread-group leader and
/// `flags` lacks `PIDFD_THREAD`, or the kernel does not know the flag.
pub(super) fn pidfd_open(pid: Pid, flags: libc::c_uint) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), flags) };
    owned(fd)
}

/// A descriptor of ours for the file the task behind `pidfd` has as `fd`
/// (`pidfd_getfd`, kernel 5.6+; needs ptrace access: we are root).
///
/// # Errors
/// `EBADF`: the task has no such descriptor; `ESRCH`: it has exited;
/// `EPERM`: no ptrace access.
pub(super) fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd takes three integers and returns a new descriptor.
    let ours = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    owned(ours)
}

/// Wraps a syscall's returned descriptor.
fn owned(rc: libc::c_long) -> Result<OwnedFd, Errno> {
    let fd = Errno::result(rc)?;
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An integer socket option (`SO_DOMAIN`, `SO_PROTOCOL`: nix has none).
///
/// # Errors
/// `ENOTSOCK` when `fd` is no socket; others from `getsockopt`.
pub(super) fn int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> Result<libc::c_int, Errno> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes and len holds value's size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    Errno::result(rc).map(|_| value)
}

/// `connect(fd, addr)` for an IPv4 or IPv6 address (nix builds these only
/// with its `net` feature, which the workspace does not enable).
///
/// # Errors
/// The connect's own error: `EINPROGRESS` for a non-blocking socket still
/// connecting, `ECONNREFUSED`, `EAFNOSUPPORT` when the socket's family is
/// not the address's...
pub(super) fn connect_inet(fd: BorrowedFd<'_>, addr: SocketAddr) -> Result<(), Errno> {
    let rc = match addr {
        SocketAddr::V4(v4) => {
            let raw = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `raw` is a complete sockaddr_in and the length says so.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&raw const raw).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(v6) => {
            let raw = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: `raw` is a complete sockaddr_in6 and the length says so.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&raw const raw).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    Errno::result(rc).map(drop)
}
