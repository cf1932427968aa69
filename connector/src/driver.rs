//! What a protocol driver (`mqtt/`, `modbus/`, `opcua/`) gets from the
//! connector's core, and what it gives back. The core (`control.rs`,
//! `channels.rs`) speaks the supervisor's protocol, owns the rings and the
//! sandbox; a driver only moves messages between [`ChannelIo`] and its
//! peers, counting what happens in [`Counters`].
//!
//! The contract, for every driver:
//! - `check(config)`: validate the `[connector]` table (without `kind`)
//!   before anything starts; errors name the key and the fix.
//! - `run(ctx)`: run until [`Context::stop`] fires (return `Ok(())`), or
//!   fail with an error worth a restart. Peers that vanish are not errors:
//!   they are retried with backoff, reported in the log and counted.
//! - Messages from modules arrive in [`InboundBatch`]es. A batch's ring
//!   space is released only when the driver calls [`InboundBatch::accept`]:
//!   accept once the messages are safe (published, or written to a durable
//!   queue). A batch dropped without `accept` is delivered again to the next
//!   connector process (the connector is stopping).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

/// Everything a driver runs with.
pub struct Context {
    /// The connector's name (its policy file's stem), for logs and payloads.
    pub name: String,
    /// The policy's `[connector]` table without `kind`, already accepted by
    /// the driver's `check`.
    pub config: toml::Table,
    /// The endpoints the policy's `[network] connect` grants, as written
    /// (`host:port`). The sandbox refuses every other connection; a driver
    /// connects to these by name (the connector's `/etc/hosts` resolves
    /// exactly the granted names to the addresses the supervisor allows).
    pub endpoints: Vec<String>,
    /// A directory only this connector can write, kept across restarts
    /// (durable queues live here).
    pub state_dir: PathBuf,
    /// The connector's channels. Files the config names (every key ending
    /// in `_file`: CA, certificate, key, password) are readable; the
    /// sandbox allows no other file outside `state_dir`.
    pub channels: ChannelIo,
    /// Shared counters, reported to the supervisor with every heartbeat.
    pub counters: Arc<Counters>,
    /// Becomes `true` when the connector must stop: finish what is in
    /// flight (briefly) and return.
    pub stop: watch::Receiver<bool>,
}

/// The connector's ends of its channels.
pub struct ChannelIo {
    /// Messages modules sent on the channels the connector subscribes
    /// (`[channels] subscribe`), in batches, in each ring's order.
    pub inbound: mpsc::Receiver<InboundBatch>,
    /// Sends on the channels the connector publishes (`[channels] publish`).
    pub outbound: Publisher,
}

/// One message a module sent on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The channel's name.
    pub channel: String,
    /// The module that sent it.
    pub from: String,
    /// Its sequence number in the ring from `from` (gap-free per ring).
    pub seq: u64,
    /// When the connector read it, microseconds since the Unix epoch.
    pub received_us: u64,
    /// The message's bytes.
    pub payload: Vec<u8>,
}

/// Messages read from one ring, in order. See the module docs for when to
/// [`InboundBatch::accept`].
pub struct InboundBatch {
    /// The messages, oldest first.
    pub messages: Vec<Inbound>,
    accepted: oneshot::Sender<()>,
}

impl InboundBatch {
    /// A batch whose acceptance `accepted` reports (for the core and tests).
    pub fn new(messages: Vec<Inbound>, accepted: oneshot::Sender<()>) -> Self {
        Self { messages, accepted }
    }

    /// The messages are safe: release their ring space.
    pub fn accept(self) {
        // The core may have given up waiting (stopping): nothing to release then.
        let _ = self.accepted.send(());
    }
}

/// Why a send to a channel did not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The policy's `[channels] publish` does not list the channel.
    #[error("channel {0:?} is not in [channels] publish")]
    NotGranted(String),
    /// The message is larger than the channel's `max_message_kib`.
    #[error("message of {len} bytes exceeds the channel's maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A subscriber's ring was full: the message was dropped for it (and
    /// counted in the connector's `dropped`).
    #[error("a subscriber's ring is full: dropped for it")]
    Full,
    /// The ring is unusable (corrupt); the supervisor was told.
    #[error("ring broken: {0}")]
    Broken(String),
}

