//! Snapshot rounds: asking modules for their state, staging the answers,
//! and committing them together (group commit, `snapshot/store.rs`).
//!
//! A round asks every running reactor that exports `ew_snapshot` among the
//! modules due, waits for all answers (at most [`ROUND_TIMEOUT`]), then
//! commits once. Rounds start every `[snapshot] interval_ms` (modules with
//! the same interval share rounds, so their flushes are shared), once more,
//! for every module, when edgeward stops, and for the modules a reload
//! removes or restarts before it does so.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use edgeward_ipc::control::ToWorker;
use edgeward_ipc::frame;

use crate::control::protocol::Response;
use crate::event_loop::Supervisor;
use crate::log_sink::say;
use crate::slot::State;
use crate::snapshot::{DirStorage, Store};

/// Longest a round waits for answers before committing what it has.
const ROUND_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a store that keeps failing is logged again.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// What happens once a round is committed (a periodic round: nothing).
#[derive(Debug)]
pub(crate) enum AfterRound {
    /// Stop every worker: the final round before shutdown.
    StopAll,
    /// Apply a reload: its removed and restarted modules were in the round.
    Reload(Box<crate::event_loop::reload::ReloadPlan>),
    /// Switch slot `.0` to its new version (the pre-upgrade snapshot).
    Upgrade(usize),
    /// Commit slot `.0`'s upgrade (the new version's first snapshot).
    UpgradeCommit(usize),
    /// Restart these members of a restart group, after their snapshots.
    GroupRestart(Vec<usize>),
}

/// A round in progress.
pub(crate) struct Round {
    /// Slots whose answer is awaited.
    waiting: BTreeSet<usize>,
    /// When the modules were asked.
    started: Instant,
    deadline: Instant,
    then: Vec<AfterRound>,
}

impl Round {
    /// Whether slot `i`'s answer is awaited.
    pub(crate) fn is_waiting_for(&self, i: usize) -> bool {
        self.waiting.contains(&i)
    }
}

/// The snapshot side of the supervisor.
#[derive(Default)]
pub(crate) struct Snapshots {
    /// `None` when the state dir cannot hold snapshots (reported at start).
    pub store: Option<Store<DirStorage>>,
    pub round: Option<Round>,
    /// Next round per interval (ms).
    pub next: BTreeMap<u64, Instant>,
    /// `edgeward snapshot` clients waiting for the round to commit, with
    /// the slot they asked about.
    pub clients: Vec<(crate::control::clients::ClientId, usize)>,
    /// Why snapshots are not durable right now (shown in `status`).
    pub error: Option<String>,
    /// Commits failed in a row.
    pub failed_commits: u64,
    /// When the current run of failures was last logged.
    pub failure_logged: Option<Instant>,
    /// How long recent rounds took from asking the modules to durable.
    pub commit_times: CommitTimes,
    /// When each module's newest snapshot became durable in this run.
    pub committed_at: std::collections::HashMap<String, std::time::SystemTime>,
}

/// The durations of the last [`CommitTimes::KEPT`] rounds that made
/// something durable, from asking the modules to the flush's return: what
/// `status` reports as `snapshot_commit_p50_us`/`_p99_us` (a slowing flash
/// device shows here first).
#[derive(Default)]
pub(crate) struct CommitTimes {
    micros: std::collections::VecDeque<u64>,
}

impl CommitTimes {
    const KEPT: usize = 256;

    fn record(&mut self, took: Duration) {
        if self.micros.len() == Self::KEPT {
            self.micros.pop_front();
        }
        self.micros.push_back(took.as_micros() as u64);
    }

    /// The `q` quantile (0..=1) of the kept durations, µs.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        let mut sorted: Vec<u64> = self.micros.iter().copied().collect();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        sorted.get((last as f64 * q).round() as usize).copied()
    }
}

/// The wasm sha256 of a policy as bytes.
/// (Policy validation made it 64 hex digits.)
pub(crate) fn sha_bytes(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if hex::decode_to_slice(hex, &mut out).is_err() {
        out = [0; 32];
    }
    out
}

impl Supervisor {
    /// Opens the store in `<state>/snapshots` and reports what it skipped.
    pub(crate) fn open_snapshots(&mut self) {
        let dir = self.options.state.join("snapshots");
        let opened = DirStorage::open(&dir)
            .map_err(|e| e.to_string())
            .and_then(|s| Store::open(s).map_err(|e| e.to_string()));
        match opened {
            Ok((store, reports)) => {
                for report in reports {
                    say!("snapshots: {}: {}", report.segment, report.what);
                    if let Some(slot) = report
                        .module
                        .as_ref()
                        .and_then(|m| self.slots.iter_mut().find(|s| &s.name == m))
                    {
                        slot.last_error = Some(report.what);
                    }
                }
                self.snapshots.store = Some(store);
            }
            Err(e) => {
                let error = format!(
                    "snapshots disabled: cannot use {}: {e}; no module state is saved \
                     until edgeward restarts with a usable state directory",
                    dir.display()
                );
                say!("WARNING: {error}");
                self.snapshots.error = Some(error);
            }
        }
        let now = Instant::now();
        for slot in &self.slots {
            if let Some(interval) = slot.policy.as_ref().map(|p| p.snapshot_interval_ms) {
                if interval > 0 {
                    self.snapshots
                        .next
                        .entry(interval)
                        .or_insert(now + Duration::from_millis(interval));
                }
            }
        }
    }

