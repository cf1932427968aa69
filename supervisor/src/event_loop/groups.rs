//! Restart groups (`[group]` in a policy), after Erlang/OTP's supervisor
//! strategies: members of a group restart together when one of them fails.
//!
//! - `one_for_one` (the default, and a module with no `[group]`): only the
//!   failed module restarts.
//! - `one_for_all`: when a member fails and its restart policy restarts it,
//!   every other member restarts too.
//! - `rest_for_one`: the members started after it (in the start order,
//!   `after` first, then file-name order) restart too.
//!
//! The failed member follows its own backoff and intensity. The others are
//! asked for a snapshot first (one round), then stopped in the reverse of
//! the start order and started again at once, each from its latest
//! snapshot; those restarts do not count against their intensity. A member
//! that fails for good (intensity exceeded, `never`) takes no one with it.

use super::{say, Supervisor};
use crate::lifecycle::{State, Then};
use crate::policy::{GroupStrategy, Policy};
use crate::snapshot::rounds::AfterRound;

impl Supervisor {
    /// Slot `i` failed and its restart policy restarts it: the members of
    /// its group that its strategy names restart with it.
    pub(super) fn group_member_restarting(&mut self, i: usize) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let Some(group) = self.slots[i].policy.as_ref().and_then(|p| p.group.clone()) else {
            return;
        };
        let members = self.group_in_start_order(&group.name);
        let others: Vec<usize> = match group.strategy {
            GroupStrategy::OneForOne => return,
            GroupStrategy::OneForAll => members.into_iter().filter(|&j| j != i).collect(),
            GroupStrategy::RestForOne => members
                .into_iter()
                .skip_while(|&j| j != i)
                .skip(1)
                .collect(),
        };
        let restart: Vec<usize> = others
            .into_iter()
            .filter(|&j| self.restartable_member(j))
            .collect();
        if restart.is_empty() {
            return;
        }
        let names: Vec<&str> = restart
            .iter()
            .map(|&j| self.slots[j].name.as_str())
            .collect();
        say!(
            "module {}: restart group {} ({}): restarting {} with it",
            self.slots[i].name,
            group.name,
            group.strategy.as_str(),
            names.join(", ")
        );
        self.snapshot_then(restart.clone(), Some(AfterRound::GroupRestart(restart)));
    }

    /// Restarts these group members (their snapshot round is done).
    pub(crate) fn restart_members(&mut self, members: Vec<usize>) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let stops = members
            .into_iter()
            .filter(|&j| self.restartable_member(j))
            .map(|j| (j, Then::Restart))
            .collect();
        self.queue_stops(stops);
    }

    /// Whether group member `j` is restarted with the others: it runs (or
    /// starts), is not being removed, and no upgrade of it is in progress
    /// (the upgrade restarts it itself, and rolls back if it ends).
    fn restartable_member(&self, j: usize) -> bool {
        let slot = &self.slots[j];
        matches!(slot.state, State::Starting | State::Running)
            && slot.upgrade.is_none()
            && !self.being_removed(j)
            && self.queued_stop(j).is_none()
    }

    /// The members of group `name`, in start order.
    fn group_in_start_order(&self, name: &str) -> Vec<usize> {
        let policies: Vec<Option<&Policy>> = self
            .slots
            .iter()
            .map(|s| s.policy.as_ref().filter(|_| s.state != State::Removed))
            .collect();
        crate::policy::start_order(&policies)
            .into_iter()
            .filter(|&j| {
                policies[j]
                    .and_then(|p| p.group.as_ref())
                    .is_some_and(|g| g.name == name)
            })
            .collect()
    }
}
