//! What workers say: the control-socket messages of a module's current
//! worker (Hello, Ready, Log, Heartbeat, Fault, snapshots, Health), their
//! rate limits, protocol violations, and the worker's output pipe.

use std::time::Instant;

use edgeward_ipc::control::{FaultKind, FromWorker};
use edgeward_ipc::frame::{self, FrameError};
use edgeward_ipc::MAX_SNAPSHOT_BYTES;

use super::{say, Supervisor};
use crate::output::Drained;
use crate::slot::State;
use crate::worker_text;

impl Supervisor {
    /// Reads what slot `i`'s worker sent: at most [`super::FRAMES_PER_WAKE`]
    /// messages per wake-up (epoll reports the rest again after the other
    /// ready fds had their turn).
    pub(crate) fn on_worker_message(&mut self, i: usize) {
        self.read_worker_messages(i, super::FRAMES_PER_WAKE);
    }

    /// Reads up to `budget` messages from slot `i`'s worker.
    pub(super) fn read_worker_messages(&mut self, i: usize, budget: usize) {
        for _ in 0..budget {
            let Some(worker) = self.slots[i].worker.as_mut() else {
                return;
            };
            let Some(control) = worker.control.as_ref() else {
                return;
            };
            match frame::recv::<FromWorker>(control) {
                Ok((message, fds)) => {
                    worker.last_heard = Instant::now();
                    worker.pinged_at = None;
                    let transfer = matches!(
                        message,
                        FromWorker::SnapshotPart(_) | FromWorker::SnapshotData(_)
                    ) && worker.snapshots_asked > 0;
                    // Snapshot parts that were asked for do not count: a
                    // large snapshot is many messages by design.
                    if !transfer && !worker.frames.take(1.0) {
                        return self.violation(
                            i,
                            format!(
                                "flooding the control socket (over {} messages a second)",
                                super::FRAMES_PER_SECOND
                            ),
                        );
                    }
                    match message {
                        FromWorker::ConnectGuard => self.connect_guard_arrived(i, fds),
                        message => self.on_message(i, message),
                    }
                }
                Err(FrameError::WouldBlock) => return,
                Err(FrameError::Closed) => {
                    self.control_closed(i);
                    return;
                }
                Err(e) => {
                    self.violation(i, format!("malformed control frame ({e})"));
                    return;
                }
            }
        }
    }

    /// Slot `i`'s worker closed its control socket. A worker does that as
    /// it exits; one that goes on running without it can no longer be told
    /// to stop, so it gets the stop timeout to end, then SIGKILL.
    pub(super) fn control_closed(&mut self, i: usize) {
        self.close_control(i);
        if let Some(worker) = self.slots[i].worker.as_mut() {
            worker.closed_at.get_or_insert_with(Instant::now);
        }
    }

