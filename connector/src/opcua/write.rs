//! Writes: a message on a write channel is one little-endian `f64`,
//! converted to the node's configured type (range-checked) and written to
//! that node. Only the nodes in `[[connector.write]]` can be written: the
//! channel picks the node, the message carries only the value.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua_client::Session;
use opcua_types::{AttributeId, DataValue, NodeId, StatusCode, Variant, WriteValue};

use super::config::{ValueType, Write};
use crate::driver::{Counters, InboundBatch};

/// At most one log line per channel and kind of problem in this period;
/// the lines in between are counted and reported with the next one.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The OPC UA value a write of `value` to a node of type `ty` sends.
///
/// # Errors
/// Not finite, not an integer (integer types), out of the type's range, or
/// not 0/1 (boolean): the reason, for the log.
pub fn to_variant(value: f64, ty: ValueType) -> Result<Variant, String> {
    if !value.is_finite() {
        return Err(format!("{value} is not a finite number"));
    }
    let integer = |min: f64, max: f64| -> Result<f64, String> {
        if value.fract() != 0.0 {
            Err(format!(
                "{value} is not an integer ({} expected)",
                ty.name()
            ))
        } else if value < min || value > max {
            Err(format!(
                "{value} is out of range for {} ({min} to {max})",
                ty.name()
            ))
        } else {
            Ok(value)
        }
    };
    // The `as` casts below are exact: each value was checked to be an
    // integer within the target type's range.
    Ok(match ty {
        ValueType::Double => Variant::Double(value),
        ValueType::Float => {
            if value.abs() > f64::from(f32::MAX) {
                return Err(format!("{value} is out of range for float"));
            }
            Variant::Float(value as f32)
        }
        ValueType::Int16 => Variant::Int16(integer(i16::MIN.into(), i16::MAX.into())? as i16),
        ValueType::UInt16 => Variant::UInt16(integer(0.0, u16::MAX.into())? as u16),
        ValueType::Int32 => Variant::Int32(integer(i32::MIN.into(), i32::MAX.into())? as i32),
        ValueType::UInt32 => Variant::UInt32(integer(0.0, u32::MAX.into())? as u32),
        ValueType::Int64 => {
            // ±2^63: i64::MAX itself is not representable as an f64, so the
            // upper bound is exclusive.
            const TWO_63: f64 = 9_223_372_036_854_775_808.0;
            if value.fract() != 0.0 {
                return Err(format!("{value} is not an integer (int64 expected)"));
            }
            if !(-TWO_63..TWO_63).contains(&value) {
                return Err(format!("{value} is out of range for int64"));
            }
            Variant::Int64(value as i64)
        }
        ValueType::Boolean => {
            if value == 0.0 {
                Variant::Boolean(false)
            } else if value == 1.0 {
                Variant::Boolean(true)
            } else {
                return Err(format!("{value} is not a boolean (0 or 1 expected)"));
            }
        }
    })
}

/// The value in a write message: exactly 8 bytes, a little-endian `f64`.
///
/// # Errors
/// Any other length, with the reason.
pub fn decode(payload: &[u8]) -> Result<f64, String> {
    let bytes: [u8; 8] = payload.try_into().map_err(|_| {
        format!(
            "{} bytes, a write is one little-endian f64 (8 bytes)",
            payload.len()
        )
    })?;
    Ok(f64::from_le_bytes(bytes))
}

/// Whether a failed request means the connection (or session) is gone, so
/// the write must be retried on the next connection rather than dropped.
pub fn is_link_error(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadConnectionClosed
            | StatusCode::BadNotConnected
            | StatusCode::BadCommunicationError
            | StatusCode::BadTimeout
            | StatusCode::BadRequestTimeout
            | StatusCode::BadSecureChannelClosed
            | StatusCode::BadSecureChannelIdInvalid
            | StatusCode::BadSessionClosed
            | StatusCode::BadSessionIdInvalid
            | StatusCode::BadSessionNotActivated
            | StatusCode::BadServerNotConnected
            | StatusCode::BadServerHalted
            | StatusCode::BadShutdown
            | StatusCode::BadDisconnect
            | StatusCode::BadTcpInternalError
            | StatusCode::BadInvalidState
    )
}

/// A batch being written, and how far.
pub struct Pending {
    batch: InboundBatch,
    next: usize,
}

impl Pending {
    /// Starts on `batch`.
    pub fn new(batch: InboundBatch) -> Self {
        Self { batch, next: 0 }
    }

    /// Every message was handled: release the batch's ring space.
    pub fn accept(self) {
        self.batch.accept();
    }
}

