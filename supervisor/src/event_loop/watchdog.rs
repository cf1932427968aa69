//! The liveness watchdog (`[restart] watchdog_ms`).
//!
//! Every message a ready worker sends counts as a sign of life (its
//! heartbeats, logs, snapshot answers). A worker silent for half its
//! `watchdog_ms` (earlier when its call budget needs it: [`ping_after`])
//! is sent `Ping`, which a live worker answers with a
//! heartbeat between guest calls (a reactor) or at once (a command's
//! control thread). One silent for all of it — `SIGSTOP`ped, stuck in a
//! host call, deadlocked — is killed, `last_error` says
//! `watchdog: no heartbeat for N ms`, and its restart policy (backoff,
//! intensity) decides the rest. A module busy within its call budget
//! answers in time: the policy keeps `watchdog_ms` at least three call
//! budgets (`policy/validate.rs`). And a worker is killed only once a ping
//! went unanswered for the rest of the period: if the supervisor itself was
//! held up (a slow disk under a snapshot commit), its workers' silence is
//! not theirs, and they get their ping first.
//!
//! The fork server is watched the same way, with
//! [`FORK_SERVER_WATCHDOG`]: one that does not answer is killed, the
//! starts it still owed fail (and are retried by their modules' restart
//! policies), and the next start makes a new one.

use std::time::{Duration, Instant};

use edgeward_ipc::control::ToWorker;
use edgeward_ipc::frame;

use super::{say, Supervisor};
use crate::slot::State;

/// When a silent worker is pinged: at half its watchdog period, but early
/// enough that a reactor in the middle of a call still answers in time. A
/// reactor answers between guest calls, so a ping that arrives just after
/// a call began waits for that call and, at worst, one more (a message
/// delivered before the loop looks at its control socket): 2.5 budgets
/// before the deadline leave it half a budget of slack at the smallest
/// watchdog the policy allows (`WATCHDOG_BUDGETS`, three budgets). Never
/// sooner than a tenth of the period, so a busy module is not pinged after
/// every message.
pub(crate) fn ping_after(period: Duration, budget: Duration) -> Duration {
    (period / 2)
        .min(period.saturating_sub(budget * 5 / 2))
        .max(period / 10)
}

/// How long the fork server may stay silent (pinged at half of it).
pub(crate) const FORK_SERVER_WATCHDOG: Duration = Duration::from_millis(2000);

impl Supervisor {
    /// Slot `i`'s watchdog period and when to ping it, if it is watched
    /// now: a ready worker, not stopping, with a watchdog.
    fn watched(&self, i: usize) -> Option<(Duration, Duration)> {
        let slot = &self.slots[i];
        let policy = slot.policy.as_ref()?;
        let worker = slot.worker.as_ref()?;
        let ms = policy.restart.watchdog_ms;
        (ms > 0 && slot.state == State::Running && worker.killed_because.is_none()).then(|| {
            let period = Duration::from_millis(ms);
            let budget = Duration::from_millis(u64::from(policy.resources.call_budget_ms));
            (period, ping_after(period, budget))
        })
    }

    /// The next instant the watchdog must look (a ping or a kill is due).
    pub(super) fn next_watchdog_deadline(&self) -> Option<Instant> {
        let modules = (0..self.slots.len()).filter_map(|i| {
            let (period, ping) = self.watched(i)?;
            let worker = self.slots[i].worker.as_ref()?;
            Some(match worker.pinged_at {
                Some(at) => (worker.last_heard + period).max(at + (period - ping)),
                None => worker.last_heard + ping,
            })
        });
        let fork_server = self.launcher.zygote_pid().map(|_| {
            let quiet_since = self.fork_server_quiet_since();
            if self.fork_server_pinged {
                quiet_since + FORK_SERVER_WATCHDOG
            } else {
                quiet_since + FORK_SERVER_WATCHDOG / 2
            }
        });
        modules.chain(fork_server).min()
    }

