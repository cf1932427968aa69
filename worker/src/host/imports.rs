//! The `edgeward` import module: what a guest can ask of edgeward beyond WASI.
//!
//! Guest pointers and lengths are untrusted: every access is bounds-checked
//! against the guest's exported `memory`, and a bad range returns
//! [`EW_ERR_INVALID`] instead of trapping the host.

use std::time::Duration;

use edgeward_ipc::control::LogLevel;
use wasmtime::{Caller, Linker};

use super::HostState;

/// Import module name.
pub const MODULE: &str = "edgeward";

use super::errors::*;

/// Longest log line forwarded; longer ones are cut and marked with `…`.
pub const MAX_LOG_BYTES: usize = 1024;

/// Registers the `edgeward` imports.
///
/// # Errors
/// Only on a programming error (a name defined twice).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "log", log)?;
    linker.func_wrap(MODULE, "now_ns", now_ns)?;
    linker.func_wrap(MODULE, "channel", channel)?;
    linker.func_wrap(MODULE, "send", send)?;
    linker.func_wrap(MODULE, "recv", recv)?;
    linker.func_wrap(MODULE, "recv_wait", recv_wait)?;
    linker.func_wrap(MODULE, "channel_fd", channel_fd)?;
    linker.func_wrap(MODULE, "message_seq", message_seq)?;
    linker.func_wrap(MODULE, "snapshot_put", snapshot_put)?;
    linker.func_wrap(MODULE, "snapshot_get", snapshot_get)?;
    super::channel_fd::add_to_linker(linker)?;
    super::path_audit::add_to_linker(linker)?;
    Ok(())
}

/// Longest channel name (policy names are at most 63 bytes).
const MAX_CHANNEL_NAME: usize = 64;

/// `channel(name_ptr, name_len) -> i32`: the handle of a granted channel,
/// or `EW_ERR_DENIED` (counted).
fn channel(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> i32 {
    let Some((name, false)) = read_guest_bytes(&mut caller, ptr, len, MAX_CHANNEL_NAME) else {
        return EW_ERR_INVALID;
    };
    let state = caller.data_mut();
    match state.channels.handle(&name) {
        Some(handle) => handle,
        None => {
            state.stats.denials += 1;
            EW_ERR_DENIED
        }
    }
}

/// The guest range `[ptr, ptr+len)` as a `usize` range, unchecked against
/// the memory (callers use `get`).
fn range(ptr: i32, len: i32) -> Option<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    Some(start..start.checked_add(len as u32 as usize)?)
}

/// `send(ch, ptr, len) -> i32`: one message to every subscriber of `ch`,
/// copied once from guest memory into each ring.
fn send(mut caller: Caller<'_, HostState>, ch: i32, ptr: i32, len: i32) -> i32 {
    let Some(memory) = caller.data().memory else {
        return EW_ERR_INVALID;
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let Some(payload) = range(ptr, len).and_then(|r| data.get(r)) else {
        return EW_ERR_INVALID;
    };
    state
        .channels
        .send(&mut state.stats, ch, payload, state.call_ticks)
}

/// `recv(ch, buf_ptr, buf_cap) -> i32` (command modules): blocks for the
/// next message of `ch`, copies it into the buffer, returns its length.
fn recv(mut caller: Caller<'_, HostState>, ch: i32, ptr: i32, cap: i32) -> i32 {
    receive(&mut caller, ch, ptr, cap, None)
}

/// `recv_wait(ch, buf_ptr, buf_cap, timeout_ns) -> i32` (command modules):
/// `recv` waiting at most `timeout_ns` (0: only looks, negative: for
/// ever); `EW_ERR_TIMEOUT` when no message came.
fn recv_wait(
    mut caller: Caller<'_, HostState>,
    ch: i32,
    ptr: i32,
    cap: i32,
    timeout_ns: i64,
) -> i32 {
    let timeout = u64::try_from(timeout_ns).ok().map(Duration::from_nanos);
    receive(&mut caller, ch, ptr, cap, timeout)
}

/// `recv` and `recv_wait`: the message (or error code) for the guest, and
/// `message_seq` set to it (-1 once the previous message is committed and
/// none came).
fn receive(
    caller: &mut Caller<'_, HostState>,
    ch: i32,
    ptr: i32,
    cap: i32,
    timeout: Option<Duration>,
) -> i32 {
    let (buffer, state) = match command_buffer(caller, ptr, cap) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let code = state.channels.recv(&mut state.stats, ch, buffer, timeout);
    state.current_seq = if code >= 0 {
        state.channels.last_recv_seq()
    } else {
        -1
    };
    code
}

/// `channel_fd(ch) -> i32` (command modules): a WASI fd that polls readable
/// while a message of `ch` may be waiting (see [`super::channel_fd`]).
fn channel_fd(mut caller: Caller<'_, HostState>, ch: i32) -> i32 {
    let state = caller.data_mut();
    if !state.is_command {
        return EW_ERR_UNSUPPORTED;
    }
    match state.channels.check_subscribed(&mut state.stats, ch) {
        Ok(()) => (super::channel_fd::FD_BASE + ch as u32) as i32,
        Err(code) => code,
    }
}

/// `snapshot_put(ptr, len) -> i32`: the module's state. A reactor calls it
/// during `ew_snapshot` (a later call in the same `ew_snapshot` replaces
/// it); a command calls it whenever its state changes, and the next
/// snapshot round takes the latest. `EW_ERR_TOO_LARGE` over
/// [`edgeward_ipc::MAX_SNAPSHOT_BYTES`].
fn snapshot_put(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> i32 {
    if len as u32 as usize > edgeward_ipc::MAX_SNAPSHOT_BYTES {
        return EW_ERR_TOO_LARGE;
    }
    let Some((bytes, false)) =
        read_guest_bytes(&mut caller, ptr, len, edgeward_ipc::MAX_SNAPSHOT_BYTES)
    else {
        return EW_ERR_INVALID;
    };
    match &caller.data().command_state {
        Some(latest) => *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes),
        None => caller.data_mut().snapshot = Some(bytes),
    }
    EW_OK
}

/// `snapshot_get(ptr, cap) -> i32` (command modules): the state restored
/// for this run. Returns its length, copying it into the buffer only when
/// it fits (call again with a buffer that large otherwise); 0 when there is
/// none. A reactor gets its state through `ew_restore` instead.
fn snapshot_get(mut caller: Caller<'_, HostState>, ptr: i32, cap: i32) -> i32 {
    let (buffer, state) = match command_buffer(&mut caller, ptr, cap) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let Some((epoch, bytes)) = &state.restored else {
        return 0;
    };
    let len = bytes.len();
    if len <= buffer.len() {
        buffer[..len].copy_from_slice(bytes);
        // The guest may call this in a loop: its lines obey the rate limit.
        let line = format!("restored snapshot epoch {epoch} ({len} bytes)");
        forward_line(state, LogLevel::Info, line);
    }
    len as i32
}

/// For the imports only command modules may use: the guest's writable
/// buffer `ptr..ptr+cap` and the host state.
///
/// # Errors
/// `EW_ERR_UNSUPPORTED` in a reactor, `EW_ERR_INVALID` for a range outside
/// memory.
fn command_buffer<'a>(
    caller: &'a mut Caller<'_, HostState>,
    ptr: i32,
    cap: i32,
) -> Result<(&'a mut [u8], &'a mut HostState), i32> {
    if !caller.data().is_command {
        return Err(EW_ERR_UNSUPPORTED);
    }
    let memory = caller.data().memory.ok_or(EW_ERR_INVALID)?;
    let (data, state) = memory.data_and_store_mut(caller);
    let buffer = range(ptr, cap)
        .and_then(|r| data.get_mut(r))
        .ok_or(EW_ERR_INVALID)?;
    Ok((buffer, state))
}

