//! The view `/metrics` and the status page serve, made once a second
//! from the loop's own data (`metrics/`).

use std::time::Instant;

use super::Supervisor;
use crate::lifecycle::State;
use crate::metrics::published::{ModuleFacts, Published, SnapshotFacts};

impl Supervisor {
    /// When the view is due next (`None` without `--metrics`).
    pub(crate) fn next_metrics_deadline(&self) -> Option<Instant> {
        self.metrics.as_ref().map(|(_, due)| *due)
    }

    /// Publishes a new view if one is due.
    pub(crate) fn publish_metrics(&mut self, now: Instant) {
        if self.metrics.as_ref().is_none_or(|(_, due)| now < *due) {
            return;
        }
        let view = self.metrics_view();
        if let Some((exporter, due)) = self.metrics.as_mut() {
            exporter.publish(view);
            *due = now + crate::metrics::PUBLISH_EVERY;
        }
    }

    fn metrics_view(&self) -> Published {
        let store = self.snapshots.store.as_ref();
        let modules = self
            .slots
            .iter()
            .filter(|s| s.state != State::Removed)
            .map(|slot| {
                let mut counters = slot.counters.clone();
                counters.log_dropped += slot
                    .worker
                    .as_ref()
                    .and_then(|w| w.output.as_ref())
                    .map_or(0, |o| o.dropped);
                let mut lateness = counters.lateness_before;
                if let Some(current) = slot.stats.tick_lateness {
                    lateness.add(&current.histogram);
                }
                ModuleFacts {
                    lateness: (lateness.count() > 0).then_some(lateness),
                    counters,
                    cgroup_dirs: slot
                        .cgroup
                        .as_ref()
                        .map_or_else(Vec::new, |c| c.dirs.clone()),
                    snapshot: store
                        .and_then(|s| s.newest(&slot.name))
                        .map(|(epoch, bytes)| SnapshotFacts {
                            epoch,
                            bytes: bytes as u64,
                            committed_at: self.snapshots.committed_at.get(&slot.name).copied(),
                        }),
                }
            })
            .collect();
        Published {
            status: self.status_report(),
            modules,
            totals: self.totals.clone(),
            made_at: std::time::SystemTime::now(),
        }
    }
}
