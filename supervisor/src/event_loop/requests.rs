//! Control-socket requests, and stopping everything.

use std::time::Instant;

use nix::sys::signal::{kill, Signal};

use super::{say, Supervisor};
use crate::control::clients::ClientId;
use crate::control::protocol::{Reply, Request, Response};
use crate::lifecycle::{Event, Then};
use crate::slot::State;
use crate::status::StatusReport;

impl Supervisor {
    /// Handles one request of client `client`: answered now, or later by
    /// the part of the supervisor that keeps the client's id.
    pub(crate) fn handle_request(&mut self, request: Request, client: ClientId) -> Reply {
        match request {
            Request::Snapshot { module } => match self.snapshot_now(&module) {
                Ok(slot) => {
                    self.snapshots.clients.push((client, slot));
                    Reply::Later
                }
                Err(refusal) => Reply::Now(Box::new(Response::refused(refusal))),
            },
            Request::Upgrade {
                module,
                wasm,
                health_ms,
            } => self.upgrade(&module, &wasm, health_ms, client),
            Request::Reload { allow_empty } => {
                say!("reload requested over the control socket");
                self.reload(Some(client), allow_empty)
            }
            request => Reply::Now(Box::new(self.handle_now(request))),
        }
    }

    fn handle_now(&mut self, request: Request) -> Response {
        match request {
            Request::Status => Response {
                status: Some(self.status_report()),
                ..Response::done("")
            },
            Request::Stop => {
                if self.shutdown_deadline.is_none() {
                    say!("stop requested over the control socket");
                    self.begin_shutdown();
                }
                Response::done("stopping all modules")
            }
            Request::Restart { module } => self.restart(&module),
            Request::Snapshot { .. } | Request::Upgrade { .. } | Request::Reload { .. } => {
                Response::refused("internal: answered later")
            }
        }
    }

    /// What `edgeward status` shows now (also the view `/metrics` and
    /// the status page get).
    pub(crate) fn status_report(&self) -> StatusReport {
        let now = Instant::now();
        StatusReport {
            modules: self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state != State::Removed)
                .map(|(i, s)| {
                    let mut row = s.status(now);
                    row.snapshot_epoch = self.acknowledged_epoch(&s.name);
                    // A waiting module says what for.
                    let waiting = self.waiting_for(i);
                    if s.state == State::Waiting && !waiting.is_empty() && row.last_error.is_none()
                    {
                        row.last_error =
                            Some(format!("waiting for {} (after)", waiting.join(", ")));
                    }
                    row
                })
                .collect(),
            warnings: self.sandbox.warnings.clone(),
            rings: self.wiring.status(|i| self.slots[i].name.clone()),
            snapshot_flushes: self
                .snapshots
                .store
                .as_ref()
                .map_or(0, |s| s.storage().flushes),
            snapshot_error: self.snapshots.error.clone(),
            snapshot_commit_p50_us: self.snapshots.commit_times.quantile(0.5),
            snapshot_commit_p99_us: self.snapshots.commit_times.quantile(0.99),
            log_dropped: crate::log_sink::global().dropped(),
            control_refused: self.clients.refused_busy,
        }
    }

    /// `edgeward snapshot MODULE`: asks it now (in the current round if
    /// one is running). Returns its slot, or the refusal.
    fn snapshot_now(&mut self, module: &str) -> Result<usize, String> {
        if self.shutdown_deadline.is_some() {
            return Err("edgeward is stopping".into());
        }
        let Some(i) = self.slot_named(module) else {
            return Err(format!("no module named \"{module}\""));
        };
        if self.snapshots.store.is_none() {
            return Err(
                "snapshots are disabled: the state dir cannot hold them (see the start-up log)"
                    .into(),
            );
        }
        let slot = &self.slots[i];
        let capable = slot.worker.as_ref().is_some_and(|w| w.snapshots);
        if slot.state != State::Running || !capable {
            return Err(format!(
                "module \"{module}\" is {} and {}",
                slot.state.as_str(),
                if capable {
                    "can take snapshots"
                } else {
                    "takes no snapshots (a reactor exporting no ew_snapshot, or a command importing no snapshot_put)"
                }
            ));
        }
        self.ask_for_snapshot(i);
        Ok(i)
    }

    fn restart(&mut self, module: &str) -> Response {
        if self.shutdown_deadline.is_some() {
            return Response::refused("edgeward is stopping");
        }
        let Some(i) = self.slot_named(module) else {
            let known: Vec<&str> = self
                .slots
                .iter()
                .filter(|s| s.state != State::Removed)
                .map(|s| s.name.as_str())
                .collect();
            return Response::refused(format!(
                "no module named \"{module}\" (modules: {})",
                known.join(", ")
            ));
        };
        if self.being_removed(i) {
            return Response::refused(format!("module \"{module}\" is being removed by a reload"));
        }
        let slot = &mut self.slots[i];
        if slot.upgrade.is_some() {
            return Response::refused(format!(
                "an upgrade of {module} is in progress; it restarts the module itself"
            ));
        }
        if slot.artifact.is_none() {
            return Response::refused(format!(
                "module \"{module}\" cannot start: {}",
                slot.last_error.as_deref().unwrap_or("no artifact")
            ));
        }
        if let Some(tracker) = slot.tracker.as_mut() {
            tracker.reset();
        }
        say!("module {module}: restart requested");
        self.stop_module(i, Then::Restart);
        Response::done(format!("restarting {module}"))
    }

    /// Stops everything: a final snapshot round for every module, then
    /// Stop to every worker; SIGKILL follows at the stop timeout.
    pub(crate) fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        // No restart from now on. One deadline for everything: the final
        // snapshot round, Stop, and the modules' ends; SIGKILL at it.
        self.shutdown_deadline = Some(Instant::now() + self.options.stop_timeout);
        for i in 0..self.slots.len() {
            self.transition(i, Event::Shutdown);
        }
        for i in 0..self.slots.len() {
            if self.slots[i].upgrade.is_some() {
                self.abandon_upgrade(i);
            }
        }
        let all = (0..self.slots.len()).collect();
        self.snapshot_then(all, Some(crate::snapshot::rounds::AfterRound::StopAll));
    }

    /// Sends Stop to the workers (after the final snapshot round), in the
    /// reverse of the start order: a module is told once every module that
    /// starts after it has ended (`groups.rs`). SIGKILL for all at the
    /// shutdown deadline.
    pub(crate) fn stop_all_workers(&mut self) {
        self.drop_all_spares();
        self.stop_in_reverse_order();
        // Closing its socket ends the fork server, once it has answered every
        // spawn request (so no worker is left without a known pid).
        self.close_zygote_when_idle();
        // The control socket goes away with the supervisor; release it now so
        // a new supervisor can bind while this one finishes.
        self.control = None;
    }

    /// Closes the fork server once no spawn request is outstanding.
    pub(crate) fn close_zygote_when_idle(&mut self) {
        if !self.pending_spawns.is_empty() {
            return;
        }
        if let Some(pid) = self.launcher.zygote_pid() {
            self.other_children.push(pid);
        }
        self.launcher.shutdown();
    }

    pub(crate) fn kill_everything(&mut self, why: &str) {
        self.drop_all_spares();
        for i in 0..self.slots.len() {
            if self.slots[i].worker.is_some() {
                say!("module {}: {why}; SIGKILL", self.slots[i].name);
                self.transition(
                    i,
                    Event::Kill {
                        then: Then::Shutdown,
                    },
                );
            }
        }
        for pid in &self.other_children {
            let _ = kill(*pid, Signal::SIGKILL);
        }
    }
}