/// How [`Writer::process`] ended.
#[derive(Debug)]
pub enum Progress {
    /// Every message of the batch was handled (written, refused, or
    /// answered with a bad status): accept it.
    Done,
    /// The connection failed mid-batch: the message it stopped at is
    /// written again on the next connection.
    Interrupted(String),
}

struct Target {
    node: NodeId,
    value_type: ValueType,
}

/// A log line per (channel, kind) at most every [`LOG_EVERY`].
#[derive(Default)]
struct Throttle {
    last: HashMap<(String, &'static str), (Instant, u64)>,
}

impl Throttle {
    /// `Some(suppressed count)` when a line may be logged now.
    fn allow(&mut self, channel: &str, kind: &'static str) -> Option<u64> {
        let now = Instant::now();
        match self.last.get_mut(&(channel.to_string(), kind)) {
            Some((at, suppressed)) if now.duration_since(*at) < LOG_EVERY => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                self.last.insert((channel.to_string(), kind), (now, 0));
                Some(0)
            }
        }
    }
}

fn more(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like it not logged)")
    }
}

/// Turns write messages into OPC UA writes.
pub struct Writer {
    targets: HashMap<String, Target>,
    counters: Arc<Counters>,
    timeout: Duration,
    throttle: Throttle,
}

impl Writer {
    /// A writer for the configured `writes`; `timeout` bounds each request.
    pub fn new(writes: &[Write], counters: Arc<Counters>, timeout: Duration) -> Self {
        let targets = writes
            .iter()
            .map(|w| {
                (
                    w.channel.clone(),
                    Target {
                        node: w.node.clone(),
                        value_type: w.value_type,
                    },
                )
            })
            .collect();
        Self {
            targets,
            counters,
            timeout,
            throttle: Throttle::default(),
        }
    }

    /// Handles `pending`'s messages from where it stopped, in order:
    /// refused ones are counted in `refused`, good writes in `delivered`,
    /// bad statuses from the server in `errors`. Cancel-safe: a write
    /// cancelled in flight is written again by the next call.
    pub async fn process(&mut self, session: &Session, pending: &mut Pending) -> Progress {
        while let Some(message) = pending.batch.messages.get(pending.next) {
            let channel = message.channel.as_str();
            match self.prepare(channel, &message.payload) {
                Err(reason) => {
                    Counters::bump(&self.counters.refused);
                    if let Some(n) = self.throttle.allow(channel, "refused") {
                        crate::log!(
                            "warn",
                            "opcua: refused a write on channel {channel:?} from {}: {reason}{}",
                            message.from,
                            more(n)
                        );
                    }
                }
                Ok(write) => {
                    let node = write.node_id.clone();
                    let result = tokio::time::timeout(self.timeout, session.write(&[write])).await;
                    match result {
                        Ok(Ok(statuses)) => {
                            let status = statuses
                                .first()
                                .copied()
                                .unwrap_or(StatusCode::BadUnexpectedError);
                            if status.is_good() {
                                Counters::bump(&self.counters.delivered);
                            } else {
                                Counters::bump(&self.counters.errors);
                                if let Some(n) = self.throttle.allow(channel, "status") {
                                    crate::log!(
                                        "warn",
                                        "opcua: the server refused the write of channel {channel:?} to {node}: {status}{}",
                                        more(n)
                                    );
                                }
                            }
                        }
                        Ok(Err(e)) if is_link_error(e.status()) => {
                            return Progress::Interrupted(format!("write to {node} failed: {e}"));
                        }
                        Ok(Err(e)) => {
                            Counters::bump(&self.counters.errors);
                            if let Some(n) = self.throttle.allow(channel, "failed") {
                                crate::log!(
                                    "warn",
                                    "opcua: the write of channel {channel:?} to {node} failed: {e}{}",
                                    more(n)
                                );
                            }
                        }
                        Err(_) => {
                            return Progress::Interrupted(format!(
                                "write to {node} got no answer within {:?}",
                                self.timeout
                            ));
                        }
                    }
                }
            }
            pending.next += 1;
        }
        Progress::Done
    }

    /// The OPC UA write for a message, or why it is refused.
    fn prepare(&self, channel: &str, payload: &[u8]) -> Result<WriteValue, String> {
        let target = self.targets.get(channel).ok_or_else(|| {
            "the channel is not in [[connector.write]]: nothing to write it to".to_string()
        })?;
        let value = decode(payload)?;
        let variant = to_variant(value, target.value_type)?;
        Ok(WriteValue {
            node_id: target.node.clone(),
            attribute_id: AttributeId::Value as u32,
            // Value only: many servers refuse writes that carry timestamps.
            value: DataValue::value_only(variant),
            ..Default::default()
        })
    }
}
