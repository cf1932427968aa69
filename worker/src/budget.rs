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
    if let Some(engine) = ENGINE.get() {
        engine.increment_epoch();
    }
}

fn set_timer(after: Duration) {
    let value = libc::timeval {
        tv_sec: after.as_secs() as libc::time_t,
        tv_usec: after.subsec_micros() as libc::suseconds_t,
    };
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: value,
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
