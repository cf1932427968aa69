//! The host side of one module: store state, the linker, and the imports
//! edgeward gives a guest (WASI preview 1 as granted, plus module `edgeward`).

pub mod channel_fd;
pub mod channels;
pub mod errors;
pub mod imports;
pub mod limits;
pub mod path_audit;
pub mod wasi;

use std::sync::Arc;

use edgeward_ipc::control::Stats;
use wasmtime::{Engine, Linker};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::report::Reporter;

/// Per-store state of the one module a worker runs.
pub struct HostState {
    /// WASI preview 1 context holding exactly the policy's grants.
    pub wasi: WasiP1Ctx,
    /// Linear memory and table caps.
    pub limits: limits::Limits,
    /// Rate limit of the `log` import.
    pub log_limit: edgeward_ipc::rate::LineLimit,
    /// Sends log lines and faults to the supervisor.
    pub reporter: Arc<Reporter>,
    /// Counters reported to the supervisor.
    pub stats: Stats,
    /// The module's channels and ring ends.
    pub channels: channels::Channels,
    /// The guest's exported memory, once instantiated.
    pub memory: Option<wasmtime::Memory>,
    /// Watchdog ticks at the start of the current guest call and periods
    /// in its deadline (`None` outside the reactor loop: no per-call budget
    /// to respect while blocking).
    pub call_ticks: Option<(u64, u64)>,
    /// Sequence number of the message being handled, or -1.
    pub current_seq: i64,
    /// The module is a command (it may block in `recv`).
    pub is_command: bool,
    /// What `snapshot_put` was given during the current `ew_snapshot`.
    pub snapshot: Option<Vec<u8>>,
    /// A command's latest `snapshot_put`, taken by the control thread when
    /// the supervisor asks (`None`: not a command importing `snapshot_put`).
    pub command_state: Option<Arc<std::sync::Mutex<Option<Vec<u8>>>>>,
    /// The snapshot a command reads with `snapshot_get`, and its epoch.
    pub restored: Option<(u64, Vec<u8>)>,
}

/// Builds a linker with every import a guest may use. The set is the same
/// for all modules; what a module may *do* through them is decided by its
/// [`HostState`].
///
/// # Errors
/// Only on a programming error (a name defined twice).
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut HostState| &mut state.wasi)?;
    imports::add_to_linker(&mut linker)?;
    Ok(linker)
}
