//! Return codes of the `edgeward` imports (negative `i32`s; also in
//! `docs/guest-abi.md` and the guest SDKs). Stable: a code is never reused.

/// Success.
pub const EW_OK: i32 = 0;
/// The policy does not grant this channel (or not in this direction).
/// Counted in `status` as a denial.
pub const EW_ERR_DENIED: i32 = -1;
/// A pointer, length or handle is out of range.
pub const EW_ERR_INVALID: i32 = -2;
/// The message is larger than `max_message_kib` (send), or than the
/// buffer (recv). Nothing was sent or consumed.
pub const EW_ERR_TOO_LARGE: i32 = -3;
/// A subscriber's ring is full (`on_full = "error"`, or `"block"` after
/// waiting up to the call budget). Nothing was sent to anyone.
pub const EW_ERR_FULL: i32 = -4;
/// Not available to this kind of module (`recv` in a reactor).
pub const EW_ERR_UNSUPPORTED: i32 = -5;
/// No message arrived within `recv_wait`'s timeout.
pub const EW_ERR_TIMEOUT: i32 = -6;

#[cfg(test)]
mod tests {
    use super::*;

    /// The C SDK's header spells every code out; it must say what the host
    /// returns.
    #[test]
    fn the_c_sdk_header_has_the_hosts_codes() {
        const HEADER: &str = include_str!("../../../guests/sdk-c/edgeward.h");
        for (name, code) in [
            ("EW_ERR_DENIED", EW_ERR_DENIED),
            ("EW_ERR_INVALID", EW_ERR_INVALID),
            ("EW_ERR_TOO_LARGE", EW_ERR_TOO_LARGE),
            ("EW_ERR_FULL", EW_ERR_FULL),
            ("EW_ERR_UNSUPPORTED", EW_ERR_UNSUPPORTED),
            ("EW_ERR_TIMEOUT", EW_ERR_TIMEOUT),
        ] {
            let define = format!("#define {name} ({code})");
            assert!(HEADER.contains(&define), "edgeward.h lacks {define:?}");
        }
    }
}
