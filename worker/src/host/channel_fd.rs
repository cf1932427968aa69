//! Channel fds: a command module's subscribed channel as a WASI file
//! descriptor that `poll_oneoff` waits on beside the module's timers.
//!
//! A command blocked in `recv` stops every other activity of its single
//! wasm thread. Go's runtime, for one, parks its idle thread in
//! `poll_oneoff` with a clock subscription for its next timer and a read
//! subscription for every fd a goroutine waits on: with a channel's fd
//! among them, the runtime sleeps until a message arrives *or* a
//! `time.Ticker` is due, and the goroutine reading the fd wakes as soon as
//! a message is there (docs/architecture.md, "Goroutines and timers").
//!
//! The fd (`channel_fd` import) is virtual: wasmtime-wasi does not know
//! it, so the four WASI functions a poller uses are wrapped here. For a
//! channel fd they answer themselves; for any other fd they call
//! wasmtime-wasi's own implementation, unchanged:
//!
//! - `poll_oneoff`: a read subscription is ready while a message of the
//!   channel may be waiting (level-triggered, like `poll(2)`); clock
//!   subscriptions time out as usual. Waiting parks on the rings' eventfds
//!   with the earliest clock as timeout. Other fds in the same call are
//!   polled by wasmtime-wasi without blocking, every millisecond while
//!   waiting (inside the sandbox none ever waits: files, stdout and stderr
//!   are always ready).
//! - `fd_read`: one byte while a message may be waiting, else `EAGAIN`. It
//!   consumes nothing: `recv_wait` with timeout 0 takes the message.
//! - `fd_fdstat_get`: a non-blocking fd with the rights to read and poll,
//!   which is what makes Go's `os.NewFile` hand it to its netpoller.
//! - `fd_close`: accepted, and changes nothing (the fd stays valid).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1 as _;
use wiggle::GuestMemory;

use super::HostState;

/// The fd of channel handle `h` is `FD_BASE + h`: far above the fds
/// wasmtime-wasi hands out (it counts up from the preopens), so the two
/// never meet.
pub const FD_BASE: u32 = 0x4000_0000;

const WASI: &str = "wasi_snapshot_preview1";

// WASI preview 1 numbers (wasi_snapshot_preview1.witx).
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_AGAIN: i32 = 6;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: i32 = 58;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBCLOCK_ABSTIME: u16 = 1;
const FDFLAGS_NONBLOCK: u16 = 4;
const RIGHTS_FD_READ: u64 = 1 << 1;
const RIGHTS_POLL_FD_READWRITE: u64 = 1 << 27;
const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const FDSTAT_SIZE: usize = 24;
const IOVEC_SIZE: usize = 8;

/// How often other fds mixed with channel fds are looked at while waiting.
const OTHERS_EVERY: Duration = Duration::from_millis(1);

/// Wraps wasmtime-wasi's `poll_oneoff`, `fd_read`, `fd_fdstat_get` and
/// `fd_close` in `linker`, which must hold them already.
///
/// # Errors
/// Only on a programming error (a wrong signature).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(WASI, "poll_oneoff", poll_oneoff)?;
    linker.func_wrap(WASI, "fd_read", fd_read)?;
    linker.func_wrap(WASI, "fd_fdstat_get", fd_fdstat_get)?;
    linker.func_wrap(WASI, "fd_close", fd_close)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The guest's memory and the host state, prepared as wasmtime-wasi's own
/// bindings prepare them for its functions.
///
/// # Errors
/// A module without a `memory` export (a trap, as in wasmtime-wasi).
pub(super) fn guest<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> wasmtime::Result<(&'a mut [u8], &'a mut HostState)> {
    let fuel = caller.as_context_mut().hostcall_fuel();
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("missing required memory export");
    };
    let (data, state) = memory.data_and_store_mut(caller);
    state.wasi.set_hostcall_fuel(fuel);
    Ok((data, state))
}

/// Runs one of wasmtime-wasi's preview 1 functions the way its own
/// synchronous bindings do.
pub(super) fn wasi<F: std::future::Future<Output = wiggle::error::Result<i32>>>(
    call: F,
) -> wasmtime::Result<i32> {
    wasmtime_wasi::runtime::in_tokio(call)
}

/// A zeroed host buffer of `len` bytes aligned for wasmtime-wasi's types,
/// used as the "guest memory" of a call the host makes itself.
struct Scratch(Vec<u64>);

impl Scratch {
    fn new(len: usize) -> Self {
        Scratch(vec![0; len.div_ceil(8)])
    }

    fn bytes(&mut self) -> &mut [u8] {
        let len = self.0.len() * 8;
        // SAFETY: the `u64`s are `len` initialised bytes, any byte pattern
        // is a valid `u64`, and the slice borrows `self` mutably.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), len) }
    }
}

