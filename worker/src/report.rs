//! The worker's voice towards the supervisor: log lines, counters,
//! readiness, faults.
//!
//! Two kinds of sending. Messages the supervisor must get (Ready, Fault,
//! snapshots, RingCorrupt, Health) wait for room on the control socket: the
//! worker's end is blocking. Heartbeats and the log lines of a running
//! module never wait ([`Reporter::heartbeat`], [`Reporter::try_log`]): a
//! supervisor that falls behind would otherwise stall every module once
//! their sockets fill up (a heartbeat every 100 ms fills one in about 28 s).
//! A heartbeat that finds no room is dropped, since the next one carries
//! newer counters; a line is dropped and counted by the caller.

use std::os::fd::OwnedFd;

use edgeward_ipc::control::{
    Fault, FaultKind, FromWorker, LogLevel, ModuleKind, Stats, MAX_LOG_TEXT_BYTES,
};
use edgeward_ipc::frame::{self, FrameError};

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

    /// Sends one message, waiting for room. A send failure means the
    /// supervisor is gone; the worker then has no reason to live.
    pub fn send(&self, message: &FromWorker) {
        if let Err(e) = frame::send(&self.socket, message, &[]) {
            self.supervisor_gone(&e);
        }
    }

    /// Sends one message only if the socket has room now. Returns whether
    /// it went out.
    fn try_send(&self, message: &FromWorker) -> bool {
        match frame::try_send(&self.socket, message, &[]) {
            Ok(()) => true,
            Err(FrameError::WouldBlock) => false,
            Err(e) => self.supervisor_gone(&e),
        }
    }

    fn supervisor_gone(&self, error: &FrameError) -> ! {
        eprintln!(
            "edgeward-worker[{}]: supervisor unreachable ({error}); exiting",
            self.module
        );
        std::process::exit(crate::exit_code::SUPERVISOR_GONE);
    }

    /// Reports the counters unless the socket is full. Returns whether they
    /// went out; if not, the caller offers them again at the next beat.
    #[must_use = "counters that were not sent must be offered again"]
    pub fn heartbeat(&self, stats: Stats) -> bool {
        self.try_send(&FromWorker::Heartbeat(stats))
    }

    /// Forwards a line of a running module unless the socket is full.
    /// Returns whether it went out; the caller counts a dropped line (in the
    /// module's `log_limit`, which reports the count once lines flow again).
    #[must_use = "a dropped line must be counted"]
    pub fn try_log(&self, level: LogLevel, text: String) -> bool {
        self.try_send(&FromWorker::Log {
            level,
            text: within_log_limit(text),
        })
    }

    /// Forwards a line, waiting for room. Only for lines sent just before a
    /// message that waits anyway (Ready, a Fault, a RingCorrupt): waiting
    /// costs nothing more there, and dropping the line would lose the
    /// explanation of that message.
    pub fn log(&self, level: LogLevel, text: String) {
        self.send(&FromWorker::Log {
            level,
            text: within_log_limit(text),
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_and_lines_never_wait_for_a_supervisor_that_does_not_read() {
        let (ours, theirs) = frame::seqpacket_pair().unwrap();
        let reporter = Reporter::new(theirs, "slow".into());
        let stats = Stats {
            ticks: 1,
            ..Stats::default()
        };
        // The worker's end is blocking: a plain send would hang once full.
        let mut beats = 0;
        while reporter.heartbeat(stats) {
            beats += 1;
            assert!(beats < 1_000_000, "the socket never filled up");
        }
        assert!(!reporter.heartbeat(stats));
        assert!(!reporter.try_log(LogLevel::Info, "dropped".into()));
        // Once the supervisor reads, beats go out again.
        let (first, _) = frame::recv::<FromWorker>(&ours).unwrap();
        assert_eq!(first, FromWorker::Heartbeat(stats));
        assert!(reporter.heartbeat(stats));
    }
}

/// `text` cut to [`MAX_LOG_TEXT_BYTES`] at a character boundary, with `…`:
/// the supervisor kills a worker whose `Log` carries more.
fn within_log_limit(mut text: String) -> String {
    const ELLIPSIS: &str = "…";
    if text.len() <= MAX_LOG_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_LOG_TEXT_BYTES - ELLIPSIS.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(ELLIPSIS);
    text
}

// A guest's longest line, lossily decoded (every byte invalid: three bytes
// of U+FFFD each) and cut with `…`, fits in a `Log` message.
const _: () = assert!(3 * crate::host::imports::MAX_LOG_BYTES + 3 <= MAX_LOG_TEXT_BYTES);

#[cfg(test)]
mod log_limit_tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary_within_the_limit() {
        let text = "é".repeat(MAX_LOG_TEXT_BYTES);
        let cut = within_log_limit(text);
        assert!(cut.len() <= MAX_LOG_TEXT_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(within_log_limit("short".into()), "short");
    }
}
