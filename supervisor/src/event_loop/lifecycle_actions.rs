//! The one place a module's state changes: an event goes through the
//! lifecycle's transition function (`lifecycle.rs`), and the action it
//! returns is carried out here.

use std::time::{Duration, Instant};

use edgeward_ipc::control::ToWorker;
use edgeward_ipc::frame;

use super::{say, Supervisor};
use crate::lifecycle::{self, Action, Event, State, Then};
use crate::restart::Decision;

impl Supervisor {
    /// Feeds `event` to slot `i`'s lifecycle and carries out what follows.
    /// An event that does not apply in the module's state changes nothing.
    pub(crate) fn transition(&mut self, i: usize, event: Event) {
        let now = Instant::now();
        let slot = &mut self.slots[i];
        let tracker = slot.tracker.as_mut();
        let step = lifecycle::next(slot.state, event, now, |ending, ran_for| match tracker {
            Some(tracker) => tracker.decide(ending, ran_for, now),
            // No valid policy: nothing to restart.
            None => Decision::Fail {
                intensity_exceeded: false,
            },
        });
        let Some((state, action)) = step else {
            return;
        };
        slot.state = state;
        match action {
            Action::Nothing => {}
            Action::Spawn => {
                slot.restarts += 1;
                let cause = slot
                    .last_end
                    .take()
                    .unwrap_or(crate::metrics::counters::EndCause::Requested);
                crate::metrics::counters::bump(&mut slot.counters.restarts, cause);
                self.spawn(i);
            }
            Action::SendStop => {
                let sent = slot
                    .worker
                    .as_ref()
                    .and_then(|w| w.control.as_ref())
                    .is_some_and(|c| frame::send(c, &ToWorker::Stop, &[]).is_ok());
                if !sent {
                    // It can no longer be told: its deadline is now.
                    self.transition(i, Event::StopTimeout);
                }
            }
            Action::Kill => {
                if let Some(worker) = slot.worker.as_mut() {
                    worker.kill();
                }
            }
            Action::RollBack => {
                let reason = format!(
                    "the new version ended: {}",
                    slot.last_error.as_deref().unwrap_or("exited")
                );
                self.roll_back(i, reason);
            }
            Action::Restarting => self.group_member_restarting(i),
            Action::Down {
                gave_up_on_intensity,
            } => {
                self.drop_spare(i);
                let slot = &mut self.slots[i];
                if gave_up_on_intensity {
                    let rules = slot.policy.as_ref().map(|p| p.restart);
                    let (max, window) =
                        rules.map_or((0, 0), |r| (r.intensity_max, r.intensity_window_s));
                    let last = slot.last_error.take().unwrap_or_default();
                    slot.last_error = Some(format!(
                        "{last} (gave up: more than {max} restarts in {window} s; `edgeward restart {}` to try again)",
                        slot.name
                    ));
                }
                if slot.state == State::Failed {
                    say!(
                        "module {}: failed: {}",
                        slot.name,
                        slot.last_error.as_deref().unwrap_or("?")
                    );
                }
            }
            Action::Forget => self.forget_removed(i),
        }
    }

    /// Asks slot `i`'s worker to stop (Stop, SIGKILL at the stop timeout),
    /// then `then`; a module without a worker does `then` now.
    pub(crate) fn stop_module(&mut self, i: usize, then: Then) {
        // Told now: no longer queued.
        self.stop_queue.retain(|(j, _)| *j != i);
        let kill_at = Instant::now() + self.options.stop_timeout;
        self.transition(i, Event::Stop { then, kill_at });
    }

    /// Slot `i`'s worker ended (or none could be made: `ran_for` zero,
    /// `clean` false).
    pub(crate) fn ended(&mut self, i: usize, clean: bool, ran_for: Duration) {
        let on_trial = self.slots[i]
            .upgrade
            .as_ref()
            .is_some_and(|u| u.phase.switched());
        let ending = if clean {
            crate::restart::Ending::Clean
        } else {
            crate::restart::Ending::Failure
        };
        self.transition(
            i,
            Event::Ended {
                ending,
                ran_for,
                on_trial,
                shutting_down: self.shutdown_deadline.is_some(),
            },
        );
    }

    /// Slot `i` could not be started: a failure without a worker, which
    /// its restart policy decides about.
    pub(crate) fn start_failed(&mut self, i: usize, reason: String) {
        let slot = &mut self.slots[i];
        say!("module {}: {reason}", slot.name);
        slot.last_error = Some(reason);
        self.ended(i, false, Duration::ZERO);
    }

    /// Slot `i` can never start as it is (see [`Event::Unstartable`]).
    pub(crate) fn unstartable(&mut self, i: usize, reason: String) {
        // The transition says it ("failed: …").
        let slot = &mut self.slots[i];
        slot.last_error = Some(reason);
        slot.artifact = None;
        self.transition(i, Event::Unstartable);
    }
}
