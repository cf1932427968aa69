//! The counters the event loop keeps for `/metrics`: why workers ended,
//! what was denied, what the supervisor did. Plain numbers in the loop's
//! own data (no atomics, no locks): the loop copies them into each
//! [`super::Published`] view.

use std::collections::BTreeMap;

use edgeward_ipc::control::{FaultKind, LatenessHistogram};

/// Why a worker ended: the `cause` label of
/// `edgeward_module_restarts_total`, and for the guest's own faults the
/// `kind` of `edgeward_module_traps_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndCause {
    /// A wasm trap (unreachable, out-of-bounds access, a Go or Rust panic,
    /// the wasm memory limit).
    Trap,
    /// A guest call ran past `call_budget_ms`.
    CallBudget,
    /// A system call outside the seccomp allowlist.
    Seccomp,
    /// The cgroup's memory limit: the kernel's OOM killer.
    Oom,
    /// The module could not be loaded or its `ew_init` failed.
    Load,
    /// A command module exited with a non-zero code.
    Exit,
    /// The worker died of a signal nobody in edgeward sent.
    Signal,
    /// No heartbeat within `watchdog_ms`, or not ready in time.
    Watchdog,
    /// It broke the control protocol, flooded the supervisor or closed its
    /// socket without exiting.
    Protocol,
    /// A sandbox step failed in the worker.
    Sandbox,
    /// Its ring was found corrupt: its producer was restarted.
    RingCorrupt,
    /// An operator or edgeward asked for it: `edgeward restart`, a reload,
    /// a restart group, an upgrade's switch.
    Requested,
}

impl EndCause {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::Trap => "trap",
            EndCause::CallBudget => "call_budget",
            EndCause::Seccomp => "seccomp",
            EndCause::Oom => "oom",
            EndCause::Load => "load",
            EndCause::Exit => "exit",
            EndCause::Signal => "signal",
            EndCause::Watchdog => "watchdog",
            EndCause::Protocol => "protocol",
            EndCause::Sandbox => "sandbox",
            EndCause::RingCorrupt => "ring_corrupt",
            EndCause::Requested => "requested",
        }
    }

    /// Every cause, in label order (the docs' table is pinned against it).
    pub const ALL: [EndCause; 12] = [
        EndCause::Trap,
        EndCause::CallBudget,
        EndCause::Seccomp,
        EndCause::Oom,
        EndCause::Load,
        EndCause::Exit,
        EndCause::Signal,
        EndCause::Watchdog,
        EndCause::Protocol,
        EndCause::Sandbox,
        EndCause::RingCorrupt,
        EndCause::Requested,
    ];

    /// The cause a worker's own fault report names.
    pub fn of_fault(kind: FaultKind) -> EndCause {
        match kind {
            FaultKind::Trap => EndCause::Trap,
            FaultKind::Budget => EndCause::CallBudget,
            FaultKind::Seccomp => EndCause::Seccomp,
            FaultKind::Load | FaultKind::InitFailed | FaultKind::Artifact => EndCause::Load,
            FaultKind::Exit => EndCause::Exit,
            FaultKind::Protocol => EndCause::Protocol,
            FaultKind::Sandbox => EndCause::Sandbox,
        }
    }

    /// Whether the guest itself failed at run time (counted in
    /// `edgeward_module_traps_total` under this kind).
    pub fn is_trap(self) -> bool {
        matches!(
            self,
            EndCause::Trap | EndCause::CallBudget | EndCause::Seccomp | EndCause::Oom
        )
    }
}

/// A capability a module asked for and was refused: the `kind` label of
/// `edgeward_module_denials_total` and the audit log's `denied` events
/// (`audit.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DenialKind {
    /// `channel()` or `send()` on a channel the policy does not grant.
    Channel,
    /// A file path outside the granted dirs, or a write to a read-only
    /// one (counted by the worker's `path_open`).
    Path,
    /// A guest call ran past its call budget (the call was stopped).
    CallBudget,
    /// A system call outside the seccomp allowlist (the worker was killed).
    Seccomp,
    /// A connection to an endpoint not in `[network] connect`.
    Network,
}

impl DenialKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialKind::Channel => "channel",
            DenialKind::Path => "path",
            DenialKind::CallBudget => "call_budget",
            DenialKind::Seccomp => "seccomp",
            DenialKind::Network => "network",
        }
    }

    /// Every kind, in label order.
    pub const ALL: [DenialKind; 5] = [
        DenialKind::Channel,
        DenialKind::Path,
        DenialKind::CallBudget,
        DenialKind::Seccomp,
        DenialKind::Network,
    ];
}

/// One module's counters, over all its workers since edgeward started.
#[derive(Debug, Clone, Default)]
pub struct ModuleCounters {
    /// Restarts by the cause of the worker's end.
    pub restarts: BTreeMap<EndCause, u64>,
    /// Guest failures at run time, by kind.
    pub traps: BTreeMap<EndCause, u64>,
    /// Refused capabilities, by kind.
    pub denials: BTreeMap<DenialKind, u64>,
    /// Output and log lines dropped by the module's line limit.
    pub log_dropped: u64,
    /// Tick lateness of its earlier workers (the current one's is in its
    /// heartbeat).
    pub lateness_before: LatenessHistogram,
}

/// The supervisor's own counters.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Reloads carried out (SIGHUP or `edgeward reload`).
    pub reloads: u64,
    /// Upgrades ended, by result (`committed`, `rolled_back`, `refused`).
    pub upgrades: BTreeMap<&'static str, u64>,
    /// Snapshot rounds that made something durable: from asking the
    /// modules to the flush's return, by bucket.
    pub snapshot_commit: SecondsHistogram,
}

/// A histogram in seconds with fixed bucket bounds.
#[derive(Debug, Clone)]
pub struct SecondsHistogram {
    /// Upper bounds, seconds.
    pub bounds: &'static [f64],
    /// Observations per bucket (the last: above every bound).
    pub counts: Vec<u64>,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

/// Bounds of `edgeward_snapshot_commit_seconds`: a round takes a few ms
/// on a healthy disk and up to seconds on a tired SD card.
pub const COMMIT_BUCKETS_S: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

impl Default for SecondsHistogram {
    fn default() -> Self {
        Self {
            bounds: &COMMIT_BUCKETS_S,
            counts: vec![0; COMMIT_BUCKETS_S.len() + 1],
            sum: 0.0,
        }
    }
}

impl SecondsHistogram {
    /// Counts one observation.
    pub fn observe(&mut self, seconds: f64) {
        let bucket = self.bounds.partition_point(|&b| b < seconds);
        self.counts[bucket] += 1;
        self.sum += seconds;
    }
}

/// Adds one to `map[key]`.
pub fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K) {
    *map.entry(key).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_kind_has_a_cause_and_labels_are_unique() {
        let mut labels: Vec<&str> = EndCause::ALL.iter().map(|c| c.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), EndCause::ALL.len());
        assert_eq!(EndCause::of_fault(FaultKind::Budget), EndCause::CallBudget);
        assert!(EndCause::of_fault(FaultKind::Seccomp).is_trap());
        assert!(!EndCause::Requested.is_trap());
    }

    #[test]
    fn histograms_put_each_observation_in_its_bucket() {
        let mut h = SecondsHistogram::default();
        h.observe(0.001); // on a bound: that bucket
        h.observe(0.003);
        h.observe(60.0);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[2], 1);
        assert_eq!(*h.counts.last().unwrap(), 1);
        assert!((h.sum - 60.004).abs() < 1e-9);
    }
}
