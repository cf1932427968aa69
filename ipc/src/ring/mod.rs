//! The data plane: a single-producer single-consumer byte ring in a sealed
//! memfd, shared by two workers. Messages never pass through the supervisor.
//!
//! ```text
//! memfd (sealed against shrink/grow)
//! ┌────────────── header, page 0 ──────────────┐┌──────── data: capacity bytes ────────┐
//! │ 0: magic, version, capacity, max_message   ││ frame frame frame … [wrap] frame …    │
//! │ 64: write position (producer)  128: read   ││                                       │
//! │ position (consumer)  192: consumer parked  ││ frame = len u32 | crc32c u32 | seq u64 │
//! │ 256: next seq (producer)                   ││         | payload | pad to 8 bytes     │
//! └────────────────────────────────────────────┘└───────────────────────────────────────┘
//! ```
//!
//! Positions are byte counts that only grow; `position % capacity` is the
//! offset. A frame never straddles the end: when it does not fit, the
//! producer writes a wrap marker and starts again at offset 0.
//!
//! Crash safety:
//! - The producer publishes the write position only after the whole frame is
//!   written (Release). A producer that dies mid-write leaves no visible frame.
//! - The consumer advances the read position only after its handler returned
//!   ([`Consumer::commit`]). A consumer that dies mid-handler sees the same
//!   frame again after restart: at least once, and the duplicate carries the
//!   same `seq`.
//! - The supervisor keeps the memfd, so a ring outlives both workers.
//!
//! Shared memory is hostile input: the peer may scribble anything anywhere
//! at any time. The consumer copies each frame header out once, checks every
//! length and position against the ring's bounds, copies the payload out once,
//! and checks its CRC and sequence number before handing it over. A bad frame
//! is reported as [`RingError::Corrupt`] and nothing of it is delivered. No
//! Rust reference is ever formed to the shared bytes: only atomics for the
//! positions, and raw copies for the data (`mapping.rs`, the unsafe core).

mod consumer;
mod layout;
#[cfg(not(loom))]
mod mapping;
#[cfg(loom)]
#[path = "mapping_model.rs"]
mod mapping;
mod observer;
mod producer;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

use std::os::fd::OwnedFd;

pub use consumer::{Consumer, Frame, Pending};
pub use layout::{FRAME_HEADER, MAX_CAPACITY, MIN_CAPACITY};
pub use observer::{Observer, RingStats};
pub use producer::{Producer, SendError, Sent};

/// Why a ring operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// The ring memory holds something impossible: this ring must stop.
    #[error("ring corrupt at seq {seq}: {what}")]
    Corrupt {
        /// Sequence number expected next.
        seq: u64,
        /// What was wrong.
        what: String,
    },
    /// The memfd is not a ring of ours (bad magic, version, size or seals).
    #[error("not an edgeward ring: {0}")]
    Invalid(String),
    /// A system call failed.
    #[error("ring: {0}")]
    Os(#[from] nix::Error),
}

/// Checks the ring in `fd` as its consumer would, from the consumer's last
/// committed position to the producer's write position, without consuming
/// or changing anything: the supervisor's own look before it believes a
/// consumer that reports the ring corrupt. Returns the number of frames
/// found intact.
///
/// # Errors
/// [`RingError::Corrupt`] or [`RingError::Invalid`] for what is wrong.
pub fn verify(fd: impl std::os::fd::AsFd) -> Result<u64, RingError> {
    Consumer::attach(fd)?.scan()
}

/// Creates a ring: a sealed memfd with an initialised header.
///
/// `capacity` (data bytes) must be a power of two in
/// [`MIN_CAPACITY`]..=[`MAX_CAPACITY`]; `max_message` at most a quarter of it.
///
/// # Errors
/// Bad sizes, or the memfd cannot be created, sized, sealed or mapped.
pub fn create(name: &str, capacity: u32, max_message: u32) -> Result<OwnedFd, RingError> {
    layout::check_sizes(capacity, max_message)?;
    let fd = nix::sys::memfd::memfd_create(
        name,
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let total = layout::total_size(capacity);
    nix::unistd::ftruncate(&fd, total as i64)?;
    let seals = nix::fcntl::SealFlag::F_SEAL_SHRINK
        | nix::fcntl::SealFlag::F_SEAL_GROW
        | nix::fcntl::SealFlag::F_SEAL_SEAL;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_ADD_SEALS(seals))?;
    let map = mapping::Mapping::map(&fd, total)?;
    layout::init_header(&map, capacity, max_message);
    Ok(fd)
}
