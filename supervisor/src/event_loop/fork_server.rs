//! The fork server's answers to spawn requests, matched to the requests by
//! number (they come in completion order).

use edgeward_ipc::zygote::{FromZygote, Placement};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{say, PendingSpawn, Supervisor};

impl Supervisor {
    /// Reads the fork server's answers to spawn requests.
    pub(crate) fn on_zygote_replies(&mut self) {
        loop {
            let reply = match self.launcher.next_reply() {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(e) => {
                    say!(
                        "{e:#}; failing {} pending start(s)",
                        self.pending_spawns.len()
                    );
                    while let Some(pending) = self.pending_spawns.pop_front() {
                        self.settle_spawn(pending, Err(format!("{e:#}")));
                    }
                    break;
                }
            };
            self.fork_server_answered();
            let (request, answer) = match reply {
                FromZygote::Pong => continue,
                FromZygote::Spawned {
                    request,
                    pid,
                    placement,
                } => {
                    self.log_placement(&placement);
                    (request, Ok(Pid::from_raw(pid as i32)))
                }
                FromZygote::SpawnFailed { request, reason } => (
                    request,
                    Err(format!("fork server could not start the worker: {reason}")),
                ),
                FromZygote::Hello { .. } => {
                    say!("fork server sent an unexpected {reply:?}");
                    continue;
                }
            };
            let Some(at) = self
                .pending_spawns
                .iter()
                .position(|p| p.request == request)
            else {
                say!("fork server answered spawn request {request}, which is not pending");
                if let Ok(pid) = answer {
                    // Nobody would supervise it.
                    let _ = kill(pid, Signal::SIGKILL);
                }
                continue;
            };
            if let Some(pending) = self.pending_spawns.remove(at) {
                self.settle_spawn(pending, answer);
            }
        }
        if self.pending_spawns.is_empty() {
            self.unclaimed_exits.clear();
            if self.shutdown_deadline.is_some() {
                self.close_zygote_when_idle();
            }
        }
    }

    /// Hands the fork server's answer (the worker's pid, or why there is
    /// none) to the worker or spare it was asked for.
    fn settle_spawn(&mut self, pending: PendingSpawn, answer: Result<Pid, String>) {
        let PendingSpawn {
            slot,
            generation,
            spare,
            ..
        } = pending;
        match (spare, answer) {
            (false, Ok(pid)) => self.spawned(slot, generation, pid),
            (false, Err(reason)) => self.spawn_failed(slot, generation, reason),
            (true, Ok(pid)) => self.spare_spawned(slot, generation, pid),
            (true, Err(reason)) => self.spare_failed(slot, generation, &reason),
        }
    }

    /// Logs how workers are placed in their cgroups, once per change: born
    /// in them by `clone3(CLONE_INTO_CGROUP)`, or migrating (and why).
    fn log_placement(&mut self, placement: &Placement) {
        if self.placement_logged.as_ref() == Some(placement) {
            return;
        }
        match placement {
            Placement::Clone3 => say!(
                "cgroups: workers are created in their module's cgroup by clone3(CLONE_INTO_CGROUP) (no migration)"
            ),
            Placement::Joins { why } => {
                say!("cgroups: workers join their module's cgroup themselves (a migration): {why}")
            }
        }
        self.placement_logged = Some(placement.clone());
    }

    /// The fork server made the worker of slot `i`: record its pid.
    pub(super) fn spawned(&mut self, i: usize, generation: u32, pid: Pid) {
        let Some(worker) = self.slots[i]
            .worker
            .as_mut()
            .filter(|w| w.generation == generation && w.pid.is_none())
        else {
            // The slot moved on (stopped meanwhile): this worker is unwanted.
            let _ = kill(pid, Signal::SIGKILL);
            return;
        };
        if let Err(what) = worker.claim_pid(pid) {
            return self.violation(i, what);
        }
        if let Some(status) = self.unclaimed_exits.remove(&pid) {
            self.on_exit(i, status);
        }
    }
}