/// `message_seq() -> i64`: the sequence number of the message being
/// handled (in `ew_on_message`, or the last `recv`), -1 if none. A message
/// delivered twice after a crash carries the same number.
fn message_seq(caller: Caller<'_, HostState>) -> i64 {
    caller.data().current_seq
}

/// `log(level, ptr, len) -> i32`: one line to the supervisor's output.
fn log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> i32 {
    let text = match read_guest_bytes(&mut caller, ptr, len, MAX_LOG_BYTES) {
        Some((bytes, cut)) => {
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if cut {
                text.push('…');
            }
            text
        }
        None => return EW_ERR_INVALID,
    };
    forward_line(caller.data_mut(), LogLevel::from_guest(level), text);
    EW_OK
}

/// Sends a line of the running module to the supervisor, within the
/// module's rate limit and without waiting for room on the control socket.
/// A line over the limit, or one the socket has no room for (a supervisor
/// that fell behind), is dropped and counted in `log_limit`, which reports
/// the count once lines flow again.
pub fn forward_line(state: &mut HostState, level: LogLevel, text: String) {
    match state.log_limit.admit() {
        Ok(true) => {}
        Ok(false) => return,
        Err(dropped) => {
            let report = format!(
                "log: {dropped} lines dropped (limit {} lines/s) or refused by a full control socket",
                edgeward_ipc::rate::LINES_PER_SECOND
            );
            if !state.reporter.try_log(LogLevel::Warn, report) {
                // Still no room: keep the count for the next report.
                state.log_limit.dropped += dropped;
            }
        }
    }
    if !state.reporter.try_log(level, text) {
        state.log_limit.dropped += 1;
    }
}

/// `now_ns() -> i64`: monotonic clock in nanoseconds (CLOCK_MONOTONIC), the
/// same clock `ew_on_tick` receives.
fn now_ns() -> i64 {
    monotonic_ns()
}

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn monotonic_ns() -> i64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() * 1_000_000_000 + ts.tv_nsec(),
        Err(_) => 0,
    }
}

/// Copies up to `max` bytes of `[ptr, ptr+len)` out of the guest's memory.
/// Returns the bytes and whether they were cut, or `None` if the range is
/// not inside the memory (or the module exports no memory).
fn read_guest_bytes(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
    max: usize,
) -> Option<(Vec<u8>, bool)> {
    let memory = caller.get_export("memory")?.into_memory()?;
    let data = memory.data(&*caller);
    let range = data.get(range(ptr, len)?)?;
    let cut = range.len() > max;
    Some((range[..range.len().min(max)].to_vec(), cut))
}
