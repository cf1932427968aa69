//! The Rust SDK for edgeward modules.
//!
//! A reactor module is a type implementing [`Module`], exported with
//! [`module!`]:
//!
//! ```ignore
//! struct Counter { ticks: u64 }
//! impl edgeward::Module for Counter {
//!     fn init() -> Result<Self, i32> { Ok(Counter { ticks: 0 }) }
//!     fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> { self.ticks += 1; Ok(()) }
//! }
//! edgeward::module!(Counter);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip1`. The ABI underneath is in
//! `docs/guest-abi.md`; this crate is the only place a Rust module needs to
//! know it.

/// Raw imports from the `edgeward` module. Use the safe wrappers instead.
pub mod sys {
    #[link(wasm_import_module = "edgeward")]
    extern "C" {
        /// `log(level, ptr, len) -> i32`
        pub fn log(level: i32, ptr: *const u8, len: usize) -> i32;
        /// `now_ns() -> i64`
        pub fn now_ns() -> i64;
        /// `channel(name_ptr, name_len) -> i32`: a handle or `DENIED`.
        pub fn channel(name: *const u8, len: usize) -> i32;
        /// `send(ch, ptr, len) -> i32`
        pub fn send(ch: i32, ptr: *const u8, len: usize) -> i32;
        /// `recv(ch, buf_ptr, buf_cap) -> i32` (command modules; blocks)
        pub fn recv(ch: i32, ptr: *mut u8, cap: usize) -> i32;
        /// `recv_wait(ch, buf_ptr, buf_cap, timeout_ns) -> i32` (command
        /// modules): `recv` waiting at most `timeout_ns` (0: only looks;
        /// negative: for ever), else `TIMEOUT`
        pub fn recv_wait(ch: i32, ptr: *mut u8, cap: usize, timeout_ns: i64) -> i32;
        /// `channel_fd(ch) -> i32` (command modules): a WASI fd that polls
        /// readable while a message of `ch` may be waiting
        pub fn channel_fd(ch: i32) -> i32;
        /// `message_seq() -> i64`
        pub fn message_seq() -> i64;
        /// `snapshot_put(ptr, len) -> i32` (a reactor during `ew_snapshot`;
        /// a command whenever its state changes)
        pub fn snapshot_put(ptr: *const u8, len: usize) -> i32;
        /// `snapshot_get(ptr, cap) -> i32` (commands): the restored state's
        /// length, copied when it fits; 0 if none
        pub fn snapshot_get(ptr: *mut u8, cap: usize) -> i32;
    }
}

mod channel;
mod message;
pub mod snapshot;
#[cfg(feature = "serde")]
pub mod state;

pub use channel::{channel, Channel, Incoming};
pub use message::Message;

/// Error codes returned by edgeward imports (negative `i32`s).
pub mod error {
    /// The policy does not grant it.
    pub const DENIED: i32 = -1;
    /// A pointer, length or handle is out of range.
    pub const INVALID: i32 = -2;
    /// Larger than `max_message_kib` (send) or the buffer (recv).
    pub const TOO_LARGE: i32 = -3;
    /// A subscriber's ring is full (`on_full = "error"`, or `"block"` timed out).
    pub const FULL: i32 = -4;
    /// Not available to this kind of module (`recv` in a reactor).
    pub const UNSUPPORTED: i32 = -5;
    /// No message arrived in time (`recv_timeout`).
    pub const TIMEOUT: i32 = -6;

    /// The name of an error code, for log lines.
    pub fn name(code: i32) -> &'static str {
        match code {
            DENIED => "denied",
            INVALID => "invalid",
            TOO_LARGE => "too large",
            FULL => "full",
            UNSUPPORTED => "unsupported",
            TIMEOUT => "timeout",
            _ => "unknown",
        }
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something is wrong but the module goes on.
    Warn = 1,
    /// Normal operation.
    Info = 2,
    /// Detail for debugging.
    Debug = 3,
}

/// Sends one line to the supervisor's output, prefixed with the module name.
/// Lines longer than 1 KiB are cut.
pub fn log(level: Level, message: &str) {
    // SAFETY: the pointer and length describe `message`, which is live and
    // readable for the duration of the call; the host only reads it.
    unsafe { sys::log(level as i32, message.as_ptr(), message.len()) };
}

/// [`log`] at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// [`log`] at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// [`log`] at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Monotonic time in nanoseconds (the clock `on_tick` receives).
pub fn now_ns() -> u64 {
    // SAFETY: a plain import call without pointers.
    unsafe { sys::now_ns() as u64 }
}

/// The value after `--name` in the module's args (`[wasi] args`), parsed;
/// `None` when absent or unparsable. E.g. `edgeward::arg::<f64>("--threshold")`.
pub fn arg<T: core::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
}

