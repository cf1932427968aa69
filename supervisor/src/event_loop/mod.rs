//! The supervisor: a single-threaded event loop over one epoll set
//! (signalfd, control socket, each worker's control socket and output pipe)
//! and a set of deadlines (backoffs, stop timeouts, readiness timeouts,
//! watchdogs, upgrade phases, snapshot rounds, clients).
//!
//! - `mod.rs`: the loop, its tokens and deadlines;
//! - `startup.rs`: `edgeward run`'s start-up, up to the first spawns;
//! - `spawn.rs`, `init.rs`: starting a worker and its Init message;
//! - `messages.rs`: what workers say; `ring_reports.rs`: corrupt rings;
//! - `exits.rs`: reaping, and a worker's end fed to the module's lifecycle
//!   (`lifecycle.rs` decides; `lifecycle_actions.rs` is the one place a
//!   module's state changes and the decision is carried out);
//! - `fork_server.rs`: the fork server's replies;
//! - `watchdog.rs`: pings for silent workers and the fork server, kills for
//!   the dead;
//! - `groups.rs`: restart groups; `order.rs`: start order (`after`) and the
//!   stop queue that stops modules in reverse;
//! - `spares.rs`, `prepare.rs`: spare workers, read-write dir preparation;
//! - `connector.rs`: connectors' Init extras, their connect guards (each
//!   denial logged and counted) and counters;
//! - `reload.rs`: SIGHUP and `edgeward reload`;
//! - `requests.rs`: control-socket requests and shutdown;
//! - `background.rs`: what happens when slow work done off the loop
//!   (`jobs.rs`: compiles, read-write dir preparation) finished.
//!
//! Nothing here blocks: worker fds and clients are read within a budget per
//! wake-up, output goes to a bounded queue (`log_sink.rs`), and slow work
//! runs on job threads.

mod audit;
pub(crate) mod background;
mod connector;
mod exits;
mod fork_server;
mod groups;
mod init;
mod lifecycle_actions;
mod messages;
mod metrics;
mod order;
mod prepare;
pub(crate) mod reload;
pub(crate) mod requests;
mod ring_reports;
mod spares;
mod spawn;
mod startup;
mod watchdog;
pub(crate) use init::init_message;
pub use startup::run;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

use crate::compile_cache::CompileCache;
use crate::control::clients::{ClientId, Clients};
use crate::control::server::ControlServer;
use crate::launcher::Launcher;
use crate::lifecycle::Event;
use crate::slot::{Slot, State};

/// Messages read from one worker per wake-up; the rest wait for the next
/// round, after every other ready fd had its turn.
pub(crate) const FRAMES_PER_WAKE: usize = 64;

/// Messages a second a worker may send on average (twice that at once),
/// snapshot transfers that were asked for aside. A worker sends about ten
/// heartbeats and at most a hundred log lines a second (its own limit), so
/// more than this is a compromised worker flooding the supervisor: it is
/// killed as a protocol violation.
pub(crate) const FRAMES_PER_SECOND: f64 = 1000.0;

/// Ring corruption reports the supervisor could not confirm that a module
/// may make within a minute before it counts as a protocol violation.
pub(crate) const FALSE_REPORTS_MAX: usize = 3;

/// A confirmed corruption report restarts a ring's producer at most this
/// often per ring.
pub(crate) const RING_ACTION_EVERY: Duration = Duration::from_secs(10);

/// How `edgeward run` was configured.
pub struct Options {
    /// Policy directory.
    pub policies: PathBuf,
    /// State directory (compile cache, later snapshots).
    pub state: PathBuf,
    /// Control socket path.
    pub control: PathBuf,
    /// Grace period between Stop and SIGKILL.
    pub stop_timeout: Duration,
    /// How long a worker may take to send Ready.
    pub ready_timeout: Duration,
    /// The `edgeward-worker` binary.
    pub worker_bin: PathBuf,
    /// First uid/gid of the per-module range.
    pub uid_base: u32,
    /// Memory added to `memory_mib` for a module's cgroup limit.
    pub runtime_overhead_mib: u64,
    /// Where to serve `/metrics` and the status page (`--metrics`).
    pub metrics: Option<String>,
}

/// epoll token layout: kind in bits 0..8, slot index in 8..32, generation in 32..64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Signal,
    Control,
    Zygote,
    WorkerControl {
        slot: usize,
        generation: u32,
    },
    WorkerOutput {
        slot: usize,
        generation: u32,
    },
    SpareControl {
        slot: usize,
        generation: u32,
    },
    SpareOutput {
        slot: usize,
        generation: u32,
    },
    /// A connected control client (index and serial).
    Client(ClientId),
    /// A background job finished.
    Jobs,
    /// A connector's connect guard (seccomp listener) has notifications.
    Guard {
        slot: usize,
        generation: u32,
    },
}

