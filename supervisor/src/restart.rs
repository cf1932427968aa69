//! Restart decisions: policy, exponential backoff, intensity.
//!
//! Pure logic over an injected clock, so every rule is unit-tested without
//! processes. Rules:
//!
//! - `never`: a module that ends stays down (`stopped` on a clean exit,
//!   `failed` otherwise). `on-failure`: restart unless it exited cleanly.
//!   `always`: restart after any end.
//! - Backoff doubles from `backoff_min_ms` to `backoff_max_ms` with each
//!   consecutive restart; it resets once the module has run for longer than
//!   `backoff_max_ms` (it was healthy for a whole backoff period).
//! - Intensity: more than `intensity_max` restarts within `intensity_window_s`
//!   marks the module `failed` (no more restarts until an operator acts).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::policy::{Restart, RestartPolicy};

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Exit code 0 (a command that finished, or a requested stop).
    Clean,
    /// A trap, a non-zero exit, a signal or a protocol violation.
    Failure,
}

/// What to do after a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    RestartAfter(Duration),
    /// Leave it stopped (clean end, policy does not restart).
    Stay,
    /// Leave it failed: the policy is `never`, or intensity was exceeded.
    Fail {
        /// `true` if the intensity limit caused this.
        intensity_exceeded: bool,
    },
}

/// Restart bookkeeping of one module.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    rules: Restart,
    recent: VecDeque<Instant>,
    consecutive: u32,
}

impl RestartTracker {
    /// A tracker with no history.
    pub fn new(rules: Restart) -> Self {
        Self {
            rules,
            recent: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// Decides after a worker that ran for `ran_for` ended at `now`.
    pub fn decide(&mut self, ending: Ending, ran_for: Duration, now: Instant) -> Decision {
        let restart = match (self.rules.policy, ending) {
            (RestartPolicy::Never, Ending::Clean) | (RestartPolicy::OnFailure, Ending::Clean) => {
                return Decision::Stay
            }
            (RestartPolicy::Never, Ending::Failure) => {
                return Decision::Fail {
                    intensity_exceeded: false,
                }
            }
            (RestartPolicy::Always, _) | (RestartPolicy::OnFailure, Ending::Failure) => true,
        };
        debug_assert!(restart);
        let window = Duration::from_secs(u64::from(self.rules.intensity_window_s));
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.rules.intensity_max as usize {
            return Decision::Fail {
                intensity_exceeded: true,
            };
        }
        self.recent.push_back(now);
        if ran_for > Duration::from_millis(self.rules.backoff_max_ms) {
            self.consecutive = 0;
        }
        let delay = self
            .rules
            .backoff_min_ms
            .saturating_mul(1u64 << self.consecutive.min(32))
            .min(self.rules.backoff_max_ms);
        self.consecutive = self.consecutive.saturating_add(1);
        Decision::RestartAfter(Duration::from_millis(delay))
    }

    /// Forgets history: an operator restarted the module by hand.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.consecutive = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(policy: RestartPolicy) -> Restart {
        Restart {
            policy,
            backoff_min_ms: 5,
            backoff_max_ms: 40,
            intensity_max: 5,
            intensity_window_s: 60,
            spare: false,
            watchdog_ms: 1000,
        }
    }

    const SHORT: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut t = RestartTracker::new(Restart {
            intensity_max: 100,
            ..rules(RestartPolicy::OnFailure)
        });
        let now = Instant::now();
        let delays: Vec<_> = (0..6)
            .map(|_| t.decide(Ending::Failure, SHORT, now))
            .collect();
        let ms = |d| Decision::RestartAfter(Duration::from_millis(d));
        assert_eq!(delays, vec![ms(5), ms(10), ms(20), ms(40), ms(40), ms(40)]);
    }

    #[test]
    fn backoff_resets_after_a_healthy_run() {
        let mut t = RestartTracker::new(rules(RestartPolicy::OnFailure));
        let now = Instant::now();
        t.decide(Ending::Failure, SHORT, now);
        t.decide(Ending::Failure, SHORT, now);
        assert_eq!(
            t.decide(Ending::Failure, Duration::from_secs(1), now),
            Decision::RestartAfter(Duration::from_millis(5))
        );
    }

    #[test]
    fn intensity_marks_failed_and_the_window_slides() {
        let mut t = RestartTracker::new(rules(RestartPolicy::Always));
        let start = Instant::now();
        for _ in 0..5 {
            assert!(matches!(
                t.decide(Ending::Failure, SHORT, start),
                Decision::RestartAfter(_)
            ));
        }
        assert_eq!(
            t.decide(Ending::Failure, SHORT, start),
            Decision::Fail {
                intensity_exceeded: true
            }
        );
        // A minute later the old restarts have left the window.
        let later = start + Duration::from_secs(61);
        assert!(matches!(
            t.decide(Ending::Failure, SHORT, later),
            Decision::RestartAfter(_)
        ));
    }

    #[test]
    fn policies_decide_clean_and_failed_ends() {
        let now = Instant::now();
        let mut on_failure = RestartTracker::new(rules(RestartPolicy::OnFailure));
        assert_eq!(on_failure.decide(Ending::Clean, SHORT, now), Decision::Stay);
        let mut never = RestartTracker::new(rules(RestartPolicy::Never));
        assert_eq!(never.decide(Ending::Clean, SHORT, now), Decision::Stay);
        assert_eq!(
            never.decide(Ending::Failure, SHORT, now),
            Decision::Fail {
                intensity_exceeded: false
            }
        );
        let mut always = RestartTracker::new(rules(RestartPolicy::Always));
        assert!(matches!(
            always.decide(Ending::Clean, SHORT, now),
            Decision::RestartAfter(_)
        ));
    }

    #[test]
    fn reset_forgets_intensity() {
        let mut t = RestartTracker::new(Restart {
            intensity_max: 1,
            ..rules(RestartPolicy::OnFailure)
        });
        let now = Instant::now();
        assert!(matches!(
            t.decide(Ending::Failure, SHORT, now),
            Decision::RestartAfter(_)
        ));
        assert!(matches!(
            t.decide(Ending::Failure, SHORT, now),
            Decision::Fail { .. }
        ));
        t.reset();
        assert!(matches!(
            t.decide(Ending::Failure, SHORT, now),
            Decision::RestartAfter(_)
        ));
    }
}
