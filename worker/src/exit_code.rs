//! Exit codes of `edgeward-worker`. The supervisor reads the Fault message
//! for the reason; the code is a second, coarser signal.

/// Stopped on request, or a command module's `_start` returned 0.
pub const OK: i32 = 0;
/// The module could not be loaded or initialised, or the protocol broke.
pub const LOAD_FAILED: i32 = 1;
/// A guest call trapped.
pub const TRAPPED: i32 = 2;
/// The supervisor's end of the control socket is gone.
pub const SUPERVISOR_GONE: i32 = 3;
/// Bad command line.
pub const USAGE: i32 = 64;
