//! What the MQTT driver does with each batch, event and tick: batches go
//! to the durable queue (or straight out, for QoS 0 with nothing queued
//! ahead), the queue goes to the broker in order, PUBACKs move the queue's
//! head, broker messages go to channels. The connection itself is
//! [`super::session`]; the loop tying them together is [`super::run`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    ConnectReturnCode, ConnectionError, Event, Outgoing, Packet, Publish, SubscribeReasonCode,
};

use super::config::{topic_matches, Config};
use super::payload;
use super::queue::{self, Message, Queue};
use super::session::{qos, Sent, Session};
use crate::driver::{Counters, InboundBatch, Publisher, SendError};
use crate::log;
use crate::pacing::{held_back, LogLimit};

/// A batch the queue could not store yet, retried every second.
struct Held {
    batch: InboundBatch,
    messages: Vec<Message>,
    since: Instant,
}

/// The driver's state across connections.
pub(crate) struct Bridge {
    config: Config,
    queue: Queue,
    counters: Arc<Counters>,
    outbound: Publisher,
    /// Connected at least once (the next connection is a reconnect).
    ever_connected: bool,
    /// The last connect failure logged (repeats are not logged again).
    last_failure: Option<String>,
    held: Option<Held>,
    last_persist: Instant,
    dropped_log: LogLimit,
    refused_log: LogLimit,
    send_log: LogLimit,
    queue_log: LogLimit,
}

