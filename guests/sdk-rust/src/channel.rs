//! Channels: named message streams the policy grants (`[channels]`).

use core::time::Duration;

use crate::message::Message;
use crate::sys;

/// A granted channel. Get one with [`channel`], typically in `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel(i32);

/// The channel named `name`, or `Err(error::DENIED)` when the policy does
/// not grant it (the denial shows in `edgeward status`).
pub fn channel(name: &str) -> Result<Channel, i32> {
    // SAFETY: pointer and length describe `name`, live for the call; the
    // host only reads it.
    let handle = unsafe { sys::channel(name.as_ptr(), name.len()) };
    if handle < 0 {
        Err(handle)
    } else {
        Ok(Channel(handle))
    }
}

impl Channel {
    /// The raw handle (the `ch` argument of the ABI).
    pub fn handle(self) -> i32 {
        self.0
    }

    /// Sends `bytes` to every subscriber. Errors: `DENIED` (not published
    /// by this module), `TOO_LARGE`, `FULL` (see `on_full`).
    pub fn send(self, bytes: &[u8]) -> Result<(), i32> {
        // SAFETY: pointer and length describe `bytes`, live for the call;
        // the host only reads it.
        let code = unsafe { sys::send(self.0, bytes.as_ptr(), bytes.len()) };
        if code < 0 {
            Err(code)
        } else {
            Ok(())
        }
    }

    /// Sends a typed value (see [`Message`]).
    pub fn send_value<T: Message>(self, value: &T) -> Result<(), i32> {
        let mut bytes = Vec::with_capacity(32);
        value.encode(&mut bytes);
        self.send(&bytes)
    }

    /// Command modules: waits for the next message and returns it in
    /// `buffer` (grown as needed). Reactors get messages in `on_message`.
    pub fn recv(self, buffer: &mut Vec<u8>) -> Result<(), i32> {
        // SAFETY: pointer and capacity describe `buffer`, which the host
        // fills up to the returned length.
        self.receive(buffer, |ptr, cap| unsafe { sys::recv(self.0, ptr, cap) })
    }

    /// Command modules: [`Channel::recv`] waiting at most `timeout`
    /// (zero: only takes a message that is already there);
    /// `Err(error::TIMEOUT)` when none came.
    pub fn recv_timeout(self, buffer: &mut Vec<u8>, timeout: Duration) -> Result<(), i32> {
        let timeout_ns = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
        // SAFETY: as in `recv`.
        self.receive(buffer, |ptr, cap| unsafe {
            sys::recv_wait(self.0, ptr, cap, timeout_ns)
        })
    }

    /// Calls `import(ptr, cap)` with `buffer`'s memory until the message
    /// fits, and truncates `buffer` to it.
    fn receive(
        self,
        buffer: &mut Vec<u8>,
        import: impl Fn(*mut u8, usize) -> i32,
    ) -> Result<(), i32> {
        if buffer.capacity() < 4096 {
            buffer.reserve(4096);
        }
        loop {
            buffer.resize(buffer.capacity(), 0);
            let code = import(buffer.as_mut_ptr(), buffer.len());
            if code >= 0 {
                buffer.truncate(code as usize);
                return Ok(());
            }
            if code == crate::error::TOO_LARGE && buffer.len() < 64 << 20 {
                buffer.reserve(buffer.len());
                continue;
            }
            return Err(code);
        }
    }

    /// Command modules: the next message, decoded (`None` if it does not
    /// decode as a `T`).
    pub fn recv_value<T: Message>(self, buffer: &mut Vec<u8>) -> Result<Option<T>, i32> {
        self.recv(buffer)?;
        Ok(T::decode(buffer))
    }
}

/// A message handed to [`crate::Module::on_message`].
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    channel: Channel,
    bytes: &'a [u8],
}

impl<'a> Incoming<'a> {
    pub(crate) fn new(ch: i32, bytes: &'a [u8]) -> Self {
        Self {
            channel: Channel(ch),
            bytes,
        }
    }

    /// The channel it came on.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// Its bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Decoded as a `T` (`None` if it does not decode).
    pub fn value<T: Message>(&self) -> Option<T> {
        T::decode(self.bytes)
    }

    /// Its sequence number in its publisher's stream: consecutive per
    /// publisher, and the same when delivered again after a crash.
    pub fn seq(&self) -> u64 {
        // SAFETY: a plain import call without pointers.
        unsafe { sys::message_seq() as u64 }
    }
}
