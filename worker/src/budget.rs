//! The per-call time budget (`call_budget_ms`).
//!
//! Every guest call of a reactor runs with an epoch deadline one tick ahead
//! of the engine's epoch, and a one-shot `ITIMER_REAL` armed for the budget.
//! When the timer fires, the SIGALRM handler bumps the engine's epoch (one
//! atomic add, async-signal-safe). The guest then traps at its next epoch
//! check with `Trap::Interrupt`, which is reported as
//! `exceeded call budget of N ms in EXPORT`. That costs two `setitimer`
//! calls per guest call and no thread.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Engine, Store};

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// SIGALRMs so far: the epoch as we count it (the engine does not expose its own).
static ALARMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Remembers the engine whose epoch the timer bumps and installs the
/// SIGALRM handler. Call once per process, before any guest call.
pub fn install(engine: &Engine) {
    let _ = ENGINE.set(engine.clone());
    // SAFETY: a zeroed sigaction is valid; we set the handler and flags.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_alarm as *const () as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: the handler only performs an atomic increment.
    unsafe { libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut()) };
}

extern "C" fn on_alarm(_signal: libc::c_int) {
    // SYNC: Relaxed: a counter read by the same thread after the handler ran.
    ALARMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(engine) = ENGINE.get() {
        engine.increment_epoch();
    }
}

fn timeval(d: Duration) -> libc::timeval {
    libc::timeval {
        // Not `as libc::time_t`/`suseconds_t`: deprecated aliases on musl
        // (both fields are i64 on the 64-bit targets).
        tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
        tv_usec: d.subsec_micros().into(),
    }
}

fn set_timer(after: Duration) {
    set_periodic(after, Duration::ZERO);
}

fn set_periodic(after: Duration, every: Duration) {
    let timer = libc::itimerval {
        it_interval: timeval(every),
        it_value: timeval(after),
    };
    // SAFETY: setitimer reads `timer` and writes nothing (old value null).
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
}

/// Runs one guest call under the budget.
pub fn call<T, R>(store: &mut Store<T>, budget: Duration, f: impl FnOnce(&mut Store<T>) -> R) -> R {
    store.set_epoch_deadline(1);
    set_timer(budget.max(Duration::from_micros(1)));
    let result = f(store);
    set_timer(Duration::ZERO);
    result
}

/// For guests that run unbounded (a command's `_start`): a deadline the
/// timer never reaches, as the timer is never armed for them.
pub fn unbounded<T>(store: &mut Store<T>) {
    store.set_epoch_deadline(u64::MAX / 2);
}

/// The budget of a busy event loop: instead of two `setitimer` calls per
/// guest call, a periodic timer runs while the loop is busy (a quarter of
/// the budget, at least 1 ms) and each call gets a deadline of enough
/// periods to cover the budget. A call is interrupted after between one and
/// one and a quarter budgets. The timer stops while the loop sleeps, so an
/// idle worker takes no signals.
pub struct Watchdog {
    period: Duration,
    periods: u64,
    armed: bool,
}

impl Watchdog {
    /// A watchdog for `budget` per call (not yet armed).
    pub fn new(budget: Duration) -> Self {
        let period = (budget / 4).max(Duration::from_millis(1));
        let periods = budget.as_nanos().div_ceil(period.as_nanos()) as u64 + 1;
        Self {
            period,
            periods,
            armed: false,
        }
    }

    /// Starts the periodic timer (the loop is about to run guest calls).
    pub fn arm(&mut self) {
        if !self.armed {
            set_periodic(self.period, self.period);
            self.armed = true;
        }
    }

    /// Stops it (the loop is about to sleep).
    pub fn disarm(&mut self) {
        if self.armed {
            set_timer(Duration::ZERO);
            self.armed = false;
        }
    }

    /// Gives the next guest call its deadline. Returns the tick count at
    /// the call's start, for [`Watchdog::expired`].
    pub fn start_call<T>(&self, store: &mut Store<T>) -> u64 {
        store.set_epoch_deadline(self.periods);
        ALARMS.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Periods in one call's deadline.
    pub fn periods(&self) -> u64 {
        self.periods
    }
}

/// Timer ticks since the process started (see [`Watchdog::start_call`]).
pub fn ticks() -> u64 {
    // SYNC: Relaxed: only compared with an earlier value on this thread.
    ALARMS.load(std::sync::atomic::Ordering::Relaxed)
}
