//! The upgrade runbook (see `mod.rs` for its steps): each step is a
//! method of the event loop's `Supervisor`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeward_ipc::control::ToWorker;
use edgeward_ipc::frame;
use sha2::{Digest, Sha256};

use crate::compile_cache::Outcome;
use crate::control::clients::ClientId;
use crate::control::protocol::{Reply, Response};
use crate::event_loop::Supervisor;
use crate::lifecycle::{Event, Then};
use crate::log_sink::say;
use crate::slot::Slot;
use crate::slot::State;
use crate::snapshot::rounds::AfterRound;
use crate::upgrade::record::{UpgradeDir, UpgradeRecord};
use crate::upgrade::{Phase, Upgrade, HEALTH_ANSWER_GRACE};

/// The sha256 of `bytes`, hex.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Supervisor {
    /// Starts upgrading `module` to the wasm in `file`; the client is
    /// answered once the upgrade committed or rolled back.
    pub(crate) fn upgrade(
        &mut self,
        module: &str,
        file: &Path,
        health_ms: u64,
        client: ClientId,
    ) -> Reply {
        match self.prepare_upgrade(module, file, health_ms, client) {
            Ok(()) => Reply::Later,
            Err(refusal) => Reply::Now(Box::new(Response::refused(refusal))),
        }
    }

    /// Step 1: checks and keeps the new wasm, and starts compiling it.
    fn prepare_upgrade(
        &mut self,
        module: &str,
        file: &Path,
        health_ms: u64,
        client: ClientId,
    ) -> Result<(), String> {
        if self.shutdown_deadline.is_some() {
            return Err("edgeward is stopping".into());
        }
        if self.reload.busy() {
            return Err("a reload is being applied; try again once it is done".into());
        }
        let Some(i) = self.slot_named(module) else {
            return Err(format!("no module named \"{module}\""));
        };
        if self.being_removed(i) {
            return Err(format!(
                "module \"{module}\" is being removed by a reload; nothing changed"
            ));
        }
        let slot = &self.slots[i];
        if slot.upgrade.is_some() {
            return Err(format!("an upgrade of {module} is in progress"));
        }
        if slot.state != State::Running {
            return Err(format!(
                "module \"{module}\" is {}; only a running module is upgraded (change its policy and reload instead)",
                slot.state.as_str()
            ));
        }
        let (Some(policy), Some(from_sha), Some(from_artifact)) =
            (&slot.policy, slot.running_sha(), slot.artifact.clone())
        else {
            return Err(format!("module \"{module}\" has no valid policy"));
        };
        if policy.connector.is_some() {
            return Err(format!(
                "\"{module}\" is a connector: it runs edgeward-connector, not a wasm; change its policy and reload instead"
            ));
        }
        let from_sha = from_sha.to_string();
        let bytes = std::fs::read(file)
            .map_err(|e| format!("cannot read {}: {e}; nothing changed", file.display()))?;
        let to_sha = sha256_hex(&bytes);
        if to_sha == from_sha {
            return Err(format!(
                "{module} already runs {} (sha256 {}); nothing changed",
                file.display(),
                short(&to_sha)
            ));
        }
        let copy = self
            .upgrades
            .store_wasm(module, &to_sha, &bytes)
            .map_err(|e| {
                format!(
                    "cannot keep a copy of {} in the state dir: {e}; nothing changed",
                    file.display()
                )
            })?;
        let to_artifact = self.cache.path_for(&to_sha);
        self.compile_in_background(
            vec![(to_sha.clone(), copy)],
            crate::event_loop::background::AfterJob::UpgradeCompiled(i),
        )
        .map_err(|e| {
            format!(
                "cannot start compiling {}: {e}; nothing changed",
                file.display()
            )
        })?;
        self.slots[i].upgrade = Some(Box::new(Upgrade {
            from: (from_sha, from_artifact),
            to: (to_sha, to_artifact),
            window: Duration::from_millis(health_ms),
            client: Some(client),
            phase: Phase::Compile,
            handed: None,
            file: file.to_path_buf(),
        }));
        Ok(())
    }

    /// Step 1, once the new wasm is compiled (or not): records the upgrade
    /// as pending and starts the pre-upgrade snapshot round.
    pub(crate) fn upgrade_compiled(&mut self, i: usize, outcome: Outcome) {
        let slot = &self.slots[i];
        let Some(upgrade) = slot.upgrade.as_ref().filter(|u| u.phase == Phase::Compile) else {
            return;
        };
        let (name, file) = (slot.name.clone(), upgrade.file.clone());
        let (to_sha, from_sha) = (upgrade.to.0.clone(), upgrade.from.0.clone());
        let to_artifact = match outcome {
            Outcome::Hit(path) => path,
            Outcome::Compiled(path, ms) => {
                say!("module {name}: compiled {} in {ms} ms", short(&to_sha));
                path
            }
            Outcome::Failed(reason) => {
                return self.end_upgrade(
                    i,
                    Err(format!("{} {reason}; nothing changed", file.display())),
                );
            }
        };
        if self.shutdown_deadline.is_some() || self.slots[i].state != State::Running {
            return self.end_upgrade(
                i,
                Err("the module stopped while the new version compiled; nothing changed".into()),
            );
        }
        let policy_sha = self.slots[i]
            .policy
            .as_ref()
            .map_or_else(String::new, |p| p.wasm_sha256.clone());
        let record = UpgradeRecord {
            policy_sha256: policy_sha,
            active: from_sha.clone(),
            pending: Some(to_sha.clone()),
        };
        if let Err(e) = self.upgrades.write(&name, &record) {
            return self.end_upgrade(
                i,
                Err(format!(
                    "cannot record the upgrade in the state dir: {e}; nothing changed"
                )),
            );
        }
        let Some(upgrade) = self.slots[i].upgrade.as_mut() else {
            return;
        };
        say!(
            "module {name}: upgrading from {} to {} ({}): snapshot, switch, {} ms probation, health check",
            short(&from_sha),
            short(&to_sha),
            file.display(),
            upgrade.window.as_millis()
        );
        upgrade.to.1 = to_artifact;
        upgrade.phase = Phase::Snapshot;
        self.snapshot_then(vec![i], Some(AfterRound::Upgrade(i)));
    }

    /// Step 3, once the pre-upgrade round is committed (`failure`: why it
    /// was not).
    pub(crate) fn upgrade_switch(&mut self, i: usize, failure: Option<String>) {
        let capable = self.slots[i].worker.as_ref().is_some_and(|w| w.snapshots);
        let running = self.slots[i].state == State::Running;
        let refusal = if self.shutdown_deadline.is_some() {
            Some("edgeward is stopping".to_string())
        } else if !running {
            Some("the module stopped during the pre-upgrade snapshot".to_string())
        } else if !self.predecessors_ready(i) {
            // The new version would wait for them, with no deadline.
            Some(format!(
                "a module it starts after is not ready ({})",
                self.waiting_for(i).join(", ")
            ))
        } else if let (true, Some(failure)) = (capable, failure) {
            Some(format!(
                "the pre-upgrade snapshot is not durable: {failure}"
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return self.end_upgrade(i, Err(format!("{refusal}; nothing changed")));
        }
        let handed = self.acknowledged_epoch(&self.slots[i].name.clone());
        self.drop_spare(i);
        let slot = &mut self.slots[i];
        let Some(upgrade) = slot.upgrade.as_mut() else {
            return;
        };
        upgrade.phase = Phase::Switch;
        upgrade.handed = handed.filter(|_| capable);
        slot.restore_from = Some(upgrade.from.0.clone());
        slot.artifact = Some(upgrade.to.1.clone());
        let to_sha = upgrade.to.0.clone();
        slot.set_running_sha(&to_sha);
        self.stop_module(i, Then::Restart);
    }

    /// Step 4: the new worker is ready; its probation starts.
    pub(crate) fn upgrade_ready(&mut self, i: usize) {
        if let Some(upgrade) = self.slots[i].upgrade.as_mut() {
            if upgrade.phase == Phase::Switch {
                upgrade.phase = Phase::Probation(Instant::now() + upgrade.window);
            }
        }
    }

    /// Moves slot `i`'s upgrade on at its deadline: asks for health after
    /// the probation, rolls back when the answer is late.
    pub(crate) fn upgrade_deadline(&mut self, i: usize, now: Instant) {
        let budget = self.slots[i]
            .policy
            .as_ref()
            .map_or(0, |p| u64::from(p.resources.call_budget_ms));
        let slot = &mut self.slots[i];
        let Some(upgrade) = slot.upgrade.as_mut() else {
            return;
        };
        match upgrade.phase {
            Phase::Probation(t) if now >= t => {
                let asked = slot
                    .worker
                    .as_ref()
                    .and_then(|w| w.control.as_ref())
                    .is_some_and(|c| frame::send(c, &ToWorker::Health, &[]).is_ok());
                if asked {
                    upgrade.phase =
                        Phase::Health(now + Duration::from_millis(budget) + HEALTH_ANSWER_GRACE);
                } else {
                    self.roll_back(
                        i,
                        "the new version could not be asked for its health".into(),
                    );
                }
            }
            Phase::Health(t) if now >= t => {
                self.roll_back(i, "the new version did not answer the health check".into());
            }
            _ => {}
        }
    }

    /// The new worker answered `Health`.
    pub(crate) fn upgrade_health(&mut self, i: usize, code: i32) {
        let asked = self.slots[i]
            .upgrade
            .as_ref()
            .is_some_and(|u| matches!(u.phase, Phase::Health(_)));
        if !asked {
            return;
        }
        if code != 0 {
            return self.roll_back(
                i,
                format!("the new version is unhealthy (ew_health returned {code})"),
            );
        }
        if let Some(upgrade) = self.slots[i].upgrade.as_mut() {
            upgrade.phase = Phase::Commit;
        }
        self.snapshot_then(vec![i], Some(AfterRound::UpgradeCommit(i)));
    }

    /// Step 5, once the new version's first snapshot round is committed
    /// (`failure`: why it was not): the new version becomes the active
    /// slot, durably.
    pub(crate) fn commit_upgrade(&mut self, i: usize, failure: Option<String>) {
        let slot = &self.slots[i];
        let capable = slot.worker.as_ref().is_some_and(|w| w.snapshots);
        if !slot
            .upgrade
            .as_ref()
            .is_some_and(|u| u.phase == Phase::Commit)
        {
            return;
        }
        if let (true, Some(failure)) = (capable, failure) {
            return self.roll_back(
                i,
                format!("the new version's first snapshot is not durable: {failure}"),
            );
        }
        let (Some(upgrade), Some(policy)) = (&slot.upgrade, &slot.policy) else {
            return;
        };
        let written = write_settled(
            &self.upgrades,
            &slot.name,
            &upgrade.to.0,
            &policy.wasm_sha256,
        );
        if let Err(e) = written {
            return self.roll_back(i, format!("cannot record the switch in the state dir: {e}"));
        }
        let handed = upgrade.handed.map_or_else(
            || "no state".to_string(),
            |e| format!("the state of snapshot epoch {e}"),
        );
        let message = format!(
            "{}: upgraded to {} with {handed}; it passed its probation and health check",
            slot.name,
            short(&upgrade.to.0)
        );
        crate::metrics::counters::bump(&mut self.totals.upgrades, "committed");
        self.end_upgrade(i, Ok(message));
        self.ensure_spare(i);
    }

    /// Rolls slot `i`'s upgrade back: the old version runs again from the
    /// pre-upgrade snapshot.
    pub(crate) fn roll_back(&mut self, i: usize, reason: String) {
        let Some(upgrade) = self.slots[i].upgrade.as_ref() else {
            return;
        };
        let (from_sha, from_artifact) = upgrade.from.clone();
        crate::metrics::counters::bump(&mut self.totals.upgrades, "rolled_back");
        self.settle_upgrade_record(i, &from_sha);
        let slot = &mut self.slots[i];
        slot.artifact = Some(from_artifact);
        slot.set_running_sha(&from_sha);
        slot.restore_from = None;
        let message = format!("upgrade rolled back: {reason}");
        let respawn = match slot.worker.as_mut() {
            Some(worker) => {
                worker.killed_because = Some(message.clone());
                worker.end_cause = Some(crate::metrics::counters::EndCause::Requested);
                false
            }
            None => {
                slot.last_error = Some(message.clone());
                true
            }
        };
        if !respawn {
            self.transition(
                i,
                Event::Kill {
                    then: Then::Restart,
                },
            );
        }
        let name = self.slots[i].name.clone();
        self.end_upgrade(
            i,
            Err(format!(
                "{name}: {message}; {} runs again from its pre-upgrade state",
                short(&from_sha)
            )),
        );
        if respawn {
            self.stop_module(i, Then::Restart);
        }
    }

    /// edgeward is stopping during slot `i`'s upgrade: the client is told;
    /// the record keeps `pending` once the switch began, so the next start
    /// runs the previous version.
    pub(crate) fn abandon_upgrade(&mut self, i: usize) {
        let switched = self.slots[i]
            .upgrade
            .as_ref()
            .is_some_and(|u| u.phase.switched());
        self.end_upgrade(
            i,
            Err(if switched {
                "edgeward is stopping; the upgrade is abandoned and the next start runs the previous version".into()
            } else {
                "edgeward is stopping; nothing changed".into()
            }),
        );
    }

    /// Ends slot `i`'s upgrade and answers its client.
    fn end_upgrade(&mut self, i: usize, outcome: Result<String, String>) {
        let Some(mut upgrade) = self.slots[i].upgrade.take() else {
            return;
        };
        if outcome.is_err() && !upgrade.phase.switched() {
            self.settle_upgrade_record(i, &upgrade.from.0);
        }
        let name = &self.slots[i].name;
        let response = match outcome {
            Ok(message) => {
                say!("module {message}");
                Response {
                    epoch: upgrade.handed,
                    ..Response::done(message)
                }
            }
            Err(reason) => {
                say!("module {name}: upgrade not done: {reason}");
                Response::refused(reason)
            }
        };
        if let Some(client) = upgrade.client.take() {
            self.answer(client, &response);
        }
        self.run_deferred_reload();
    }

    /// Slot `i`'s record with no upgrade pending and `active` running.
    fn settle_upgrade_record(&self, i: usize, active: &str) {
        let slot = &self.slots[i];
        let policy_sha = slot.policy.as_ref().map_or("", |p| p.wasm_sha256.as_str());
        settle_record(&self.upgrades, &slot.name, active, policy_sha);
    }
}

/// The first 12 hex digits of a sha256 (all of a shorter string).
fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// At start (and when a reload adds or changes the module): puts `slot` on
/// the active slot of its upgrade record, discarding an upgrade a crash
/// cut short, or drops a record its policy overrode. Returns the
/// (sha256, wasm) to compile for it when that is not the policy's wasm.
pub(crate) fn adopt_record(upgrades: &UpgradeDir, slot: &mut Slot) -> Option<(String, PathBuf)> {
    let policy_sha = slot.policy.as_ref()?.wasm_sha256.clone();
    let name = slot.name.clone();
    let record = match upgrades.read(&name) {
        Ok(Some(record)) => record,
        Ok(None) => return None,
        Err(e) => {
            say!("module {name}: WARNING: upgrade record {e}; running the policy's wasm");
            return None;
        }
    };
    if record.policy_sha256 != policy_sha {
        say!(
            "module {name}: its policy names another wasm than when it was upgraded; running the policy's wasm"
        );
        if let Err(e) = upgrades.remove(&name) {
            say!("module {name}: cannot remove its upgrade record: {e}");
        }
        return None;
    }
    if let Some(pending) = &record.pending {
        say!(
            "module {name}: the upgrade to {} was cut short; rolled back to {}",
            short(pending),
            short(&record.active)
        );
        settle_record(upgrades, &name, &record.active, &policy_sha);
    }
    if record.active == policy_sha {
        return None;
    }
    let wasm = upgrades.wasm_path(&name, &record.active);
    if !wasm.is_file() {
        say!(
            "module {name}: WARNING: its upgraded wasm {} is missing; running the policy's wasm",
            wasm.display()
        );
        let _ = upgrades.remove(&name);
        return None;
    }
    slot.set_running_sha(&record.active);
    Some((record.active, wasm))
}

/// The (sha256, wasm) of the upgraded version `module` runs under a policy
/// whose wasm is `policy_sha`, if its record says so (read only; see
/// [`adopt_record`] for the changes).
pub(crate) fn upgraded_wasm(
    upgrades: &UpgradeDir,
    module: &str,
    policy_sha: &str,
) -> Option<(String, PathBuf)> {
    let record = upgrades.read(module).ok()??;
    (record.policy_sha256 == policy_sha && record.active != policy_sha).then(|| {
        (
            record.active.clone(),
            upgrades.wasm_path(module, &record.active),
        )
    })
}

/// Writes a module's record with `active` running and no upgrade pending:
/// removed when that is the policy's own wasm.
///
/// # Errors
/// The record could not be written or removed (the previous one stands).
fn write_settled(
    upgrades: &UpgradeDir,
    module: &str,
    active: &str,
    policy_sha: &str,
) -> std::io::Result<()> {
    if active == policy_sha {
        upgrades.remove(module)
    } else {
        upgrades.write(
            module,
            &UpgradeRecord {
                policy_sha256: policy_sha.to_string(),
                active: active.to_string(),
                pending: None,
            },
        )
    }
}

/// [`write_settled`] after a refusal, a rollback or a crash, where a failure
/// is only logged: the record then still says `pending`, and the next start
/// rolls back to the active version.
fn settle_record(upgrades: &UpgradeDir, module: &str, active: &str, policy_sha: &str) {
    if let Err(e) = write_settled(upgrades, module, active, policy_sha) {
        say!(
            "module {module}: cannot update its upgrade record: {e} (the next start rolls back to the active version)"
        );
    }
}