impl Bridge {
    pub(crate) fn new(
        config: Config,
        queue: Queue,
        counters: Arc<Counters>,
        outbound: Publisher,
    ) -> Self {
        let bridge = Self {
            config,
            queue,
            counters,
            outbound,
            ever_connected: false,
            last_failure: None,
            held: None,
            last_persist: Instant::now(),
            dropped_log: LogLimit::default(),
            refused_log: LogLimit::default(),
            send_log: LogLimit::default(),
            queue_log: LogLimit::default(),
        };
        bridge.update_depth();
        bridge
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The oldest unacknowledged message's id: where a new session starts.
    pub(crate) fn queue_head(&self) -> u64 {
        self.queue.head()
    }

    /// A batch is waiting for the queue (no new batch is taken meanwhile).
    pub(crate) fn holding(&self) -> bool {
        self.held.is_some()
    }

    fn update_depth(&self) {
        self.counters
            .queued
            .store(self.queue.len(), Ordering::Relaxed);
    }

    fn count_dropped(&mut self, n: u64, why: &str) {
        if n == 0 {
            return;
        }
        self.counters.queue_dropped.fetch_add(n, Ordering::Relaxed);
        if let Some(skipped) = self.dropped_log.ready() {
            log!(
                "warn",
                "durable queue: dropped {n} message(s) {why} (limits: max_messages {}, max_bytes {}, \
                 max_age_s {}){}",
                self.config.queue.max_messages,
                self.config.queue.max_bytes,
                self.config.queue.max_age_us / 1_000_000,
                held_back(skipped)
            );
        }
    }

    /// Takes a batch from modules: publishes QoS 0 messages directly when
    /// connected with nothing queued ahead of them, appends the rest to the
    /// durable queue, and accepts the batch once they are on disk.
    pub(crate) fn on_batch(&mut self, batch: InboundBatch, mut session: Option<&mut Session>) {
        let mut messages = Vec::new();
        for m in &batch.messages {
            let Some(rule) = self.config.publish.get(&m.channel) else {
                Counters::bump(&self.counters.refused);
                if let Some(skipped) = self.refused_log.ready() {
                    log!(
                        "warn",
                        "message on channel {:?} from {:?} dropped: no [[connector.publish]] entry \
                         maps that channel to a topic{}",
                        m.channel,
                        m.from,
                        held_back(skipped)
                    );
                }
                continue;
            };
            let payload = payload::encode(rule.format, m);
            // Fixed header room aside, what rumqttc's packet limit counts.
            if 4 + rule.topic.len() + payload.len() > self.config.max_packet {
                Counters::bump(&self.counters.refused);
                if let Some(skipped) = self.refused_log.ready() {
                    log!(
                        "warn",
                        "message on channel {:?} from {:?} dropped: {} bytes do not fit in an MQTT \
                         packet of max_packet_kib = {}{}",
                        m.channel,
                        m.from,
                        payload.len(),
                        self.config.max_packet / 1024,
                        held_back(skipped)
                    );
                }
                continue;
            }
            if rule.qos == 0 && messages.is_empty() {
                if let Some(s) = session.as_deref_mut() {
                    let nothing_ahead = self.queue.next_from(s.next_submit).is_none();
                    if s.connected
                        && nothing_ahead
                        && s.submitted.len() < s.capacity
                        && s.client
                            .try_publish(rule.topic.clone(), qos(0), rule.retain, payload.clone())
                            .is_ok()
                    {
                        s.submitted.push_back(Sent::Direct);
                        continue;
                    }
                }
            }
            messages.push(Message {
                qos: rule.qos,
                retain: rule.retain,
                time_us: m.received_us,
                topic: rule.topic.clone(),
                payload,
            });
        }
        if messages.is_empty() {
            batch.accept();
            return;
        }
        self.store(Held {
            batch,
            messages,
            since: Instant::now(),
        });
    }

    /// Appends a batch's messages and accepts it, or holds it on failure.
    fn store(&mut self, held: Held) {
        match self.queue.append(&held.messages) {
            Ok(appended) => {
                let why = match self.config.queue.when_full {
                    queue::WhenFull::DropOldest => "(queue full: the oldest ones)",
                    queue::WhenFull::DropNewest => "(queue full: the newest ones)",
                };
                self.count_dropped(appended.dropped, why);
                self.update_depth();
                held.batch.accept();
            }
            Err(e) => {
                Counters::bump(&self.counters.errors);
                if let Some(skipped) = self.queue_log.ready() {
                    log!(
                        "error",
                        "durable queue: cannot store {} message(s): {e}; holding them (not \
                         accepted) and retrying every second{}",
                        held.messages.len(),
                        held_back(skipped)
                    );
                }
                self.held = Some(held);
            }
        }
    }

    /// Hands queued messages to the session, oldest first, while it has room.
    pub(crate) fn submit(&mut self, s: &mut Session) {
        if !s.connected {
            return;
        }
        while s.submitted.len() < s.capacity {
            let Some(id) = self.queue.next_from(s.next_submit) else {
                break;
            };
            let message = match self.queue.read(id) {
                Ok(m) if rumqttc::valid_topic(&m.topic) => m,
                result => {
                    let why = result.map_or_else(
                        |e| e.to_string(),
                        |m| format!("invalid topic {:?}", m.topic),
                    );
                    log!(
                        "error",
                        "durable queue: message {id} cannot be sent ({why}): dropped it"
                    );
                    Counters::bump(&self.counters.errors);
                    self.queue.ack(id);
                    self.count_dropped(1, "(unreadable)");
                    s.next_submit = id + 1;
                    continue;
                }
            };
            if s.client
                .try_publish(
                    message.topic,
                    qos(message.qos),
                    message.retain,
                    message.payload,
                )
                .is_err()
            {
                // The event loop is gone or its channel full: next time.
                break;
            }
            s.submitted.push_back(Sent::Queued(id));
            s.next_submit = id + 1;
        }
        self.update_depth();
    }

    /// Handles one event of the session. Returns `true` when it is the
    /// CONNACK (the connection is up).
    pub(crate) fn on_event(&mut self, event: Event, s: &mut Session) -> bool {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                s.connected = true;
                self.counters.connected.store(true, Ordering::Relaxed);
                if self.ever_connected {
                    Counters::bump(&self.counters.reconnects);
                }
                log!(
                    "info",
                    "{} broker {} ({} queued message(s) to send)",
                    if self.ever_connected {
                        "reconnected to"
                    } else {
                        "connected to"
                    },
                    self.config.broker,
                    self.queue.len()
                );
                self.ever_connected = true;
                self.last_failure = None;
                return true;
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(id) = s.inflight.remove(&ack.pkid) {
                    self.queue.ack(id);
                    Counters::bump(&self.counters.delivered);
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => match s.submitted.pop_front() {
                Some(Sent::Queued(id)) if pkid == 0 => {
                    // QoS 0: written is as delivered as it gets.
                    self.queue.ack(id);
                    Counters::bump(&self.counters.delivered);
                }
                Some(Sent::Queued(id)) => {
                    s.inflight.insert(pkid, id);
                }
                Some(Sent::Direct) => Counters::bump(&self.counters.delivered),
                None => {}
            },
            Event::Incoming(Packet::Publish(publish)) => self.route(&publish),
            Event::Incoming(Packet::SubAck(ack)) => {
                for (code, rule) in ack.return_codes.iter().zip(&self.config.subscribe) {
                    if *code == SubscribeReasonCode::Failure {
                        Counters::bump(&self.counters.errors);
                        log!(
                            "error",
                            "broker {} refused the subscription to {:?} (for channel {:?}): check \
                             the broker's ACL for this client",
                            self.config.broker,
                            rule.topic,
                            rule.channel
                        );
                    }
                }
            }
            _ => {}
        }
        false
    }

    /// Sends a broker message on every channel whose filter matches it.
    fn route(&mut self, publish: &Publish) {
        let mut sent: Vec<&str> = Vec::new();
        for rule in &self.config.subscribe {
            if !topic_matches(&publish.topic, &rule.topic) || sent.contains(&rule.channel.as_str())
            {
                continue;
            }
            sent.push(&rule.channel);
            match self.outbound.send(&rule.channel, &publish.payload) {
                // Full: it reached the other subscribers; the core counts the drop.
                Ok(()) | Err(SendError::Full) => Counters::bump(&self.counters.received),
                Err(e) => {
                    Counters::bump(&self.counters.errors);
                    if let Some(skipped) = self.send_log.ready() {
                        log!(
                            "warn",
                            "message from topic {:?} not sent on channel {:?}: {e}{}",
                            publish.topic,
                            rule.channel,
                            held_back(skipped)
                        );
                    }
                }
            }
        }
    }

    /// The session failed to connect or lost its connection (`error`, or
    /// its event loop ended without one).
    pub(crate) fn on_lost(&mut self, error: Option<&ConnectionError>, was_connected: bool) {
        self.counters.connected.store(false, Ordering::Relaxed);
        Counters::bump(&self.counters.errors);
        let why = error.map_or_else(|| "the connection ended".to_owned(), |e| self.describe(e));
        self.failure(&why, was_connected);
    }

    /// A connection could not even be attempted (a file is unusable).
    pub(crate) fn on_setup_failed(&mut self, why: &str) {
        Counters::bump(&self.counters.errors);
        self.failure(why, false);
    }

    fn failure(&mut self, why: &str, was_connected: bool) {
        let retry = format!(
            "retrying with backoff from {} ms to {} ms",
            self.config.reconnect_min.as_millis(),
            self.config.reconnect_max.as_millis()
        );
        if was_connected {
            log!(
                "warn",
                "lost the connection to broker {}: {why}; {retry}; {} message(s) queued",
                self.config.broker,
                self.queue.len()
            );
        } else if self.last_failure.as_deref() != Some(why) {
            log!(
                "warn",
                "cannot connect to broker {}: {why}; {retry}",
                self.config.broker
            );
        }
        self.last_failure = Some(why.to_owned());
    }

    /// A connection error with what to check.
    fn describe(&self, e: &ConnectionError) -> String {
        match e {
            ConnectionError::Tls(tls) => format!(
                "TLS handshake failed: {tls} (check that ca_file is the CA that signed the \
                 broker's certificate and that the certificate names {:?})",
                self.config.host
            ),
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
                "the broker refused the user name or password: check username and password_file"
                    .to_owned()
            }
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
                "the broker refused: not authorized (check username, password_file and the \
                 broker's access rules)"
                    .to_owned()
            }
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
                "the broker refused the client id: set client_id to one it accepts".to_owned()
            }
            ConnectionError::ConnectionRefused(code) => {
                format!("the broker refused the connection: {code:?}")
            }
            other => other.to_string(),
        }
    }

    /// Periodic work: drop expired messages, persist the cursor (batched:
    /// at most every 100 ms), retry a held batch every second.
    pub(crate) fn maintain(&mut self) {
        let expired = self.queue.expire(queue::now_us());
        self.count_dropped(expired, "older than max_age_s");
        if self.queue.cursor_dirty() && self.last_persist.elapsed() >= Duration::from_millis(100) {
            self.persist();
        }
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.since.elapsed() >= Duration::from_secs(1))
        {
            if let Some(mut held) = self.held.take() {
                held.since = Instant::now();
                self.store(held);
            }
        }
        self.update_depth();
    }

    /// Writes the ack cursor now.
    pub(crate) fn persist(&mut self) {
        self.last_persist = Instant::now();
        if let Err(e) = self.queue.persist() {
            Counters::bump(&self.counters.errors);
            if let Some(skipped) = self.queue_log.ready() {
                log!(
                    "error",
                    "durable queue: cannot save the acknowledged position: {e} (retrying; after a \
                     crash some messages would be sent twice){}",
                    held_back(skipped)
                );
            }
        }
    }

    /// Stopping: give the messages in flight a moment to be acknowledged,
    /// disconnect cleanly, save the cursor.
    pub(crate) async fn finish(&mut self, session: Option<Session>) {
        if let Some(mut s) = session {
            if s.connected {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
                while !(s.inflight.is_empty() && s.submitted.is_empty()) {
                    match tokio::time::timeout_at(deadline, s.next_event()).await {
                        Ok(Some(Ok(event))) => {
                            self.on_event(event, &mut s);
                        }
                        _ => break,
                    }
                }
                if s.client.try_disconnect().is_ok() {
                    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
                    while let Ok(Some(Ok(event))) =
                        tokio::time::timeout_at(deadline, s.next_event()).await
                    {
                        if event == Event::Outgoing(Outgoing::Disconnect) {
                            break;
                        }
                        self.on_event(event, &mut s);
                    }
                }
            }
        }
        self.counters.connected.store(false, Ordering::Relaxed);
        self.persist();
        self.update_depth();
    }
}
