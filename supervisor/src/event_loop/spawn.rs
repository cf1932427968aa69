//! Starting a module's worker: its cgroup and grants checked, a process
//! forked (through the fork server), its fds watched.

use std::time::Instant;

use super::{say, Supervisor, Token};
use crate::launcher::WorkerPid;
use crate::lifecycle::Event;
use crate::output::OutputPipe;
use crate::slot::{State, Worker};

impl Supervisor {
    /// Starts a worker for slot `i`, a `waiting` module: its spare if one
    /// is waiting, else a new process. It stays `waiting` while its
    /// artifact is compiled, its rw dirs are prepared (`prepare.rs`) or a
    /// connector's grants resolved (`connector.rs`; each calls this again
    /// when done), and until the modules it starts
    /// `after` are ready (`groups.rs` calls this again then).
    pub(crate) fn spawn(&mut self, i: usize) {
        if self.slots[i].state != State::Waiting
            || self.shutdown_deadline.is_some()
            || self.slots[i].artifact.is_none()
            || !self.predecessors_ready(i)
            || !self.rw_dirs_ready(i)
            || !self.grants_ready(i)
        {
            return;
        }
        if self.activate_spare(i) {
            return;
        }
        let slot = &mut self.slots[i];
        if let Some(policy) = &slot.policy {
            if slot.cgroup.is_none() || slot.limits_changed {
                slot.limits_changed = false;
                match self.sandbox.cgroup(policy) {
                    Ok(cgroup) => slot.cgroup = cgroup,
                    Err(e) => {
                        return self.start_failed(i, format!("cannot set up its cgroup: {e}"));
                    }
                }
            }
            if let Some(Err(reason)) = self.sandbox.identity(i).map(|(uid, gid)| {
                crate::grant_access::check(
                    policy,
                    crate::grant_access::Accessor::Module { uid, gid },
                )
            }) {
                return self.start_failed(i, reason);
            }
        }
        let slot = &mut self.slots[i];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        match self.launch(i, generation, false) {
            Ok(worker) => {
                let (control, output) = Token::for_worker(i, generation, false);
                self.watch_worker(&worker, control, output);
                self.slots[i].worker = Some(worker);
                self.transition(i, Event::Spawned);
            }
            Err(e) => self.start_failed(i, format!("cannot start worker: {e:#}")),
        }
    }

    /// Forks a worker process for slot `i` (through the fork server, which
    /// moves it into the module's cgroups before it says Hello).
    ///
    /// # Errors
    /// No socketpair, pipe or process could be made.
    pub(crate) fn launch(
        &mut self,
        i: usize,
        generation: u32,
        spare: bool,
    ) -> anyhow::Result<Worker> {
        let slot = &self.slots[i];
        let artifact = slot
            .artifact
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no artifact"))?;
        let procs = slot
            .cgroup
            .as_ref()
            .map_or_else(Vec::new, |c| c.procs_files());
        let oom_kills_at_start = slot
            .cgroup
            .as_ref()
            .map_or(0, |c| self.sandbox.oom_kills(c));
        let spawned = if slot.policy.as_ref().is_some_and(|p| p.connector.is_some()) {
            self.launcher.spawn_connector(&slot.name, &artifact)?
        } else {
            self.launcher.spawn(&slot.name, &artifact, procs)?
        };
        let pid = match spawned.pid {
            WorkerPid::Known(pid) => Some(pid),
            WorkerPid::Requested(request) => {
                self.pending_spawns.push_back(super::PendingSpawn {
                    request,
                    slot: i,
                    generation,
                    spare,
                    asked_at: Instant::now(),
                });
                None
            }
        };
        if let Some(fd) = self.launcher.take_new_zygote_socket() {
            // A new fork server: its watchdog starts now.
            self.fork_server_heard = Instant::now();
            self.fork_server_pinged = false;
            if let Err(e) = self.epoll.add(
                fd,
                nix::sys::epoll::EpollEvent::new(
                    nix::sys::epoll::EpollFlags::EPOLLIN,
                    Token::Zygote.encode(),
                ),
            ) {
                say!("epoll_ctl(ADD) for the fork server failed: {e}");
            }
        }
        Ok(Worker {
            pid,
            hello_pid: None,
            kill_pending: false,
            control: Some(spawned.control),
            output: Some(OutputPipe::new(spawned.output)),
            spawned_at: Instant::now(),
            ready_at: None,
            said_hello: false,
            fault: None,
            killed_because: None,
            end_cause: None,
            oom_kills_at_start,
            closed_at: None,
            snapshots: false,
            snapshots_asked: 0,
            snapshot_parts: Vec::new(),
            frames: edgeward_ipc::rate::Bucket::new(
                super::FRAMES_PER_SECOND,
                2.0 * super::FRAMES_PER_SECOND,
            ),
            log_limit: edgeward_ipc::rate::LineLimit::new(
                2.0 * edgeward_ipc::rate::LINES_PER_SECOND,
                2.0 * edgeward_ipc::rate::BURST,
            ),
            generation,
            last_heard: Instant::now(),
            pinged_at: None,
            guard: None,
        })
    }

    /// Stops watching a worker's control socket and output pipe.
    pub(crate) fn unwatch_worker(&self, worker: &Worker) {
        if let Some(control) = &worker.control {
            super::unwatch(&self.epoll, control);
        }
        if let Some(output) = &worker.output {
            super::unwatch(&self.epoll, &output.fd);
        }
        if let Some(guard) = &worker.guard {
            super::unwatch(&self.epoll, &guard.fd());
        }
    }

    /// Registers a worker's control socket and output pipe under `control`
    /// and `output`.
    pub(crate) fn watch_worker(&self, worker: &Worker, control: Token, output: Token) {
        if let Some(fd) = &worker.control {
            super::watch(&self.epoll, fd, control);
        }
        if let Some(out) = &worker.output {
            super::watch(&self.epoll, &out.fd, output);
        }
    }
}
