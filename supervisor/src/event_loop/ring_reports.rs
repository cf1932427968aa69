//! Ring corruption reports: checked against the supervisor's own mapping
//! before anyone is restarted for them, and ring resets once a peer is gone.

use std::time::Instant;

use edgeward_ipc::control::ToWorker;
use edgeward_ipc::frame::{self};

use super::{say, Supervisor};

impl Supervisor {
    /// Slot `i` found ring `id` corrupt and stopped using it.
    ///
    /// A report is evidence, not a verdict: either end can write anything
    /// into the ring, so the report alone cannot say who broke it, and a
    /// false one must not get an innocent peer killed.
    ///
    /// - Only the consumer's report can restart the other end. The
    ///   supervisor checks the ring in its own mapping first: every frame
    ///   from the consumer's position to the producer's. Not confirmed: the
    ///   reporter is told to resume (`RingReset`, nothing changed) and the
    ///   report counts against it; more than [`super::FALSE_REPORTS_MAX`]
    ///   within a minute is a protocol violation.
    /// - Confirmed: the producer is restarted at once (its restart is not
    ///   counted against its restart intensity: the consumer may have
    ///   scribbled on its own inbox), then the ring is reset. At most once
    ///   per ring per [`super::RING_ACTION_EVERY`]; beyond that the ring
    ///   stays stopped until the producer ends for another reason.
    /// - A producer's report (an impossible read position) stops its end of
    ///   the ring; the ring is reset when the consumer next ends.
    pub(super) fn ring_corrupt(&mut self, i: usize, id: u32, seq: u64, what: &str) {
        let now = Instant::now();
        let Some(ring) = self.wiring.ring_mut(id) else {
            return self.violation(i, format!("corruption report for unknown ring {id}"));
        };
        if ring.publisher != i && ring.subscriber != i {
            return self.violation(i, format!("corruption report for ring {id}, not its own"));
        }
        let (channel, publisher, subscriber) =
            (ring.channel.clone(), ring.publisher, ring.subscriber);
        let (writer, reader) = (
            self.slots[publisher].name.clone(),
            self.slots[subscriber].name.clone(),
        );
        if publisher == i {
            ring.corrupt += 1;
            ring.reset_pending_for = Some(i);
            return say!(
                "ring corrupt: channel {channel} to {reader} ({what}; reported by its publisher \
                 {writer}): {writer} stops writing to it; the ring is reset when {reader} next restarts"
            );
        }
        let found = match ring.verify() {
            Ok(intact) => {
                let window = std::time::Duration::from_secs(60);
                let reports = &mut self.slots[i].false_reports;
                reports.retain(|t| now.duration_since(*t) < window);
                reports.push_back(now);
                let count = reports.len();
                say!(
                    "module {reader}: reported ring channel {channel} from {writer} corrupt at seq \
                     {seq} ({what}), but the supervisor finds its {intact} waiting frame(s) intact: \
                     not acted on ({count} unconfirmed report(s) in 60 s)"
                );
                if count > super::FALSE_REPORTS_MAX {
                    return self.violation(
                        i,
                        format!("{count} ring corruption reports within 60 s that the supervisor could not confirm"),
                    );
                }
                self.tell_ring_reset(i, id);
                return;
            }
            Err(e) => e.to_string(),
        };
        ring.corrupt += 1;
        ring.reset_pending_for = Some(i);
        let message = format!(
            "ring corrupt: channel {channel} from {writer} ({found}; reported by {reader} at seq \
             {seq}, confirmed by the supervisor)"
        );
        if ring
            .acted_at
            .is_some_and(|t| now.duration_since(t) < super::RING_ACTION_EVERY)
        {
            return say!(
                "{message}; {writer} was restarted for this ring less than {} s ago, so not \
                 again: the ring stays stopped until {writer} next restarts",
                super::RING_ACTION_EVERY.as_secs()
            );
        }
        ring.acted_at = Some(now);
        say!("{message}; restarting {writer}");
        self.slots[i].last_error = Some(message.clone());
        match self.slots[publisher].worker.as_mut() {
            Some(worker) => {
                worker.killed_because = Some(format!("restarted: {message}"));
                worker.end_cause = Some(crate::metrics::counters::EndCause::RingCorrupt);
                self.transition(
                    publisher,
                    crate::lifecycle::Event::Kill {
                        then: crate::lifecycle::Then::Restart,
                    },
                );
            }
            // The other end is not running: nothing can write meanwhile.
            None => self.reset_rings_of_dead(publisher),
        }
    }

    /// Tells slot `i`'s worker to use ring `id` again.
    pub(super) fn tell_ring_reset(&self, i: usize, id: u32) {
        let control = self.slots[i]
            .worker
            .as_ref()
            .and_then(|w| w.control.as_ref());
        if let Some(control) = control {
            let _ = frame::send(control, &ToWorker::RingReset { ring: id }, &[]);
        }
    }

    /// Slot `dead` has no worker now: reset the rings whose corruption
    /// waited for that, and tell the reporting ends.
    pub(super) fn reset_rings_of_dead(&mut self, dead: usize) {
        for ring in &mut self.wiring.rings {
            let Some(reporter) = ring.reset_pending_for else {
                continue;
            };
            if ring.peer_of(reporter) != dead {
                continue;
            }
            ring.reset();
            let control = self.slots[reporter]
                .worker
                .as_ref()
                .and_then(|w| w.control.as_ref());
            if let Some(control) = control {
                let _ = frame::send(control, &ToWorker::RingReset { ring: ring.id }, &[]);
            }
        }
    }
}
