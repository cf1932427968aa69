//! Subscriptions: one OPC UA subscription per session with a monitored
//! item per `[[connector.subscribe]]` node; every value change is published
//! on the node's channel as `(i64 source_timestamp_us, f64 value)`,
//! little-endian, 16 bytes.

use std::sync::{Arc, Mutex};

use opcua_client::{MonitoredItem, OnSubscriptionNotification, Session};
use opcua_types::{
    AttributeId, DataValue, DateTime, ExtensionObject, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, QualifiedName, ReadValueId, StatusChangeNotification, StatusCode,
    TimestampsToReturn, Variant,
};

use super::config::Config;
use crate::driver::{Counters, Publisher, SendError};

/// Length of a value-change message.
pub const MESSAGE_LEN: usize = 16;

/// Keep-alive count requested for the subscription: the server sends an
/// empty publish after this many quiet publishing intervals.
const MAX_KEEP_ALIVE_COUNT: u32 = 10;
/// Lifetime count requested: the server drops the subscription after this
/// many intervals without a publish request (three times the keep-alive
/// count at least, as OPC UA requires).
const LIFETIME_COUNT: u32 = 60;

/// Encodes a value change: source timestamp (µs since the Unix epoch) then
/// the value, both little-endian.
pub fn encode(timestamp_us: i64, value: f64) -> [u8; MESSAGE_LEN] {
    let mut out = [0u8; MESSAGE_LEN];
    out[..8].copy_from_slice(&timestamp_us.to_le_bytes());
    out[8..].copy_from_slice(&value.to_le_bytes());
    out
}

/// A numeric or boolean variant as `f64`; `None` for other types.
pub fn as_f64(value: &Variant) -> Option<f64> {
    match value {
        Variant::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
        other => other.as_f64(),
    }
}

/// Microseconds since the Unix epoch of an OPC UA time; `None` when null.
fn unix_us(time: Option<&DateTime>) -> Option<i64> {
    time.filter(|t| !t.is_null())
        .map(|t| t.as_chrono().timestamp_micros())
}

/// The message's timestamp: the source timestamp, else the server's, else
/// now (the server sent neither).
pub fn timestamp_us(value: &DataValue) -> i64 {
    unix_us(value.source_timestamp.as_ref())
        .or_else(|| unix_us(value.server_timestamp.as_ref()))
        .unwrap_or_else(|| DateTime::now().as_chrono().timestamp_micros())
}

/// What is remembered per node across sessions, so each problem is logged
/// once per node (and again only after the node recovered).
#[derive(Default)]
struct NodeState {
    /// A problem is being reported for this node (its text); cleared by a
    /// good value.
    problem: Option<String>,
}

/// Publishes the value changes of the configured nodes. One per connector,
/// shared by the subscriptions of successive sessions.
#[derive(Clone)]
pub struct Sink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    /// `(node text, channel)` per monitored item; the client handle of
    /// item `i` is `i + 1`.
    items: Vec<(String, String)>,
    states: Mutex<Vec<NodeState>>,
    publisher: Publisher,
    counters: Arc<Counters>,
}

impl Sink {
    /// A sink for `config.subscribe`'s nodes.
    pub fn new(config: &Config, publisher: Publisher, counters: Arc<Counters>) -> Self {
        let items: Vec<_> = config
            .subscribe
            .iter()
            .map(|s| (s.node.to_string(), s.channel.clone()))
            .collect();
        let states = Mutex::new(items.iter().map(|_| NodeState::default()).collect());
        Self {
            inner: Arc::new(SinkInner {
                items,
                states,
                publisher,
                counters,
            }),
        }
    }

    /// Reports a problem with item `index` (counted in `errors`), logged
    /// only when it differs from the problem already reported.
    fn problem(&self, index: usize, text: String) {
        Counters::bump(&self.inner.counters.errors);
        let mut states = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = states.get_mut(index) else {
            return;
        };
        if state.problem.as_deref() != Some(text.as_str()) {
            let (node, channel) = &self.inner.items[index];
            crate::log!("warn", "opcua: {node} (channel {channel:?}): {text}");
            state.problem = Some(text);
        }
    }

