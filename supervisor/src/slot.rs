//! What the supervisor knows about one module: its policy, its state, its
//! current worker (if any) and its history.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Instant;

use edgeward_ipc::control::{ModuleKind, Stats};
use nix::unistd::Pid;

pub use crate::lifecycle::State;
use crate::output::OutputPipe;
use crate::policy::Policy;
use crate::restart::RestartTracker;
use crate::status::ModuleStatus;

/// A live worker process.
pub struct Worker {
    /// Its pid; `None` until the fork server's reply arrives.
    pub pid: Option<Pid>,
    /// The pid its Hello claimed, if that came before the fork server's reply.
    pub hello_pid: Option<u32>,
    /// SIGKILL it as soon as its pid is known.
    pub kill_pending: bool,
    /// Our end of the control socket; `None` once the worker closed it.
    pub control: Option<OwnedFd>,
    /// Its output; `None` at end of file.
    pub output: Option<OutputPipe>,
    /// When it was started.
    pub spawned_at: Instant,
    /// When it sent Ready.
    pub ready_at: Option<Instant>,
    /// Whether its Hello arrived.
    pub said_hello: bool,
    /// The worker's own account of why it is ending.
    pub fault: Option<String>,
    /// The supervisor killed it, and why.
    pub killed_because: Option<String>,
    /// Why it ended, as a `/metrics` label, once known (set with
    /// `fault` or `killed_because`).
    pub end_cause: Option<crate::metrics::counters::EndCause>,
    /// OOM kills in the module's cgroup when this worker started.
    pub oom_kills_at_start: u64,
    /// When it closed its control socket while still running: a worker
    /// does that as it exits, so one still alive a stop timeout later is
    /// killed (it could no longer be told to stop).
    pub closed_at: Option<Instant>,
    /// It can be asked for snapshots (from its Ready).
    pub snapshots: bool,
    /// Snapshots asked of it and not answered yet: a snapshot it sends
    /// unasked is a protocol violation.
    pub snapshots_asked: u32,
    /// The leading parts of the snapshot it is sending.
    pub snapshot_parts: Vec<u8>,
    /// Messages it may send (snapshot transfers asked for aside): a worker
    /// over `FRAMES_PER_SECOND` (`event_loop/mod.rs`) is flooding the socket.
    pub frames: edgeward_ipc::rate::Bucket,
    /// The lines its `Log` messages may carry (the worker keeps its own
    /// limit; a compromised one would not).
    pub log_limit: edgeward_ipc::rate::LineLimit,
    /// Its generation: events tagged with another are stale.
    pub generation: u32,
    /// When it last sent anything (the watchdog's sign of life).
    pub last_heard: Instant,
    /// When the watchdog pinged it, if it has been silent since
    /// (`event_loop/watchdog.rs`).
    pub pinged_at: Option<Instant>,
    /// A connector's connect guard: the seccomp listener of its `connect`
    /// calls, answered by `event_loop/connect_guard.rs`.
    pub guard: Option<crate::net_grant::ConnectGuard>,
}

impl Worker {
    /// SIGKILLs the worker now, or as soon as its pid is known.
    pub fn kill(&mut self) {
        match self.pid {
            Some(pid) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            None => self.kill_pending = true,
        }
    }

    /// Checks its Hello: the first one, our protocol version, and its own
    /// pid (checked later by [`Worker::claim_pid`] when the fork server
    /// has not told it yet).
    ///
    /// # Errors
    /// What broke the protocol, in words.
    pub fn hello(&mut self, protocol_version: u32, pid: u32) -> Result<(), String> {
        if self.said_hello {
            return Err("second Hello".into());
        }
        if protocol_version != edgeward_ipc::PROTOCOL_VERSION {
            return Err(format!(
                "worker speaks protocol {protocol_version}, supervisor {}; install matching binaries",
                edgeward_ipc::PROTOCOL_VERSION
            ));
        }
        match self.pid {
            Some(expected) if pid as i32 != expected.as_raw() => {
                return Err(format!("Hello from pid {pid}, expected {expected}"));
            }
            Some(_) => {}
            None => self.hello_pid = Some(pid),
        }
        self.said_hello = true;
        Ok(())
    }

    /// Records the pid the fork server reported, carrying out a kill asked
    /// for meanwhile.
    ///
    /// # Errors
    /// Its Hello named another pid.
    pub fn claim_pid(&mut self, pid: Pid) -> Result<(), String> {
        self.pid = Some(pid);
        if self.kill_pending {
            self.kill();
        }
        match self.hello_pid.take() {
            Some(claimed) if claimed as i32 != pid.as_raw() => {
                Err(format!("Hello from pid {claimed}, expected {pid}"))
            }
            _ => Ok(()),
        }
    }
}

