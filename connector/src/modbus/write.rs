//! Writes from modules: check each message against its channel's `allow`
//! list, encode it, hand it to the device's task, and accept the batch once
//! every write in it was attempted.
//!
//! A message is `(u16 address, f64 value)` little-endian (10 bytes). It is
//! refused — counted in `refused`, logged (rate-limited), never sent — if
//! it is malformed, if its address is not in `allow`, or if its value does
//! not fit the allowed type. A write the device could not take (not
//! connected, timeout, exception) counts in `errors` and is not retried:
//! by the time the device is back, a module's newer value is the one that
//! matters, and retrying an old setpoint could undo it.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::config::AllowPlan;
use super::decode::{encode, parse_write, EncodeError, Encoded, Table};
use super::device::WriteJob;
use super::stopped;
use crate::driver::{Counters, InboundBatch};
use crate::log;
use crate::pacing::{held_back, LogLimit};

/// Where one write channel's messages go.
pub struct Route {
    /// The device's name, for logs.
    pub device: String,
    /// The device task's queue.
    pub jobs: mpsc::Sender<WriteJob>,
    /// What the channel may write.
    pub allow: Vec<AllowPlan>,
}

/// Why a message did not become a write.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Not 10 bytes.
    #[error("malformed: {0} bytes, expected 10 (u16 address, f64 value, little-endian)")]
    Malformed(usize),
    /// The address is not in the channel's `allow`.
    #[error("address {0} is not in allow")]
    NotAllowed(u16),
    /// The value does not fit the allowed type.
    #[error("address {address}: {error}")]
    Value {
        /// The address written.
        address: u16,
        /// Why.
        error: EncodeError,
    },
}

/// Turns a write message into what goes on the device, or refuses it.
///
/// # Errors
/// [`Refusal`].
pub fn prepare(allow: &[AllowPlan], payload: &[u8]) -> Result<(Table, u16, Encoded), Refusal> {
    let (address, value) = parse_write(payload).ok_or(Refusal::Malformed(payload.len()))?;
    let entry = allow
        .iter()
        .find(|a| a.address == address)
        .ok_or(Refusal::NotAllowed(address))?;
    let encoded = encode(&entry.format, entry.table, value)
        .map_err(|error| Refusal::Value { address, error })?;
    Ok((entry.table, address, encoded))
}

/// Routes inbound batches to the devices until `stop`.
pub async fn route(
    routes: HashMap<String, Route>,
    mut inbound: mpsc::Receiver<InboundBatch>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut refused_log = LogLimit::default();
    loop {
        let batch = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            batch = inbound.recv() => batch,
        };
        let Some(batch) = batch else {
            // The core closed the channel: nothing more will come.
            stopped(&mut stop).await;
            return;
        };
        for message in &batch.messages {
            let Some(route) = routes.get(&message.channel) else {
                Counters::bump(&counters.refused);
                if let Some(n) = refused_log.ready() {
                    log!(
                        "warn",
                        "write from {} on channel {} refused: no [[connector.device.write]] uses this channel{}",
                        message.from,
                        message.channel,
                        held_back(n)
                    );
                }
                continue;
            };
            let (table, address, encoded) = match prepare(&route.allow, &message.payload) {
                Ok(write) => write,
                Err(refusal) => {
                    Counters::bump(&counters.refused);
                    if let Some(n) = refused_log.ready() {
                        log!(
                            "warn",
                            "write from {} on channel {} to device {} refused: {refusal}{}",
                            message.from,
                            message.channel,
                            route.device,
                            held_back(n)
                        );
                    }
                    continue;
                }
            };
            let (done, attempted) = oneshot::channel();
            let job = WriteJob {
                table,
                address,
                encoded,
                done,
            };
            // Wait for the attempt: writes stay in order, and the batch is
            // accepted only after all of them were tried. The device task
            // ends only on stop; if it is gone, stop is here too.
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                sent = route.jobs.send(job) => if sent.is_err() { return },
            }
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                _ = attempted => {}
            }
        }
        batch.accept();
    }
}
