//! Spare workers (`[restart] spare = true`): a restart in milliseconds.
//!
//! Creating a worker costs a fork and, above all on cgroup v1, moving it
//! into the module's cgroups: the first `cgroup.procs` write waits for an
//! RCU grace period (10 to 20 ms). A spare pays both ahead of time: once the
//! current worker is ready, the fork server forks another, which joins the
//! module's cgroups, says Hello and then waits. It has no Init yet, so it
//! holds no rings, no grants and runs no guest code. When the current worker
//! ends and the restart policy restarts the module, the spare gets the Init
//! (with the newest snapshot) and becomes the worker; the next spare is
//! forked once that one is ready.
//!
//! A spare costs one process (counted in the module's `pids` limit, which is
//! raised by one for it) and the few pages it touches (charged to the
//! module's memory cgroup). It is killed when the module stops or fails and
//! when edgeward stops; a spare that dies is replaced at the next Ready.

use std::time::Instant;

use edgeward_ipc::control::FromWorker;
use edgeward_ipc::frame::{self, FrameError};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::{say, Supervisor, Token};

impl Supervisor {
    /// Forks a spare for slot `i` if its policy asks for one and it has none.
    pub(crate) fn ensure_spare(&mut self, i: usize) {
        let slot = &self.slots[i];
        let wanted = slot.policy.as_ref().is_some_and(|p| p.restart.spare);
        if !wanted || slot.spare.is_some() || self.shutdown_deadline.is_some() {
            return;
        }
        let slot = &mut self.slots[i];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        match self.launch(i, generation, true) {
            Ok(spare) => {
                let (control, output) = Token::for_worker(i, generation, true);
                self.watch_worker(&spare, control, output);
                self.slots[i].spare = Some(spare);
            }
            Err(e) => say!(
                "module {}: cannot fork a spare worker: {e:#}",
                self.slots[i].name
            ),
        }
    }

    /// Makes slot `i`'s spare its worker, if one is waiting: it gets its
    /// Init now. Returns whether it did.
    pub(crate) fn activate_spare(&mut self, i: usize) -> bool {
        let slot = &mut self.slots[i];
        let ready = slot.spare.as_ref().is_some_and(|w| {
            w.said_hello && w.pid.is_some() && w.control.is_some() && w.killed_because.is_none()
        });
        if !ready {
            return false;
        }
        let Some(mut worker) = slot.spare.take() else {
            return false;
        };
        self.unwatch_worker(&worker);
        let slot = &mut self.slots[i];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        worker.generation = generation;
        worker.spawned_at = Instant::now();
        worker.last_heard = worker.spawned_at;
        worker.pinged_at = None;
        worker.oom_kills_at_start = slot
            .cgroup
            .as_ref()
            .map_or(0, |c| self.sandbox.oom_kills(c));
        let (control, output) = Token::for_worker(i, generation, false);
        self.watch_worker(&worker, control, output);
        self.slots[i].worker = Some(worker);
        self.transition(i, crate::lifecycle::Event::Spawned);
        self.send_init(i);
        true
    }

    /// Reads what slot `i`'s spare says: only its Hello is expected.
    pub(crate) fn on_spare_message(&mut self, i: usize) {
        loop {
            let Some(spare) = self.slots[i].spare.as_mut() else {
                return;
            };
            let Some(control) = spare.control.as_ref() else {
                return;
            };
            let problem = match frame::recv::<FromWorker>(control) {
                Err(FrameError::WouldBlock) => return,
                Ok((
                    FromWorker::Hello {
                        protocol_version,
                        pid,
                    },
                    _,
                )) => match spare.hello(protocol_version, pid) {
                    Ok(()) => continue,
                    Err(what) => what,
                },
                Ok((FromWorker::Fault(fault), _)) => fault.message,
                Ok((other, _)) => format!("unexpected {other:?}"),
                Err(e) => format!("{e}"),
            };
            return self.drop_spare_because(i, &problem);
        }
    }

    /// Prints what slot `i`'s spare wrote.
    pub(crate) fn on_spare_output(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(spare) = slot.spare.as_mut() else {
            return;
        };
        if let Some(output) = spare.output.as_mut() {
            if output.drain(&slot.name) == crate::output::Drained::Closed {
                if let Some(output) = spare.output.take() {
                    super::unwatch(&self.epoll, &output.fd);
                }
            }
        }
    }

    /// The fork server made slot `i`'s spare.
    pub(crate) fn spare_spawned(&mut self, i: usize, generation: u32, pid: Pid) {
        let Some(spare) = self.slots[i]
            .spare
            .as_mut()
            .filter(|w| w.generation == generation && w.pid.is_none())
        else {
            let _ = kill(pid, Signal::SIGKILL);
            return;
        };
        if let Err(what) = spare.claim_pid(pid) {
            return self.drop_spare_because(i, &what);
        }
        if let Some(status) = self.unclaimed_exits.remove(&pid) {
            self.spare_ended(i, status);
        }
    }

    /// The fork server could not make slot `i`'s spare.
    pub(crate) fn spare_failed(&mut self, i: usize, generation: u32, reason: &str) {
        if self.slots[i]
            .spare
            .as_ref()
            .is_some_and(|w| w.generation == generation)
        {
            self.drop_spare_because(i, reason);
        }
    }

    /// Slot `i`'s spare ended (it never should before its Init).
    pub(crate) fn spare_ended(&mut self, i: usize, status: WaitStatus) {
        self.on_spare_output(i);
        let wanted = self.slots[i]
            .spare
            .as_ref()
            .is_some_and(|w| w.killed_because.is_none());
        if wanted && self.shutdown_deadline.is_none() {
            say!(
                "module {}: spare worker ended: {}",
                self.slots[i].name,
                super::exits::describe(status)
            );
        }
        if let Some(spare) = self.slots[i].spare.take() {
            self.unwatch_worker(&spare);
        }
    }

    /// Kills slot `i`'s spare, saying why.
    fn drop_spare_because(&mut self, i: usize, why: &str) {
        say!(
            "module {}: spare worker dropped: {}",
            self.slots[i].name,
            crate::worker_text::message(why)
        );
        self.drop_spare(i);
    }

    /// Kills slot `i`'s spare, if any (reaped later, as any child).
    pub(crate) fn drop_spare(&mut self, i: usize) {
        let Some(mut spare) = self.slots[i].spare.take() else {
            return;
        };
        self.unwatch_worker(&spare);
        spare.killed_because = Some("spare no longer needed".into());
        spare.kill();
        // Without a pid yet, the fork server's reply finds no spare and
        // kills it.
        if let Some(pid) = spare.pid {
            self.other_children.push(pid);
        }
    }

    /// Kills every spare (edgeward is stopping).
    pub(crate) fn drop_all_spares(&mut self) {
        for i in 0..self.slots.len() {
            self.drop_spare(i);
        }
    }
}
