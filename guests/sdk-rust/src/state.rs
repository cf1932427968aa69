//! Snapshots of any serde type (feature `serde`): [`save`] in
//! [`Module::snapshot`](crate::Module::snapshot), [`load`] in
//! [`Module::restore`](crate::Module::restore); a command module uses
//! [`put`] and [`restored`] instead.
//!
//! ```ignore
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Totals { alarms: u64, last: Option<u64> }
//!
//! fn snapshot(&self) -> Option<Vec<u8>> { edgeward::state::save(&self.totals) }
//! fn restore(&mut self, bytes: &[u8]) -> Result<(), i32> {
//!     self.totals = edgeward::state::load(bytes)?;
//!     Ok(())
//! }
//! ```
//!
//! The encoding is postcard: compact (a `u64` counter takes 1 to 10
//! bytes), with no field names, so a struct restores only into the same
//! field order and types. edgeward hands a snapshot back only to the same
//! wasm (same sha256), so this holds between restarts; a module that
//! changes its state type across an upgrade decodes the old shape itself.

/// Encodes `value` for [`Module::snapshot`](crate::Module::snapshot).
/// `None` (logged) if it cannot be encoded, which only a hand-written
/// `Serialize` that fails can cause: no snapshot is taken this round.
pub fn save<T: serde::Serialize>(value: &T) -> Option<Vec<u8>> {
    match postcard::to_allocvec(value) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            crate::error(&format!("snapshot: cannot encode the state: {e}"));
            None
        }
    }
}

/// Decodes what [`save`] encoded.
///
/// # Errors
/// [`error::INVALID`](crate::error::INVALID) (logged, naming the type) if
/// `bytes` do not decode as `T`; the module then starts from its initial
/// state.
pub fn load<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, i32> {
    postcard::from_bytes(bytes).map_err(|e| {
        crate::error(&format!(
            "restore: {} bytes of snapshot do not decode as {}: {e}",
            bytes.len(),
            core::any::type_name::<T>()
        ));
        crate::error::INVALID
    })
}

/// For command modules: makes `value` the state for the next snapshot
/// round ([`crate::snapshot::put`]).
///
/// # Errors
/// It cannot be encoded, or is over 16 MiB.
pub fn put<T: serde::Serialize>(value: &T) -> Result<(), i32> {
    crate::snapshot::put(&save(value).ok_or(crate::error::INVALID)?)
}

/// For command modules: the restored state, decoded (`None` if there is
/// none or it does not decode, which is logged).
pub fn restored<T: serde::de::DeserializeOwned>() -> Option<T> {
    load(&crate::snapshot::restored()?).ok()
}