impl Token {
    /// The tokens of a worker's (or, with `spare`, a spare's) control
    /// socket and output pipe.
    fn for_worker(slot: usize, generation: u32, spare: bool) -> (Token, Token) {
        if spare {
            (
                Token::SpareControl { slot, generation },
                Token::SpareOutput { slot, generation },
            )
        } else {
            (
                Token::WorkerControl { slot, generation },
                Token::WorkerOutput { slot, generation },
            )
        }
    }

    fn encode(self) -> u64 {
        let pack = |kind: u64, slot: usize, generation: u32| {
            kind | ((slot as u64 & 0xff_ffff) << 8) | (u64::from(generation) << 32)
        };
        match self {
            Token::Signal => 0,
            Token::Control => 1,
            Token::Zygote => 4,
            Token::WorkerControl { slot, generation } => pack(2, slot, generation),
            Token::WorkerOutput { slot, generation } => pack(3, slot, generation),
            Token::SpareControl { slot, generation } => pack(5, slot, generation),
            Token::SpareOutput { slot, generation } => pack(6, slot, generation),
            Token::Client(id) => pack(7, id.index as usize, id.serial),
            Token::Jobs => 8,
            Token::Guard { slot, generation } => pack(9, slot, generation),
        }
    }

    fn decode(raw: u64) -> Option<Self> {
        let slot = ((raw >> 8) & 0xff_ffff) as usize;
        let generation = (raw >> 32) as u32;
        match raw & 0xff {
            0 => Some(Token::Signal),
            1 => Some(Token::Control),
            2 => Some(Token::WorkerControl { slot, generation }),
            3 => Some(Token::WorkerOutput { slot, generation }),
            4 => Some(Token::Zygote),
            5 => Some(Token::SpareControl { slot, generation }),
            6 => Some(Token::SpareOutput { slot, generation }),
            7 => Some(Token::Client(ClientId {
                index: slot as u32,
                serial: generation,
            })),
            8 => Some(Token::Jobs),
            9 => Some(Token::Guard { slot, generation }),
            _ => None,
        }
    }
}

/// A worker the fork server was asked for and has not answered about yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingSpawn {
    /// The request's number, repeated by the reply.
    pub(crate) request: u64,
    /// The slot it is for.
    pub(crate) slot: usize,
    /// The slot's generation when it was asked for.
    pub(crate) generation: u32,
    /// For the slot's spare, not its worker.
    pub(crate) spare: bool,
    /// When it was asked for: a spawn unanswered for the fork server's
    /// watchdog period counts as silence, whatever else it answers.
    pub(crate) asked_at: Instant,
}

/// The running supervisor.
pub struct Supervisor {
    pub(crate) options: Options,
    pub(crate) epoll: Epoll,
    pub(crate) signals: SignalFd,
    /// The control socket's listener; `None` once stopping.
    pub(crate) control: Option<ControlServer>,
    /// Connected control clients.
    pub(crate) clients: Clients,
    /// Slow work running off the loop, and what to do with each result.
    pub(crate) jobs: crate::jobs::Jobs<background::Output>,
    pub(crate) after_jobs: std::collections::HashMap<crate::jobs::JobId, background::AfterJob>,
    pub(crate) launcher: Launcher,
    pub(crate) slots: Vec<Slot>,
    pub(crate) started: Instant,
    /// Set once SIGTERM/SIGINT/stop arrived: the instant to SIGKILL stragglers.
    pub(crate) shutdown_deadline: Option<Instant>,
    /// Children that are not workers (the fork server) still to be reaped.
    pub(crate) other_children: Vec<Pid>,
    /// When the fork server last answered anything (`watchdog.rs`).
    pub(crate) fork_server_heard: Instant,
    /// It was pinged since.
    pub(crate) fork_server_pinged: bool,
    /// Signals with no meaning: when each was last logged, and how many
    /// came since.
    pub(crate) ignored_signals: std::collections::HashMap<i32, (Option<Instant>, u64)>,
    /// Modules to stop, in the reverse of the start order (`order.rs`).
    pub(crate) stop_queue: Vec<(usize, crate::lifecycle::Then)>,
    /// Spawn requests the fork server has not answered yet, oldest first
    /// (it answers them in completion order).
    pub(crate) pending_spawns: std::collections::VecDeque<PendingSpawn>,
    /// The last way workers were placed in their cgroups that was logged
    /// (`fork_server.rs`): each change is logged once, not every spawn.
    pub(crate) placement_logged: Option<edgeward_ipc::zygote::Placement>,
    /// Exit statuses of children reaped before the fork server told us
    /// which module they belong to.
    pub(crate) unclaimed_exits: std::collections::HashMap<Pid, nix::sys::wait::WaitStatus>,
    pub(crate) all_ready_logged: bool,
    /// How workers are confined on this host.
    pub(crate) sandbox: crate::sandbox_plan::HostSandbox,
    /// The data-plane rings between modules.
    pub(crate) wiring: crate::channels::Wiring,
    /// The snapshot store and rounds.
    pub(crate) snapshots: crate::snapshot::rounds::Snapshots,
    /// Precompiled artifacts (used again by reloads).
    pub(crate) cache: CompileCache,
    /// Where reloading stands (`reload.rs`).
    pub(crate) reload: reload::ReloadProgress,
    /// Upgrade records and the wasm of upgraded modules.
    pub(crate) upgrades: crate::upgrade::record::UpgradeDir,
    /// Whether quota volumes can be made on this host (why not).
    pub(crate) quota: Result<(), String>,
    /// The `--metrics` listener, and when its view is refreshed next.
    pub(crate) metrics: Option<(crate::metrics::Exporter, Instant)>,
    /// The supervisor's own counters for `/metrics`.
    pub(crate) totals: crate::metrics::counters::Totals,
}

