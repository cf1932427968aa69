//! The listening side of the control socket. The listener is non-blocking
//! and watched by the event loop; connected clients are read and answered
//! by `clients.rs`, never blocking the loop.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

/// A bound control socket; the file is removed on drop.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` (mode 0600), creating its directory (mode 0700: only
    /// root and the supervisor's user may reach the socket) if missing. A
    /// stale socket file with nobody listening is replaced; a live one is an
    /// error.
    ///
    /// # Errors
    /// The directory cannot be created (the message names it, the OS reason
    /// and the fix), another supervisor is listening there, or the path
    /// cannot be bound.
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::durable::create_dir_all(dir).map_err(|e| {
                anyhow!(
                    "cannot create the control socket's directory {}: {e}; \
                     pass --control PATH or set EDGEWARD_CONTROL",
                    dir.display()
                )
            })?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "another edgeward is already listening on {}; stop it first or pass --control",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot bind control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The listening fd, for the event loop.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The listener, for accepting (non-blocking).
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
