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

use super::Supervisor;
use crate::lifecycle::Then;
use crate::slot::State;

impl Supervisor {
    /// Whether the modules slot `i` starts after are ready.
    pub(super) fn predecessors_ready(&self, i: usize) -> bool {
        let Some(policy) = &self.slots[i].policy else {
            return true;
        };
        policy.after.iter().all(|name| match self.slot_named(name) {
            None => true,
            Some(j) => matches!(self.slots[j].state, State::Running | State::Stopped),
        })
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
                self.slot_named(name).is_some_and(|j| {
                    !matches!(self.slots[j].state, State::Running | State::Stopped)
                })
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
    /// the start order. A module queued again takes the later `Then`.
    pub(crate) fn queue_stops(&mut self, stops: Vec<(usize, Then)>) {
        for (i, then) in stops {
            self.stop_queue.retain(|(j, _)| *j != i);
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

    /// A worker is gone: the queued modules it held back may stop now.
    pub(super) fn after_worker_gone(&mut self, _i: usize) {
        self.advance_stop_queue();
    }

    /// Tells each queued module that nothing holds back any more to stop.
    fn advance_stop_queue(&mut self) {
        loop {
            let free: Vec<(usize, Then)> = self
                .stop_queue
                .iter()
                .copied()
                .filter(|&(i, _)| !self.stop_held_back(i))
                .collect();
            if free.is_empty() {
                return;
            }
            self.stop_queue
                .retain(|(i, _)| !free.iter().any(|(j, _)| j == i));
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
                && (matches!(s.state, State::Stopping { .. })
                    || self.stop_queue.iter().any(|(k, _)| *k == j))
                && s.policy.as_ref().is_some_and(|p| p.after.contains(name))
        })
    }
}
