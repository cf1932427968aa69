//! Start order and stop order (`after = [...]` in `[module]`).
//!
//! A module starts once every module it names in `after` is ready
//! (`running`, or `stopped` after it ran: a command that finished its work
//! cleanly); until then it is `waiting`. A module named in no policy any
//! more (removed) is not waited for. Each time a module becomes ready, the
//! waiting modules that start after it are tried again.
//!
//! Stops go the other way: the modules to stop (all of them when edgeward
//! stops; the removed and restarted ones in a reload; the members of a
//! restart group) are queued, and a queued module is told to stop once no
//! module that starts after it and is stopping too still has a worker. The
//! queue is a plan, not a state: a queued module is still `running` until
//! it is told. edgeward's shutdown deadline (`--stop-timeout-ms`) covers
//! the whole chain; what is left at it is SIGKILLed.

use super::{say, Supervisor};
use crate::lifecycle::Then;
use crate::slot::State;

impl Supervisor {
    /// Whether the modules slot `i` starts after are ready. One queued
    /// to stop is not: it is about to go.
    pub(crate) fn predecessors_ready(&self, i: usize) -> bool {
        self.waiting_for(i).is_empty()
    }

    /// Whether slot `j` counts as ready for the modules that start after it.
    fn ready_for_successors(&self, j: usize) -> bool {
        matches!(self.slots[j].state, State::Running | State::Stopped)
            && self.queued_stop(j).is_none()
    }

    /// What slot `i` is queued to stop for, if it is.
    pub(crate) fn queued_stop(&self, i: usize) -> Option<Then> {
        self.stop_queue
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, then)| *then)
    }

    /// Takes slot `i` out of the stop queue; returns what it was queued
    /// for.
    pub(crate) fn unqueue_stop(&mut self, i: usize) -> Option<Then> {
        let then = self.queued_stop(i);
        self.stop_queue.retain(|(j, _)| *j != i);
        then
    }

    /// Whether slot `i` is on its way out: stopping for removal, or queued
    /// to.
    pub(crate) fn being_removed(&self, i: usize) -> bool {
        self.slots[i].state.being_removed() || self.queued_stop(i) == Some(Then::Remove)
    }

    /// The names slot `i` still waits for (for `status`).
    pub(crate) fn waiting_for(&self, i: usize) -> Vec<String> {
        let Some(policy) = &self.slots[i].policy else {
            return Vec::new();
        };
        policy
            .after
            .iter()
            .filter(|name| {
                self.slot_named(name)
                    .is_some_and(|j| !self.ready_for_successors(j))
            })
            .cloned()
            .collect()
    }

    /// Slot `i` became ready: the waiting modules that start after it are
    /// tried again.
    pub(super) fn start_successors(&mut self, i: usize) {
        let name = self.slots[i].name.clone();
        for j in 0..self.slots.len() {
            let follows = self.slots[j]
                .policy
                .as_ref()
                .is_some_and(|p| p.after.contains(&name));
            if follows && self.slots[j].state == State::Waiting {
                self.spawn(j);
            }
        }
    }

    /// Queues these modules to stop, each then its `Then`, in the reverse of
    /// the start order. A module without a worker does its `Then` now. A
    /// module queued again keeps a removal or a shutdown over a restart
    /// (a re-added module is taken out of the queue by the reload first).
    pub(crate) fn queue_stops(&mut self, stops: Vec<(usize, Then)>) {
        for (i, then) in stops {
            if self.slots[i].worker.is_none() {
                // Told now (which also takes it out of the queue).
                self.stop_module(i, then);
                continue;
            }
            let then = match self.unqueue_stop(i) {
                Some(queued @ (Then::Remove | Then::Shutdown)) if then == Then::Restart => queued,
                _ => then,
            };
            self.stop_queue.push((i, then));
        }
        self.advance_stop_queue();
    }

    /// Stops every module with a worker, in the reverse of the start order
    /// (edgeward is stopping).
    pub(super) fn stop_in_reverse_order(&mut self) {
        let all = (0..self.slots.len())
            .filter(|&i| self.slots[i].worker.is_some())
            .map(|i| (i, Then::Shutdown))
            .collect();
        self.queue_stops(all);
    }

    /// Slot `i`'s worker is gone. If it was queued to stop (it ended on
    /// its own while held back), what it was queued for happens now, after
    /// its end went through its lifecycle; and the queued modules it held
    /// back may stop now.
    pub(super) fn after_worker_gone(&mut self, i: usize) {
        if let Some(then) = self.queued_stop(i) {
            self.stop_module(i, then);
        }
        self.advance_stop_queue();
    }

    /// Tells each queued module that nothing holds back any more to stop.
    fn advance_stop_queue(&mut self) {
        loop {
            let mut free: Vec<(usize, Then)> = self
                .stop_queue
                .iter()
                .copied()
                .filter(|&(i, _)| !self.stop_held_back(i))
                .collect();
            if free.is_empty() {
                let Some(&(first, then)) = self.stop_queue.first() else {
                    return;
                };
                if self
                    .slots
                    .iter()
                    .any(|s| s.worker.is_some() && matches!(s.state, State::Stopping { .. }))
                {
                    // Something is on its way down: its end moves the queue.
                    return;
                }
                // Queued modules hold each other back and nothing is
                // stopping: a cycle through `after` (possible only through
                // a policy a reload kept after rejecting its new file).
                // Break it at the first queued.
                say!(
                    "module {}: stop order: the modules queued to stop wait for each other (an `after` cycle); stopping it first",
                    self.slots[first].name
                );
                free.push((first, then));
            }
            // Each is taken out of the queue as it is told.
            for (i, then) in free {
                self.stop_module(i, then);
            }
        }
    }

    /// Whether a module that starts after slot `i` and is stopping (or
    /// queued to) still has a worker.
    fn stop_held_back(&self, i: usize) -> bool {
        let name = &self.slots[i].name;
        self.slots.iter().enumerate().any(|(j, s)| {
            j != i
                && s.worker.is_some()
                && (matches!(s.state, State::Stopping { .. }) || self.queued_stop(j).is_some())
                && s.policy.as_ref().is_some_and(|p| p.after.contains(name))
        })
    }
}