/// Sends on the connector's published channels. Cheap to clone; usable
/// from any task or thread.
#[derive(Clone)]
pub struct Publisher {
    pub(crate) inner: Arc<dyn PublishRings>,
}

impl Publisher {
    /// Sends `payload` on `channel` to every subscriber. Never blocks: a
    /// full subscriber ring drops the message for that subscriber.
    ///
    /// # Errors
    /// [`SendError`]; the message reached no subscriber unless the error is
    /// [`SendError::Full`] (then it reached the others).
    pub fn send(&self, channel: &str, payload: &[u8]) -> Result<(), SendError> {
        self.inner.send(channel, payload)
    }

    /// A publisher over `rings` (the core's rings, or a test's).
    pub fn new(rings: Arc<dyn PublishRings>) -> Self {
        Self { inner: rings }
    }
}

/// Where a [`Publisher`] puts messages: the core's producer rings.
pub trait PublishRings: Send + Sync {
    /// See [`Publisher::send`].
    ///
    /// # Errors
    /// See [`Publisher::send`].
    fn send(&self, channel: &str, payload: &[u8]) -> Result<(), SendError>;
}

/// What a connector counts. Every field is reported to the supervisor with
/// each heartbeat and shown by `edgeward status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connected to every peer right now (for MQTT: the broker; Modbus and
    /// OPC UA: every configured device or server).
    pub connected: AtomicBool,
    /// Connections made after the first (reconnects).
    pub reconnects: AtomicU64,
    /// Peer errors: failed connects, timeouts, protocol exceptions,
    /// disconnects.
    pub errors: AtomicU64,
    /// Messages delivered to peers (MQTT publishes acknowledged as their
    /// QoS requires, Modbus/OPC UA writes that landed).
    pub delivered: AtomicU64,
    /// Messages received from peers and sent on a channel (MQTT messages,
    /// Modbus polls, OPC UA value changes).
    pub received: AtomicU64,
    /// Messages waiting in the durable queue now.
    pub queued: AtomicU64,
    /// Messages the durable queue dropped (full or too old).
    pub queue_dropped: AtomicU64,
    /// Writes refused by the policy (an address or node not allowed) or
    /// malformed messages that could not be turned into a write.
    pub refused: AtomicU64,
    /// How late scheduled polls started (µs after their due time; Modbus).
    /// A driver pushes one per poll (bounded: push only while under 4096);
    /// the core takes them every heartbeat and reports p50/p99/max of the
    /// last 1024 as the worker's tick lateness.
    pub poll_lateness_us: std::sync::Mutex<Vec<u32>>,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as sent to the supervisor.
    pub fn snapshot(&self) -> edgeward_ipc::control::ConnectorCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        edgeward_ipc::control::ConnectorCounters {
            connected: self.connected.load(Ordering::Relaxed),
            reconnects: get(&self.reconnects),
            errors: get(&self.errors),
            delivered: get(&self.delivered),
            received: get(&self.received),
            queued: get(&self.queued),
            queue_dropped: get(&self.queue_dropped),
            refused: get(&self.refused),
        }
    }
}

/// A configuration error: the key (dotted path inside `[connector]`) and
/// what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("connector.{key}: {message}")]
pub struct ConfigError {
    /// Dotted key inside `[connector]`, e.g. `device[0].poll[2].type`.
    pub key: String,
    /// What is wrong and the fix, e.g. `unknown type "f16": use one of u16, i16, u32, i32, f32, bool`.
    pub message: String,
}

impl ConfigError {
    /// An error at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Logs one line. The supervisor reads the connector's stderr and shows
/// each line as the connector's log, prefixed with its name.
#[macro_export]
macro_rules! log {
    ($level:literal, $($arg:tt)*) => {
        eprintln!(concat!($level, ": {}"), format_args!($($arg)*))
    };
}