/// One module.
pub struct Slot {
    /// Module name.
    pub name: String,
    /// Its policy, if valid.
    pub policy: Option<Policy>,
    /// Its precompiled artifact, once available.
    pub artifact: Option<PathBuf>,
    /// Lifecycle state (`lifecycle.rs`: changed only by its transition
    /// function).
    pub state: State,
    /// Current worker.
    pub worker: Option<Worker>,
    /// A spare worker (`[restart] spare`): forked, in the module's
    /// cgroups, said Hello, waits for the Init that makes it the current
    /// worker at the next restart.
    pub spare: Option<Worker>,
    /// Times restarted.
    pub restarts: u32,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// Restart bookkeeping (present when the policy is valid).
    pub tracker: Option<RestartTracker>,
    /// The last generation handed out (one per worker or spare).
    pub generation: u32,
    /// Reactor or command, once known.
    pub kind: Option<ModuleKind>,
    /// Counters from the last heartbeat.
    pub stats: Stats,
    /// Counters of this module's earlier workers, so `status` shows totals.
    pub stats_before: Stats,
    /// The module's cgroup, once created.
    pub cgroup: Option<crate::cgroup::ModuleCgroup>,
    /// Sandbox layers the worker could not apply.
    pub degraded: Vec<String>,
    /// A reload changed its resource limits: its cgroup is set up again
    /// before the next worker starts.
    pub limits_changed: bool,
    /// The sha256 of the wasm it runs when that is not its policy's (an
    /// upgrade's active slot, see `upgrade/record.rs`).
    pub upgraded: Option<String>,
    /// An upgrade in progress.
    pub upgrade: Option<Box<crate::upgrade::Upgrade>>,
    /// The next worker is handed the newest snapshot of this wasm instead
    /// of its own (an upgrade's one explicit crossing); used once.
    pub restore_from: Option<String>,
    /// Its read-write dirs, prepared once per policy (`rw_dirs.rs`) and
    /// handed to each of its workers.
    pub rw_dirs: Option<crate::rw_dirs::PreparedDirs>,
    /// The job preparing them, while it runs.
    pub preparing: Option<crate::jobs::JobId>,
    /// When its recent corruption reports that the supervisor could not
    /// confirm were made.
    pub false_reports: std::collections::VecDeque<Instant>,
    /// A connector's counters from its last report (`null` for a module).
    pub connector: Option<edgeward_ipc::control::ConnectorCounters>,
    /// A connector's `[network] connect` and its addresses, resolved on a
    /// job thread before its first worker (and again after a reload
    /// changed the list): what its connect guard allows.
    pub net_grants: Option<(Vec<String>, crate::net_grant::resolve::ResolvedGrants)>,
    /// The job resolving them, while it runs.
    pub resolving: Option<crate::jobs::JobId>,
    /// A connector's network: connections the sandbox granted and denied,
    /// over all its workers.
    pub network: NetworkCounts,
    /// Its counters for `/metrics` (restarts by cause, traps, denials).
    pub counters: crate::metrics::counters::ModuleCounters,
    /// Why its last worker ended: the cause its next restart counts under.
    pub last_end: Option<crate::metrics::counters::EndCause>,
    /// Denials audited (`audit.rs`): when each kind was last logged and
    /// how many came since.
    pub audit: crate::audit::AuditLimit,
}

/// Connections a connector's guard answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkCounts {
    /// Connects to a granted endpoint, made by the supervisor.
    pub granted: u64,
    /// Connects refused (`EACCES`): an endpoint not in `[network] connect`.
    pub denied: u64,
}

impl Slot {
    /// A module whose policy could not be used: failed from the start.
    pub fn failed(name: String, reason: String) -> Self {
        Self {
            name,
            policy: None,
            artifact: None,
            state: State::Failed,
            worker: None,
            spare: None,
            restarts: 0,
            last_error: Some(reason),
            tracker: None,
            generation: 0,
            kind: None,
            stats: Stats::default(),
            stats_before: Stats::default(),
            cgroup: None,
            degraded: Vec::new(),
            limits_changed: false,
            upgraded: None,
            upgrade: None,
            restore_from: None,
            rw_dirs: None,
            preparing: None,
            false_reports: std::collections::VecDeque::new(),
            connector: None,
            net_grants: None,
            resolving: None,
            network: NetworkCounts::default(),
            counters: Default::default(),
            last_end: None,
            audit: Default::default(),
        }
    }

