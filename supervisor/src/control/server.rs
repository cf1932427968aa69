//! The listening side of the control socket.
//!
//! The listener is non-blocking and watched by the event loop. A client's
//! request is read with a short timeout, so a stuck client cannot stall the
//! supervisor for long; requests are tiny and answered at once.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use super::protocol::{Reply, Request, Response};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// A bound control socket; the file is removed on drop.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` (mode 0600), creating its directory. A stale socket file
    /// with nobody listening is replaced; a live one is an error.
    ///
    /// # Errors
    /// Another supervisor is listening there, or the path cannot be bound.
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
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

    /// Accepts every pending client and answers each with `handle`. A
    /// handler that answers [`Reply::Later`] takes the stream out of the
    /// option and answers it with [`answer`] when it can.
    pub fn serve_pending(&self, mut handle: impl FnMut(Request, &mut Option<UnixStream>) -> Reply) {
        while let Ok((stream, _)) = self.listener.accept() {
            let mut stream = Some(stream);
            let reply = match read_request(stream.as_ref().expect("just accepted")) {
                Ok(request) => handle(request, &mut stream),
                Err(e) => Reply::Now(Box::new(Response::refused(format!("bad request: {e:#}")))),
            };
            if let (Reply::Now(response), Some(stream)) = (reply, stream) {
                answer(stream, &response);
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `response` to a client (best effort: a client that went away
/// loses its answer, nothing else).
pub fn answer(mut stream: UnixStream, response: &Response) {
    if let Ok(mut line) = serde_json::to_string(response) {
        line.push('\n');
        let _ = stream.write_all(line.as_bytes());
    }
}

fn read_request(stream: &UnixStream) -> anyhow::Result<Request> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(stream, MAX_REQUEST)).read_line(&mut line)?;
    Ok(serde_json::from_str(line.trim())?)
}
