//! Counting refused paths: `path_open` wrapped so that a call wasmtime-wasi
//! refuses for leaving the module's granted dirs (`..` or a symlink out of
//! a preopen) or for writing to a read-only one counts as a path denial
//! (`Stats::path_denials`; the supervisor audits each, `audit.rs`). The
//! call itself goes to wasmtime-wasi's own `path_open`, unchanged, the way
//! `channel_fd.rs` calls it for fds that are not channels.
//!
//! What never reaches the host cannot be counted: wasi-libc refuses an
//! absolute path under no preopened dir itself (`ENOTCAPABLE`), without a
//! call (docs/security.md, "Audited denials").

use wasmtime::{Caller, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wiggle::GuestMemory;

use super::channel_fd::{guest, wasi};
use super::HostState;

/// WASI preview 1 errno values that mean "not yours to open".
const ERRNO_ACCES: i32 = 2;
const ERRNO_PERM: i32 = 63;
const ERRNO_NOTCAPABLE: i32 = 76;

/// Whether `errno` from `path_open` is a refusal of the grants (not a
/// missing file or a bad argument).
pub fn is_denial(errno: i32) -> bool {
    matches!(errno, ERRNO_ACCES | ERRNO_PERM | ERRNO_NOTCAPABLE)
}

/// Wraps wasmtime-wasi's `path_open` in `linker`, which must hold it.
///
/// # Errors
/// Only on a programming error (a wrong signature).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap("wasi_snapshot_preview1", "path_open", path_open)?;
    linker.allow_shadowing(false);
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the WASI signature
fn path_open(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    dirflags: i32,
    path: i32,
    path_len: i32,
    oflags: i32,
    rights_base: i64,
    rights_inheriting: i64,
    fdflags: i32,
    opened: i32,
) -> wasmtime::Result<i32> {
    let (data, state) = guest(&mut caller)?;
    let mut memory = GuestMemory::Unshared(data);
    let errno = wasi(p1::path_open(
        &mut state.wasi,
        &mut memory,
        fd,
        dirflags,
        path,
        path_len,
        oflags,
        rights_base,
        rights_inheriting,
        fdflags,
        opened,
    ))?;
    if is_denial(errno) {
        state.stats.path_denials += 1;
        state.channels.maybe_heartbeat(&state.stats);
    }
    Ok(errno)
}
