//! The MQTT northbound driver (issue 15): channels to broker topics and
//! topic filters to channels, over MQTT 3.1.1 (rumqttc), optionally TLS
//! (rustls with ring). See `connector/src/driver.rs` for the contract and
//! docs/connectors.md for the policy keys.
//!
//! Delivery, modules to broker: every QoS 1 message (and every QoS 0
//! message while the broker is unreachable, or queued behind others) is
//! appended to a durable queue in the state directory and the batch is
//! accepted only once it is fsynced; the queue is sent in order and a
//! message leaves it only on its PUBACK. Each connection is a clean session
//! with a fresh event loop, started from the oldest unacknowledged message,
//! so the queue is the only source of resends: at least once, in order, a
//! duplicate only for a message whose PUBACK was lost. Broker to modules:
//! subscriptions (renewed on every connection) send each payload as it is
//! on the mapped channel.
//!
//! Files: `config.rs` (policy keys and checks), `queue.rs` (durable queue),
//! `payload.rs` (raw/json), `tls.rs` (rustls client
//! config), `session.rs` (one connection), `bridge.rs` (batches, events,
//! ticks), this file (the loop and backoff).

mod bridge;
mod config;
mod payload;
mod queue;
mod session;
mod tls;

use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use crate::driver::{ConfigError, Context};
use crate::pacing::Backoff;
use bridge::Bridge;
use config::{Config, Files};
use queue::Queue;
use session::Session;

/// The queue's directory inside the state directory.
const QUEUE_DIR: &str = "mqtt-queue";
/// How often the bridge does its periodic work (cursor, expiry, retries).
const TICK: Duration = Duration::from_millis(100);

/// Checks the `[connector]` table (without `kind`) of a mqtt connector;
/// `endpoints` is the policy's `[network] connect`.
///
/// # Errors
/// Every problem found, each naming its key and the fix.
pub fn check(config: &toml::Table, endpoints: &[String]) -> Result<(), Vec<ConfigError>> {
    Config::parse(config, endpoints, Files::Read).map(|_| ())
}

/// Runs the connector until `ctx.stop` fires.
///
/// # Errors
/// The configuration does not pass [`check`], or the state directory
/// cannot hold a queue. A broker that is down or refuses is not an error:
/// it is retried with backoff, logged on each change and counted.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let Context {
        name,
        config,
        endpoints,
        state_dir,
        channels,
        counters,
        mut stop,
    } = ctx;
    let config = Config::parse(&config, &endpoints, Files::Skip).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid [connector] table:\n{}", lines.join("\n"))
    })?;
    let client_id = config.client_id(&name);
    let queue_dir = state_dir.join(QUEUE_DIR);
    let queue = Queue::open_or_reset(&queue_dir, config.queue)
        .with_context(|| format!("opening the durable queue in {}", queue_dir.display()))?;
    let mut inbound = channels.inbound;
    let mut bridge = Bridge::new(config, queue, counters, channels.outbound);
    let mut backoff = Backoff::new(bridge.config().reconnect_min, bridge.config().reconnect_max);
    let mut retry_at = Instant::now();
    let mut session: Option<Session> = None;
    let mut inbound_open = true;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if *stop.borrow_and_update() {
            break;
        }
        if session.is_none() && Instant::now() >= retry_at {
            match session::options(bridge.config(), &client_id) {
                Ok(options) => {
                    let from = bridge.queue_head();
                    session = Some(Session::start(options, bridge.config(), from));
                }
                Err(why) => {
                    bridge.on_setup_failed(&why);
                    retry_at = Instant::now() + backoff.next();
                }
            }
        }
        if let Some(s) = session.as_mut() {
            bridge.submit(s);
        }
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            event = next_event(&mut session) => match event {
                Some(Ok(event)) => {
                    if let Some(s) = session.as_mut() {
                        if bridge.on_event(event, s) {
                            backoff.reset();
                        }
                    }
                }
                failed => {
                    let was_connected = session.as_ref().is_some_and(|s| s.connected);
                    bridge.on_lost(failed.as_ref().and_then(|r| r.as_ref().err()), was_connected);
                    session = None;
                    retry_at = Instant::now() + backoff.next();
                }
            },
            batch = inbound.recv(), if inbound_open && !bridge.holding() => match batch {
                Some(batch) => bridge.on_batch(batch, session.as_mut()),
                // The core closed the channels (stopping): keep sending
                // what is queued until told to stop.
                None => inbound_open = false,
            },
            () = tokio::time::sleep_until(retry_at), if session.is_none() => {}
            _ = tick.tick() => bridge.maintain(),
        }
    }
    bridge.finish(session).await;
    Ok(())
}

/// The session's next event; never resolves without a session.
async fn next_event(
    session: &mut Option<Session>,
) -> Option<Result<rumqttc::Event, rumqttc::ConnectionError>> {
    match session {
        Some(s) => s.next_event().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
