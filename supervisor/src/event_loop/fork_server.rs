//! The fork server's answers to spawn requests, in request order.

use edgeward_ipc::zygote::{FromZygote, Placement};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{say, Supervisor};

impl Supervisor {
    /// Reads the fork server's answers to spawn requests (in request order).
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
                    while let Some((slot, generation, spare)) = self.pending_spawns.pop_front() {
                        if spare {
                            self.spare_failed(slot, generation, &format!("{e:#}"));
                        } else {
                            self.spawn_failed(slot, generation, format!("{e:#}"));
                        }
                    }
                    break;
                }
            };
            self.fork_server_answered();
            if reply == FromZygote::Pong {
                continue;
            }
            let Some((i, generation, spare)) = self.pending_spawns.pop_front() else {
                say!("fork server sent an unexpected {reply:?}");
                continue;
            };
            if let FromZygote::Spawned { placement, .. } = &reply {
                self.log_placement(placement);
            }
            if spare {
                match reply {
                    FromZygote::Spawned { pid, .. } => {
                        self.spare_spawned(i, generation, Pid::from_raw(pid as i32))
                    }
                    FromZygote::SpawnFailed { reason } => self.spare_failed(i, generation, &reason),
                    FromZygote::Hello { .. } | FromZygote::Pong => {
                        self.spare_failed(i, generation, "fork server protocol error")
                    }
                }
                continue;
            }
            match reply {
                FromZygote::Spawned { pid, .. } => {
                    self.spawned(i, generation, Pid::from_raw(pid as i32))
                }
                FromZygote::SpawnFailed { reason } => self.spawn_failed(
                    i,
                    generation,
                    format!("fork server could not start the worker: {reason}"),
                ),
                FromZygote::Hello { .. } | FromZygote::Pong => {
                    self.spawn_failed(i, generation, "fork server protocol error".into())
                }
            }
        }
        if self.pending_spawns.is_empty() {
            self.unclaimed_exits.clear();
            if self.shutdown_deadline.is_some() {
                self.close_zygote_when_idle();
            }
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
