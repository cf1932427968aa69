//! The reactor loop: one epoll set over the control socket, the tick timer
//! and the eventfd of every ring the module reads; every guest call runs to
//! completion on this thread.
//!
//! Exports used (all optional but `memory`): `_initialize` (WASI reactor
//! start-up), `ew_init() -> i32`, `ew_on_tick(now_ns: i64) -> i32`,
//! `ew_alloc(len: i32) -> i32`, `ew_on_message(ch: i32, ptr: i32, len: i32) -> i32`,
//! `ew_restore(ptr: i32, len: i32) -> i32`, `ew_snapshot() -> i32` and
//! `ew_health() -> i32` (0 healthy; asked at the end of an upgrade's probation).
//!
//! Messages: the host asks `ew_alloc` once for a receive buffer as large as
//! the largest message any of its rings carries, then copies each message
//! from the ring straight into it (the only copy) and calls `ew_on_message`.
//! The read position advances only after the handler returned, so a
//! module that crashes in its handler gets that message again.
//!
//! Waiting: when every ring is empty the loop busy-polls for `wait =
//! "spin:<µs>"` (if set), then marks each ring parked and sleeps in
//! `epoll_wait`. A producer writes a ring's eventfd only when it finds the
//! ring parked, so a saturating stream costs no wake-up system calls.
//!
//! The supervisor: its messages are read between guest calls, so a `Ping`
//! (or `Stop`) waits for at most the call under way and a quarter of the
//! call budget, even in the middle of a batch of messages. While the loop
//! is busy, the control socket is looked at (one `poll`) each time the
//! budget's watchdog timer has ticked since the last look; a waiting
//! message ends the batch early. A `Ping` is answered with the counters,
//! changed or not.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use edgeward_ipc::control::{FaultKind, FromWorker, Init, LogLevel, ModuleKind, Stats, ToWorker};
use edgeward_ipc::frame::{self, FrameError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use wasmtime::{Store, TypedFunc};

use super::lateness::{LatenessWindow, TickClock};
use super::{report_trap, Loaded};
use crate::budget::{self, Watchdog};
use crate::exit_code;
use crate::host::imports::{forward_line, monotonic_ns};
use crate::host::HostState;
use crate::report::Reporter;

/// How often counters go to the supervisor while the module is busy.
const HEARTBEAT: Duration = Duration::from_millis(100);

/// Messages taken from one ring before looking at the others and at the
/// timer and control socket (fairness, bounded latency of Stop).
const BATCH: usize = 64;

const TOKEN_CONTROL: u64 = 0;
const TOKEN_TICK: u64 = 1;
const TOKEN_RING: u64 = 16;

/// The message handler and where messages are copied to.
struct Delivery {
    on_message: TypedFunc<(i32, i32, i32), i32>,
    memory: wasmtime::Memory,
    buffer: usize,
    warned_code: bool,
    /// The ring the next round starts with: after one whose batch the
    /// supervisor cut short, so that the rings after it get their turn.
    first: usize,
    /// The budget timer's tick at which the control socket was last looked
    /// at while delivering. Kept across rounds, so a busy loop looks once
    /// per tick however its rounds fall, and a round's first message is
    /// not always delivered before the first look.
    looked: u64,
    /// The last round stopped because the supervisor spoke: the loop reads
    /// the control socket before it delivers again.
    yielded: bool,
}

/// Initialises the reactor, reports Ready, then serves messages, ticks and
/// control messages until Stop. Returns the exit code.
pub fn run(loaded: Loaded, init: &Init, reporter: &Reporter, degraded: Vec<String>) -> i32 {
    let Loaded {
        mut store,
        instance,
        ..
    } = loaded;
    let budget = Duration::from_millis(u64::from(init.call_budget_ms));

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
    if let Err(code) = super::snapshot::restore(&instance, &mut store, init, reporter) {
        return code;
    }
    let ew_snapshot: Option<TypedFunc<(), i32>> =
        match typed_export(&instance, &mut store, "ew_snapshot") {
            Ok(f) => f,
            Err(msg) => return load_fault(reporter, msg),
        };
    let ew_health: Option<TypedFunc<(), i32>> =
        match typed_export(&instance, &mut store, "ew_health") {
            Ok(f) => f,
            Err(msg) => return load_fault(reporter, msg),
        };
    let mut delivery = match delivery(&instance, &mut store, budget, init, reporter) {
        Ok(d) => d,
        Err(code) => return code,
    };

    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(e) => e,
        Err(e) => return load_fault(reporter, format!("epoll_create: {e}")),
    };
    let control = reporter.socket();
    if let Err(e) = epoll.add(control, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_CONTROL)) {
        return load_fault(reporter, format!("epoll_ctl(control): {e}"));
    }
    for (index, fd) in store.data().channels.wake_fds() {
        // Edge-triggered: each producer write is one event, and the counter
        // never needs reading (it cannot overflow at one per park).
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLET,
            TOKEN_RING + index as u64,
        );
        if let Err(e) = epoll.add(fd, event) {
            return load_fault(reporter, format!("epoll_ctl(ring eventfd): {e}"));
        }
    }
    let mut timer = if init.tick_us > 0 && on_tick.is_some() {
        match tick_timer(init.tick_us) {
            Ok((timer, clock)) => {
                if let Err(e) = epoll.add(
                    timer.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TICK),
                ) {
                    return load_fault(reporter, format!("epoll_ctl(timer): {e}"));
                }
                Some((timer, clock, LatenessWindow::new()))
            }
            Err(e) => return load_fault(reporter, format!("timerfd: {e}")),
        }
    } else {
        None
    };

    reporter.ready(ModuleKind::Reactor, degraded, ew_snapshot.is_some());

    let mut watchdog = Watchdog::new(budget);
    watchdog.arm();
    let spin = store.data().channels.spin;
    let mut warned_tick_code = false;
    let mut last_heartbeat = Instant::now();
    let mut reported = Stats::default();
    let mut events = [EpollEvent::empty(); 16];
    loop {
        let delivered = match &mut delivery {
            Some(d) => match deliver(&mut store, d, &watchdog, init, reporter) {
                Ok(n) => n,
                Err(code) => return code,
            },
            None => 0,
        };
        let stats = store.data().stats;
        let since = last_heartbeat.elapsed();
        if stats != reported && since >= HEARTBEAT {
            // A full socket drops this beat; the counters go out at the
            // next one (the clock restarts either way, so no busy retry).
            // `reported` keeps the bare counters: the lateness summary is
            // computed only here, so it never counts as a change.
            if reporter.heartbeat(with_lateness(stats, timer.as_ref())) {
                reported = stats;
            }
            last_heartbeat = Instant::now();
        }
        let yielded = delivery.as_ref().is_some_and(|d| d.yielded);
        let timeout = if delivered > 0 || yielded {
            EpollTimeout::ZERO
        } else {
            if !spin.is_zero() && spin_for_messages(&store, spin) {
                continue;
            }
            if !park_all(&mut store) {
                continue;
            }
            watchdog.disarm();
            if stats != reported {
                // Report the last counters once the module is quiet.
                EpollTimeout::try_from(HEARTBEAT.saturating_sub(since))
                    .unwrap_or(EpollTimeout::ZERO)
            } else {
                EpollTimeout::NONE
            }
        };
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return load_fault(reporter, format!("epoll_wait: {e}")),
        };
        watchdog.arm();
        // The supervisor first (token 0): a Ping or Stop does not wait for
        // a tick call.
        let events = &mut events[..n];
        events.sort_unstable_by_key(|e| e.data());
        for event in events.iter() {
            match event.data() {
                TOKEN_CONTROL => match frame::recv::<ToWorker>(control) {
                    Ok((ToWorker::Stop, _)) => {
                        // The last counters, if there is room: waiting here
                        // could outlast the supervisor's stop deadline.
                        let _ =
                            reporter.heartbeat(with_lateness(store.data().stats, timer.as_ref()));
                        watchdog.disarm();
                        return exit_code::OK;
                    }
                    Ok((ToWorker::Ping, _)) => {
                        // The counters now, changed or not. A full socket
                        // drops the answer: the supervisor then has plenty
                        // of this worker's messages to read, each a sign of
                        // life.
                        let stats = store.data().stats;
                        if reporter.heartbeat(with_lateness(stats, timer.as_ref())) {
                            reported = stats;
                            last_heartbeat = Instant::now();
                        }
                    }
                    Ok((ToWorker::RingReset { ring }, _)) => {
                        store.data_mut().channels.reset(ring);
                    }
                    Ok((ToWorker::Snapshot, _)) => {
                        if let Err(code) = super::snapshot::take(
                            &mut store,
                            ew_snapshot.as_ref(),
                            &watchdog,
                            init,
                            reporter,
                        ) {
                            return code;
                        }
                    }
                    Ok((ToWorker::Health, _)) => {
                        let code = match &ew_health {
                            None => 0,
                            Some(health) => {
                                match super::watched_call(&mut store, &watchdog, |s| {
                                    health.call(s, ())
                                }) {
                                    Ok(code) => code,
                                    Err(e) => {
                                        return report_trap(
                                            reporter,
                                            &store,
                                            "ew_health",
                                            init.call_budget_ms,
                                            &e,
                                        )
                                    }
                                }
                            }
                        };
                        reporter.send(&FromWorker::Health(code));
                    }
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
                    let Some((timer, clock, lateness)) = &mut timer else {
                        continue;
                    };
                    // Reading clears the expiration count; missed periods are
                    // coalesced into one call, as a tick is "time has passed".
                    let expirations = read_expirations(timer);
                    let Some(on_tick) = &on_tick else { continue };
                    let now = monotonic_ns();
                    if expirations > 0 {
                        let due = clock.take(expirations);
                        lateness.record((now as u64).saturating_sub(due));
                    }
                    let result =
                        super::watched_call(&mut store, &watchdog, |s| on_tick.call(s, now));
                    match result {
                        Ok(0) => store.data_mut().stats.ticks += 1,
                        Ok(code) => {
                            store.data_mut().stats.ticks += 1;
                            if !warned_tick_code {
                                warned_tick_code = true;
                                forward_line(
                                    store.data_mut(),
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
                // A ring's eventfd: its frames are delivered at the loop's top.
                _ => {}
            }
        }
    }
}

/// Finds `ew_on_message` and asks `ew_alloc` for the receive buffer, when
/// the module reads any ring.
fn delivery(
    instance: &wasmtime::Instance,
    store: &mut Store<HostState>,
    budget: Duration,
    init: &Init,
    reporter: &Reporter,
) -> Result<Option<Delivery>, i32> {
    let largest = store
        .data()
        .channels
        .inbox
        .iter()
        .map(|r| r.consumer.max_message())
        .max();
    let Some(largest) = largest else {
        return Ok(None);
    };
    let on_message: Option<TypedFunc<(i32, i32, i32), i32>> =
        typed_export(instance, store, "ew_on_message").map_err(|m| load_fault(reporter, m))?;
    let alloc: Option<TypedFunc<i32, i32>> =
        typed_export(instance, store, "ew_alloc").map_err(|m| load_fault(reporter, m))?;
    let (Some(on_message), Some(alloc)) = (on_message, alloc) else {
        return Err(load_fault(
            reporter,
            "the policy subscribes this module to channels, but it does not export both ew_on_message and ew_alloc (see docs/guest-abi.md)".into(),
        ));
    };
    let Some(memory) = store.data().memory else {
        return Err(load_fault(reporter, "module exports no memory".into()));
    };
    let ptr = match budget::call(store, budget, |s| alloc.call(s, largest as i32)) {
        Ok(ptr) => ptr,
        Err(e) => {
            return Err(report_trap(
                reporter,
                store,
                "ew_alloc",
                init.call_budget_ms,
                &e,
            ))
        }
    };
    let buffer = ptr as u32 as usize;
    if ptr <= 0 || buffer + largest > memory.data_size(&*store) {
        return Err(load_fault(
            reporter,
            format!("ew_alloc({largest}) returned {ptr}, not a buffer inside the module's memory"),
        ));
    }
    Ok(Some(Delivery {
        on_message,
        memory,
        buffer,
        warned_code: false,
        first: 0,
        looked: 0,
        yielded: false,
    }))
}

/// Hands waiting messages to `ew_on_message`, up to [`BATCH`] per ring,
/// and fewer when the supervisor sent something meanwhile (it is then
/// answered before the rest). Returns how many, or the exit code after a
/// trap.
fn deliver(
    store: &mut Store<HostState>,
    delivery: &mut Delivery,
    watchdog: &Watchdog,
    init: &Init,
    reporter: &Reporter,
) -> Result<usize, i32> {
    let mut delivered = 0;
    let rings = store.data().channels.inbox.len();
    // The supervisor first, if it spoke since the last look (a Ping that
    // came during the previous call is answered before another call).
    delivery.yielded = rings > 0 && supervisor_waiting(reporter, &mut delivery.looked);
    if delivery.yielded {
        return Ok(0);
    }
    for step in 0..rings {
        let index = (delivery.first + step) % rings;
        for _ in 0..BATCH {
            let ring = &store.data().channels.inbox[index];
            if ring.stopped {
                break;
            }
            let pending = match ring.consumer.next_frame() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    store.data_mut().channels.inbox_corrupt(index, e);
                    break;
                }
            };
            let (memory, state) = delivery.memory.data_and_store_mut(&mut *store);
            // In bounds: checked against the memory at start, which never shrinks.
            let out = &mut memory[delivery.buffer..delivery.buffer + pending.len];
            let ring = &state.channels.inbox[index];
            if let Err(e) = ring.consumer.read_payload(&pending, out) {
                state.channels.inbox_corrupt(index, e);
                break;
            }
            let channel = ring.channel;
            state.current_seq = pending.seq as i64;
            let result = super::watched_call(store, watchdog, |s| {
                delivery
                    .on_message
                    .call(s, (channel, delivery.buffer as i32, pending.len as i32))
            });
            let state = store.data_mut();
            state.current_seq = -1;
            match result {
                Ok(code) => {
                    state.channels.inbox[index]
                        .consumer
                        .commit_pending(&pending);
                    state.stats.msgs_in += 1;
                    delivered += 1;
                    if code != 0 && !delivery.warned_code {
                        delivery.warned_code = true;
                        forward_line(
                            state,
                            LogLevel::Warn,
                            format!("ew_on_message returned {code} (reported once; the message counts as handled)"),
                        );
                    }
                }
                Err(e) => {
                    return Err(report_trap(
                        reporter,
                        store,
                        "ew_on_message",
                        init.call_budget_ms,
                        &e,
                    ))
                }
            }
            if supervisor_waiting(reporter, &mut delivery.looked) {
                delivery.yielded = true;
                delivery.first = (index + 1) % rings;
                return Ok(delivered);
            }
        }
    }
    Ok(delivered)
}

/// Whether a message of the supervisor waits on the control socket (or it
/// hung up). Looks (one `poll`) only when the watchdog's timer ticked since
/// `looked`, at most once per quarter call budget: a saturating stream pays
/// next to nothing, and a Ping waits for at most one guest call and a
/// quarter budget.
fn supervisor_waiting(reporter: &Reporter, looked: &mut u64) -> bool {
    let now = budget::ticks();
    if now == *looked {
        return false;
    }
    *looked = now;
    let mut fds = [PollFd::new(reporter.socket().as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// Busy-polls the rings for up to `spin`; `true` if a frame arrived.
fn spin_for_messages(store: &Store<HostState>, spin: Duration) -> bool {
    let until = Instant::now() + spin;
    let inbox = &store.data().channels.inbox;
    loop {
        if inbox.iter().any(|r| !r.stopped && r.consumer.depth() > 0) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        for _ in 0..16 {
            std::hint::spin_loop();
        }
    }
}

/// Marks every ring parked; `false` if one has a frame (do not sleep).
fn park_all(store: &mut Store<HostState>) -> bool {
    for index in 0..store.data().channels.inbox.len() {
        let ring = &store.data().channels.inbox[index];
        if ring.stopped {
            continue;
        }
        match ring.consumer.park() {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => store.data_mut().channels.inbox_corrupt(index, e),
        }
    }
    true
}

/// The tick timer, on absolute due times (first one period from now), and
/// the clock that knows them (tick lateness, `lateness.rs`).
fn tick_timer(tick_us: u64) -> nix::Result<(TimerFd, TickClock)> {
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
    )?;
    let period = Duration::from_micros(tick_us);
    let first = Duration::from_nanos(monotonic_ns() as u64) + period;
    timer.set(
        Expiration::IntervalDelayed(
            TimeSpec::from_duration(first),
            TimeSpec::from_duration(period),
        ),
        TimerSetTimeFlags::TFD_TIMER_ABSTIME,
    )?;
    Ok((
        timer,
        TickClock::new(first.as_nanos() as u64, period.as_nanos() as u64),
    ))
}

/// Reads the timer's expiration count (clearing it); 0 if there was none
/// to read (a spurious wake-up: the tick is still called, unmeasured).
fn read_expirations(timer: &TimerFd) -> u64 {
    let mut count = [0u8; 8];
    loop {
        match nix::unistd::read(timer.as_fd(), &mut count) {
            Ok(8) => return u64::from_ne_bytes(count),
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return 0,
        }
    }
}

/// `stats` with the tick lateness of the window, if the module ticks.
fn with_lateness(mut stats: Stats, timer: Option<&(TimerFd, TickClock, LatenessWindow)>) -> Stats {
    stats.tick_lateness = timer.and_then(|(_, _, window)| window.summary());
    stats
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

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use edgeward_ipc::control::{
        ChannelGrant, FromWorker, Init, ModuleKind, OnFull, RingGrant, RingRole, SandboxPlan,
        Stats, ToWorker,
    };
    use edgeward_ipc::frame;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::eventfd::{EfdFlags, EventFd};

    use super::BATCH;
    use crate::exit_code;
    use crate::host;
    use crate::module::Prepared;
    use crate::report::Reporter;

    /// One reactor loop at a time: the call budget's watchdog timer is the
    /// process's one `ITIMER_REAL`.
    static LOOP: Mutex<()> = Mutex::new(());

    const I32: u8 = 0x7f;

    /// A module with nothing to call: no imports, no exports.
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    /// A reactor with one page of memory whose `ew_alloc` returns 1024 and
    /// whose `ew_on_message` counts to 30 million before returning 0: a
    /// guest call of some tens of milliseconds. Hand-assembled, as the
    /// worker has no text-format parser:
    ///
    /// ```text
    /// (module
    ///   (memory (export "memory") 1)
    ///   (func (export "ew_alloc") (param i32) (result i32) i32.const 1024)
    ///   (func (export "ew_on_message") (param i32 i32 i32) (result i32) (local i32)
    ///     loop
    ///       local.get 3  i32.const 1  i32.add  local.tee 3
    ///       i32.const 30000000  i32.lt_u  br_if 0
    ///     end
    ///     i32.const 0))
    /// ```
    fn busy_module() -> Vec<u8> {
        fn section(module: &mut Vec<u8>, id: u8, content: &[u8]) {
            // Its size in one LEB128 byte.
            assert!(content.len() < 0x80, "a section of {} bytes", content.len());
            module.extend_from_slice(&[id, content.len() as u8]);
            module.extend_from_slice(content);
        }
        fn export(exports: &mut Vec<u8>, name: &str, kind: u8, index: u8) {
            exports.push(name.len() as u8);
            exports.extend_from_slice(name.as_bytes());
            exports.extend_from_slice(&[kind, index]);
        }
        let mut module = EMPTY_MODULE.to_vec();
        // Types: 0 = (i32) -> i32, 1 = (i32 i32 i32) -> i32.
        let types = [2, 0x60, 1, I32, 1, I32, 0x60, 3, I32, I32, I32, 1, I32];
        section(&mut module, 1, &types);
        // Functions: 0 of type 0, 1 of type 1.
        section(&mut module, 3, &[2, 0, 1]);
        // One memory of at least one page.
        section(&mut module, 5, &[1, 0, 1]);
        let mut exports = vec![3];
        export(&mut exports, "memory", 2, 0);
        export(&mut exports, "ew_alloc", 0, 0);
        export(&mut exports, "ew_on_message", 0, 1);
        section(&mut module, 7, &exports);
        // No locals; i32.const 1024 (signed LEB128); end.
        let alloc = [0, 0x41, 0x80, 0x08, 0x0b];
        let on_message = [
            1, 1, I32, // one i32 local, index 3 (after the three parameters)
            0x03, 0x40, // loop
            0x20, 3, 0x41, 1, 0x6a, 0x22, 3, // local.get 3, i32.const 1, i32.add, local.tee 3
            0x41, 0x80, 0x87, 0xa7, 0x0e, // i32.const 30_000_000
            0x49, 0x0d, 0,    // i32.lt_u, br_if 0
            0x0b, // end of the loop
            0x41, 0, 0x0b, // i32.const 0, end
        ];
        let mut code = vec![2, alloc.len() as u8];
        code.extend_from_slice(&alloc);
        code.push(on_message.len() as u8);
        code.extend_from_slice(&on_message);
        section(&mut module, 10, &code);
        module
    }

    fn init(channels: Vec<ChannelGrant>) -> Init {
        Init {
            protocol_version: edgeward_ipc::PROTOCOL_VERSION,
            module: "pinged".into(),
            artifact: String::new(),
            args: vec![],
            env: vec![],
            dirs: vec![],
            memory_limit_bytes: 32 << 20,
            tick_us: 0,
            call_budget_ms: 1000,
            sandbox: SandboxPlan {
                cgroup_procs: vec![],
                identity: None,
                max_fds: 64,
                max_threads: 8,
            },
            channels,
            on_full: OnFull::Block,
            max_message_bytes: 64,
            spin_us: 0,
            restore: None,
            stdin: false,
            connector: None,
        }
    }

    /// Runs `wasm` in the reactor loop on a thread, as `serve` does once the
    /// sandbox is up; returns the supervisor's end of the control socket
    /// and the thread, which returns the exit code.
    fn start(wasm: Vec<u8>, mut init: Init, fds: Vec<OwnedFd>) -> (OwnedFd, JoinHandle<i32>) {
        let (supervisor, worker) = frame::seqpacket_pair().unwrap();
        let thread = std::thread::spawn(move || {
            let prepared = Prepared::new().unwrap();
            let module = wasmtime::Module::new(&prepared.engine, wasm).unwrap();
            let reporter = Arc::new(Reporter::new(worker, init.module.clone()));
            let wasi = host::wasi::context(&init).unwrap();
            let channels =
                host::channels::Channels::attach(&init, fds, Arc::clone(&reporter)).unwrap();
            let runtime = host::wasi::runtime().unwrap();
            let _entered = runtime.enter();
            let loaded =
                super::super::instantiate(&prepared, &module, wasi, channels, &mut init, &reporter)
                    .unwrap();
            super::run(loaded, &init, &reporter, vec![])
        });
        (supervisor, thread)
    }

    /// The worker's next message, if one comes within `within`.
    fn next(supervisor: &OwnedFd, within: Duration) -> Option<FromWorker> {
        let timeout = PollTimeout::try_from(within).unwrap();
        loop {
            let mut fds = [PollFd::new(supervisor.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => return None,
                Ok(_) => return Some(frame::recv::<FromWorker>(supervisor).unwrap().0),
                // The budget's timer signals the whole process.
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("poll: {e}"),
            }
        }
    }

    fn expect_ready(supervisor: &OwnedFd) {
        match next(supervisor, Duration::from_secs(60)) {
            Some(FromWorker::Ready {
                kind: ModuleKind::Reactor,
                ..
            }) => {}
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    #[test]
    fn an_idle_reactor_answers_each_ping_with_its_unchanged_counters() {
        let _alone = LOOP.lock().unwrap_or_else(|e| e.into_inner());
        let (supervisor, worker) = start(EMPTY_MODULE.to_vec(), init(vec![]), vec![]);
        expect_ready(&supervisor);
        // Nothing changes, so nothing is sent unasked.
        assert_eq!(next(&supervisor, Duration::from_millis(300)), None);
        for _ in 0..2 {
            frame::send(&supervisor, &ToWorker::Ping, &[]).unwrap();
            assert_eq!(
                next(&supervisor, Duration::from_secs(5)),
                Some(FromWorker::Heartbeat(Stats::default()))
            );
        }
        frame::send(&supervisor, &ToWorker::Stop, &[]).unwrap();
        assert_eq!(worker.join().unwrap(), exit_code::OK);
    }

    #[test]
    fn a_ping_is_answered_between_guest_calls_not_after_the_whole_batch() {
        let _alone = LOOP.lock().unwrap_or_else(|e| e.into_inner());
        let memfd = edgeward_ipc::ring::create("pinged-in", 64 * 1024, 64).unwrap();
        let mut producer = edgeward_ipc::ring::Producer::attach(&memfd).unwrap();
        let waiting = 2 * BATCH as u64;
        for seq in 0..waiting {
            producer.try_send(&seq.to_le_bytes()).unwrap();
        }
        let eventfd =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .unwrap();
        let grant = ChannelGrant {
            name: "readings".into(),
            publish: false,
            subscribe: true,
            rings: vec![RingGrant {
                ring: 1,
                peer: "sensor".into(),
                role: RingRole::Consumer,
                memfd: 0,
                eventfd: 1,
            }],
        };
        let (supervisor, worker) = start(
            busy_module(),
            init(vec![grant]),
            vec![memfd, OwnedFd::from(eventfd)],
        );
        expect_ready(&supervisor);
        // The loop is now inside a batch of 64 calls of tens of ms each.
        frame::send(&supervisor, &ToWorker::Ping, &[]).unwrap();
        match next(&supervisor, Duration::from_secs(30)) {
            Some(FromWorker::Heartbeat(stats)) => assert!(
                stats.msgs_in < BATCH as u64,
                "answered only after {} messages",
                stats.msgs_in
            ),
            other => panic!("expected a Heartbeat, got {other:?}"),
        }
        // Stop is read between calls too.
        frame::send(&supervisor, &ToWorker::Stop, &[]).unwrap();
        assert_eq!(worker.join().unwrap(), exit_code::OK);
    }
}
