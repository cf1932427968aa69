//! Spawning workers, reading what they say, and deciding after they end.

use std::time::Instant;

use edgeward_ipc::control::{
    DirGrant, FaultKind, FromWorker, Init, OnFull, Restore, SandboxPlan, ToWorker,
};
use edgeward_ipc::frame::{self, FrameError};
use edgeward_ipc::zygote::FromZygote;
use edgeward_ipc::{MAX_SNAPSHOT_BYTES, PROTOCOL_VERSION};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::AsRawFd;

use super::{say, Supervisor, Token};
use crate::output::{Drained, OutputPipe};
use crate::policy::{DirMode, Policy};
use crate::restart::{Decision, Ending};
use crate::slot::{State, Worker};
use crate::worker_text;

impl Supervisor {
    /// Starts a worker for slot `i` (which must have an artifact): its
    /// spare if one is waiting, else a new process. A module whose rw dirs
    /// are not prepared yet starts once they are (`prepare.rs`).
    pub(super) fn spawn(&mut self, i: usize) {
        if self.slots[i].artifact.is_none() || !self.rw_dirs_ready(i) {
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
                        let reason = format!("cannot set up its cgroup: {e}");
                        say!("module {}: {reason}", slot.name);
                        slot.last_error = Some(reason);
                        self.after_end(i, Ending::Failure, std::time::Duration::ZERO);
                        return;
                    }
                }
            }
            if let Some(Err(reason)) = self.sandbox.identity(i).map(|(uid, gid)| {
                crate::grant_access::check(
                    policy,
                    crate::grant_access::Accessor::Module { uid, gid },
                )
            }) {
                say!("module {}: {reason}", slot.name);
                slot.last_error = Some(reason);
                self.after_end(i, Ending::Failure, std::time::Duration::ZERO);
                return;
            }
        }
        let slot = &mut self.slots[i];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        match self.launch(i, generation, false) {
            Ok(worker) => {
                let (control, output) = Token::for_worker(i, generation, false);
                self.watch_worker(&worker, control, output);
                self.slots[i].state = State::Starting;
                self.slots[i].worker = Some(worker);
            }
            Err(e) => {
                let slot = &mut self.slots[i];
                let reason = format!("cannot start worker: {e:#}");
                say!("module {}: {reason}", slot.name);
                slot.last_error = Some(reason);
                self.after_end(i, Ending::Failure, std::time::Duration::ZERO);
            }
        }
    }

    /// Forks a worker process for slot `i` (through the fork server, which
    /// moves it into the module's cgroups before it says Hello).
    ///
    /// # Errors
    /// No socketpair, pipe or process could be made.
    pub(super) fn launch(
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
        let spawned = self.launcher.spawn(&slot.name, &artifact, procs)?;
        if spawned.pid.is_none() {
            self.pending_spawns.push_back((i, generation, spare));
        }
        if let Some(fd) = self.launcher.take_new_zygote_socket() {
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
            pid: spawned.pid,
            hello_pid: None,
            kill_pending: false,
            control: Some(spawned.control),
            output: Some(OutputPipe::new(spawned.output)),
            spawned_at: Instant::now(),
            ready_at: None,
            said_hello: false,
            kill_at: None,
            restart_requested: false,
            fault: None,
            killed_because: None,
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
        })
    }

    /// Stops watching a worker's control socket and output pipe.
    pub(super) fn unwatch_worker(&self, worker: &Worker) {
        if let Some(control) = &worker.control {
            super::unwatch(&self.epoll, control);
        }
        if let Some(output) = &worker.output {
            super::unwatch(&self.epoll, &output.fd);
        }
    }

    /// Registers a worker's control socket and output pipe under `control`
    /// and `output`.
    pub(super) fn watch_worker(&self, worker: &Worker, control: Token, output: Token) {
        if let Some(fd) = &worker.control {
            super::watch(&self.epoll, fd, control);
        }
        if let Some(out) = &worker.output {
            super::watch(&self.epoll, &out.fd, output);
        }
    }

    /// Reads what slot `i`'s worker sent: at most [`super::FRAMES_PER_WAKE`]
    /// messages per wake-up (epoll reports the rest again after the other
    /// ready fds had their turn).
    pub(super) fn on_worker_message(&mut self, i: usize) {
        self.read_worker_messages(i, super::FRAMES_PER_WAKE);
    }

    /// Reads up to `budget` messages from slot `i`'s worker.
    fn read_worker_messages(&mut self, i: usize, budget: usize) {
        for _ in 0..budget {
            let Some(worker) = self.slots[i].worker.as_mut() else {
                return;
            };
            let Some(control) = worker.control.as_ref() else {
                return;
            };
            match frame::recv::<FromWorker>(control) {
                Ok((message, _fds)) => {
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
                    self.on_message(i, message);
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
    fn control_closed(&mut self, i: usize) {
        self.close_control(i);
        if let Some(worker) = self.slots[i].worker.as_mut() {
            worker.closed_at.get_or_insert_with(Instant::now);
        }
    }

    fn on_message(&mut self, i: usize, message: FromWorker) {
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
                slot.state = State::Running;
                let upgrading = slot.upgrade.is_some();
                self.log_all_ready();
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
                        Ok(false) => continue,
                        Err(dropped) => crate::log_sink::out(format!(
                            "[{}] edgeward: {dropped} log lines dropped (over the supervisor's limit of {} lines/s)",
                            slot.name,
                            2.0 * edgeward_ipc::rate::LINES_PER_SECOND
                        )),
                    }
                    crate::log_sink::out(format!("[{}] {}: {line}", slot.name, level.as_str()));
                }
            }
            FromWorker::Heartbeat(stats) => slot.stats = stats,
            FromWorker::Fault(fault) => {
                for (n, line) in worker_text::lines(&fault.message, worker_text::MAX_MESSAGE_LINES)
                    .iter()
                    .enumerate()
                {
                    let gap = if n == 0 { "" } else { "  " };
                    say!("module {}: {gap}{line}", slot.name);
                }
                worker.fault = Some(worker_text::message(&fault.message));
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

    /// Sends slot `i`'s worker its Init, with the fds of its ring ends.
    pub(super) fn send_init(&mut self, i: usize) {
        let restore = self.restore_for(i);
        let slot = &self.slots[i];
        let (Some(policy), Some(artifact)) = (&slot.policy, &slot.artifact) else {
            return;
        };
        let plan = self.sandbox.plan(policy, i, slot.cgroup.as_ref());
        let mut init = init_message(policy, &artifact.to_string_lossy(), plan);
        // Every granted dir travels as an fd opened here (`DirGrant::passed`):
        // the module's uid then needs access to the dir itself, not to the
        // dirs above it, which it owns none of (`grant_access.rs`).
        let mut prepared_rw = slot.rw_dirs.iter().flat_map(|d| d.fds.iter());
        let mut opened_ro = Vec::new();
        let mut passed: Vec<i32> = Vec::new();
        for (grant, dir) in init.dirs.iter_mut().zip(&policy.dirs) {
            let fd = match dir.mode {
                DirMode::Rw => prepared_rw.next().map(AsRawFd::as_raw_fd),
                DirMode::Ro => open_granted(&dir.host).ok().map(|fd| {
                    let raw = fd.as_raw_fd();
                    opened_ro.push(fd);
                    raw
                }),
            };
            // Not openable (gone since the policy loaded): the worker opens
            // the path and reports the error in the module's words.
            if let Some(fd) = fd {
                grant.passed = true;
                passed.push(fd);
            }
        }
        let slots = &self.slots;
        let (channels, fds) = self.wiring.grants_for(i, policy, |j| slots[j].name.clone());
        init.channels = channels;
        let mut restore_memfd = None;
        if let Some((epoch, bytes)) = restore {
            let restore = Restore {
                epoch,
                len: bytes.len() as u64,
                inline: Vec::new(),
            };
            if restore.in_memfd() {
                match edgeward_ipc::sealed::seal("edgeward-restore", &bytes) {
                    Ok(fd) => {
                        restore_memfd = Some(fd);
                        init.restore = Some(restore);
                    }
                    Err(e) => say!(
                        "module {}: snapshot epoch {epoch} not restored: cannot make its memfd: {e}",
                        slot.name
                    ),
                }
            } else {
                init.restore = Some(Restore {
                    inline: bytes,
                    ..restore
                });
            }
        }
        // The granted dirs go first (`DirGrant::passed`), the restore
        // memfd, if any, last (`Restore` says so).
        let raw: Vec<i32> = passed
            .into_iter()
            .chain(fds.iter().map(|fd| fd.as_raw_fd()))
            .chain(restore_memfd.as_ref().map(|fd| fd.as_raw_fd()))
            .collect();
        let Some(control) = slot.worker.as_ref().and_then(|w| w.control.as_ref()) else {
            return;
        };
        if let Err(e) = frame::send(control, &ToWorker::Init(Box::new(init)), &raw) {
            say!("module {}: cannot send Init: {e}", slot.name);
        }
    }

    /// Slot `i` found ring `id` corrupt and stopped using it.
    ///
    /// A report is evidence, not a verdict: either end can write anything
    /// into the ring, so the report alone cannot say who broke it, and a
    /// false one must not get an innocent peer killed.
    ///
    /// - Only the consumer's report can restart the other end. The
    ///   supervisor checks the ring in its own mapping first: every frame
    ///   from the consumer's position to the producer's. Not confirmed: the
    ///   reporter is told to resume (`RingReset`, nothing changed) and the
    ///   report counts against it; more than [`super::FALSE_REPORTS_MAX`]
    ///   within a minute is a protocol violation.
    /// - Confirmed: the producer is restarted at once (its restart is not
    ///   counted against its restart intensity: the consumer may have
    ///   scribbled on its own inbox), then the ring is reset. At most once
    ///   per ring per [`super::RING_ACTION_EVERY`]; beyond that the ring
    ///   stays stopped until the producer ends for another reason.
    /// - A producer's report (an impossible read position) stops its end of
    ///   the ring; the ring is reset when the consumer next ends.
    fn ring_corrupt(&mut self, i: usize, id: u32, seq: u64, what: &str) {
        let now = Instant::now();
        let Some(ring) = self.wiring.ring_mut(id) else {
            return self.violation(i, format!("corruption report for unknown ring {id}"));
        };
        if ring.publisher != i && ring.subscriber != i {
            return self.violation(i, format!("corruption report for ring {id}, not its own"));
        }
        let (channel, publisher, subscriber) =
            (ring.channel.clone(), ring.publisher, ring.subscriber);
        let (writer, reader) = (
            self.slots[publisher].name.clone(),
            self.slots[subscriber].name.clone(),
        );
        if publisher == i {
            ring.corrupt += 1;
            ring.reset_pending_for = Some(i);
            return say!(
                "ring corrupt: channel {channel} to {reader} ({what}; reported by its publisher \
                 {writer}): {writer} stops writing to it; the ring is reset when {reader} next restarts"
            );
        }
        let found = match ring.verify() {
            Ok(intact) => {
                let window = std::time::Duration::from_secs(60);
                let reports = &mut self.slots[i].false_reports;
                reports.retain(|t| now.duration_since(*t) < window);
                reports.push_back(now);
                let count = reports.len();
                say!(
                    "module {reader}: reported ring channel {channel} from {writer} corrupt at seq \
                     {seq} ({what}), but the supervisor finds its {intact} waiting frame(s) intact: \
                     not acted on ({count} unconfirmed report(s) in 60 s)"
                );
                if count > super::FALSE_REPORTS_MAX {
                    return self.violation(
                        i,
                        format!("{count} ring corruption reports within 60 s that the supervisor could not confirm"),
                    );
                }
                self.tell_ring_reset(i, id);
                return;
            }
            Err(e) => e.to_string(),
        };
        ring.corrupt += 1;
        ring.reset_pending_for = Some(i);
        let message = format!(
            "ring corrupt: channel {channel} from {writer} ({found}; reported by {reader} at seq \
             {seq}, confirmed by the supervisor)"
        );
        if ring
            .acted_at
            .is_some_and(|t| now.duration_since(t) < super::RING_ACTION_EVERY)
        {
            return say!(
                "{message}; {writer} was restarted for this ring less than {} s ago, so not \
                 again: the ring stays stopped until {writer} next restarts",
                super::RING_ACTION_EVERY.as_secs()
            );
        }
        ring.acted_at = Some(now);
        say!("{message}; restarting {writer}");
        self.slots[i].last_error = Some(message.clone());
        match self.slots[publisher].worker.as_mut() {
            Some(worker) => {
                worker.killed_because = Some(format!("restarted: {message}"));
                worker.restart_requested = true;
                worker.kill();
            }
            // The other end is not running: nothing can write meanwhile.
            None => self.reset_rings_of_dead(publisher),
        }
    }

    /// Tells slot `i`'s worker to use ring `id` again.
    fn tell_ring_reset(&self, i: usize, id: u32) {
        let control = self.slots[i]
            .worker
            .as_ref()
            .and_then(|w| w.control.as_ref());
        if let Some(control) = control {
            let _ = frame::send(control, &ToWorker::RingReset { ring: id }, &[]);
        }
    }

    /// Slot `dead` has no worker now: reset the rings whose corruption
    /// waited for that, and tell the reporting ends.
    fn reset_rings_of_dead(&mut self, dead: usize) {
        for ring in &mut self.wiring.rings {
            let Some(reporter) = ring.reset_pending_for else {
                continue;
            };
            if ring.peer_of(reporter) != dead {
                continue;
            }
            ring.reset();
            let control = self.slots[reporter]
                .worker
                .as_ref()
                .and_then(|w| w.control.as_ref());
            if let Some(control) = control {
                let _ = frame::send(control, &ToWorker::RingReset { ring: ring.id }, &[]);
            }
        }
    }

    fn log_all_ready(&mut self) {
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

    /// The worker broke the protocol: kill it, never trust it.
    fn violation(&mut self, i: usize, what: String) {
        let slot = &mut self.slots[i];
        let Some(worker) = slot.worker.as_mut() else {
            return;
        };
        let reason = format!("protocol violation: {what}; worker killed");
        say!("module {}: {reason}", slot.name);
        worker.killed_because = Some(reason);
        worker.kill();
        self.close_control(i);
    }

    fn close_control(&mut self, i: usize) {
        if let Some(control) = self.slots[i].worker.as_mut().and_then(|w| w.control.take()) {
            super::unwatch(&self.epoll, &control);
        }
    }

    /// Prints what slot `i`'s worker wrote.
    pub(super) fn on_worker_output(&mut self, i: usize) {
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

    /// Reaps every ended child (workers, the fork server, re-parented orphans).
    pub(super) fn reap(&mut self) {
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

    fn on_exit(&mut self, i: usize, status: WaitStatus) {
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
            super::unwatch(&self.epoll, &output.fd);
        }
        if let Some(cgroup) = &slot.cgroup {
            if self.sandbox.oom_kills(cgroup) > worker.oom_kills_at_start
                && worker.killed_because.is_none()
            {
                let limit = cgroup.memory_limit_bytes().unwrap_or(0) >> 20;
                worker.killed_because = Some(format!("out of memory: cgroup limit {limit} MiB"));
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
        let ending = if clean {
            Ending::Clean
        } else {
            Ending::Failure
        };
        if !clean {
            slot.last_error = Some(
                worker
                    .killed_because
                    .or(worker.fault)
                    .unwrap_or_else(|| describe(status)),
            );
        }
        let ran_for = worker
            .ready_at
            .map_or(std::time::Duration::ZERO, |t| t.elapsed());
        self.reset_rings_of_dead(i);
        let slot = &mut self.slots[i];
        if self.shutdown_deadline.is_some() {
            slot.state = State::Stopped;
            return;
        }
        if slot.removing {
            return self.forget_removed(i);
        }
        let switched = slot.upgrade.as_ref().is_some_and(|u| u.phase.switched());
        if switched && !worker.restart_requested {
            // The new version ended before it was accepted.
            let reason = format!(
                "the new version ended: {}",
                slot.last_error.as_deref().unwrap_or("exited")
            );
            return self.roll_back(i, reason);
        }
        if worker.restart_requested {
            slot.restarts += 1;
            self.spawn(i);
            return;
        }
        if !clean {
            say!(
                "module {}: worker {} ended: {}",
                slot.name,
                worker
                    .pid
                    .map_or_else(|| "?".to_string(), |p| p.to_string()),
                slot.last_error.as_deref().unwrap_or("?")
            );
        }
        self.after_end(i, ending, ran_for);
    }

    /// Reads the fork server's answers to spawn requests (in request order).
    pub(super) fn on_zygote_replies(&mut self) {
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
            let Some((i, generation, spare)) = self.pending_spawns.pop_front() else {
                say!("fork server sent an unexpected {reply:?}");
                continue;
            };
            if spare {
                match reply {
                    FromZygote::Spawned { pid } => {
                        self.spare_spawned(i, generation, Pid::from_raw(pid as i32))
                    }
                    FromZygote::SpawnFailed { reason } => self.spare_failed(i, generation, &reason),
                    FromZygote::Hello { .. } => {
                        self.spare_failed(i, generation, "fork server protocol error")
                    }
                }
                continue;
            }
            match reply {
                FromZygote::Spawned { pid } => {
                    self.spawned(i, generation, Pid::from_raw(pid as i32))
                }
                FromZygote::SpawnFailed { reason } => self.spawn_failed(
                    i,
                    generation,
                    format!("fork server could not start the worker: {reason}"),
                ),
                FromZygote::Hello { .. } => {
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

    /// The fork server made the worker of slot `i`: record its pid.
    fn spawned(&mut self, i: usize, generation: u32, pid: Pid) {
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

    fn spawn_failed(&mut self, i: usize, generation: u32, reason: String) {
        let current = self.slots[i].worker.as_ref().map(|w| w.generation);
        if current != Some(generation) {
            return;
        }
        if let Some(worker) = self.slots[i].worker.take() {
            self.unwatch_worker(&worker);
        }
        let slot = &mut self.slots[i];
        say!("module {}: {reason}", slot.name);
        slot.last_error = Some(reason);
        if self.shutdown_deadline.is_some() {
            slot.state = State::Stopped;
        } else {
            self.after_end(i, Ending::Failure, std::time::Duration::ZERO);
        }
    }

    /// Applies the restart policy after a worker of slot `i` ended.
    pub(super) fn after_end(&mut self, i: usize, ending: Ending, ran_for: std::time::Duration) {
        let slot = &mut self.slots[i];
        let Some(tracker) = slot.tracker.as_mut() else {
            slot.state = State::Failed;
            return;
        };
        match tracker.decide(ending, ran_for, Instant::now()) {
            Decision::RestartAfter(delay) => {
                slot.state = State::Backoff;
                slot.restart_at = Some(Instant::now() + delay);
            }
            Decision::Stay => {
                slot.state = State::Stopped;
                self.drop_spare(i);
            }
            Decision::Fail { intensity_exceeded } => {
                self.drop_spare(i);
                let slot = &mut self.slots[i];
                slot.state = State::Failed;
                if intensity_exceeded {
                    let rules = slot.policy.as_ref().map(|p| p.restart);
                    let (max, window) =
                        rules.map_or((0, 0), |r| (r.intensity_max, r.intensity_window_s));
                    let last = slot.last_error.take().unwrap_or_default();
                    slot.last_error = Some(format!(
                        "{last} (gave up: more than {max} restarts in {window} s; `edgeward restart {}` to try again)",
                        slot.name
                    ));
                }
                say!(
                    "module {}: failed: {}",
                    slot.name,
                    slot.last_error.as_deref().unwrap_or("?")
                );
            }
        }
    }
}

/// Opens a granted dir to pass to its worker: a path handle only
/// (`O_PATH`), so opening reads nothing and needs no permission on the dir
/// itself; the worker's open through `/proc/self/fd` checks the module's.
fn open_granted(dir: &std::path::Path) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{open, OFlag};
    open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// The Init message for a policy: exactly its grants (none passed as an fd
/// yet: `send_init` decides).
pub(crate) fn init_message(policy: &Policy, artifact: &str, sandbox: SandboxPlan) -> Init {
    Init {
        protocol_version: PROTOCOL_VERSION,
        module: policy.name.clone(),
        artifact: artifact.to_string(),
        args: policy.args.clone(),
        env: policy.env.clone(),
        dirs: policy
            .dirs
            .iter()
            .map(|d| DirGrant {
                host: d.host.to_string_lossy().into_owned(),
                guest: d.guest.clone(),
                writable: d.mode == DirMode::Rw,
                passed: false,
            })
            .collect(),
        memory_limit_bytes: u64::from(policy.resources.memory_mib) << 20,
        tick_us: policy.tick_us,
        call_budget_ms: policy.resources.call_budget_ms,
        sandbox,
        channels: Vec::new(),
        max_message_bytes: policy.channels.max_message_kib << 10,
        on_full: match policy.channels.on_full {
            crate::policy::OnFull::Block => OnFull::Block,
            crate::policy::OnFull::Drop => OnFull::Drop,
            crate::policy::OnFull::Error => OnFull::Error,
        },
        spin_us: match policy.channels.wait {
            crate::policy::WaitMode::Park => 0,
            crate::policy::WaitMode::Spin { micros } => micros,
        },
        restore: None,
        stdin: false,
    }
}

/// An exit status in words.
pub(super) fn describe(status: WaitStatus) -> String {
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