    /// The durable state to hand to slot `i`'s next worker: the newest
    /// snapshot of the wasm it runs, or, once after an upgrade's switch,
    /// of the version before.
    pub(crate) fn restore_for(&mut self, i: usize) -> Option<(u64, Vec<u8>)> {
        let slot = &mut self.slots[i];
        let handover = slot.restore_from.take();
        let sha = handover
            .clone()
            .or_else(|| slot.running_sha().map(str::to_string))?;
        let store = self.snapshots.store.as_ref()?;
        let (record, note) = store.restore(&slot.name, &sha_bytes(&sha));
        match (&handover, record) {
            (Some(_), Some(r)) => say!(
                "module {}: handing snapshot epoch {} of the previous version to the new one",
                slot.name,
                r.epoch
            ),
            (None, _) => {
                if let Some(note) = note {
                    say!("module {}: {note}", slot.name);
                }
            }
            (Some(_), None) => {}
        }
        record.map(|r| (r.epoch, r.payload.clone()))
    }

    /// The newest acknowledged snapshot epoch of `module`.
    pub(crate) fn acknowledged_epoch(&self, module: &str) -> Option<u64> {
        self.snapshots.store.as_ref()?.acknowledged(module)
    }

    /// Asks slot `i` for a snapshot in the current round, or in a new one.
    pub(crate) fn ask_for_snapshot(&mut self, i: usize) {
        self.snapshot_then(vec![i], None);
    }

    /// Asks `slots` (those able to answer) for a snapshot, in the current
    /// round if one is running, else in a new one, and does `then` once
    /// that round is committed.
    pub(crate) fn snapshot_then(&mut self, slots: Vec<usize>, then: Option<AfterRound>) {
        let round = self.snapshots.round.get_or_insert_with(|| {
            let started = Instant::now();
            Round {
                waiting: BTreeSet::new(),
                started,
                deadline: started + ROUND_TIMEOUT,
                then: Vec::new(),
            }
        });
        round.then.extend(then);
        if self.snapshots.store.is_some() {
            for i in slots {
                if round.waiting.contains(&i) {
                    continue;
                }
                let slot = &mut self.slots[i];
                let state = slot.state;
                let Some(worker) = slot.worker.as_mut() else {
                    continue;
                };
                // A worker being stopped took its last snapshot already
                // (and after a reload its slot may hold the next policy).
                if state != State::Running || !worker.snapshots {
                    continue;
                }
                let asked = worker
                    .control
                    .as_ref()
                    .is_some_and(|c| frame::send(c, &ToWorker::Snapshot, &[]).is_ok());
                if asked {
                    // Only answers to questions are taken (`event_loop/messages.rs`).
                    worker.snapshots_asked += 1;
                    round.waiting.insert(i);
                }
            }
        }
        self.maybe_finish_round(false);
    }

    /// A worker answered (or can no longer answer).
    pub(crate) fn snapshot_answered(&mut self, i: usize, bytes: Option<Vec<u8>>) {
        if let (Some(bytes), Some(store)) = (bytes, self.snapshots.store.as_mut()) {
            let slot = &self.slots[i];
            if let Some(sha) = slot.running_sha() {
                if let Err(e) = store.stage(&slot.name, sha_bytes(sha), &bytes) {
                    say!("module {}: {e}", slot.name);
                }
            }
        }
        if let Some(round) = &mut self.snapshots.round {
            round.waiting.remove(&i);
        }
        self.maybe_finish_round(false);
    }

    /// Commits the round once every answer is in, or at its deadline.
    pub(crate) fn maybe_finish_round(&mut self, deadline_passed: bool) {
        let Some(round) = &self.snapshots.round else {
            return;
        };
        if !round.waiting.is_empty() && !deadline_passed {
            return;
        }
        let Some(Round { started, then, .. }) = self.snapshots.round.take() else {
            return;
        };
        let failure = self.commit_staged(started);
        for (client, i) in std::mem::take(&mut self.snapshots.clients) {
            let name = &self.slots[i].name;
            let epoch = self.acknowledged_epoch(name);
            let response = match (&failure, epoch) {
                (Some(e), _) => Response::refused(e.clone()),
                (None, Some(epoch)) => Response {
                    epoch: Some(epoch),
                    ..Response::done(format!("{name}: snapshot epoch {epoch} is durable"))
                },
                (None, None) => Response::refused(format!("{name} gave no snapshot (see the log)")),
            };
            self.answer(client, &response);
        }
        for action in then {
            match action {
                AfterRound::StopAll => self.stop_all_workers(),
                AfterRound::Reload(plan) => self.apply_reload(*plan),
                AfterRound::Upgrade(i) => self.upgrade_switch(i, failure.clone()),
                AfterRound::UpgradeCommit(i) => self.commit_upgrade(i, failure.clone()),
                AfterRound::GroupRestart(members) => self.restart_members(members),
            }
        }
    }