pub(crate) use crate::log_sink::say;

impl Supervisor {
    pub(crate) fn event_loop(&mut self) -> anyhow::Result<i32> {
        let mut events = [EpollEvent::empty(); 64];
        loop {
            if self.shutdown_deadline.is_some() && self.nothing_left() {
                for i in 0..self.slots.len() {
                    self.release_rw_dirs(i);
                    if let Some(cgroup) = &self.slots[i].cgroup {
                        self.sandbox.remove_cgroup(cgroup);
                    }
                }
                say!("all modules stopped; exiting");
                return Ok(0);
            }
            let timeout = self.next_deadline().map_or(EpollTimeout::NONE, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                EpollTimeout::try_from(ms.min(60_000) as i32 + 1).unwrap_or(EpollTimeout::NONE)
            });
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(e).context("epoll_wait"),
            };
            for event in &events[..n] {
                match Token::decode(event.data()) {
                    Some(Token::Signal) => self.on_signals(),
                    Some(Token::Control) => self.on_control_socket(),
                    Some(Token::Client(id)) => self.on_client(id),
                    Some(Token::Jobs) => self.on_jobs(),
                    Some(Token::Zygote) => self.on_zygote_replies(),
                    Some(Token::WorkerControl { slot, generation })
                        if self.is_current(slot, generation) =>
                    {
                        self.on_worker_message(slot);
                    }
                    Some(Token::WorkerOutput { slot, generation })
                        if self.is_current(slot, generation) =>
                    {
                        self.on_worker_output(slot);
                    }
                    Some(Token::SpareControl { slot, generation })
                        if self.is_spare(slot, generation) =>
                    {
                        self.on_spare_message(slot);
                    }
                    Some(Token::SpareOutput { slot, generation })
                        if self.is_spare(slot, generation) =>
                    {
                        self.on_spare_output(slot);
                    }
                    Some(Token::Guard { slot, generation })
                        if self.is_current(slot, generation) =>
                    {
                        self.on_connect_guard(slot, generation);
                    }
                    _ => {}
                }
            }
            self.on_deadlines(Instant::now());
        }
    }

    fn is_current(&self, slot: usize, generation: u32) -> bool {
        self.slots
            .get(slot)
            .and_then(|s| s.worker.as_ref())
            .is_some_and(|w| w.generation == generation)
    }

    fn is_spare(&self, slot: usize, generation: u32) -> bool {
        self.slots
            .get(slot)
            .and_then(|s| s.spare.as_ref())
            .is_some_and(|w| w.generation == generation)
    }

    fn nothing_left(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.worker.is_none() && s.spare.is_none())
            && self.other_children.is_empty()
            && self.pending_spawns.is_empty()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = self.shutdown_deadline;
        if let Some(t) = self.clients.next_deadline() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if let Some(t) = self.next_snapshot_deadline() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.next_watchdog_deadline());
        consider(self.next_metrics_deadline());
        for slot in &self.slots {
            consider(slot.state.deadline());
            consider(slot.upgrade.as_ref().and_then(|u| u.deadline()));
            if let Some(w) = &slot.worker {
                consider(w.closed_at.map(|t| t + self.options.stop_timeout));
                if w.ready_at.is_none() && w.killed_because.is_none() {
                    consider(Some(w.spawned_at + self.options.ready_timeout));
                }
            }
        }
        next
    }

    fn on_deadlines(&mut self, now: Instant) {
        self.clients.expire(now, &self.epoll);
        self.snapshot_deadlines(now);
        if let Some(deadline) = self.shutdown_deadline {
            if now >= deadline {
                self.kill_everything("did not stop within the stop timeout");
                // Look again shortly, in case a SIGKILL did not land.
                self.shutdown_deadline = Some(now + Duration::from_millis(100));
            }
        }
        self.watchdog(now);
        self.publish_metrics(now);
        for i in 0..self.slots.len() {
            self.upgrade_deadline(i, now);
            if self.slots[i].state.deadline().is_some_and(|t| now >= t) {
                let event = match self.slots[i].state {
                    State::Backoff { .. } => Event::BackoffOver,
                    _ => Event::StopTimeout,
                };
                self.transition(i, event);
            }
            let slot = &mut self.slots[i];
            let Some(worker) = &mut slot.worker else {
                continue;
            };
            if worker
                .closed_at
                .is_some_and(|t| now >= t + self.options.stop_timeout)
            {
                worker.closed_at = None;
                worker.killed_because.get_or_insert_with(|| {
                    "closed its control socket and did not exit; worker killed".into()
                });
                worker
                    .end_cause
                    .get_or_insert(crate::metrics::counters::EndCause::Protocol);
                worker.kill();
            }
            if worker.ready_at.is_none()
                && worker.killed_because.is_none()
                && now >= worker.spawned_at + self.options.ready_timeout
            {
                let reason = format!(
                    "not ready within {} ms (ew_init or start-up stuck); worker killed",
                    self.options.ready_timeout.as_millis()
                );
                say!("module {}: {reason}", slot.name);
                worker.killed_because = Some(reason);
                worker.end_cause = Some(crate::metrics::counters::EndCause::Watchdog);
                worker.kill();
            }
        }
    }

    fn on_signals(&mut self) {
        use crate::signals::Meaning;
        while let Ok(Some(info)) = self.signals.read_signal() {
            let signo = info.ssi_signo as i32;
            match crate::signals::meaning(signo) {
                Meaning::Reap => self.reap(),
                Meaning::Stop => {
                    say!("{}: stopping all modules", crate::signals::name(signo));
                    self.begin_shutdown();
                }
                Meaning::Reload => {
                    say!("{}: reloading policies", crate::signals::name(signo));
                    self.reload_and_log();
                }
                // Said, not silently dropped (as PID 1's default would
                // be); once per signal number per minute, with a count.
                Meaning::Ignore(why) => {
                    let now = Instant::now();
                    let (last, count) = self.ignored_signals.entry(signo).or_insert((None, 0));
                    *count += 1;
                    if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
                        let times = if *count > 1 {
                            format!(" ({count} times since the last line)")
                        } else {
                            String::new()
                        };
                        say!(
                            "{}: {why}; ignored (sent by pid {}){times}",
                            crate::signals::name(signo),
                            info.ssi_pid
                        );
                        *last = Some(now);
                        *count = 0;
                    }
                }
            }
        }
        // Children may have ended between signals being coalesced.
        self.reap();
    }

    fn on_control_socket(&mut self) {
        let Some(control) = &self.control else {
            return;
        };
        self.clients.accept(
            control.listener(),
            &self.epoll,
            |id| Token::Client(id).encode(),
            Instant::now(),
        );
    }

    fn on_client(&mut self, id: ClientId) {
        use crate::control::clients::Read;
        let response = match self.clients.on_event(id, &self.epoll) {
            Read::Pending => return,
            Read::Bad(refusal) => crate::control::protocol::Response::refused(refusal),
            Read::Request(request) => match self.handle_request(request, id) {
                crate::control::protocol::Reply::Now(response) => *response,
                crate::control::protocol::Reply::Later => return,
            },
        };
        self.answer(id, &response);
    }

    /// Answers a control client (now, or one that waited).
    pub(crate) fn answer(&mut self, id: ClientId, response: &crate::control::protocol::Response) {
        self.clients
            .answer(id, response, &self.epoll, Instant::now());
    }
}

/// Adds a worker fd to the epoll set.
fn watch(epoll: &Epoll, fd: &impl AsRawFd, token: Token) {
    // SAFETY: the fd is owned by a Worker in the supervisor's slots and stays
    // open until `unwatch` removes it from the set, before it is closed.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    if let Err(e) = epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token.encode())) {
        say!("epoll_ctl(ADD) failed: {e}");
    }
}

/// Removes a worker fd from the epoll set (before it is closed).
fn unwatch(epoll: &Epoll, fd: &impl AsRawFd) {
    // SAFETY: as in `watch`: the fd is still open here.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let _ = epoll.delete(fd);
}