    /// A module with a valid policy, not started yet.
    pub fn new(policy: Policy) -> Self {
        Self {
            name: policy.name.clone(),
            tracker: Some(RestartTracker::new(policy.restart)),
            policy: Some(policy),
            state: State::Waiting,
            ..Self::failed(String::new(), String::new())
        }
        .with_no_error()
    }

    fn with_no_error(mut self) -> Self {
        self.last_error = None;
        self
    }

    /// The sha256 (hex) of the wasm its workers run: an upgrade's active
    /// slot, else its policy's.
    pub fn running_sha(&self) -> Option<&str> {
        self.upgraded
            .as_deref()
            .or_else(|| self.policy.as_ref().map(|p| p.wasm_sha256.as_str()))
    }

    /// Records that its workers run the wasm with `sha256`.
    pub fn set_running_sha(&mut self, sha256: &str) {
        let policy_sha = self.policy.as_ref().map(|p| p.wasm_sha256.as_str());
        self.upgraded = (policy_sha != Some(sha256)).then(|| sha256.to_string());
    }

    /// The row for `status`.
    pub fn status(&self, now: Instant) -> ModuleStatus {
        let worker = self.worker.as_ref();
        ModuleStatus {
            name: self.name.clone(),
            state: if self.upgrade.is_some() {
                "upgrading".to_string()
            } else {
                self.state.as_str().to_string()
            },
            wasm_sha256: self.running_sha().map(str::to_string),
            language: self
                .policy
                .as_ref()
                .and_then(|p| p.wasm_language)
                .map(str::to_string),
            pid: worker.and_then(|w| w.pid).map(|p| p.as_raw() as u32),
            spare_pid: self
                .spare
                .as_ref()
                .filter(|w| w.said_hello)
                .and_then(|w| w.pid)
                .map(|p| p.as_raw() as u32),
            restarts: self.restarts,
            uptime_ms: worker
                .and_then(|w| w.ready_at)
                .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
            rss_kib: worker.and_then(|w| w.pid).map_or(0, rss_kib),
            snapshot_epoch: None,
            msgs_in: self.stats_before.msgs_in + self.stats.msgs_in,
            msgs_out: self.stats_before.msgs_out + self.stats.msgs_out,
            last_error: self.last_error.clone(),
            kind: self.kind.map(|k| match k {
                ModuleKind::Reactor => "reactor".to_string(),
                ModuleKind::Command => "command".to_string(),
                ModuleKind::Connector => "connector".to_string(),
            }),
            ticks: self.stats.ticks,
            degraded: self.degraded.clone(),
            denials: self.stats_before.denials + self.stats.denials,
            dropped: self.stats_before.dropped + self.stats.dropped,
            refused: self.stats_before.refused + self.stats.refused,
            wakes: self.stats_before.wakes + self.stats.wakes,
            tick_lateness_p50_us: self.stats.tick_lateness.map(|l| l.p50_us),
            tick_lateness_p99_us: self.stats.tick_lateness.map(|l| l.p99_us),
            tick_lateness_max_us: self.stats.tick_lateness.map(|l| l.max_us),
            connector: self
                .policy
                .as_ref()
                .and_then(|p| p.connector.as_ref())
                .map(|_| crate::status::ConnectorStatus {
                    counters: self.connector.unwrap_or_default(),
                    network: self.network,
                }),
        }
    }

    /// Folds the ended worker's counters into the totals. A connector's
    /// own counters are totals already (its next worker restores them from
    /// its snapshot); only their live part ends with the worker.
    pub fn fold_stats(&mut self) {
        if let Some(lateness) = self.stats.tick_lateness {
            self.counters.lateness_before.add(&lateness.histogram);
        }
        if let Some(connector) = &mut self.connector {
            connector.connected = false;
        }
        let (a, b) = (&mut self.stats_before, std::mem::take(&mut self.stats));
        a.ticks += b.ticks;
        a.msgs_in += b.msgs_in;
        a.msgs_out += b.msgs_out;
        a.denials += b.denials;
        a.path_denials += b.path_denials;
        a.dropped += b.dropped;
        a.refused += b.refused;
        a.wakes += b.wakes;
    }
}

/// Resident set size of `pid` in KiB, from `/proc/<pid>/statm`.
fn rss_kib(pid: Pid) -> u64 {
    let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page / 1024
}
