//! The view of the gateway the event loop hands to the HTTP thread: a
//! copy, made at most once a second, so a scrape never touches the loop's
//! data and the loop never waits for a scrape.

use std::time::SystemTime;

use edgeward_ipc::control::LatenessHistogram;

use super::counters::{ModuleCounters, Totals};
use crate::status::StatusReport;

/// Everything `/metrics`, `/` and `/status.json` show.
#[derive(Debug, Clone)]
pub struct Published {
    /// What `edgeward status --json` would say now.
    pub status: StatusReport,
    /// Per module, in the order of `status.modules`.
    pub modules: Vec<ModuleFacts>,
    /// The supervisor's own counters.
    pub totals: Totals,
    /// When this view was made.
    pub made_at: SystemTime,
}

impl Published {
    /// An empty view, before the loop made the first one.
    pub fn empty() -> Published {
        Published {
            status: StatusReport::default(),
            modules: Vec::new(),
            totals: Totals::default(),
            made_at: SystemTime::now(),
        }
    }
}

/// What `/metrics` shows of a module beyond its `status` row.
#[derive(Debug, Clone, Default)]
pub struct ModuleFacts {
    /// Its counters over all its workers.
    pub counters: ModuleCounters,
    /// Tick lateness over all its workers; `None` if it never ticked.
    pub lateness: Option<LatenessHistogram>,
    /// Its cgroup's counters, if it has a cgroup.
    /// Its cgroup's directories (empty without one); which files count
    /// its memory and CPU is found at scrape time (`probe.rs`).
    pub cgroup_dirs: Vec<std::path::PathBuf>,
    /// Its newest durable snapshot.
    pub snapshot: Option<SnapshotFacts>,
}

/// A module's newest durable snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotFacts {
    /// Its epoch.
    pub epoch: u64,
    /// The guest's bytes.
    pub bytes: u64,
    /// When this run of edgeward made it durable (`None`: an earlier run
    /// did, its age is unknown).
    pub committed_at: Option<SystemTime>,
}
