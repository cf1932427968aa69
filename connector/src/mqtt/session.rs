//! One connection to the broker: a fresh rumqttc client and event loop per
//! attempt, polled in its own task.
//!
//! A new `EventLoop` for every connection (with `clean_session`) is what
//! keeps the durable queue the only source of replays: rumqttc's own
//! pending list (publishes in flight when a connection drops, which it
//! would resend on the next connection) dies with the old event loop, and
//! the next session starts again from the queue's oldest unacknowledged
//! message. Polling in a task (rather than in the driver's `select!`)
//! means a connect in progress is never cancelled by an arriving batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, QoS, SubscribeFilter, TlsConfiguration,
    Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::Config;

/// What a publish handed to rumqttc was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// The durable queue's message with this id.
    Queued(u64),
    /// A QoS 0 message published directly (never queued).
    Direct,
}

/// A connection attempt or a live connection.
pub(crate) struct Session {
    /// Hands requests to the event loop.
    pub client: AsyncClient,
    events: mpsc::Receiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
    /// CONNACK received.
    pub connected: bool,
    /// Publishes handed over and not yet written, oldest first: rumqttc
    /// reports each write (`Outgoing::Publish(pkid)`) in this order.
    pub submitted: VecDeque<Sent>,
    /// Most publishes handed over and not yet written.
    pub capacity: usize,
    /// QoS 1 publishes written and awaiting their PUBACK: packet id to
    /// queue id.
    pub inflight: HashMap<u16, u64>,
    /// The queue id from which to hand messages over next.
    pub next_submit: u64,
}

impl Session {
    /// Starts connecting with `options`; subscribes to `config`'s filters
    /// once connected, and will hand the queue over from `from`.
    pub(crate) fn start(options: MqttOptions, config: &Config, from: u64) -> Self {
        let capacity = usize::from(config.inflight).max(16);
        // One more slot for the SUBSCRIBE queued before any publish.
        let (client, mut eventloop) = AsyncClient::new(options, capacity + 1);
        // Nagle's delay would hold small publishes back for the broker's
        // delayed ACK (a 40 ms stall measured at a paced QoS 0 stream).
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let filters: Vec<SubscribeFilter> = config
            .subscribe
            .iter()
            .map(|s| SubscribeFilter::new(s.topic.clone(), qos(s.qos)))
            .collect();
        if !filters.is_empty() {
            // The channel is empty: this cannot fail.
            let _ = client.try_subscribe_many(filters);
        }
        let (tx, events) = mpsc::channel(256);
        let task = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let end = event.is_err();
                if tx.send(event).await.is_err() || end {
                    return;
                }
            }
        });
        Self {
            client,
            events,
            task,
            connected: false,
            submitted: VecDeque::new(),
            capacity,
            inflight: HashMap::new(),
            next_submit: from,
        }
    }

    /// The next event; `None` once the event loop ended.
    pub(crate) async fn next_event(&mut self) -> Option<Result<Event, ConnectionError>> {
        self.events.recv().await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closes the connection with the event loop.
        self.task.abort();
    }
}

/// The rumqttc QoS for 0 or 1.
pub(crate) fn qos(qos: u8) -> QoS {
    if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// The connection options: clean session, the configured keep-alive,
/// inflight window and packet size, credentials and TLS. Files (password,
/// CA, client certificate) are read now, so a fixed file takes effect at
/// the next attempt.
///
/// # Errors
/// A file is unreadable or unusable: the message names its key and the fix.
pub(crate) fn options(config: &Config, client_id: &str) -> Result<MqttOptions, String> {
    let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
    options
        .set_clean_session(true)
        .set_keep_alive(config.keep_alive)
        .set_inflight(config.inflight)
        // Room for the fixed header, topic length and packet id on top of
        // max_packet_kib (publishes larger than that are refused before
        // they are queued).
        .set_max_packet_size(config.max_packet + 16, config.max_packet + 16);
    if let Some(user) = &config.username {
        let password = match &config.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "password_file: cannot read {}: {e}: fix the path or its permissions",
                        path.display()
                    )
                })?;
                text.strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text)
                    .to_owned()
            }
            None => String::new(),
        };
        options.set_credentials(user.clone(), password);
    }
    if let Some(ca) = &config.ca_file {
        let client = config.cert_file.as_deref().zip(config.key_file.as_deref());
        let tls = super::tls::client_config(ca, client).map_err(|e| format!("{}: {e}", e.key()))?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    }
    Ok(options)
}
