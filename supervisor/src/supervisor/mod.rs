//! The supervisor: a single-threaded event loop over one epoll set
//! (signalfd, control socket, each worker's control socket and output pipe)
//! and a set of deadlines (restarts, stop timeouts, readiness timeouts).
//!
//! - `mod.rs`: start-up and the loop;
//! - `workers.rs`: spawning, worker messages, exits and restart decisions;
//! - `requests.rs`: control-socket requests and shutdown;
//! - `background.rs`: what happens when slow work done off the loop
//!   (`jobs.rs`: compiles, read-write dir preparation) finished.
//!
//! Nothing here blocks: worker fds and clients are read within a budget per
//! wake-up, output goes to a bounded queue (`log_sink.rs`), and slow work
//! runs on job threads.

mod background;
mod prepare;
mod reload;
mod requests;
mod snapshots;
mod spares;
pub(crate) mod upgrade;
mod workers;
pub(crate) use workers::init_message;

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

use crate::compile_cache::{CompileCache, Outcome};
use crate::control::clients::{ClientId, Clients};
use crate::control::server::ControlServer;
use crate::launcher::{Launcher, ProcessModel};
use crate::policy;
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
}

/// epoll token layout: kind in bits 0..8, slot index in 8..32, generation in 32..64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
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
            _ => None,
        }
    }
}

/// The running supervisor.
pub struct Supervisor {
    options: Options,
    epoll: Epoll,
    signals: SignalFd,
    /// The control socket's listener; `None` once stopping.
    control: Option<ControlServer>,
    /// Connected control clients.
    clients: Clients,
    /// Slow work running off the loop, and what to do with each result.
    jobs: crate::jobs::Jobs<background::Output>,
    after_jobs: std::collections::HashMap<crate::jobs::JobId, background::AfterJob>,
    launcher: Launcher,
    slots: Vec<Slot>,
    started: Instant,
    /// Set once SIGTERM/SIGINT/stop arrived: the instant to SIGKILL stragglers.
    shutdown_deadline: Option<Instant>,
    /// Children that are not workers (the fork server) still to be reaped.
    other_children: Vec<Pid>,
    /// Spawn requests the fork server has not answered yet, oldest first:
    /// (slot, generation, for a spare).
    pending_spawns: std::collections::VecDeque<(usize, u32, bool)>,
    /// Exit statuses of children reaped before the fork server told us
    /// which module they belong to.
    unclaimed_exits: std::collections::HashMap<Pid, nix::sys::wait::WaitStatus>,
    all_ready_logged: bool,
    /// How workers are confined on this host.
    sandbox: crate::sandbox_plan::HostSandbox,
    /// The data-plane rings between modules.
    wiring: crate::channels::Wiring,
    /// The snapshot store and rounds.
    snapshots: snapshots::Snapshots,
    /// Precompiled artifacts (used again by reloads).
    cache: CompileCache,
    /// A reload waits for its final snapshot round.
    reloading: bool,
    /// Another reload was asked for meanwhile: run it after this one.
    reload_again: bool,
    /// Upgrade records and the wasm of upgraded modules.
    upgrades: crate::upgrade_record::UpgradeDir,
    /// Whether quota volumes can be made on this host (why not).
    quota: Result<(), String>,
}

/// Prints a supervisor message on stderr (through the log writer: never blocks).
macro_rules! say {
    ($($arg:tt)*) => { crate::log_sink::err(format!("edgeward: {}", format_args!($($arg)*))) };
}
pub(crate) use say;

