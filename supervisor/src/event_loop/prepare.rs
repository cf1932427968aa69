//! Getting a module ready to start, off the event loop: its read-write
//! dirs (a quota volume, ownership of the tree: `rw_dirs.rs`), prepared
//! once per policy and kept for its later workers; and its artifact, when
//! a worker could not load it (compiled again, `compile_cache.rs`).

use super::background::{AfterJob, Output};
use super::{say, Supervisor};
use crate::compile_cache::Outcome;
use crate::rw_dirs::{PreparedDirs, RwGrant};

impl Supervisor {
    /// Whether slot `i`'s rw dirs are ready for a worker. If not, starts
    /// preparing them on a job thread and returns `false`: the start goes
    /// on once they are ([`Supervisor::dirs_prepared`]).
    pub(crate) fn rw_dirs_ready(&mut self, i: usize) -> bool {
        let identity = self.sandbox.identity(i);
        let slot = &mut self.slots[i];
        let Some(policy) = &slot.policy else {
            return true;
        };
        let grants: Vec<RwGrant> = policy
            .rw_dirs()
            .map(|d| RwGrant {
                host: d.host.clone(),
                quota_mib: d.quota_mib,
            })
            .collect();
        let wanted = (grants, identity);
        if slot
            .rw_dirs
            .as_ref()
            .is_some_and(|d| d.for_grants == wanted)
        {
            return true;
        }
        if wanted.0.is_empty() && slot.rw_dirs.is_none() {
            return true;
        }
        if slot.preparing.is_some() {
            return false;
        }
        // The grants changed (a reload): what was prepared for the old ones goes.
        self.release_rw_dirs(i);
        if wanted.0.is_empty() {
            return true;
        }
        let volumes_dir = self.options.state.join("volumes").join(&self.slots[i].name);
        let quota_ok = self.quota.is_ok();
        let (grants, identity) = wanted;
        let started = self.in_background(
            "rw-dirs",
            move || {
                Output::Dirs(crate::rw_dirs::prepare(
                    &grants,
                    identity,
                    &volumes_dir,
                    quota_ok,
                ))
            },
            AfterJob::StartWithDirs(i),
        );
        let slot = &mut self.slots[i];
        match started {
            // The module stays `waiting` until they are ready.
            Ok(id) => slot.preparing = Some(id),
            Err(e) => self.start_failed(i, format!("cannot prepare its rw dirs: no thread: {e}")),
        }
        false
    }

    /// Slot `i`'s rw dirs were prepared (by job `id`), or could not be.
    pub(crate) fn dirs_prepared(
        &mut self,
        i: usize,
        id: crate::jobs::JobId,
        result: Result<PreparedDirs, String>,
    ) {
        let slot = &mut self.slots[i];
        if slot.preparing != Some(id) {
            // The module went (or its policy changed) meanwhile. Its open
            // dirs close here; a volume stays mounted for whoever asks next.
            return;
        }
        slot.preparing = None;
        match result {
            Ok(dirs) => {
                for note in &dirs.notes {
                    say!("module {}: {note}", slot.name);
                }
                for volume in &dirs.volumes {
                    say!(
                        "module {}: rw dir {} is its quota volume {}",
                        slot.name,
                        volume.mount_point.display(),
                        volume.image.display()
                    );
                }
                slot.rw_dirs = Some(dirs);
                self.spawn(i);
            }
            Err(reason) => self.start_failed(i, reason),
        }
    }

    /// Closes slot `i`'s prepared rw dirs and unmounts their volumes (the
    /// module is removed, its grants changed, or edgeward stops).
    pub(crate) fn release_rw_dirs(&mut self, i: usize) {
        if let Some(dirs) = self.slots[i].rw_dirs.take() {
            let PreparedDirs { fds, volumes, .. } = dirs;
            drop(fds);
            for volume in &volumes {
                crate::volume::unmount(volume);
            }
        }
    }

    /// Slot `i`'s worker could not load its artifact: it is deleted and
    /// compiled again (a power cut or a full disk can leave a damaged one);
    /// the module starts once that is done.
    pub(crate) fn artifact_failed(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let (Some(sha), Some(policy)) = (slot.running_sha().map(str::to_string), &slot.policy)
        else {
            return;
        };
        let wasm = if slot.upgraded.is_some() {
            self.upgrades.wasm_path(&slot.name, &sha)
        } else {
            policy.wasm.clone()
        };
        if let Err(e) = self.cache.invalidate(&sha) {
            say!(
                "module {}: cannot delete its damaged artifact: {e}",
                slot.name
            );
        }
        say!(
            "module {}: its compiled artifact could not be loaded; compiling {} again",
            slot.name,
            &sha[..sha.len().min(12)]
        );
        slot.artifact = None;
        if let Err(e) = self.compile_in_background(vec![(sha, wasm)], AfterJob::Recompiled(i)) {
            say!("module {}: cannot start compiling: {e}", self.slots[i].name);
        }
    }

    /// Slot `i`'s artifact was compiled again.
    pub(crate) fn recompiled(&mut self, i: usize, outcome: Outcome) {
        let slot = &mut self.slots[i];
        match outcome {
            Outcome::Hit(path) | Outcome::Compiled(path, _) => {
                slot.artifact = Some(path);
                // Starts it if it is waiting for its artifact.
                self.spawn(i);
            }
            Outcome::Failed(reason) => self.unstartable(i, format!("wasm {reason}")),
        }
    }
}
