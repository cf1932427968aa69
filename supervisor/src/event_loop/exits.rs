//! Ended workers: reaping every child (orphans included), reading what a
//! worker said before it ended, and feeding its end to the module's
//! lifecycle.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{say, Supervisor};
use crate::slot::State;

impl Supervisor {
    /// Reaps every ended child (workers, the fork server, re-parented orphans).
    pub(crate) fn reap(&mut self) {
        loop {
            // __WNOTHREAD: only the loop thread's children (workers, the
            // fork server, re-parented orphans), never those of a job
            // thread, which waits for its own (`jobs.rs`).
            let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WNOTHREAD;
            let status = match waitpid(Pid::from_raw(-1), Some(flags)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            if self.launcher.zygote_pid() == Some(pid) {
                // Its last replies first: once reaped, its socket is gone.
                self.on_zygote_replies();
            }
            if self.launcher.reaped(pid) {
                say!("fork server (pid {pid}) ended: {}", describe(status));
            }
            self.other_children.retain(|p| *p != pid);
            if let Some(i) = self
                .slots
                .iter()
                .position(|s| s.worker.as_ref().is_some_and(|w| w.pid == Some(pid)))
            {
                self.on_exit(i, status);
            } else if let Some(i) = self
                .slots
                .iter()
                .position(|s| s.spare.as_ref().is_some_and(|w| w.pid == Some(pid)))
            {
                self.spare_ended(i, status);
            } else if !self.pending_spawns.is_empty() {
                // Possibly a worker whose pid the fork server has not told us yet.
                self.unclaimed_exits.insert(pid, status);
            }
        }
    }

    pub(super) fn on_exit(&mut self, i: usize, status: WaitStatus) {
        // Read what the worker said before it ended (its Fault, last
        // lines): a dead worker sends nothing more, so its queue is finite
        // (the socket's buffer), and its Fault is often the last message.
        self.read_worker_messages(i, usize::MAX);
        self.on_worker_output(i);
        let slot = &mut self.slots[i];
        let Some(mut worker) = slot.worker.take() else {
            return;
        };
        if let Some(control) = worker.control.take() {
            super::unwatch(&self.epoll, &control);
        }
        if let Some(mut output) = worker.output.take() {
            output.flush(&slot.name);
            slot.counters.log_dropped += output.dropped;
            super::unwatch(&self.epoll, &output.fd);
        }
        if let Some(cgroup) = &slot.cgroup {
            if self.sandbox.oom_kills(cgroup) > worker.oom_kills_at_start
                && worker.killed_because.is_none()
            {
                let limit = cgroup.memory_limit_bytes().unwrap_or(0) >> 20;
                worker.killed_because = Some(format!("out of memory: cgroup limit {limit} MiB"));
                worker.end_cause = Some(crate::metrics::counters::EndCause::Oom);
            }
        }
        slot.fold_stats();
        let was_asked = self
            .snapshots
            .round
            .as_ref()
            .is_some_and(|r| r.is_waiting_for(i));
        if was_asked {
            self.snapshot_answered(i, None);
        }
        let slot = &mut self.slots[i];
        let clean = matches!(status, WaitStatus::Exited(_, 0)) && worker.killed_because.is_none();
        let cause = end_cause(&worker, slot.state, status, clean);
        slot.last_end = Some(cause);
        if cause.is_trap() {
            crate::metrics::counters::bump(&mut slot.counters.traps, cause);
        }
        if !clean {
            slot.last_error = Some(
                worker
                    .killed_because
                    .or(worker.fault)
                    .unwrap_or_else(|| describe(status)),
            );
        }
        let fault = slot.last_error.clone().unwrap_or_default();
        let ran_for = worker
            .ready_at
            .map_or(std::time::Duration::ZERO, |t| t.elapsed());
        let unplanned = matches!(slot.state, State::Starting | State::Running);
        if !clean && unplanned && self.shutdown_deadline.is_none() {
            say!(
                "module {}: worker {} ended: {}",
                slot.name,
                worker
                    .pid
                    .map_or_else(|| "?".to_string(), |p| p.to_string()),
                slot.last_error.as_deref().unwrap_or("?")
            );
        }
        match cause {
            crate::metrics::counters::EndCause::CallBudget => {
                self.audit(
                    i,
                    crate::metrics::counters::DenialKind::CallBudget,
                    1,
                    &fault,
                );
            }
            crate::metrics::counters::EndCause::Seccomp => {
                self.audit(i, crate::metrics::counters::DenialKind::Seccomp, 1, &fault);
            }
            _ => {}
        }
        self.reset_rings_of_dead(i);
        self.ended(i, clean, ran_for);
        self.after_worker_gone(i);
    }

    pub(super) fn spawn_failed(&mut self, i: usize, generation: u32, reason: String) {
        let current = self.slots[i].worker.as_ref().map(|w| w.generation);
        if current != Some(generation) {
            return;
        }
        if let Some(worker) = self.slots[i].worker.take() {
            self.unwatch_worker(&worker);
        }
        self.start_failed(i, reason);
        self.after_worker_gone(i);
    }
}

/// Why a worker ended, for `/metrics`: a stop edgeward asked for, what
/// the worker or the supervisor said, else its exit status.
fn end_cause(
    worker: &crate::slot::Worker,
    state: State,
    status: WaitStatus,
    clean: bool,
) -> crate::metrics::counters::EndCause {
    if let Some(cause) = worker.end_cause {
        return cause;
    }
    if clean || matches!(state, State::Stopping { .. }) {
        return crate::metrics::counters::EndCause::Requested;
    }
    match status {
        WaitStatus::Signaled(..) => crate::metrics::counters::EndCause::Signal,
        _ => crate::metrics::counters::EndCause::Exit,
    }
}

/// An exit status in words.
pub(crate) fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("worker exited with code {code}"),
        WaitStatus::Signaled(_, signal, core) => format!(
            "killed by signal {} ({signal}){}",
            signal as i32,
            if core { ", core dumped" } else { "" }
        ),
        other => format!("{other:?}"),
    }
}
