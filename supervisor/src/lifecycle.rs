//! A module's lifecycle: one enum ([`State`]) and one pure transition
//! function ([`next`]).
//!
//! The event loop turns what happens (a worker said Ready, a worker ended,
//! an operator asked for a restart, a reload removed the policy, a deadline
//! passed) into an [`Event`], asks [`next`] for the module's next state and
//! the [`Action`] to carry out, and carries it out
//! (`event_loop/lifecycle_actions.rs`). Nothing else assigns a module's
//! state, and no flag beside it says what the module is doing. What
//! follows a worker's end is decided here, from the state it ended in:
//! a module told to stop for a restart starts again, one told to stop for
//! removal is forgotten, one that failed goes by its restart policy
//! (`restart.rs`, consulted only then).
//!
//! The table of transitions is in `docs/architecture.md` ("Module
//! lifecycle"); a test reads it and checks every row against [`next`], and
//! that every transition [`next`] makes has a row.

use std::time::{Duration, Instant};

use crate::restart::{Decision, Ending};

/// What a module is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// To be started and not started yet: its worker is created as soon as
    /// its artifact is compiled, its read-write dirs are prepared and the
    /// modules it starts `after` are ready.
    Waiting,
    /// A worker exists and has not sent Ready.
    Starting,
    /// Its worker sent Ready.
    Running,
    /// Its worker was told to end; `then` follows once it has.
    Stopping {
        /// What follows the worker's end.
        then: Then,
        /// When the worker is SIGKILLed if it has not ended; `None` once it
        /// was.
        kill_at: Option<Instant>,
    },
    /// Waiting to start again after a failure, until `until`.
    Backoff {
        /// When it starts again.
        until: Instant,
    },
    /// Given up: it cannot start (bad policy, wasm or set-up), its restart
    /// policy is `never`, or it failed more often than its intensity allows.
    Failed,
    /// Ended cleanly and not restarted, or stopped with edgeward.
    Stopped,
    /// A reload removed its policy. The slot is kept (a module of that name
    /// added later gets its index, uid and snapshots) but shown nowhere.
    Removed,
}

/// What follows a stopping module's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Start it again at once, not counted against its restart intensity:
    /// an operator's restart, a changed policy, an upgrade's switch or
    /// rollback, a confirmed ring corruption, a restart group.
    Restart,
    /// Its policy was removed: forget it.
    Remove,
    /// edgeward is stopping.
    Shutdown,
}

/// What happened to a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A worker process was created for it.
    Spawned,
    /// Its worker sent Ready.
    Ready,
    /// Its worker is to end gracefully (Stop, then SIGKILL at `kill_at`),
    /// then `then`. For a module without a worker, `then` happens now.
    Stop {
        /// What follows.
        then: Then,
        /// The SIGKILL deadline.
        kill_at: Instant,
    },
    /// Its worker is to be SIGKILLed now, then `then`.
    Kill {
        /// What follows.
        then: Then,
    },
    /// A stopping worker's SIGKILL deadline passed.
    StopTimeout,
    /// Its worker ended, or no worker could be made for it (then `ran_for`
    /// is zero and `ending` a failure).
    Ended {
        /// Clean exit or failure.
        ending: Ending,
        /// How long it ran after Ready.
        ran_for: Duration,
        /// An upgrade's new version ended (or could not start) on trial:
        /// the upgrade rolls back.
        on_trial: bool,
        /// edgeward is stopping: nothing restarts.
        shutting_down: bool,
    },
    /// Its backoff delay is over.
    BackoffOver,
    /// It can never start as it is: its wasm does not compile, its rings
    /// cannot be made, its read-write dirs cannot be prepared.
    Unstartable,
    /// edgeward begins to stop: a module without a worker stays down.
    /// (Modules with a worker get [`Event::Stop`] once the final snapshot
    /// round is done.)
    Shutdown,
}

/// What the event loop carries out after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing more.
    Nothing,
    /// Start a worker (a restart: counted in `restarts`).
    Spawn,
    /// Send the worker Stop.
    SendStop,
    /// SIGKILL the worker.
    Kill,
    /// Roll the upgrade back; the old version starts again.
    RollBack,
    /// Its restart policy restarts it after the backoff: members of its
    /// restart group may have to restart with it.
    Restarting,
    /// It is down for good (until an operator or a reload acts): its spare
    /// goes, and `gave_up_on_intensity` says whether its intensity was
    /// exceeded.
    Down {
        /// More restarts than its intensity allows.
        gave_up_on_intensity: bool,
    },
    /// Forget it: its policy was removed (cgroup, rw dirs and spare go).
    Forget,
}

/// A transition: the next state and what to do.
pub type Step = (State, Action);