    pub(super) fn on_message(&mut self, i: usize, message: FromWorker) {
        let slot = &mut self.slots[i];
        let Some(worker) = slot.worker.as_mut() else {
            return;
        };
        match message {
            FromWorker::Hello {
                protocol_version,
                pid,
            } => match worker.hello(protocol_version, pid) {
                Ok(()) => self.send_init(i),
                Err(what) => self.violation(i, what),
            },
            FromWorker::Ready {
                kind,
                degraded,
                snapshots,
            } => {
                worker.snapshots = snapshots;
                if !worker.said_hello || worker.ready_at.is_some() {
                    return self.violation(i, "Ready out of order".into());
                }
                let degraded: Vec<String> = degraded
                    .iter()
                    .take(16)
                    .map(|layer| worker_text::message(layer))
                    .collect();
                if degraded != slot.degraded {
                    for layer in &degraded {
                        say!(
                            "WARNING: module {}: sandbox layer missing: {layer}",
                            slot.name
                        );
                    }
                    slot.degraded = degraded;
                }
                worker.ready_at = Some(Instant::now());
                slot.kind = Some(kind);
                let upgrading = slot.upgrade.is_some();
                self.transition(i, crate::lifecycle::Event::Ready);
                self.log_all_ready();
                // Modules that start after this one may start now.
                self.start_successors(i);
                if upgrading {
                    // The spare comes once the upgrade is decided.
                    return self.upgrade_ready(i);
                }
                self.ensure_spare(i);
            }
            FromWorker::Log { level, text } => {
                if text.len() > edgeward_ipc::control::MAX_LOG_TEXT_BYTES {
                    return self.violation(
                        i,
                        format!(
                            "a Log message of {} bytes (at most {})",
                            text.len(),
                            edgeward_ipc::control::MAX_LOG_TEXT_BYTES
                        ),
                    );
                }
                for line in worker_text::lines(&text, usize::MAX) {
                    match worker.log_limit.admit() {
                        Ok(true) => {}
                        Ok(false) => {
                            slot.counters.log_dropped += 1;
                            continue;
                        }
                        Err(dropped) => crate::log_sink::lines_dropped(&slot.name, dropped, "log"),
                    }
                    crate::log_sink::module_log(&slot.name, level, &line);
                }
            }
            FromWorker::Heartbeat(stats) => {
                use crate::metrics::counters::DenialKind;
                let channels = stats.denials.saturating_sub(slot.stats.denials);
                let paths = stats.path_denials.saturating_sub(slot.stats.path_denials);
                slot.stats = stats;
                if channels > 0 {
                    self.audit(
                        i,
                        DenialKind::Channel,
                        channels,
                        "a channel its policy does not grant ([channels] publish/subscribe)",
                    );
                }
                if paths > 0 {
                    self.audit(
                        i,
                        DenialKind::Path,
                        paths,
                        "a path outside its granted dirs, or a write to a read-only one ([wasi] dirs)",
                    );
                }
            }
            FromWorker::Fault(fault) => {
                for (n, line) in worker_text::lines(&fault.message, worker_text::MAX_MESSAGE_LINES)
                    .iter()
                    .enumerate()
                {
                    let gap = if n == 0 { "" } else { "  " };
                    say!("module {}: {gap}{line}", slot.name);
                }
                worker.fault = Some(worker_text::message(&fault.message));
                worker
                    .end_cause
                    .get_or_insert(crate::metrics::counters::EndCause::of_fault(fault.kind));
                if fault.kind == FaultKind::Artifact {
                    // A damaged cache entry, not a bad module: compiled
                    // again, and the module starts once it is.
                    self.artifact_failed(i);
                }
            }
            FromWorker::RingCorrupt { ring, seq, what } => {
                self.ring_corrupt(i, ring, seq, &worker_text::message(&what));
            }
            FromWorker::SnapshotPart(part) => {
                if worker.snapshots_asked == 0 {
                    return self.violation(i, "a snapshot nobody asked for".into());
                }
                if worker.snapshot_parts.len() + part.len() > MAX_SNAPSHOT_BYTES {
                    worker.snapshot_parts = Vec::new();
                    return self
                        .violation(i, format!("a snapshot over {MAX_SNAPSHOT_BYTES} bytes"));
                }
                worker.snapshot_parts.extend_from_slice(&part);
            }
            FromWorker::SnapshotData(last) => {
                if worker.snapshots_asked == 0 {
                    return self.violation(i, "a snapshot nobody asked for".into());
                }
                worker.snapshots_asked -= 1;
                let mut bytes = std::mem::take(&mut worker.snapshot_parts);
                if bytes.len() + last.len() > MAX_SNAPSHOT_BYTES {
                    return self
                        .violation(i, format!("a snapshot over {MAX_SNAPSHOT_BYTES} bytes"));
                }
                bytes.extend_from_slice(&last);
                self.snapshot_answered(i, Some(bytes));
            }
            FromWorker::Health(code) => self.upgrade_health(i, code),
            FromWorker::Connector(counters) => self.connector_counters(i, counters),
            // Read with its fd in `read_worker_messages`.
            FromWorker::ConnectGuard => {}
            FromWorker::SnapshotFailed(reason) => {
                if worker.snapshots_asked == 0 {
                    return self.violation(i, "a snapshot answer nobody asked for".into());
                }
                worker.snapshots_asked -= 1;
                if !reason.is_empty() {
                    say!(
                        "module {}: no snapshot: {}",
                        slot.name,
                        worker_text::message(&reason)
                    );
                }
                self.snapshot_answered(i, None);
            }
        }
    }

    /// The worker broke the protocol: kill it, never trust it.
    pub(super) fn violation(&mut self, i: usize, what: String) {
        let slot = &mut self.slots[i];
        let Some(worker) = slot.worker.as_mut() else {
            return;
        };
        let reason = format!("protocol violation: {what}; worker killed");
        say!("module {}: {reason}", slot.name);
        worker.killed_because = Some(reason);
        worker.end_cause = Some(crate::metrics::counters::EndCause::Protocol);
        worker.kill();
        self.close_control(i);
    }

    pub(super) fn close_control(&mut self, i: usize) {
        if let Some(control) = self.slots[i].worker.as_mut().and_then(|w| w.control.take()) {
            super::unwatch(&self.epoll, &control);
        }
    }

    /// Prints what slot `i`'s worker wrote.
    pub(crate) fn on_worker_output(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(worker) = slot.worker.as_mut() else {
            return;
        };
        let Some(output) = worker.output.as_mut() else {
            return;
        };
        if output.drain(&slot.name) == Drained::Closed {
            if let Some(output) = worker.output.take() {
                super::unwatch(&self.epoll, &output.fd);
            }
        }
    }

    pub(super) fn log_all_ready(&mut self) {
        if self.all_ready_logged {
            return;
        }
        let startable = self.slots.iter().filter(|s| s.artifact.is_some());
        if startable.clone().all(|s| s.state == State::Running) {
            self.all_ready_logged = true;
            say!(
                "all {} module(s) ready in {:.1} ms",
                startable.count(),
                self.started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}
