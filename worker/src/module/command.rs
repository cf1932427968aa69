//! Command modules: a plain WASI program whose `_start` runs as a long-lived
//! service. The guest owns the main thread, so a small control thread
//! answers the supervisor (Stop ends the process). It answers at once,
//! whatever the guest thread is doing: a `Ping` gets the counters even while
//! the guest is blocked or busy, so only a stopped process (or a wedged
//! control thread) stays silent.

use std::sync::{Arc, Mutex};

use edgeward_ipc::control::{FaultKind, FromWorker, ModuleKind, Stats, ToWorker};
use edgeward_ipc::frame::{self, FrameError};
use wasmtime_wasi::I32Exit;

use super::{report_trap, Loaded};
use crate::exit_code;
use crate::host::channels::{ResetRequests, SharedStats};
use crate::report::Reporter;

/// Reports Ready, runs `_start` to its end and returns the exit code.
pub fn run(loaded: Loaded, reporter: &Arc<Reporter>, degraded: Vec<String>) -> i32 {
    let Loaded {
        mut store,
        instance,
        ..
    } = loaded;
    let start = match instance
        .get_func(&mut store, "_start")
        .map(|f| f.typed::<(), ()>(&store))
    {
        Some(Ok(f)) => f,
        _ => {
            reporter.fault(
                FaultKind::Load,
                "export _start must have type () -> () (see docs/guest-abi.md)".into(),
            );
            return exit_code::LOAD_FAILED;
        }
    };
    let control = Arc::clone(reporter);
    let resets = Arc::clone(&store.data().channels.resets);
    let stats = Arc::new(SharedStats::default());
    store.data_mut().channels.shared_stats = Some(Arc::clone(&stats));
    let state = store.data().command_state.clone();
    let snapshots = state.is_some();
    let spawned = std::thread::Builder::new()
        .name("control".into())
        .stack_size(64 * 1024)
        .spawn(move || control_thread(&control, &resets, &stats, state.as_deref()));
    if let Err(e) = spawned {
        reporter.fault(FaultKind::Load, format!("cannot start control thread: {e}"));
        return exit_code::LOAD_FAILED;
    }
    reporter.ready(ModuleKind::Command, degraded, snapshots);
    // A command owns its thread for its whole life: no per-call budget.
    crate::budget::unbounded(&mut store);
    match start.call(&mut store, ()) {
        Ok(()) => exit_code::OK,
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => exit_code::OK,
            Some(I32Exit(code)) => {
                reporter.fault(FaultKind::Exit, format!("exited with code {code}"));
                *code
            }
            None => report_trap(reporter, &store, "_start", 0, &e),
        },
    }
}

/// How often a command's counters are reported while they change.
const HEARTBEAT_MS: u16 = 100;

/// Waits for Stop (exit 0) or the supervisor's disappearance; passes ring
/// resets on to the guest thread; reports the counters while they change;
/// answers the supervisor's requests ([`Control::answer`]).
fn control_thread(
    reporter: &Reporter,
    resets: &ResetRequests,
    stats: &SharedStats,
    state: Option<&Mutex<Option<Vec<u8>>>>,
) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let control = Control {
        reporter,
        resets,
        stats,
        state,
    };
    let mut reported = Stats::default();
    loop {
        let mut fds = [PollFd::new(reporter.socket().as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(HEARTBEAT_MS)).unwrap_or(1);
        let now = stats.load();
        // A full socket drops this beat; the poll above paces the retry.
        if now != reported && reporter.heartbeat(now) {
            reported = now;
        }
        if ready == 0 {
            continue;
        }
        match frame::recv::<ToWorker>(reporter.socket()) {
            Ok((message, _)) => {
                if let Some(code) = control.answer(message, &mut reported) {
                    std::process::exit(code);
                }
            }
            Err(FrameError::WouldBlock) => {}
            Err(_) => std::process::exit(exit_code::SUPERVISOR_GONE),
        }
    }
}

/// What the control thread answers with.
struct Control<'a> {
    reporter: &'a Reporter,
    resets: &'a ResetRequests,
    stats: &'a SharedStats,
    state: Option<&'a Mutex<Option<Vec<u8>>>>,
}

impl Control<'_> {
    /// Answers one message of the supervisor. `reported` holds the counters
    /// last sent. Returns the exit code when the worker must exit now.
    fn answer(&self, message: ToWorker, reported: &mut Stats) -> Option<i32> {
        let reporter = self.reporter;
        match message {
            ToWorker::Stop => return Some(exit_code::OK),
            ToWorker::RingReset { ring } => self.resets.push(ring),
            ToWorker::Snapshot => {
                let latest = self
                    .state
                    .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take());
                match (self.state, latest) {
                    (_, Some(bytes)) => super::snapshot::send(reporter, &bytes),
                    // Nothing put since the last snapshot: nothing new to save.
                    (Some(_), None) => reporter.send(&FromWorker::SnapshotFailed(String::new())),
                    (None, None) => reporter.send(&FromWorker::SnapshotFailed(
                        "the command never imports snapshot_put".into(),
                    )),
                }
            }
            // A command that answers is alive; it has no health export.
            ToWorker::Health => reporter.send(&FromWorker::Health(0)),
            // The counters now, changed or not. A full socket drops the
            // answer: the supervisor then has plenty of our messages to read.
            ToWorker::Ping => {
                let now = self.stats.load();
                if reporter.heartbeat(now) {
                    *reported = now;
                }
            }
            other @ ToWorker::Init(_) => {
                reporter.fault(
                    FaultKind::Protocol,
                    format!("protocol: unexpected {other:?} while running"),
                );
                return Some(exit_code::LOAD_FAILED);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_is_answered_with_the_current_counters_even_when_unchanged() {
        let (supervisor, worker) = frame::seqpacket_pair().unwrap();
        let reporter = Reporter::new(worker, "hello-command".into());
        let resets = ResetRequests::default();
        let stats = SharedStats::default();
        let control = Control {
            reporter: &reporter,
            resets: &resets,
            stats: &stats,
            state: None,
        };
        let counters = Stats {
            msgs_in: 4,
            msgs_out: 9,
            ..Stats::default()
        };
        stats.store(&counters);
        // Already reported: no periodic beat would go out for them.
        let mut reported = counters;
        assert_eq!(control.answer(ToWorker::Ping, &mut reported), None);
        let (answer, _) = frame::recv::<FromWorker>(&supervisor).unwrap();
        assert_eq!(answer, FromWorker::Heartbeat(counters));

        // Counters that moved on since: the answer carries the new ones and
        // counts as reported.
        let newer = Stats {
            msgs_out: 10,
            ..counters
        };
        stats.store(&newer);
        assert_eq!(control.answer(ToWorker::Ping, &mut reported), None);
        let (answer, _) = frame::recv::<FromWorker>(&supervisor).unwrap();
        assert_eq!(answer, FromWorker::Heartbeat(newer));
        assert_eq!(reported, newer);
        // Nothing else was sent.
        nix::fcntl::fcntl(
            &supervisor,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        assert!(matches!(
            frame::recv::<FromWorker>(&supervisor),
            Err(FrameError::WouldBlock)
        ));
    }
}
