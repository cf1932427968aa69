//! `edgeward upgrade MODULE FILE.wasm`: a new version of a running module,
//! switched to with its state, health-checked, and rolled back on failure.
//!
//! The runbook, one step per phase:
//!
//! 1. **Prepare** ([`Supervisor::upgrade`], [`Phase::Compile`]): read the
//!    file, keep a durable copy as the module's other slot, compile it off
//!    the event loop (a wasm that does not validate is refused here;
//!    nothing changed), and record it as `pending` (`record.rs`).
//! 2. **Snapshot**: a snapshot round for the module ([`Phase::Snapshot`]);
//!    the upgrade goes on once it is durable, and is refused if the commit
//!    failed.
//! 3. **Switch** ([`Phase::Switch`]): the old worker stops; the new wasm
//!    starts and is handed the snapshot just taken (the one explicit
//!    crossing of a snapshot from one wasm to another).
//! 4. **Probation** ([`Phase::Probation`]): once the new worker is ready it
//!    must run for the health window without ending, then answer `Health`
//!    with 0 ([`Phase::Health`]; `ew_health`, 0 when not exported).
//! 5. **Commit** ([`Phase::Commit`]): the new version's first snapshot is
//!    made durable (so a crash after the switch restores the new version
//!    from its own state), then the record names the new wasm active,
//!    durably, and the client is told. Any failure from step 3 on rolls
//!    back: the new worker is killed, the old wasm starts again from the
//!    same pre-upgrade snapshot, the record drops `pending`, and the client
//!    gets the reason.
//!
//! A supervisor crash anywhere leaves a record whose `pending` the next
//! start discards: the old version runs, from its newest snapshot, which the
//! store keeps however many snapshots the new version took (`store.rs`,
//! `prune`).
//!
//! - `mod.rs`: an upgrade in progress and its phases (data only);
//! - `runbook.rs`: the steps above, as the event loop runs them;
//! - `record.rs`: the durable record of a module's active and pending
//!   versions, which a restart of edgeward follows.

pub(crate) mod record;
pub(crate) mod runbook;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::control::clients::ClientId;

/// Longest wait for the `Health` answer, beyond the call budget.
pub(crate) const HEALTH_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// An upgrade in progress.
pub(crate) struct Upgrade {
    /// sha256 and artifact of the version that ran before.
    pub(crate) from: (String, PathBuf),
    /// sha256 and artifact of the version being tried.
    pub(crate) to: (String, PathBuf),
    /// How long the new version must run before its health check.
    pub(crate) window: Duration,
    /// The `edgeward upgrade` client, answered at the end.
    pub(crate) client: Option<ClientId>,
    /// Where the upgrade is.
    pub(crate) phase: Phase,
    /// The snapshot epoch handed to the new version, if any.
    pub(crate) handed: Option<u64>,
    /// The file the operator named (for messages).
    pub(crate) file: PathBuf,
}

/// The phases of an upgrade (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The new wasm is being compiled (off the event loop).
    Compile,
    /// Waiting for the pre-upgrade snapshot round.
    Snapshot,
    /// The old worker is stopping, or the new one is starting.
    Switch,
    /// The new worker is ready; it must run until then.
    Probation(Instant),
    /// `Health` was asked; the answer is due by then.
    Health(Instant),
    /// Healthy; waiting for the new version's first snapshot round.
    Commit,
}

impl Upgrade {
    /// The instant the supervisor must look at this upgrade again.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Probation(t) | Phase::Health(t) => Some(t),
            Phase::Compile | Phase::Snapshot | Phase::Switch | Phase::Commit => None,
        }
    }
}

impl Phase {
    /// Whether the old worker was (or is being) replaced: from here on a
    /// failure rolls back, before it nothing has changed.
    pub(crate) fn switched(self) -> bool {
        !matches!(self, Phase::Compile | Phase::Snapshot)
    }
}