    /// Commits what the round staged. A run of failures is logged when it
    /// starts, every [`FAILURE_LOG_EVERY`] while it lasts and when it ends,
    /// not once per round; meanwhile it is `snapshot_error` in `status`.
    fn commit_staged(&mut self, asked_at: Instant) -> Option<String> {
        let store = self.snapshots.store.as_mut()?;
        let dir = self.options.state.join("snapshots");
        match store.commit() {
            Ok(acknowledged) => {
                if !acknowledged.is_empty() {
                    self.snapshots.commit_times.record(asked_at.elapsed());
                    self.totals
                        .snapshot_commit
                        .observe(asked_at.elapsed().as_secs_f64());
                }
                let now = std::time::SystemTime::now();
                for (module, _) in acknowledged {
                    self.snapshots.committed_at.insert(module, now);
                }
                if self.snapshots.failed_commits > 0 {
                    say!(
                        "snapshots durable again in {} after {} failed commits",
                        dir.display(),
                        self.snapshots.failed_commits
                    );
                }
                self.snapshots.failed_commits = 0;
                self.snapshots.failure_logged = None;
                self.snapshots.error = None;
                None
            }
            Err(e) => {
                let full = matches!(
                    &e,
                    crate::snapshot::StoreError::Io { source, .. }
                        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
                );
                let culprits = if full {
                    self.writers_without_quota_on(&dir)
                } else {
                    String::new()
                };
                let error = format!(
                    "snapshots not durable: {e} (in {}){culprits}; modules keep running and \
                     their state is retried every round: free space or repair the \
                     device",
                    dir.display()
                );
                let now = Instant::now();
                let quiet = self
                    .snapshots
                    .failure_logged
                    .is_some_and(|t| now < t + FAILURE_LOG_EVERY);
                if !quiet {
                    say!("{error}");
                    self.snapshots.failure_logged = Some(now);
                }
                self.snapshots.failed_commits += 1;
                self.snapshots.error = Some(error.clone());
                Some(error)
            }
        }
    }

    /// When the filesystem of `dir` is full: the modules that can write to
    /// it with no quota of their own (a rw dir on the same filesystem, not
    /// on a quota volume), as `"; modules writing to that filesystem
    /// without a quota: name (dir), …"`, or nothing.
    fn writers_without_quota_on(&self, dir: &std::path::Path) -> String {
        use std::os::unix::fs::MetadataExt;
        let Ok(device) = std::fs::metadata(dir).map(|m| m.dev()) else {
            return String::new();
        };
        let writers: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.state != State::Removed)
            .filter_map(|s| Some((s, s.policy.as_ref()?)))
            .flat_map(|(s, p)| {
                p.rw_dirs()
                    .filter(|d| std::fs::metadata(&d.host).is_ok_and(|m| m.dev() == device))
                    .map(move |d| format!("{} ({})", s.name, d.host.display()))
            })
            .collect();
        if writers.is_empty() {
            return String::new();
        }
        format!(
            "; the filesystem is full, and these modules write to it without a quota: {} \
             (give their rw dirs a quota_mib)",
            writers.join(", ")
        )
    }

    /// Starts the periodic rounds that are due; commits a round past its
    /// deadline.
    pub(crate) fn snapshot_deadlines(&mut self, now: Instant) {
        if self
            .snapshots
            .round
            .as_ref()
            .is_some_and(|r| now >= r.deadline)
        {
            self.maybe_finish_round(true);
        }
        if self.snapshots.round.is_some() || self.shutdown_deadline.is_some() {
            return;
        }
        let due: Vec<u64> = self
            .snapshots
            .next
            .iter()
            .filter(|(_, t)| now >= **t)
            .map(|(interval, _)| *interval)
            .collect();
        if due.is_empty() {
            return;
        }
        let mut slots = Vec::new();
        for interval in due {
            self.snapshots
                .next
                .insert(interval, now + Duration::from_millis(interval));
            slots.extend(self.slots.iter().enumerate().filter_map(|(i, s)| {
                (s.policy.as_ref()?.snapshot_interval_ms == interval).then_some(i)
            }));
        }
        self.snapshot_then(slots, None);
    }

    /// The earliest snapshot deadline.
    pub(crate) fn next_snapshot_deadline(&self) -> Option<Instant> {
        let round = self.snapshots.round.as_ref().map(|r| r.deadline);
        let next = if self.shutdown_deadline.is_some() {
            None
        } else {
            self.snapshots.next.values().min().copied()
        };
        match (round, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