/// A reactor module: edgeward calls these handlers, each to completion.
/// A returned `Err(code)` is reported by the host (codes are yours; use
/// negative values).
pub trait Module: Sized + 'static {
    /// Called once when the module starts. `Err` refuses to start (the
    /// supervisor reports the code and applies the restart policy).
    fn init() -> Result<Self, i32>;

    /// Called every `[schedule] tick_us` microseconds with [`now_ns`].
    fn on_tick(&mut self, _now_ns: u64) -> Result<(), i32> {
        Ok(())
    }

    /// Called for each message of a subscribed channel, in order per
    /// publisher. After a crash of this module the message being handled
    /// comes again, with the same [`Incoming::seq`].
    fn on_message(&mut self, _message: Incoming<'_>) -> Result<(), i32> {
        Ok(())
    }

    /// The state to save in a snapshot (`None`: nothing to save). Called
    /// every `[snapshot] interval_ms` and when edgeward stops; at most
    /// 16 MiB. [`Message`] encodes typed values: `self.total.to_bytes()`;
    /// with the `serde` feature, `state::save(&self.totals)` encodes any
    /// serde type.
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Whether the module is healthy: 0 yes, anything else no. Asked at the
    /// end of an upgrade's probation (`edgeward upgrade`); a non-zero answer
    /// rolls the upgrade back to the previous version and its state.
    fn health(&self) -> i32 {
        0
    }

    /// Called once after `init`, before the module counts as running, with
    /// the newest durable snapshot taken by this same wasm. `Err` starts
    /// the module from its initial state (logged).
    fn restore(&mut self, _state: &[u8]) -> Result<(), i32> {
        Ok(())
    }
}

#[doc(hidden)]
pub mod __private {
    use core::cell::RefCell;

    /// Holds the one module instance. Wasm guests are single-threaded.
    pub struct Slot<M>(pub RefCell<Option<M>>);
    // SAFETY: wasm32-wasip1 modules run on one thread; the host never calls
    // into a module concurrently.
    unsafe impl<M> Sync for Slot<M> {}

    pub fn code(result: Result<(), i32>) -> i32 {
        match result {
            Ok(()) => 0,
            Err(code) => code,
        }
    }

    /// The receive buffer: allocated once at the size the host asks for,
    /// then reused by the host for every message (see `ew_alloc` in
    /// docs/guest-abi.md). Never freed.
    pub fn alloc(len: i32) -> i32 {
        let buffer: &'static mut [u8] = Vec::leak(vec![0u8; len.max(1) as usize]);
        buffer.as_mut_ptr() as i32
    }

    /// Builds the message view for `ew_on_message`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be the receive buffer the host filled.
    pub unsafe fn incoming<'a>(ch: i32, ptr: i32, len: i32) -> crate::Incoming<'a> {
        // SAFETY: per this function's contract the range is our own live
        // receive buffer, not aliased while the handler runs.
        let bytes = unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) };
        crate::Incoming::new(ch, bytes)
    }
}

/// Exports the `ew_*` handlers for a [`Module`] type.
#[macro_export]
macro_rules! module {
    ($ty:ty) => {
        static __EDGEWARD_MODULE: $crate::__private::Slot<$ty> =
            $crate::__private::Slot(::core::cell::RefCell::new(None));

        #[no_mangle]
        pub extern "C" fn ew_init() -> i32 {
            match <$ty as $crate::Module>::init() {
                Ok(module) => {
                    *__EDGEWARD_MODULE.0.borrow_mut() = Some(module);
                    0
                }
                Err(code) => code,
            }
        }

        #[no_mangle]
        pub extern "C" fn ew_alloc(len: i32) -> i32 {
            $crate::__private::alloc(len)
        }

        #[no_mangle]
        pub extern "C" fn ew_on_message(ch: i32, ptr: i32, len: i32) -> i32 {
            // SAFETY: the host calls this with the buffer `ew_alloc` gave it.
            let message = unsafe { $crate::__private::incoming(ch, ptr, len) };
            match __EDGEWARD_MODULE.0.borrow_mut().as_mut() {
                Some(module) => {
                    $crate::__private::code($crate::Module::on_message(module, message))
                }
                None => $crate::error::INVALID,
            }
        }

        #[no_mangle]
        pub extern "C" fn ew_snapshot() -> i32 {
            match __EDGEWARD_MODULE.0.borrow().as_ref() {
                Some(module) => match $crate::Module::snapshot(module) {
                    // SAFETY: pointer and length describe `state`, live for the call.
                    Some(state) => unsafe {
                        $crate::sys::snapshot_put(state.as_ptr(), state.len())
                    },
                    None => 1,
                },
                None => $crate::error::INVALID,
            }
        }

        #[no_mangle]
        pub extern "C" fn ew_health() -> i32 {
            match __EDGEWARD_MODULE.0.borrow().as_ref() {
                Some(module) => $crate::Module::health(module),
                None => $crate::error::INVALID,
            }
        }

        #[no_mangle]
        pub extern "C" fn ew_restore(ptr: i32, len: i32) -> i32 {
            // SAFETY: the host calls this with a buffer `ew_alloc` gave it.
            let state = unsafe { $crate::__private::incoming(0, ptr, len) };
            match __EDGEWARD_MODULE.0.borrow_mut().as_mut() {
                Some(module) => {
                    $crate::__private::code($crate::Module::restore(module, state.bytes()))
                }
                None => $crate::error::INVALID,
            }
        }

        #[no_mangle]
        pub extern "C" fn ew_on_tick(now_ns: i64) -> i32 {
            match __EDGEWARD_MODULE.0.borrow_mut().as_mut() {
                Some(module) => {
                    $crate::__private::code($crate::Module::on_tick(module, now_ns as u64))
                }
                None => $crate::error::INVALID,
            }
        }
    };
}
