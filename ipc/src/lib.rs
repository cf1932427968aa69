//! Shared vocabulary of the edgeward supervisor and its workers.
//!
//! The supervisor and every worker talk over a `SOCK_SEQPACKET` socketpair:
//! one datagram is one postcard-encoded message, so message boundaries are
//! kept by the kernel and no length framing is needed. File descriptors
//! (ring memfds, pipes, sockets) travel beside a message with `SCM_RIGHTS`.
//!
//! - [`control`]: the supervisor ⇄ worker messages and their version handshake.
//! - [`zygote`]: the supervisor ⇄ fork-server messages.
//! - [`ring`]: the shared-memory SPSC ring of the data plane.
//! - [`rate`]: the line rate limit both sides apply to a module's output.
//! - [`frame`]: sending and receiving one message (with fds) on a seqpacket socket,
//!   treating every received byte as untrusted.

pub mod control;
pub mod frame;
pub mod rate;
pub mod ring;
pub mod sealed;
pub mod zygote;

/// Version of the control protocol. Both sides send it first (in `Hello`) and
/// refuse to talk to a peer with another version: the supervisor and its
/// workers always come from one build, so a mismatch means a stale binary.
pub const PROTOCOL_VERSION: u32 = 13;

/// Largest control message, in bytes. Anything larger is refused by the
/// sender and rejected as truncated by the receiver.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Largest snapshot a module may take (the store's limit per record). It
/// travels to the supervisor in parts of [`SNAPSHOT_PART_BYTES`]
/// ([`control::FromWorker::SnapshotPart`]) and back at restart in a sealed
/// memfd when it does not fit in `Init`.
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;

/// Largest part of a snapshot in one control message, and the largest
/// state restored inline in `Init` (larger ones come in a memfd).
pub const SNAPSHOT_PART_BYTES: usize = 48 * 1024;

/// Most file descriptors accepted beside one message: the kernel's
/// `SCM_MAX_FD`. An `Init` carries two per ring (memfd and eventfd).
pub const MAX_FDS_PER_FRAME: usize = 253;