    /// Pings the silent, kills the dead.
    pub(super) fn watchdog(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let Some((period, ping)) = self.watched(i) else {
                continue;
            };
            let due = self.slots[i].worker.as_ref().is_some_and(|w| {
                now.saturating_duration_since(w.last_heard) >= period
                    && w.pinged_at.is_some_and(|at| now >= at + (period - ping))
            });
            if due {
                // What it sent may still wait in its socket (this loop had
                // more than one round's worth to read): look first.
                self.read_worker_messages(i, super::FRAMES_PER_WAKE);
            }
            let slot = &mut self.slots[i];
            let Some(worker) = slot.worker.as_mut() else {
                continue;
            };
            if worker.killed_because.is_some() {
                continue;
            }
            let silent = now.saturating_duration_since(worker.last_heard);
            let unanswered = worker
                .pinged_at
                .is_some_and(|at| now >= at + (period - ping));
            if silent >= period && unanswered {
                let reason = format!("watchdog: no heartbeat for {} ms", silent.as_millis());
                say!("module {}: {reason}; worker killed", slot.name);
                worker.killed_because = Some(reason);
                worker.end_cause = Some(crate::metrics::counters::EndCause::Watchdog);
                worker.kill();
            } else if silent >= ping && worker.pinged_at.is_none() {
                worker.pinged_at = Some(now);
                if let Some(control) = &worker.control {
                    // A full socket means the worker is not reading: the
                    // kill follows at the deadline anyway.
                    let _ = frame::try_send(control, &ToWorker::Ping, &[]);
                }
            }
        }
        self.watch_fork_server(now);
    }

    fn watch_fork_server(&mut self, now: Instant) {
        let Some(pid) = self.launcher.zygote_pid() else {
            return;
        };
        let silent = now.saturating_duration_since(self.fork_server_quiet_since());
        if silent >= FORK_SERVER_WATCHDOG {
            say!(
                "fork server (pid {pid}): watchdog: no answer for {} ms; killed (the next start makes a new one)",
                silent.as_millis()
            );
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            // Its end is reaped like any child; until then, no more pings.
            self.fork_server_heard = now;
            self.fork_server_pinged = false;
        } else if silent >= FORK_SERVER_WATCHDOG / 2 && !self.fork_server_pinged {
            match self.launcher.ping_zygote() {
                Ok(true) => self.fork_server_pinged = true,
                // Not handshaken yet: its start-up is watched by the
                // spawns waiting for it, not here.
                Ok(false) => self.fork_server_answered(),
                Err(e) => {
                    // Broken: its end is read from the socket; no retry
                    // until then (the deadline would be in the past).
                    self.fork_server_pinged = true;
                    say!("fork server: cannot ping it: {e:#}");
                }
            }
        }
    }

    /// Since when the fork server counts as silent: its last answer, or the
    /// oldest spawn it has not answered if that is older. It answers spawns
    /// as they complete, so answers to later ones must not hide one stuck
    /// in the kernel (its Pong waits for that one too).
    fn fork_server_quiet_since(&self) -> Instant {
        self.pending_spawns
            .iter()
            .map(|p| p.asked_at)
            .min()
            .map_or(self.fork_server_heard, |oldest| {
                oldest.min(self.fork_server_heard)
            })
    }

    /// The fork server answered something: it is alive.
    pub(super) fn fork_server_answered(&mut self) {
        self.fork_server_heard = Instant::now();
        self.fork_server_pinged = false;
    }
}

#[cfg(test)]
mod tests {
    use super::ping_after;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_worker_is_pinged_early_enough_to_answer_after_a_whole_call() {
        // The default: half the period; the budget is far away.
        assert_eq!(ping_after(ms(1000), ms(20)), ms(500));
        // The smallest watchdog the policy allows (three budgets): pinged
        // after half a budget, so the call under way and one more end by
        // 2.5 budgets, half a budget before the kill.
        assert_eq!(ping_after(ms(150), ms(50)), ms(25));
        for (period, budget) in [(150, 50), (300, 50), (1200, 400), (2000, 20), (100, 1)] {
            let ping = ping_after(ms(period), ms(budget));
            assert!(ping + ms(budget) * 5 / 2 <= ms(period), "{period} {budget}");
            assert!(ping <= ms(period) / 2 && ping >= ms(period) / 10);
        }
    }
}
