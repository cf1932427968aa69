//! `edgeward reload` and SIGHUP: read the policy directory again and apply
//! only the difference.
//!
//! A reload runs in two phases:
//!
//! 1. **Plan** ([`Supervisor::reload`], then [`Supervisor::reload_compiled`]):
//!    every policy file is loaded and compared with the running one. A
//!    module is *added*, *changed*, *removed* or left alone. A new or
//!    changed wasm is compiled off the event loop (`jobs.rs`), and the plan
//!    is finished once it is; a policy that does not validate, a wasm that
//!    does not compile and a channel set that cannot be wired are
//!    *rejected*: the running module keeps its previous policy, untouched.
//!    The rings the new policies call for are compared with the present
//!    ones: a running module that would gain or lose a ring is restarted
//!    too, since a worker receives its ring fds only in its `Init`. A policy
//!    directory with no policies at all is refused unless the request says
//!    `allow_empty`: it would stop every module.
//! 2. **Apply** (once the final snapshots are durable,
//!    [`Supervisor::apply_reload`]): the removed and restarted modules are
//!    asked for a snapshot in one round first, so a removed module that comes
//!    back later, and a restarted one, resume from the state they had. Then
//!    the slots take their new policies, the rings are rewired (unchanged
//!    rings keep their messages), removed modules are stopped, restarted
//!    ones stopped and started again, and added ones started.
//!
//! Modules whose policy and rings are unchanged are never touched: same
//! worker, same pid, same rings.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::{say, Supervisor};
use crate::compile_cache::Outcome;
use crate::control::clients::ClientId;
use crate::control::protocol::{Reply, Response};
use crate::lifecycle::Then;
use crate::policy::{self, Policy};
use crate::restart::RestartTracker;
use crate::slot::{Slot, State};
use crate::snapshot::rounds::AfterRound;

/// What a reload will do, decided before the final snapshot round.
#[derive(Debug, Default)]
pub(crate) struct ReloadPlan {
    /// Slots whose policy file is gone.
    removed: Vec<usize>,
    /// Slots taking a new policy, with its compiled artifact.
    changed: Vec<(usize, Policy, PathBuf)>,
    /// New modules and the slot each gets.
    added: Vec<(usize, Added)>,
    /// Slots with a running worker to restart (changed, or rings changed).
    restart: BTreeSet<usize>,
}

/// A reload whose new wasm is being compiled: the plan so far.
#[derive(Debug)]
pub(crate) struct ReloadDraft {
    plan: ReloadPlan,
    rejected: Vec<String>,
    /// Slots taking a new or changed policy, whose wasm is compiled.
    to_compile: Vec<(usize, Policy)>,
    /// The number of slots once the added modules have theirs.
    slots: usize,
    /// The `edgeward reload` client, answered with the plan.
    client: Option<ClientId>,
}

/// Where reloading stands: one reload is applied at a time, and one asked
/// for meanwhile (or during an upgrade) runs once it is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ReloadProgress {
    /// No reload in progress or asked for.
    #[default]
    Idle,
    /// Asked for during an upgrade: runs when the upgrade ends.
    Deferred,
    /// Compiling its wasm or waiting for its final snapshot round.
    Applying,
    /// Applying, and asked for again meanwhile.
    ApplyingThenAgain,
}

impl ReloadProgress {
    /// A reload was asked for (`upgrading`: an upgrade is in progress).
    /// Returns the next progress and whether it starts now.
    pub(crate) fn asked(self, upgrading: bool) -> (Self, bool) {
        match self {
            Self::Applying | Self::ApplyingThenAgain => (Self::ApplyingThenAgain, false),
            Self::Idle | Self::Deferred if upgrading => (Self::Deferred, false),
            Self::Idle | Self::Deferred => (self, true),
        }
    }

    /// A reload started compiling or its final snapshot round.
    pub(crate) fn applying(self) -> Self {
        match self {
            Self::Deferred | Self::ApplyingThenAgain => Self::ApplyingThenAgain,
            Self::Idle | Self::Applying => Self::Applying,
        }
    }