/// The next state of a module in `state` after `event`, at `now`, and the
/// action to carry out; `None` when the event does not apply in that state
/// (a stale event: nothing changes).
///
/// `decide` is the module's restart policy (`RestartTracker::decide`):
/// called only when a running or starting module ended on its own, so a
/// requested stop never counts against its intensity.
pub fn next(
    state: State,
    event: Event,
    now: Instant,
    decide: impl FnOnce(Ending, Duration) -> Decision,
) -> Option<Step> {
    use Action as A;
    use State as S;
    Some(match (state, event) {
        (S::Removed, _) => return None,

        (S::Waiting, Event::Spawned) => (S::Starting, A::Nothing),
        (S::Starting, Event::Ready) => (S::Running, A::Nothing),

        // A stop asked again: the later intent wins, but a shutdown is
        // final; the earlier deadline stands.
        (
            S::Stopping { then, kill_at },
            Event::Stop {
                then: new,
                kill_at: at,
            },
        ) => (
            S::Stopping {
                then: if then == Then::Shutdown { then } else { new },
                kill_at: kill_at.map(|k| k.min(at)),
            },
            A::Nothing,
        ),
        (S::Stopping { then, .. }, Event::Kill { then: new }) => (
            S::Stopping {
                then: if then == Then::Shutdown { then } else { new },
                kill_at: None,
            },
            A::Kill,
        ),
        (S::Starting | S::Running, Event::Stop { then, kill_at }) => (
            S::Stopping {
                then,
                kill_at: Some(kill_at),
            },
            A::SendStop,
        ),
        (S::Starting | S::Running, Event::Kill { then }) => (
            S::Stopping {
                then,
                kill_at: None,
            },
            A::Kill,
        ),
        // No worker to stop: what follows happens now.
        (_, Event::Stop { then, .. } | Event::Kill { then }) if !state.has_worker() => match then {
            Then::Restart => (S::Waiting, A::Spawn),
            Then::Remove => (S::Removed, A::Forget),
            Then::Shutdown => match state {
                S::Waiting | S::Backoff { .. } => (S::Stopped, A::Nothing),
                _ => return None,
            },
        },
        (
            S::Stopping {
                then,
                kill_at: Some(_),
            },
            Event::StopTimeout,
        ) => (
            S::Stopping {
                then,
                kill_at: None,
            },
            A::Kill,
        ),

        (S::Stopping { then, .. }, Event::Ended { shutting_down, .. }) => match then {
            Then::Remove => (S::Removed, A::Forget),
            Then::Shutdown => (S::Stopped, A::Nothing),
            Then::Restart if shutting_down => (S::Stopped, A::Nothing),
            Then::Restart => (S::Waiting, A::Spawn),
        },
        // Ended on its own, or no worker could be made for it.
        (
            S::Starting | S::Running | S::Waiting,
            Event::Ended {
                ending,
                ran_for,
                on_trial,
                shutting_down,
            },
        ) => {
            if shutting_down {
                (S::Stopped, A::Nothing)
            } else if on_trial {
                (S::Waiting, A::RollBack)
            } else {
                match decide(ending, ran_for) {
                    // Its restart group restarts with a module that ran,
                    // not with one that could not even be started.
                    Decision::RestartAfter(delay) if state == S::Waiting => {
                        (S::Backoff { until: now + delay }, A::Nothing)
                    }
                    Decision::RestartAfter(delay) => {
                        (S::Backoff { until: now + delay }, A::Restarting)
                    }
                    Decision::Stay => (
                        S::Stopped,
                        A::Down {
                            gave_up_on_intensity: false,
                        },
                    ),
                    Decision::Fail { intensity_exceeded } => (
                        S::Failed,
                        A::Down {
                            gave_up_on_intensity: intensity_exceeded,
                        },
                    ),
                }
            }
        }
        (S::Backoff { until }, Event::BackoffOver) if now >= until => (S::Waiting, A::Spawn),
        (S::Waiting | S::Stopped | S::Backoff { .. } | S::Failed, Event::Unstartable) => (
            S::Failed,
            A::Down {
                gave_up_on_intensity: false,
            },
        ),
        (S::Waiting | S::Backoff { .. }, Event::Shutdown) => (S::Stopped, A::Nothing),
        _ => return None,
    })
}

impl State {
    /// The word used in `status` (and in the docs' table).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping { .. } => "stopping",
            State::Backoff { .. } => "backoff",
            State::Failed => "failed",
            State::Stopped => "stopped",
            State::Removed => "removed",
        }
    }

    /// Whether a worker process is (still) there.
    pub fn has_worker(self) -> bool {
        matches!(
            self,
            State::Starting | State::Running | State::Stopping { .. }
        )
    }

    /// Stopping for removal: its policy no longer counts (rings, claims).
    pub fn being_removed(self) -> bool {
        matches!(
            self,
            State::Stopping {
                then: Then::Remove,
                ..
            }
        )
    }

    /// When the event loop must look at it again: the end of its backoff,
    /// or its SIGKILL deadline.
    pub fn deadline(self) -> Option<Instant> {
        match self {
            State::Backoff { until } => Some(until),
            State::Stopping { kill_at, .. } => kill_at,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