/// Runs the supervisor until it is stopped. Returns the exit code.
///
/// # Errors
/// Start-up failures: unreadable policy dir, unusable state dir, control
/// socket in use, worker binary missing.
pub fn run(options: Options, started: Instant) -> anyhow::Result<i32> {
    let signals = crate::signals::install()?;
    let loaded = policy::load_dir(&options.policies).with_context(|| {
        format!(
            "cannot read policy directory {} (set --policies or EDGEWARD_POLICIES)",
            options.policies.display()
        )
    })?;
    // An existing directory this user cannot write fails here too, with the
    // flag to pass, not later at its compile cache.
    crate::durable::create_dir_all(&options.state)
        .and_then(|()| {
            use nix::unistd::{access, AccessFlags};
            access(&options.state, AccessFlags::W_OK | AccessFlags::X_OK).map_err(Into::into)
        })
        .with_context(|| {
            format!(
                "cannot create or write state directory {} (set --state or EDGEWARD_STATE to a directory this user can write)",
                options.state.display()
            )
        })?;
    // Before anything touches the state or the cgroups; held until we exit.
    let _state_lock = crate::state_lock::StateLock::acquire(&options.state)?;
    let loaded = policy::check_across(loaded, &options.state, &[]);
    let control = ControlServer::bind(&options.control)?;
    let model = ProcessModel::from_env()?;
    if !options.worker_bin.is_file() {
        anyhow::bail!(
            "worker binary {} not found (install it beside edgeward or set EDGEWARD_WORKER)",
            options.worker_bin.display()
        );
    }
    let mut launcher = Launcher::new(model, options.worker_bin.clone());
    // The fork server initialises its engine while we prepare the cgroups.
    launcher.prestart()?;
    let mut sandbox = crate::sandbox_plan::HostSandbox::detect(
        options.uid_base,
        options.runtime_overhead_mib,
        &options.state,
    );
    // Before the first worker migrates (cgroup v1 only).
    sandbox.favor_migrations();
    let prepared_cgroups: Vec<(String, Result<Option<crate::cgroup::ModuleCgroup>, String>)> =
        loaded
            .iter()
            .filter_map(|l| l.result.as_ref().ok())
            .map(|p| (p.name.clone(), sandbox.cgroup(p).map_err(|e| e.to_string())))
            .collect();
    let fingerprint = launcher.fingerprint()?;

    let cache = CompileCache::open(&options.state, fingerprint)?;

    let mut slots: Vec<Slot> = loaded
        .into_iter()
        .map(|l| match l.result {
            Ok(policy) => Slot::new(policy),
            Err(errors) => {
                for e in &errors {
                    say!("module {}: invalid policy: {e}", l.name);
                }
                let reason = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" | ");
                Slot::failed(l.name, format!("invalid policy: {reason}"))
            }
        })
        .collect();
    if slots.is_empty() {
        say!(
            "no policies (*.toml) in {}; running with no modules",
            options.policies.display()
        );
    }

    // An upgraded module runs its upgrade's active slot, not its policy's wasm.
    let upgrades = crate::upgrade_record::UpgradeDir::new(&options.state);
    let wanted: Vec<(usize, (String, PathBuf))> = slots
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| {
            let upgraded = upgrade::adopt_record(&upgrades, s);
            let policy = s.policy.as_ref()?;
            Some((
                i,
                upgraded.unwrap_or_else(|| (policy.wasm_sha256.clone(), policy.wasm.clone())),
            ))
        })
        .collect();
    let pairs: Vec<(String, PathBuf)> = wanted.iter().map(|(_, w)| w.clone()).collect();
    for ((i, (sha, _)), outcome) in wanted.iter().zip(cache.ensure(&options.worker_bin, &pairs)) {
        let slot = &mut slots[*i];
        match outcome {
            Outcome::Hit(path) => {
                say!("module {}: compile cache hit ({})", slot.name, &sha[..12]);
                slot.artifact = Some(path);
            }
            Outcome::Compiled(path, ms) => {
                say!("module {}: compiled {} in {ms} ms", slot.name, &sha[..12]);
                slot.artifact = Some(path);
            }
            Outcome::Failed(reason) => {
                let wasm = slot.policy.as_ref().map(|p| p.wasm.display().to_string());
                say!("module {}: {reason}", slot.name);
                slot.state = State::Failed;
                slot.last_error = Some(format!("wasm {} {reason}", wasm.unwrap_or_default()));
            }
        }
    }

    let (wiring, wiring_errors) = {
        let policies: Vec<Option<&policy::Policy>> =
            slots.iter().map(|s| s.policy.as_ref()).collect();
        crate::channels::Wiring::build(&policies)
    };
    for error in wiring_errors {
        let slot = &mut slots[error.slot];
        say!("module {}: {}", slot.name, error.reason);
        slot.state = State::Failed;
        slot.artifact = None;
        slot.last_error = Some(error.reason);
    }
    if !wiring.rings.is_empty() {
        say!("data plane: {} ring(s)", wiring.rings.len());
    }

    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
    epoll.add(
        signals.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, Token::Signal.encode()),
    )?;
    let jobs = crate::jobs::Jobs::new().context("eventfd for background jobs")?;
    epoll.add(
        jobs.fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, Token::Jobs.encode()),
    )?;
    epoll.add(
        control.fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, Token::Control.encode()),
    )?;

    for (name, cgroup) in prepared_cgroups {
        if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
            match cgroup {
                Ok(cgroup) => {
                    let (stale, waited) = cgroup.as_ref().map_or((0, Duration::ZERO), |c| {
                        c.evict_stale(Duration::from_secs(2))
                    });
                    if stale > 0 || waited > Duration::from_millis(5) {
                        say!(
                            "module {name}: an earlier run left tasks in its cgroup: killed {stale}, waited {} ms for them to be reaped",
                            waited.as_millis()
                        );
                    }
                    slot.cgroup = cgroup;
                }
                Err(e) => say!("module {name}: cannot set up its cgroup yet: {e}"),
            }
        }
    }
    say!(
        "sandbox: {}; module uids from {}",
        sandbox.cgroup_description(),
        sandbox.identity(0).map_or_else(
            || "(none: not root)".to_string(),
            |(uid, _)| uid.to_string()
        )
    );
    let mut sandbox = sandbox;
    let quota = crate::volume::available();
    if let Err(why) = &quota {
        let quota_wanted = slots
            .iter()
            .filter_map(|s| s.policy.as_ref())
            .any(|p| p.rw_dirs().any(|d| d.quota_mib > 0));
        if quota_wanted {
            sandbox.warnings.push(format!(
                "disk quotas unavailable ({why}): rw dirs with quota_mib are plain directories, a module can fill their filesystem"
            ));
        }
    }
    for warning in &sandbox.warnings {
        say!("WARNING: {warning}");
    }
    let mut supervisor = Supervisor {
        options,
        epoll,
        signals,
        control: Some(control),
        clients: Clients::new(),
        jobs,
        after_jobs: std::collections::HashMap::new(),
        launcher,
        slots,
        started,
        shutdown_deadline: None,
        other_children: Vec::new(),
        pending_spawns: std::collections::VecDeque::new(),
        unclaimed_exits: std::collections::HashMap::new(),
        all_ready_logged: false,
        sandbox,
        wiring,
        snapshots: snapshots::Snapshots::default(),
        cache,
        reloading: false,
        reload_again: false,
        upgrades,
        quota,
    };
    supervisor.open_snapshots();
    say!(
        "supervising {} module(s) from {} ({} workers)",
        supervisor.slots.len(),
        supervisor.options.policies.display(),
        match model {
            ProcessModel::Zygote => "fork-server",
            ProcessModel::Exec => "exec-per",
        }
    );
    for i in 0..supervisor.slots.len() {
        if supervisor.slots[i].artifact.is_some() {
            supervisor.spawn(i);
        }
    }

    supervisor.event_loop()
}

