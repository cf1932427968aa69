//! Audited denials: every capability a module asked for and was refused
//! that reaches edgeward (a channel not granted, a path outside its dirs,
//! a call over its budget, a system call outside the allowlist, a
//! connection not granted)
//! is counted (`edgeward_module_denials_total{kind}`) and logged as one
//! `denied` event, at most once a second per module and kind, with the
//! number of denials the limit held back since.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::metrics::counters::DenialKind;

/// At most one `denied` line per module and kind this often.
pub const AUDIT_LOG_EVERY: Duration = Duration::from_secs(1);

/// When each kind was last logged for one module, and how many denials of
/// that kind came since without a line.
#[derive(Debug, Clone, Default)]
pub struct AuditLimit {
    kinds: BTreeMap<DenialKind, (Instant, u64)>,
}

impl AuditLimit {
    /// `count` denials of `kind` happened at `now`. Returns `Some(held)`
    /// when a line is due (`held`: denials not logged before these),
    /// `None` when the limit holds this one back.
    pub fn admit(&mut self, kind: DenialKind, count: u64, now: Instant) -> Option<u64> {
        match self.kinds.get_mut(&kind) {
            Some((last, held)) if now.duration_since(*last) < AUDIT_LOG_EVERY => {
                *held += count;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                self.kinds.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_per_kind_with_the_count_held_back() {
        let mut limit = AuditLimit::default();
        let t0 = Instant::now();
        assert_eq!(limit.admit(DenialKind::Channel, 1, t0), Some(0));
        assert_eq!(
            limit.admit(DenialKind::Channel, 5, t0 + Duration::from_millis(10)),
            None
        );
        // Another kind has its own budget.
        assert_eq!(
            limit.admit(DenialKind::Network, 1, t0 + Duration::from_millis(20)),
            Some(0)
        );
        assert_eq!(
            limit.admit(DenialKind::Channel, 2, t0 + Duration::from_millis(500)),
            None
        );
        assert_eq!(
            limit.admit(DenialKind::Channel, 1, t0 + AUDIT_LOG_EVERY),
            Some(7)
        );
        assert_eq!(
            limit.admit(DenialKind::Channel, 1, t0 + 3 * AUDIT_LOG_EVERY),
            Some(0)
        );
    }
}