    /// The reload was applied (or given up).
    pub(crate) fn applied(self) -> Self {
        match self {
            Self::ApplyingThenAgain | Self::Deferred => Self::Deferred,
            Self::Applying | Self::Idle => Self::Idle,
        }
    }

    /// Whether a reload is being applied.
    pub(crate) fn busy(self) -> bool {
        matches!(self, Self::Applying | Self::ApplyingThenAgain)
    }

    /// Takes a deferred reload, if one waits and none is being applied.
    pub(crate) fn take_deferred(self) -> (Self, bool) {
        match self {
            Self::Deferred => (Self::Idle, true),
            other => (other, false),
        }
    }
}

/// A module new to this reload.
#[derive(Debug)]
enum Added {
    /// Valid and compiled.
    Ready(Box<Policy>, PathBuf),
    /// Cannot run: why (shown as its `last_error`, like at start-up).
    Failed(String, String),
}

impl Supervisor {
    /// Starts a reload: reads the policy directory and compiles what is new
    /// (off the loop); [`Supervisor::reload_compiled`] finishes the plan
    /// and answers `client`. Answered now when it cannot start.
    pub(crate) fn reload(&mut self, client: Option<ClientId>, allow_empty: bool) -> Reply {
        let now = |response: Response| Reply::Now(Box::new(response));
        if self.shutdown_deadline.is_some() {
            return now(Response::refused("edgeward is stopping"));
        }
        let upgrading = self.slots.iter().any(|s| s.upgrade.is_some());
        let (progress, start_now) = self.reload.asked(upgrading);
        self.reload = progress;
        if !start_now {
            return now(Response::done(
                "a reload or an upgrade is being applied; the policy directory is read once it is done",
            ));
        }
        let loaded = match policy::load_dir(&self.options.policies) {
            Ok(loaded) => loaded,
            Err(e) => {
                let why = format!(
                    "cannot read policy directory {}: {e}; nothing changed",
                    self.options.policies.display()
                );
                say!("reload: {why}");
                return now(Response::refused(why));
            }
        };
        let running = self.slots.iter().any(|s| s.state != State::Removed);
        if loaded.is_empty() && running && !allow_empty {
            let why = format!(
                "policy directory {} has no policies (*.toml): applying it would stop every module; \
                 nothing changed (`edgeward reload --allow-empty` stops them all)",
                self.options.policies.display()
            );
            say!("reload: {why}");
            return now(Response::refused(why));
        }
        // A running module keeps its rw dirs against a newcomer's claim.
        let running: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.state != State::Removed && s.policy.is_some())
            .map(|s| s.name.clone())
            .collect();
        let first: Vec<&str> = running.iter().map(String::as_str).collect();
        let loaded = policy::check_across(loaded, &self.options.state, &first);
        let mut plan = ReloadPlan::default();
        let mut rejected: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut to_compile: Vec<(usize, Policy)> = Vec::new();
        let mut next_new_slot = self.slots.len();
        for l in loaded {
            seen.insert(l.name.clone());
            match (self.slot_named(&l.name), l.result) {
                (Some(i), Ok(policy)) => {
                    let unchanged = self.slots[i]
                        .policy
                        .as_ref()
                        .is_some_and(|old| old.same_as(&policy));
                    if !unchanged || self.being_removed(i) {
                        to_compile.push((i, policy));
                    } else if self.slots[i]
                        .last_error
                        .as_ref()
                        .is_some_and(|e| e.starts_with("reload rejected"))
                    {
                        // The file is back to what runs.
                        self.slots[i].last_error = None;
                    }
                }
                (Some(i), Err(errors)) => {
                    let reason = join_errors(&errors);
                    let slot = &mut self.slots[i];
                    if slot.policy.is_some() {
                        rejected.push(format!(
                            "{}: {reason} (the module keeps its previous policy)",
                            l.name
                        ));
                        slot.last_error = Some(format!(
                            "reload rejected {}: {reason}; still running the previous policy",
                            l.file.display()
                        ));
                    } else {
                        rejected.push(format!("{}: {reason}", l.name));
                        slot.last_error = Some(format!("invalid policy: {reason}"));
                    }
                }
                (None, result) => {
                    let i = self
                        .slots
                        .iter()
                        .position(|s| s.state == State::Removed && s.name == l.name)
                        .unwrap_or_else(|| {
                            next_new_slot += 1;
                            next_new_slot - 1
                        });
                    match result {
                        Ok(policy) => to_compile.push((i, policy)),
                        Err(errors) => {
                            let reason = join_errors(&errors);
                            rejected.push(format!("{}: {reason}", l.name));
                            plan.added.push((
                                i,
                                Added::Failed(l.name, format!("invalid policy: {reason}")),
                            ));
                        }
                    }
                }
            }
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.state != State::Removed && !self.being_removed(i) && !seen.contains(&slot.name)
            {
                plan.removed.push(i);
            }
        }
        let draft = ReloadDraft {
            plan,
            rejected,
            to_compile,
            slots: next_new_slot,
            client,
        };
        if draft.to_compile.is_empty() {
            self.reload_compiled(draft, Vec::new());
            return Reply::Later;
        }
        // Compile what is new, and an upgraded wasm a changed policy keeps,
        // off the loop; workers, rings and clients go on meanwhile.
        let mut pairs: Vec<(String, PathBuf)> = draft
            .to_compile
            .iter()
            .map(|(_, p)| (p.wasm_sha256.clone(), p.wasm.clone()))
            .collect();
        pairs.extend(draft.to_compile.iter().filter_map(|(_, p)| {
            crate::upgrade::runbook::upgraded_wasm(&self.upgrades, &p.name, &p.wasm_sha256)
        }));
        self.reload = self.reload.applying();
        if let Err(e) =
            self.compile_in_background(pairs, super::background::AfterJob::Reload(Box::new(draft)))
        {
            self.reload = self.reload.applied();
            let why = format!("cannot start compiling: {e}; nothing changed");
            say!("reload: {why}");
            return now(Response::refused(why));
        }
        Reply::Later
    }

    /// Finishes a reload's plan once its wasm is compiled (`outcomes`, one
    /// per `draft.to_compile` entry, then those of upgraded wasm), answers
    /// its client and starts applying it.
    pub(crate) fn reload_compiled(&mut self, draft: ReloadDraft, outcomes: Vec<Outcome>) {
        self.reload = self.reload.applied();
        let ReloadDraft {
            mut plan,
            mut rejected,
            to_compile,
            slots: next_new_slot,
            client,
        } = draft;
        if self.shutdown_deadline.is_some() {
            if let Some(client) = client {
                self.answer(client, &Response::refused("edgeward is stopping"));
            }
            return;
        }
        let mut outcomes = outcomes.into_iter();
        for (i, policy) in to_compile {
            let outcome = outcomes
                .next()
                .unwrap_or_else(|| Outcome::Failed("was not compiled".into()));
            let artifact = match outcome {
                Outcome::Hit(path) => path,
                Outcome::Compiled(path, ms) => {
                    say!(
                        "module {}: compiled {} in {ms} ms",
                        policy.name,
                        &policy.wasm_sha256[..12]
                    );
                    path
                }
                Outcome::Failed(reason) => {
                    let reason = format!("wasm {} {reason}", policy.wasm.display());
                    if i < self.slots.len() && self.slots[i].policy.is_some() {
                        rejected.push(format!(
                            "{}: {reason} (the module keeps its previous policy)",
                            policy.name
                        ));
                        self.slots[i].last_error = Some(format!("reload rejected: {reason}"));
                    } else {
                        rejected.push(format!("{}: {reason}", policy.name));
                        plan.added.push((i, Added::Failed(policy.name, reason)));
                    }
                    continue;
                }
            };
            if i < self.slots.len() && self.slots[i].state != State::Removed {
                plan.changed.push((i, policy, artifact));
            } else {
                plan.added
                    .push((i, Added::Ready(Box::new(policy), artifact)));
            }
        }

        // Wire the new policy set on paper; a module that cannot be wired
        // is rejected like an invalid policy.
        let keys = loop {
            let candidate = self.candidate_policies(&plan, next_new_slot);
            let (keys, errors) = crate::channels::plan(&candidate);
            let mut reverted = false;
            for error in errors {
                if let Some(at) = plan.changed.iter().position(|(i, ..)| *i == error.slot) {
                    let (i, policy, _) = plan.changed.remove(at);
                    rejected.push(format!(
                        "{}: {} (the module keeps its previous policy)",
                        policy.name, error.reason
                    ));
                    self.slots[i].last_error = Some(format!("reload rejected: {}", error.reason));
                    reverted = true;
                } else if let Some(at) = plan
                    .added
                    .iter()
                    .position(|(i, a)| *i == error.slot && matches!(a, Added::Ready(..)))
                {
                    let (i, added) = plan.added.remove(at);
                    if let Added::Ready(policy, _) = added {
                        rejected.push(format!("{}: {}", policy.name, error.reason));
                        plan.added
                            .push((i, Added::Failed(policy.name, error.reason)));
                    }
                    reverted = true;
                }
            }
            if !reverted {
                break keys;
            }
        };
        let touched = self.wiring.touched_by(&keys);
        let running = |i: &usize| self.slots.get(*i).is_some_and(|s| s.worker.is_some());
        plan.restart = plan
            .changed
            .iter()
            .map(|(i, ..)| *i)
            .chain(touched)
            .filter(|i| running(i) && !plan.removed.contains(i))
            .collect();

        let summary = self.describe_plan(&plan, &rejected);
        say!("reload: {summary}");
        let asked: Vec<usize> = plan.removed.iter().chain(&plan.restart).copied().collect();
        self.reload = self.reload.applying();
        self.snapshot_then(asked, Some(AfterRound::Reload(Box::new(plan))));
        if let Some(client) = client {
            let response = if rejected.is_empty() {
                Response::done(summary)
            } else {
                Response::refused(summary)
            };
            self.answer(client, &response);
        }
    }

    /// The policy of every slot as the plan would leave it (`None`: no valid
    /// policy, or removed), with room for `slots` slots.
    fn candidate_policies<'a>(
        &'a self,
        plan: &'a ReloadPlan,
        slots: usize,
    ) -> Vec<Option<&'a Policy>> {
        let mut candidate: Vec<Option<&Policy>> = (0..slots)
            .map(|i| {
                self.slots
                    .get(i)
                    .filter(|s| s.state != State::Removed && !self.being_removed(i))
                    .and_then(|s| s.policy.as_ref())
            })
            .collect();
        for &i in &plan.removed {
            candidate[i] = None;
        }
        for (i, policy, _) in &plan.changed {
            candidate[*i] = Some(policy);
        }
        for (i, added) in &plan.added {
            candidate[*i] = match added {
                Added::Ready(policy, _) => Some(policy),
                Added::Failed(..) => None,
            };
        }
        candidate
    }

    /// The plan in one line, for the log and the `reload` client.
    fn describe_plan(&self, plan: &ReloadPlan, rejected: &[String]) -> String {
        let name_of = |i: usize| self.slots.get(i).map_or("?", |s| s.name.as_str());
        let mut parts = Vec::new();
        let mut list = |what: &str, mut names: Vec<String>| {
            names.sort();
            if !names.is_empty() {
                parts.push(format!("{what} {}", names.join(", ")));
            }
        };
        list(
            "added",
            plan.added
                .iter()
                .filter_map(|(_, a)| match a {
                    Added::Ready(p, _) => Some(p.name.clone()),
                    Added::Failed(..) => None,
                })
                .collect(),
        );
        list(
            "changed",
            plan.changed
                .iter()
                .map(|(_, p, _)| p.name.clone())
                .collect(),
        );
        list(
            "removed",
            plan.removed
                .iter()
                .map(|&i| name_of(i).to_string())
                .collect(),
        );
        list(
            "restarting",
            plan.restart
                .iter()
                .map(|&i| name_of(i).to_string())
                .collect(),
        );
        if parts.is_empty() {
            parts.push("no change".into());
        }
        let mut summary = parts.join("; ");
        if !rejected.is_empty() {
            summary.push_str(&format!("; rejected: {}", rejected.join("; ")));
        }
        summary
    }

    /// Applies a reload once its final snapshots are durable.
    pub(crate) fn apply_reload(&mut self, plan: ReloadPlan) {
        self.reload = self.reload.applied();
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.totals.reloads += 1;
        let ReloadPlan {
            removed,
            changed,
            added,
            restart,
        } = plan;
        let mut start = Vec::new();
        let mut idle_changed = Vec::new();
        let mut adopted = Vec::new();
        for (i, added) in added {
            let slot = match added {
                Added::Ready(policy, artifact) => {
                    let mut slot = Slot::new(*policy);
                    slot.artifact = Some(artifact);
                    start.push(i);
                    adopted.push(i);
                    slot
                }
                Added::Failed(name, reason) => Slot::failed(name, reason),
            };
            if i < self.slots.len() {
                // A removed module's slot: keep its generation counter, so
                // no event of its old workers can pass for a new one's.
                let generation = self.slots[i].generation;
                self.slots[i] = Slot { generation, ..slot };
            } else {
                self.slots.push(slot);
            }
        }
        for i in adopted {
            self.follow_upgrade_record(i);
        }
        for (i, policy, artifact) in changed {
            if self.slots[i].state == State::Removed {
                // Removed by an earlier reload, and its worker ended while
                // this one was prepared: it comes back as a new module.
                let generation = self.slots[i].generation;
                let mut slot = Slot::new(policy);
                slot.artifact = Some(artifact);
                self.slots[i] = Slot { generation, ..slot };
                self.follow_upgrade_record(i);
                start.push(i);
                continue;
            }
            if self.being_removed(i) {
                // Removed by an earlier reload and back now: it restarts
                // instead (its worker may still be stopping).
                self.stop_module(i, Then::Restart);
            }
            self.drop_spare(i);
            let slot = &mut self.slots[i];
            slot.limits_changed = slot.policy.as_ref().is_none_or(|old| {
                old.resources != policy.resources || old.restart.spare != policy.restart.spare
            });
            slot.tracker = Some(RestartTracker::new(policy.restart));
            slot.policy = Some(policy);
            slot.artifact = Some(artifact);
            slot.upgraded = None;
            self.follow_upgrade_record(i);
            let slot = &mut self.slots[i];
            slot.last_error = None;
            if slot.worker.is_none() {
                idle_changed.push(i);
            }
        }
        for &i in &removed {
            self.drop_spare(i);
        }
        // Removed modules' policies no longer count, even while their
        // workers stop.
        let gone: Vec<bool> = (0..self.slots.len())
            .map(|i| removed.contains(&i) || self.being_removed(i))
            .collect();
        let wiring_errors = {
            let policies: Vec<Option<&Policy>> = self
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| s.policy.as_ref().filter(|_| !gone[i]))
                .collect();
            self.wiring.rewire(&policies)
        };
        for error in wiring_errors {
            // Only a system refusal (memfd, eventfd) gets here: the plan
            // checked the ring counts.
            let slot = &mut self.slots[error.slot];
            say!("module {}: {}", slot.name, error.reason);
            slot.last_error = Some(error.reason);
            slot.artifact = None;
        }
        let now = std::time::Instant::now();
        for (i, slot) in self.slots.iter().enumerate() {
            let interval = slot.policy.as_ref().map_or(0, |p| p.snapshot_interval_ms);
            if interval > 0 && !gone[i] {
                self.snapshots
                    .next
                    .entry(interval)
                    .or_insert(now + Duration::from_millis(interval));
            }
        }
        // Stopped in the reverse of the start order (`order.rs`); those
        // restarted start again once the modules they start after are
        // ready, like the added ones.
        let stops = restart
            .iter()
            .map(|&i| (i, Then::Restart))
            .chain(removed.iter().map(|&i| (i, Then::Remove)))
            .collect();
        self.queue_stops(stops);
        for i in idle_changed {
            self.stop_module(i, Then::Restart);
        }
        for i in start {
            self.spawn(i);
        }
        self.run_deferred_reload();
    }

    /// Reloads (SIGHUP, or a reload deferred), with the outcome in the log
    /// (the plan and its rejections are logged when it is made).
    pub(crate) fn reload_and_log(&mut self) {
        if let Reply::Now(response) = self.reload(None, false) {
            if !response.ok {
                say!("reload: {}", response.error.unwrap_or_default());
            }
        }
    }

    /// Runs the reload asked for while another reload or an upgrade was
    /// being applied, if one was.
    pub(crate) fn run_deferred_reload(&mut self) {
        let (progress, deferred) = self.reload.take_deferred();
        self.reload = progress;
        if deferred {
            self.reload_and_log();
        }
    }

    /// Slot `i` (re)takes its policy in a reload: an upgrade made under the
    /// same policy wasm stays in force (its artifact, compiled with the
    /// reload's, replaces the policy's); one made under another is dropped.
    fn follow_upgrade_record(&mut self, i: usize) {
        let Some((sha, _)) =
            crate::upgrade::runbook::adopt_record(&self.upgrades, &mut self.slots[i])
        else {
            return;
        };
        let artifact = self.cache.path_for(&sha);
        let slot = &mut self.slots[i];
        if artifact.is_file() {
            slot.artifact = Some(artifact);
        } else {
            say!(
                "module {}: its upgraded wasm did not compile; running the policy's wasm",
                slot.name
            );
            slot.upgraded = None;
        }
    }

    /// Slot `i`'s module was removed by a reload and has no worker left:
    /// its cgroup goes, its slot stays for a module of that name added
    /// later (same uid; its snapshots stay in the store).
    pub(crate) fn forget_removed(&mut self, i: usize) {
        self.drop_spare(i);
        self.release_rw_dirs(i);
        self.slots[i].preparing = None;
        let slot = &mut self.slots[i];
        if let Some(cgroup) = slot.cgroup.take() {
            self.sandbox.remove_cgroup(&cgroup);
        }
        debug_assert_eq!(slot.state, State::Removed);
        slot.policy = None;
        slot.artifact = None;
        slot.tracker = None;
        say!("module {}: removed", slot.name);
    }

    /// The slot of the module called `name`, unless it was removed.
    pub(crate) fn slot_named(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.name == name && s.state != State::Removed)
    }
}

