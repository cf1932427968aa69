//! Slow work the loop hands to a job thread (`jobs.rs`), and what it does
//! with the result. A job only computes; every change to the supervisor's
//! state happens here, on the loop, once the job is done.

use std::path::PathBuf;

use super::{say, Supervisor};
use crate::compile_cache::Outcome;
use crate::rw_dirs::PreparedDirs;

/// What a job produced.
pub(crate) enum Output {
    /// Compile outcomes, one per wasm asked for, in order.
    Compiled(Vec<Outcome>),
    /// A module's read-write dirs, ready to hand to its workers, or why not.
    Dirs(Result<PreparedDirs, String>),
    /// A connector's `[network] connect` (as resolved) and its addresses,
    /// or why a name did not resolve.
    Grants(
        Vec<String>,
        Result<crate::net_grant::resolve::ResolvedGrants, String>,
    ),
}

/// What to do with a job's result.
pub(crate) enum AfterJob {
    /// Finish this reload's plan.
    Reload(Box<super::reload::ReloadDraft>),
    /// Go on with slot `.0`'s upgrade.
    UpgradeCompiled(usize),
    /// Start slot `.0`'s worker, its rw dirs being ready.
    StartWithDirs(usize),
    /// Slot `.0`'s artifact failed to load and was compiled again.
    Recompiled(usize),
    /// Start slot `.0`'s connector, its grants being resolved.
    StartWithGrants(usize),
}

impl Supervisor {
    /// Compiles `wanted` (sha256, wasm) on a job thread; `then` runs with
    /// the outcomes.
    ///
    /// # Errors
    /// No thread could be started.
    pub(crate) fn compile_in_background(
        &mut self,
        wanted: Vec<(String, PathBuf)>,
        then: AfterJob,
    ) -> std::io::Result<()> {
        let cache = self.cache.clone();
        let worker_bin = self.options.worker_bin.clone();
        let id = self.jobs.start("compile", move || {
            Output::Compiled(cache.ensure(&worker_bin, &wanted))
        })?;
        self.after_jobs.insert(id, then);
        Ok(())
    }

    /// Runs `work` on a job thread; `then` runs with its output.
    ///
    /// # Errors
    /// No thread could be started.
    pub(crate) fn in_background(
        &mut self,
        name: &str,
        work: impl FnOnce() -> Output + Send + 'static,
        then: AfterJob,
    ) -> std::io::Result<crate::jobs::JobId> {
        let id = self.jobs.start(name, work)?;
        self.after_jobs.insert(id, then);
        Ok(id)
    }

    /// Jobs finished: carries on with what each was for.
    pub(crate) fn on_jobs(&mut self) {
        for (id, output) in self.jobs.finished() {
            let Some(then) = self.after_jobs.remove(&id) else {
                continue;
            };
            match (then, output) {
                (AfterJob::Reload(draft), Output::Compiled(outcomes)) => {
                    self.reload_compiled(*draft, outcomes);
                }
                (AfterJob::UpgradeCompiled(i), Output::Compiled(mut outcomes)) => {
                    let outcome = outcomes
                        .pop()
                        .unwrap_or_else(|| Outcome::Failed("was not compiled".into()));
                    self.upgrade_compiled(i, outcome);
                }
                (AfterJob::Recompiled(i), Output::Compiled(mut outcomes)) => {
                    let outcome = outcomes
                        .pop()
                        .unwrap_or_else(|| Outcome::Failed("was not compiled".into()));
                    self.recompiled(i, outcome);
                }
                (AfterJob::StartWithDirs(i), Output::Dirs(result)) => {
                    self.dirs_prepared(i, id, result);
                }
                (AfterJob::StartWithGrants(i), Output::Grants(connect, result)) => {
                    self.grants_resolved(i, id, connect, result);
                }
                (_, _) => say!("internal: a background job returned an unexpected result"),
            }
        }
    }
}