    fn recovered(&self, index: usize) {
        let mut states = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = states.get_mut(index) {
            if state.problem.take().is_some() {
                let (node, channel) = &self.inner.items[index];
                crate::log!(
                    "info",
                    "opcua: {node} (channel {channel:?}): values flow again"
                );
            }
        }
    }

    /// Handles one value change of item `index`.
    pub fn on_value(&self, index: usize, value: DataValue) {
        let Some((_, channel)) = self.inner.items.get(index) else {
            return;
        };
        let status = value.status.unwrap_or(StatusCode::Good);
        if status.is_bad() {
            self.problem(index, format!("bad value status {status}: not published"));
            return;
        }
        let Some(variant) = value.value.as_ref() else {
            self.problem(
                index,
                "a value change without a value: not published".into(),
            );
            return;
        };
        let Some(number) = as_f64(variant) else {
            self.problem(
                index,
                format!(
                    "value of type {:?} is not numeric or boolean: not published",
                    variant.type_id()
                ),
            );
            return;
        };
        let message = encode(timestamp_us(&value), number);
        match self.inner.publisher.send(channel, &message) {
            // Full: it reached the subscribers with room (the core counts the drop).
            Ok(()) | Err(SendError::Full) => {
                Counters::bump(&self.inner.counters.received);
                self.recovered(index);
            }
            Err(e) => self.problem(index, format!("cannot publish: {e}")),
        }
    }
}

/// The subscription callback of one session: forwards to the [`Sink`].
struct Callback {
    sink: Sink,
}

impl OnSubscriptionNotification for Callback {
    fn on_data_value(&mut self, value: DataValue, item: &MonitoredItem) {
        // Client handles are 1 + the item's index (set in `create`).
        if let Some(index) = (item.client_handle() as usize).checked_sub(1) {
            self.sink.on_value(index, value);
        }
    }

    fn on_subscription_status_change(&mut self, notification: StatusChangeNotification) {
        // The server ended the subscription (e.g. BadTimeout): the session's
        // keep-alive or the next publish notices, and the connector reconnects.
        Counters::bump(&self.sink.inner.counters.errors);
        crate::log!(
            "warn",
            "opcua: the server changed the subscription's status: {}",
            notification.status
        );
    }
}

/// Creates the subscription and its monitored items on `session`. Items
/// the server refuses are logged (once per node) and counted in `errors`;
/// the others are monitored.
///
/// # Errors
/// The subscription could not be created or the items request failed
/// (worth a reconnect).
pub async fn create(session: &Session, config: &Config, sink: &Sink) -> Result<(), String> {
    let id = session
        .create_subscription(
            config.publishing_interval,
            LIFETIME_COUNT,
            MAX_KEEP_ALIVE_COUNT,
            0,
            0,
            true,
            Callback { sink: sink.clone() },
        )
        .await
        .map_err(|e| format!("creating the subscription failed: {e}"))?;
    let items: Vec<_> = config
        .subscribe
        .iter()
        .enumerate()
        .map(|(i, s)| MonitoredItemCreateRequest {
            item_to_monitor: ReadValueId {
                node_id: s.node.clone(),
                attribute_id: AttributeId::Value as u32,
                index_range: Default::default(),
                data_encoding: QualifiedName::null(),
            },
            monitoring_mode: MonitoringMode::Reporting,
            requested_parameters: MonitoringParameters {
                // Never 0: the library replaces 0 with a handle of its own.
                client_handle: i as u32 + 1,
                sampling_interval: s.sampling_ms as f64,
                filter: ExtensionObject::null(),
                queue_size: s.queue_size,
                discard_oldest: true,
            },
        })
        .collect();
    let created = session
        .create_monitored_items(id, TimestampsToReturn::Both, items)
        .await
        .map_err(|e| format!("creating the monitored items failed: {e}"))?;
    for (i, item) in created.iter().enumerate() {
        let status = item.result.status_code;
        if !status.is_good() {
            sink.problem(i, format!("the server refused to monitor it: {status}"));
        }
    }
    Ok(())
}