impl Supervisor {
    fn event_loop(&mut self) -> anyhow::Result<i32> {
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
        for slot in &self.slots {
            consider(slot.restart_at);
            consider(slot.upgrade.as_ref().and_then(|u| u.deadline()));
            if let Some(w) = &slot.worker {
                consider(w.kill_at);
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
        for i in 0..self.slots.len() {
            self.upgrade_deadline(i, now);
            let slot = &mut self.slots[i];
            if slot.restart_at.is_some_and(|t| now >= t) {
                slot.restart_at = None;
                slot.restarts += 1;
                self.spawn(i);
                continue;
            }
            let Some(worker) = &mut slot.worker else {
                continue;
            };
            if worker.kill_at.is_some_and(|t| now >= t) {
                worker.kill_at = None;
                worker.kill();
            }
            if worker
                .closed_at
                .is_some_and(|t| now >= t + self.options.stop_timeout)
            {
                worker.closed_at = None;
                worker.killed_because.get_or_insert_with(|| {
                    "closed its control socket and did not exit; worker killed".into()
                });
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
                worker.kill();
            }
        }
    }

    fn on_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match nix::sys::signal::Signal::try_from(info.ssi_signo as i32) {
                Ok(nix::sys::signal::Signal::SIGCHLD) => self.reap(),
                Ok(
                    sig @ (nix::sys::signal::Signal::SIGTERM | nix::sys::signal::Signal::SIGINT),
                ) => {
                    say!("{sig}: stopping all modules");
                    self.begin_shutdown();
                }
                Ok(nix::sys::signal::Signal::SIGHUP) => {
                    say!("SIGHUP: reloading policies");
                    self.reload_and_log();
                }
                _ => {}
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
    pub(super) fn answer(&mut self, id: ClientId, response: &crate::control::protocol::Response) {
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