/// The handle of the channel whose fd is `fd`, if `fd` is one the module
/// could have got from `channel_fd` (a command subscribing to it).
fn channel_of(state: &HostState, fd: i32) -> Option<i32> {
    let handle = (fd as u32).checked_sub(FD_BASE)?;
    let handle = i32::try_from(handle).ok()?;
    (state.is_command && state.channels.is_subscribed(handle)).then_some(handle)
}

/// `len` bytes of guest memory at `ptr`, if inside it.
fn slice(data: &[u8], ptr: i32, len: usize) -> Option<&[u8]> {
    let start = ptr as u32 as usize;
    data.get(start..start.checked_add(len)?)
}

/// `len` writable bytes of guest memory at `ptr`, if inside it.
fn slice_mut(data: &mut [u8], ptr: i32, len: usize) -> Option<&mut [u8]> {
    let start = ptr as u32 as usize;
    data.get_mut(start..start.checked_add(len)?)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One subscription of a `poll_oneoff` call.
#[derive(Debug, Clone, Copy)]
struct Subscription {
    userdata: u64,
    what: Watch,
}

#[derive(Debug, Clone, Copy)]
enum Watch {
    Clock {
        id: u32,
        timeout: u64,
        flags: u16,
    },
    Read(i32),
    Write(i32),
    /// An event type WASI does not define.
    Unknown,
}

fn parse(sub: &[u8]) -> Subscription {
    let what = match sub[8] {
        EVENTTYPE_CLOCK => Watch::Clock {
            id: u32_at(sub, 16),
            timeout: u64_at(sub, 24),
            flags: u16_at(sub, 40),
        },
        EVENTTYPE_FD_READ => Watch::Read(u32_at(sub, 16) as i32),
        EVENTTYPE_FD_WRITE => Watch::Write(u32_at(sub, 16) as i32),
        _ => Watch::Unknown,
    };
    Subscription {
        userdata: u64_at(sub, 0),
        what,
    }
}

/// One event `poll_oneoff` reports.
struct Event {
    userdata: u64,
    error: i32,
    kind: u8,
    nbytes: u64,
}

impl Event {
    fn write(&self, out: &mut [u8]) {
        out.fill(0);
        out[0..8].copy_from_slice(&self.userdata.to_le_bytes());
        out[8..10].copy_from_slice(&(self.error as u16).to_le_bytes());
        out[10] = self.kind;
        out[16..24].copy_from_slice(&self.nbytes.to_le_bytes());
    }

    fn read(bytes: &[u8]) -> Self {
        Event {
            userdata: u64_at(bytes, 0),
            error: i32::from(u16_at(bytes, 8)),
            kind: bytes[10],
            nbytes: u64_at(bytes, 16),
        }
    }
}

/// `poll_oneoff(subs, events, n, nevents) -> errno`: ours when a
/// subscription names a channel fd, wasmtime-wasi's otherwise.
fn poll_oneoff(
    mut caller: Caller<'_, HostState>,
    subs_ptr: i32,
    events_ptr: i32,
    n: i32,
    nevents_ptr: i32,
) -> wasmtime::Result<i32> {
    let (data, state) = guest(&mut caller)?;
    let subs = (n as u32 as usize)
        .checked_mul(SUBSCRIPTION_SIZE)
        .and_then(|len| slice(data, subs_ptr, len))
        .map(|bytes| {
            bytes
                .chunks_exact(SUBSCRIPTION_SIZE)
                .map(parse)
                .collect::<Vec<_>>()
        })
        .filter(|subs| {
            subs.iter().any(|s| match s.what {
                Watch::Read(fd) | Watch::Write(fd) => channel_of(state, fd).is_some(),
                _ => false,
            })
        });
    let Some(subs) = subs else {
        let mut memory = GuestMemory::Unshared(data);
        let call = p1::poll_oneoff(
            &mut state.wasi,
            &mut memory,
            subs_ptr,
            events_ptr,
            n,
            nevents_ptr,
        );
        return wasi(call);
    };
    let deadlines = match deadlines(state, &subs) {
        Ok(d) => d,
        Err(errno) => return Ok(errno),
    };
    let earliest = deadlines.iter().flatten().min().copied();
    let handles: Vec<i32> = subs
        .iter()
        .filter_map(|s| match s.what {
            Watch::Read(fd) => channel_of(state, fd),
            _ => None,
        })
        .collect();
    let others: Vec<Subscription> = subs
        .iter()
        .filter(|s| match s.what {
            Watch::Read(fd) | Watch::Write(fd) => channel_of(state, fd).is_none(),
            _ => false,
        })
        .copied()
        .collect();
    let events = loop {
        let mut events = match poll_others(state, &others) {
            Ok(events) => events,
            Err(errno) => return Ok(errno),
        };
        let now = Instant::now();
        for (sub, deadline) in subs.iter().zip(&deadlines) {
            let event = |error, kind, nbytes| Event {
                userdata: sub.userdata,
                error,
                kind,
                nbytes,
            };
            match sub.what {
                Watch::Clock { .. } if deadline.is_some_and(|d| now >= d) => {
                    events.push(event(ERRNO_SUCCESS, EVENTTYPE_CLOCK, 0));
                }
                Watch::Read(fd)
                    if channel_of(state, fd).is_some_and(|h| state.channels.readable(h)) =>
                {
                    events.push(event(ERRNO_SUCCESS, EVENTTYPE_FD_READ, 1));
                }
                // A channel fd is never writable.
                Watch::Write(fd) if channel_of(state, fd).is_some() => {
                    events.push(event(ERRNO_NOTSUP, EVENTTYPE_FD_WRITE, 0));
                }
                _ => {}
            }
        }
        if !events.is_empty() {
            break events;
        }
        let until = if others.is_empty() {
            earliest
        } else {
            let slice = Instant::now() + OTHERS_EVERY;
            Some(earliest.map_or(slice, |d| d.min(slice)))
        };
        state.channels.wait_readable(&handles, until);
    };
    let Some(out) = slice_mut(data, events_ptr, events.len() * EVENT_SIZE) else {
        return Ok(ERRNO_FAULT);
    };
    for (event, out) in events.iter().zip(out.chunks_exact_mut(EVENT_SIZE)) {
        event.write(out);
    }
    let Some(count) = slice_mut(data, nevents_ptr, 4) else {
        return Ok(ERRNO_FAULT);
    };
    count.copy_from_slice(&(events.len() as u32).to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// Every clock subscription of `subs` as a deadline on the host's
/// monotonic clock (`None` for the others), or the errno that refuses the
/// call (an unknown event type or clock, as wasmtime-wasi refuses them).
fn deadlines(state: &mut HostState, subs: &[Subscription]) -> Result<Vec<Option<Instant>>, i32> {
    let start = Instant::now();
    let mut guest_monotonic_now = None;
    subs.iter()
        .map(|sub| {
            let (id, timeout, flags) = match sub.what {
                Watch::Clock { id, timeout, flags } => (id, timeout, flags),
                Watch::Unknown => return Err(ERRNO_INVAL),
                Watch::Read(_) | Watch::Write(_) => return Ok(None),
            };
            let left = match (id, flags & SUBCLOCK_ABSTIME != 0) {
                (CLOCK_MONOTONIC | CLOCK_REALTIME, false) => timeout,
                (CLOCK_MONOTONIC, true) => {
                    // The guest's monotonic clock counts from wasmtime-wasi's
                    // own origin: ask it.
                    let now = match guest_monotonic_now {
                        Some(now) => now,
                        None => {
                            let now = wasi_monotonic_now(state)?;
                            guest_monotonic_now = Some(now);
                            now
                        }
                    };
                    timeout.saturating_sub(now)
                }
                (CLOCK_REALTIME, true) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    timeout.saturating_sub(now)
                }
                // CPU-time clocks: wasmtime-wasi refuses them too.
                _ => return Err(ERRNO_INVAL),
            };
            Ok(Some(
                start
                    .checked_add(Duration::from_nanos(left))
                    .unwrap_or(start),
            ))
        })
        .collect()
}

/// wasmtime-wasi's monotonic now, as `clock_time_get` tells the guest.
fn wasi_monotonic_now(state: &mut HostState) -> Result<u64, i32> {
    let mut scratch = Scratch::new(8);
    let mut memory = GuestMemory::Unshared(scratch.bytes());
    // Synchronous in wasmtime-wasi: no runtime needed.
    match p1::clock_time_get(&mut state.wasi, &mut memory, CLOCK_MONOTONIC as i32, 1, 0) {
        Ok(ERRNO_SUCCESS) => Ok(u64_at(scratch.bytes(), 0)),
        Ok(errno) => Err(errno),
        Err(_) => Err(ERRNO_INVAL),
    }
}

/// The events of `others` (fds wasmtime-wasi knows) that are ready now,
/// from wasmtime-wasi's `poll_oneoff` with a zero timeout; or the errno it
/// refuses them with.
fn poll_others(state: &mut HostState, others: &[Subscription]) -> Result<Vec<Event>, i32> {
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let n = others.len() + 1;
    let (events_at, nevents_at) = (n * SUBSCRIPTION_SIZE, n * (SUBSCRIPTION_SIZE + EVENT_SIZE));
    let mut scratch = Scratch::new(nevents_at + 4);
    let bytes = scratch.bytes();
    for (sub, out) in others.iter().zip(bytes.chunks_exact_mut(SUBSCRIPTION_SIZE)) {
        out[0..8].copy_from_slice(&sub.userdata.to_le_bytes());
        let (kind, fd) = match sub.what {
            Watch::Read(fd) => (EVENTTYPE_FD_READ, fd),
            Watch::Write(fd) => (EVENTTYPE_FD_WRITE, fd),
            _ => unreachable!("only fds are others"),
        };
        out[8] = kind;
        out[16..20].copy_from_slice(&fd.to_le_bytes());
    }
    // The last subscription: a relative monotonic clock of 0 (all zero but
    // the clock id), so wasmtime-wasi only looks. Its userdata is never
    // one of the guest's: it is left out below by its type.
    let clock = &mut bytes[others.len() * SUBSCRIPTION_SIZE..events_at];
    clock[8] = EVENTTYPE_CLOCK;
    clock[16..20].copy_from_slice(&CLOCK_MONOTONIC.to_le_bytes());
    let mut memory = GuestMemory::Unshared(scratch.bytes());
    let call = p1::poll_oneoff(
        &mut state.wasi,
        &mut memory,
        0,
        events_at as i32,
        n as i32,
        nevents_at as i32,
    );
    match wasi(call) {
        Ok(ERRNO_SUCCESS) => {}
        Ok(errno) => return Err(errno),
        Err(_) => return Err(ERRNO_INVAL),
    }
    let bytes = scratch.bytes();
    let count = (u32_at(bytes, nevents_at) as usize).min(n);
    Ok(bytes[events_at..events_at + count * EVENT_SIZE]
        .chunks_exact(EVENT_SIZE)
        .map(Event::read)
        .filter(|e| e.kind != EVENTTYPE_CLOCK)
        .collect())
}

/// `fd_read(fd, iovs, n, nread) -> errno`: for a channel fd, one byte
/// while a message may be waiting, `EAGAIN` otherwise.
fn fd_read(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    iovs: i32,
    n: i32,
    nread_ptr: i32,
) -> wasmtime::Result<i32> {
    let (data, state) = guest(&mut caller)?;
    let Some(handle) = channel_of(state, fd) else {
        let mut memory = GuestMemory::Unshared(data);
        return wasi(p1::fd_read(
            &mut state.wasi,
            &mut memory,
            fd,
            iovs,
            n,
            nread_ptr,
        ));
    };
    let Some(iovecs) = (n as u32 as usize)
        .checked_mul(IOVEC_SIZE)
        .and_then(|len| slice(data, iovs, len))
    else {
        return Ok(ERRNO_FAULT);
    };
    let first = iovecs
        .chunks_exact(IOVEC_SIZE)
        .map(|v| (u32_at(v, 0) as i32, u32_at(v, 4)))
        .find(|&(_, len)| len > 0);
    let nread: u32 = match first {
        None => 0,
        Some(_) if !state.channels.readable(handle) => return Ok(ERRNO_AGAIN),
        Some((buf, _)) => {
            let Some(byte) = slice_mut(data, buf, 1) else {
                return Ok(ERRNO_FAULT);
            };
            byte[0] = 1;
            1
        }
    };
    let Some(out) = slice_mut(data, nread_ptr, 4) else {
        return Ok(ERRNO_FAULT);
    };
    out.copy_from_slice(&nread.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// `fd_fdstat_get(fd, stat) -> errno`: a channel fd is a non-blocking fd
/// that may be read and polled.
fn fd_fdstat_get(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    stat_ptr: i32,
) -> wasmtime::Result<i32> {
    let (data, state) = guest(&mut caller)?;
    if channel_of(state, fd).is_none() {
        let mut memory = GuestMemory::Unshared(data);
        return wasi(p1::fd_fdstat_get(
            &mut state.wasi,
            &mut memory,
            fd,
            stat_ptr,
        ));
    }
    let Some(stat) = slice_mut(data, stat_ptr, FDSTAT_SIZE) else {
        return Ok(ERRNO_FAULT);
    };
    stat.fill(0); // filetype 0: unknown
    stat[2..4].copy_from_slice(&FDFLAGS_NONBLOCK.to_le_bytes());
    let rights = RIGHTS_FD_READ | RIGHTS_POLL_FD_READWRITE;
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// `fd_close(fd) -> errno`: closing a channel fd changes nothing.
fn fd_close(mut caller: Caller<'_, HostState>, fd: i32) -> wasmtime::Result<i32> {
    let (data, state) = guest(&mut caller)?;
    if channel_of(state, fd).is_some() {
        return Ok(ERRNO_SUCCESS);
    }
    let mut memory = GuestMemory::Unshared(data);
    wasi(p1::fd_close(&mut state.wasi, &mut memory, fd))
}
