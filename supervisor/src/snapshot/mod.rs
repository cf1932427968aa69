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

mod record;
pub(crate) mod rounds;
mod storage;
mod store;

#[cfg(test)]
mod crash_tests;

pub use storage::DirStorage;
pub use store::{Store, StoreError};
