//! The snapshot store: modules' state bytes, made durable by the
//! supervisor alone, with group commit.
//!
//! - `record.rs`: the on-disk record (magic, version, module, wasm sha256,
//!   epoch, length, two CRC32Cs) and its strict decoder.
//! - `storage.rs`: the narrow seam to the file system (append, flush, list,
//!   remove), with the real implementation; tests substitute a simulated
//!   disk that can crash.
//! - `store.rs`: staging, group commit, compaction and the restore choice.
//!
//! Layout: `<state>/snapshots/seg-<16 hex digits>.log`, append-only segments
//! of records. One commit appends every record staged since the last one in
//! a single write and flushes the segment once (`fdatasync`): one device
//! flush for the whole gateway. When the active segment has grown to four
//! times the live records (or after an I/O error) the next commit instead
//! writes the live records and the staged ones into a fresh segment, flushes
//! it and the directory (two flushes), then removes the older segments.
//! Every record carries its own CRCs, so a torn or half-written segment costs
//! only its unacknowledged records.

// The store is complete and tested on its own; the supervisor's snapshot
// triggers, the guest ABI and `edgeward snapshot` that use it are the next
// step of issue 6 (see docs/operations.md). Until then it has no caller.
#![allow(dead_code, unused_imports)]

mod record;
mod storage;
mod store;

#[cfg(test)]
mod crash_tests;

pub use record::{Record, RecordError};
pub use storage::{DirStorage, Storage};
pub use store::{Report, Staged, Store, StoreError};
