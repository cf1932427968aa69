//! Exit codes, the same as `edgeward-worker`'s (the supervisor reads them
//! alike): 0 stopped when asked, 1 could not start or the driver failed,
//! 3 the supervisor went away, 64 usage.

/// Stopped when asked.
pub const OK: i32 = 0;
/// Could not start (bad config, sandbox step failed) or the driver failed.
pub const LOAD_FAILED: i32 = 1;
/// The supervisor closed the control socket.
pub const SUPERVISOR_GONE: i32 = 3;
/// Bad command line.
pub const USAGE: i32 = 64;
