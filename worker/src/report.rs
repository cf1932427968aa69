//! The worker's voice towards the supervisor: log lines, readiness, faults.

use std::os::fd::OwnedFd;

use edgeward_ipc::control::{Fault, FaultKind, FromWorker, LogLevel, ModuleKind};
use edgeward_ipc::frame;

/// Sends [`FromWorker`] messages on the control socket. Shared between the
/// guest-calling thread and a command module's control thread.
pub struct Reporter {
    socket: OwnedFd,
    module: String,
}

impl Reporter {
    /// Wraps the worker's end of the control socket.
    pub fn new(socket: OwnedFd, module: String) -> Self {
        Self { socket, module }
    }

    /// The control socket, for receiving.
    pub fn socket(&self) -> &OwnedFd {
        &self.socket
    }

    /// Sends one message. A send failure means the supervisor is gone; the
    /// worker then has no reason to live.
    pub fn send(&self, message: &FromWorker) {
        if let Err(e) = frame::send(&self.socket, message, &[]) {
            eprintln!(
                "edgeward-worker[{}]: supervisor unreachable ({e}); exiting",
                self.module
            );
            std::process::exit(crate::exit_code::SUPERVISOR_GONE);
        }
    }

    /// Forwards a guest log line.
    pub fn log(&self, level: LogLevel, text: String) {
        self.send(&FromWorker::Log { level, text });
    }

    /// Announces readiness.
    pub fn ready(&self, kind: ModuleKind, degraded: Vec<String>, snapshots: bool) {
        self.send(&FromWorker::Ready {
            kind,
            degraded,
            snapshots,
        });
    }

    /// Reports a fault; the caller exits right after.
    pub fn fault(&self, kind: FaultKind, message: String) {
        self.send(&FromWorker::Fault(Fault { kind, message }));
    }
}
