//! Step 6: close every inherited fd that was not handed over. A worker
//! forked by the fork server could otherwise inherit whatever the fork server
//! held; only stdio, the control socket and the module's own artifact stay.
//! Fds the worker opened itself for its module (preopened dirs) are not
//! inherited and are kept.

use std::os::fd::RawFd;

use super::SandboxError;

/// Closes `inherited` fds that are not in `keep`.
pub(super) fn close_inherited(inherited: &[RawFd], keep: &[RawFd]) -> Result<(), SandboxError> {
    for &fd in inherited {
        if keep.contains(&fd) {
            continue;
        }
        // SAFETY: `fd` was inherited and is not owned by any Rust object in
        // this process that will use it later (the keep list names those).
        if unsafe { libc::close(fd) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBADF) {
                return Err(SandboxError::Fds(e));
            }
        }
    }
    Ok(())
}

/// The fds open in this process now, from `/proc/self/fd`.
pub fn open_fds() -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // The directory handle used for listing is closed by now.
    fds.retain(|fd| nix::fcntl::fcntl(unsafe_borrow(*fd), nix::fcntl::FcntlArg::F_GETFD).is_ok());
    fds.sort_unstable();
    fds
}

fn unsafe_borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: only used for an F_GETFD probe, which is harmless on a closed
    // or reused descriptor (it just reports EBADF or the flags).
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
