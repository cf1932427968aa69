//! Snapshots for command modules. A reactor implements
//! [`Module::snapshot`](crate::Module::snapshot) and
//! [`Module::restore`](crate::Module::restore); a command owns its main
//! loop, so it hands its state over with [`put`] whenever it changes (the
//! next snapshot round takes the latest) and reads what was restored with
//! [`restored`] when it starts.
//!
//! ```ignore
//! fn main() {
//!     let mut count = edgeward::snapshot::restored()
//!         .and_then(|b| u64::decode(&b))
//!         .unwrap_or(0);
//!     loop {
//!         count += 1;
//!         let _ = edgeward::snapshot::put(&count.to_bytes());
//!         // ...
//!     }
//! }
//! ```

/// Makes `state` the module's state for the next snapshot round (replacing
/// any earlier `put` not yet taken). Cheap: one copy into the host.
///
/// # Errors
/// [`error::TOO_LARGE`](crate::error::TOO_LARGE) over 16 MiB.
pub fn put(state: &[u8]) -> Result<(), i32> {
    // SAFETY: pointer and length describe `state`, live for the call.
    let code = unsafe { crate::sys::snapshot_put(state.as_ptr(), state.len()) };
    if code < 0 {
        Err(code)
    } else {
        Ok(())
    }
}

/// The state restored for this run: the newest durable snapshot this same
/// wasm took, or `None` (first start, or not a command module).
pub fn restored() -> Option<Vec<u8>> {
    // SAFETY: a null buffer of capacity 0 is only asked for the length.
    let len = unsafe { crate::sys::snapshot_get(core::ptr::null_mut(), 0) };
    if len <= 0 {
        return None;
    }
    let mut bytes = vec![0u8; len as usize];
    // SAFETY: `bytes` is writable for its whole length during the call.
    let copied = unsafe { crate::sys::snapshot_get(bytes.as_mut_ptr(), bytes.len()) };
    (copied == len).then_some(bytes)
}
