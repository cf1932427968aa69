//! The reactor loop: one epoll set over the control socket and the tick
//! timer; every guest call runs to completion on this thread.
//!
//! Exports used (all optional but `memory`): `_initialize` (WASI reactor
//! start-up), `ew_init() -> i32`, `ew_on_tick(now_ns: i64) -> i32`.

use std::os::fd::AsFd;

use edgeward_ipc::control::{FaultKind, FromWorker, Init, LogLevel, ModuleKind, ToWorker};
use edgeward_ipc::frame::{self, FrameError};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use wasmtime::TypedFunc;

use super::{report_trap, Loaded};
use crate::budget;
use crate::exit_code;
use crate::host::imports::monotonic_ns;
use crate::report::Reporter;

/// How often counters go to the supervisor while ticks flow.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(100);

const TOKEN_CONTROL: u64 = 0;
const TOKEN_TICK: u64 = 1;

/// Initialises the reactor, reports Ready, then serves ticks and control
/// messages until Stop. Returns the exit code.
pub fn run(loaded: Loaded, init: &Init, reporter: &Reporter, degraded: Vec<String>) -> i32 {
    let Loaded {
        mut store,
        instance,
        ..
    } = loaded;
    let budget = std::time::Duration::from_millis(u64::from(init.call_budget_ms));

    if let Some(initialize) = instance.get_func(&mut store, "_initialize") {
        let initialize = match initialize.typed::<(), ()>(&store) {
            Ok(f) => f,
            Err(e) => return load_fault(reporter, format!("export _initialize: {e:#}")),
        };
        if let Err(e) = budget::call(&mut store, budget, |s| initialize.call(s, ())) {
            return report_trap(reporter, &store, "_initialize", init.call_budget_ms, &e);
        }
    }
    let ew_init: Option<TypedFunc<(), i32>> = match typed_export(&instance, &mut store, "ew_init") {
        Ok(f) => f,
        Err(msg) => return load_fault(reporter, msg),
    };
    let on_tick: Option<TypedFunc<i64, i32>> =
        match typed_export(&instance, &mut store, "ew_on_tick") {
            Ok(f) => f,
            Err(msg) => return load_fault(reporter, msg),
        };
    if let Some(ew_init) = ew_init {
        match budget::call(&mut store, budget, |s| ew_init.call(s, ())) {
            Ok(0) => {}
            Ok(code) => {
                reporter.fault(
                    FaultKind::InitFailed,
                    format!("ew_init returned {code} (non-zero means the module refused to start)"),
                );
                return exit_code::LOAD_FAILED;
            }
            Err(e) => return report_trap(reporter, &store, "ew_init", init.call_budget_ms, &e),
        }
    }

    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(e) => e,
        Err(e) => return load_fault(reporter, format!("epoll_create: {e}")),
    };
    let control = reporter.socket();
    if let Err(e) = epoll.add(control, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_CONTROL)) {
        return load_fault(reporter, format!("epoll_ctl(control): {e}"));
    }
    let timer = if init.tick_us > 0 && on_tick.is_some() {
        match tick_timer(init.tick_us) {
            Ok(timer) => {
                if let Err(e) = epoll.add(
                    timer.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TICK),
                ) {
                    return load_fault(reporter, format!("epoll_ctl(timer): {e}"));
                }
                Some(timer)
            }
            Err(e) => return load_fault(reporter, format!("timerfd: {e}")),
        }
    } else {
        None
    };

    reporter.ready(ModuleKind::Reactor, degraded);

    let mut warned_tick_code = false;
    let mut last_heartbeat = std::time::Instant::now();
    let mut events = [EpollEvent::empty(); 4];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return load_fault(reporter, format!("epoll_wait: {e}")),
        };
        for event in &events[..n] {
            match event.data() {
                TOKEN_CONTROL => match frame::recv::<ToWorker>(control) {
                    Ok((ToWorker::Stop, _)) => return exit_code::OK,
                    Ok((other, _)) => {
                        reporter.fault(
                            FaultKind::Protocol,
                            format!("protocol: unexpected {other:?} while running"),
                        );
                        return exit_code::LOAD_FAILED;
                    }
                    Err(FrameError::WouldBlock) => {}
                    Err(_) => return exit_code::SUPERVISOR_GONE,
                },
                TOKEN_TICK => {
                    let Some(timer) = &timer else { continue };
                    // Reading clears the expiration count; missed periods are
                    // coalesced into one call, as a tick is "time has passed".
                    let _ = timer.wait();
                    let Some(on_tick) = &on_tick else { continue };
                    let result =
                        budget::call(&mut store, budget, |s| on_tick.call(s, monotonic_ns()));
                    if last_heartbeat.elapsed() >= HEARTBEAT {
                        last_heartbeat = std::time::Instant::now();
                        reporter.send(&FromWorker::Heartbeat(store.data().stats));
                    }
                    match result {
                        Ok(0) => store.data_mut().stats.ticks += 1,
                        Ok(code) => {
                            store.data_mut().stats.ticks += 1;
                            if !warned_tick_code {
                                warned_tick_code = true;
                                reporter.log(
                                    LogLevel::Warn,
                                    format!("ew_on_tick returned {code} (reported once)"),
                                );
                            }
                        }
                        Err(e) => {
                            return report_trap(
                                reporter,
                                &store,
                                "ew_on_tick",
                                init.call_budget_ms,
                                &e,
                            )
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn tick_timer(tick_us: u64) -> nix::Result<TimerFd> {
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
    )?;
    let period = TimeSpec::from_duration(std::time::Duration::from_micros(tick_us));
    timer.set(Expiration::Interval(period), TimerSetTimeFlags::empty())?;
    Ok(timer)
}

/// Looks up an optional export with the expected signature.
fn typed_export<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut wasmtime::Store<crate::host::HostState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, String> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(func) => func.typed::<P, R>(&*store).map(Some).map_err(|e| {
            format!("export {name} has the wrong signature: {e:#} (see docs/guest-abi.md)")
        }),
    }
}

fn load_fault(reporter: &Reporter, message: String) -> i32 {
    reporter.fault(FaultKind::Load, message);
    exit_code::LOAD_FAILED
}