/// Every error of a policy file in one line.
fn join_errors(errors: &[policy::PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::ReloadProgress as P;

    #[test]
    fn one_reload_at_a_time_and_one_asked_meanwhile_runs_after() {
        // Idle: starts now, unless an upgrade runs.
        assert_eq!(P::Idle.asked(false), (P::Idle, true));
        assert_eq!(P::Idle.asked(true), (P::Deferred, false));
        assert_eq!(P::Deferred.asked(false), (P::Deferred, true));
        assert_eq!(P::Deferred.asked(true), (P::Deferred, false));
        // While one is applied, another waits for it.
        assert_eq!(P::Applying.asked(false), (P::ApplyingThenAgain, false));
        assert_eq!(
            P::ApplyingThenAgain.asked(true),
            (P::ApplyingThenAgain, false)
        );
        assert_eq!(P::Idle.applying(), P::Applying);
        assert_eq!(P::Deferred.applying(), P::ApplyingThenAgain);
        assert_eq!(P::Applying.applying(), P::Applying);
        assert_eq!(P::ApplyingThenAgain.applying(), P::ApplyingThenAgain);
        assert_eq!(P::Applying.applied(), P::Idle);
        assert_eq!(P::ApplyingThenAgain.applied(), P::Deferred);
        assert_eq!(P::Idle.applied(), P::Idle);
        assert_eq!(P::Deferred.applied(), P::Deferred);
        for p in [P::Applying, P::ApplyingThenAgain] {
            assert!(p.busy());
            assert_eq!(p.take_deferred(), (p, false));
        }
        for p in [P::Idle, P::Deferred] {
            assert!(!p.busy());
        }
        assert_eq!(P::Deferred.take_deferred(), (P::Idle, true));
        assert_eq!(P::Idle.take_deferred(), (P::Idle, false));
    }
}
