//! One supervisor per state directory.
//!
//! Two supervisors on one `--state` (with different control sockets) would
//! each take the other's workers for leftovers of a killed run and kill
//! them, then share one snapshot store, one uid block and one set of
//! cgroups. So `edgeward run` takes an exclusive `flock` on `<state>/lock`
//! before anything else touches the state dir or the cgroups, and holds it
//! until it exits: the kernel drops it with the last open descriptor, so a
//! killed supervisor never leaves a stale lock behind. The holder's pid is
//! written into the file, for the refusal message only.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Name of the lock file in the state dir.
pub const LOCK_FILE: &str = "lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    /// Another process holds it.
    #[error(
        "state directory {} is in use by another edgeward ({}); stop it first or pass --state",
        dir.display(),
        holder.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    InUse {
        /// The state directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it (absent while it has not yet).
        holder: Option<u32>,
    },
    /// The lock file cannot be opened or locked.
    #[error(
        "cannot lock {}: {source} (the state directory must be writable; pass another --state)",
        path.display()
    )]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl StateLock {
    /// Takes the lock of `state` (an existing directory) without waiting.
    ///
    /// # Errors
    /// [`StateLockError::InUse`] when another process holds it;
    /// [`StateLockError::Io`] when the lock file cannot be opened or locked.
    pub fn acquire(state: &Path) -> Result<Self, StateLockError> {
        let path = state.join(LOCK_FILE);
        let io_error = |source| StateLockError::Io {
            path: path.clone(),
            source,
        };
        // O_CLOEXEC (std's default, spelled out because it matters): a
        // child that inherited the descriptor would keep the lock after we
        // die, and the next supervisor could never start.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_error)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                // The pid only serves the refusal message of a second
                // supervisor: failing to write it (a full disk) is no reason
                // to refuse to start, and it need not be durable.
                let pid = format!("{}\n", std::process::id());
                let _ = lock
                    .set_len(0)
                    .and_then(|()| lock.write_all_at(pid.as_bytes(), 0));
                Ok(Self { _lock: lock })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Err(StateLockError::InUse {
                    dir: state.to_path_buf(),
                    holder: text.trim().parse().ok(),
                })
            }
            Err((_, errno)) => Err(io_error(io::Error::from(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let state = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(state.path()).unwrap();
        let written = std::fs::read_to_string(state.path().join(LOCK_FILE)).unwrap();
        assert_eq!(written, format!("{}\n", std::process::id()));
        // A second open file description conflicts even in this process.
        let refused = StateLock::acquire(state.path()).unwrap_err();
        match &refused {
            StateLockError::InUse { dir, holder } => {
                assert_eq!(dir, state.path());
                assert_eq!(*holder, Some(std::process::id()));
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        assert_eq!(
            refused.to_string(),
            format!(
                "state directory {} is in use by another edgeward (pid {}); stop it first or pass --state",
                state.path().display(),
                std::process::id()
            )
        );
        drop(first);
        StateLock::acquire(state.path()).expect("free again once dropped");
    }

    #[test]
    fn the_lock_is_not_inherited_by_children() {
        let state = tempfile::tempdir().unwrap();
        let lock = StateLock::acquire(state.path()).unwrap();
        // SAFETY: F_GETFD on a descriptor the lock owns; no memory involved.
        let flags = unsafe { libc::fcntl(lock._lock.as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "flags {flags}");
    }

    #[test]
    fn a_missing_state_dir_is_an_io_error_naming_the_lock_file() {
        let state = tempfile::tempdir().unwrap();
        let gone = state.path().join("gone");
        let error = StateLock::acquire(&gone).unwrap_err();
        assert!(matches!(&error, StateLockError::Io { path, .. } if *path == gone.join(LOCK_FILE)));
        assert!(error.to_string().contains("gone/lock"), "{error}");
    }
}
