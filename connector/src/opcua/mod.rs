//! The OPC UA driver (issue 15): an OPC UA client (async-opcua 0.19) that
//! publishes value changes of subscribed nodes on channels and writes
//! channel messages to configured nodes. See `connector/src/driver.rs` for
//! the contract and /work/notes/docs-opcua.md for the policy keys.
//!
//! One connection is one session: [`session`] drives the session's event
//! loop itself and reports the link's state; this module reconnects with
//! exponential backoff and recreates the subscription ([`subscribe`]) on
//! every new session; [`write`] turns write messages into OPC UA writes.

mod config;
mod session;
mod subscribe;
mod write;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::driver::{ConfigError, Context, Counters};
use crate::pacing::Backoff;
use config::Config;
use session::{Link, Setup};
use subscribe::Sink;
use write::{Pending, Progress, Writer};

/// How long closing the session may take when the connector stops.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks the `[connector]` table (without `kind`) of an OPC UA connector;
/// `endpoints` is the policy's `[network] connect`.
///
/// # Errors
/// Every problem found, each naming its key and the fix.
pub fn check(config: &toml::Table, endpoints: &[String]) -> Result<(), Vec<ConfigError>> {
    Config::parse(config, endpoints).map(|_| ())
}

/// Runs the connector until `ctx.stop` fires: connects, subscribes, writes,
/// reconnects.
///
/// # Errors
/// The policy is invalid, or a file it names (certificates, key, password)
/// is unreadable or invalid, or the PKI directory in the state dir cannot
/// be written. Server trouble is never an error: it is retried.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let Context {
        name,
        config,
        endpoints,
        state_dir,
        mut channels,
        counters,
        mut stop,
    } = ctx;
    let config = Config::parse(&config, &endpoints).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid OPC UA policy: {}", lines.join("; "))
    })?;
    let mut setup = Setup::prepare(&name, &state_dir, &config)?;
    let sink = Sink::new(&config, channels.outbound.clone(), counters.clone());
    let mut writer = Writer::new(&config.write, counters.clone(), config.timeout);
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut states = StateLog::default();
    let mut pending: Option<Pending> = None;
    let mut inbound_open = true;
    let mut connected_once = false;
    let target = format!(
        "{} ({}, {:?})",
        config.url,
        config.policy.to_str(),
        config.mode
    );

    loop {
        // Connect: a new session each time.
        let attempt = tokio::select! {
            _ = stopped(&mut stop) => return Ok(()),
            r = tokio::time::timeout(config.timeout, connect(&mut setup)) => r
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", config.timeout))),
        };
        let mut link = match attempt {
            Ok(link) => link,
            Err(reason) => {
                Counters::bump(&counters.errors);
                states.failed(&format!("cannot connect to {target}: {reason}"));
                if !sleep(&mut stop, backoff.next()).await {
                    return Ok(());
                }
                continue;
            }
        };

        // Requests go through their own handle on the session, so the link
        // can be watched at the same time.
        let session = std::sync::Arc::clone(&link.session);

        // Subscribe on the new session.
        if !config.subscribe.is_empty() {
            let created = tokio::select! {
                _ = stopped(&mut stop) => {
                    link.close(CLOSE_TIMEOUT).await;
                    return Ok(());
                }
                reason = link.down() => Err(reason),
                r = tokio::time::timeout(config.timeout, subscribe::create(&session, &config, &sink)) => r
                    .unwrap_or_else(|_| Err(format!("subscribing got no answer within {:?}", config.timeout))),
            };
            if let Err(reason) = created {
                Counters::bump(&counters.errors);
                states.failed(&format!("connected to {target} but {reason}"));
                link.close(CLOSE_TIMEOUT).await;
                if !sleep(&mut stop, backoff.next()).await {
                    return Ok(());
                }
                continue;
            }
        }

        counters.connected.store(true, Ordering::Relaxed);
        if connected_once {
            Counters::bump(&counters.reconnects);
        }
        connected_once = true;
        backoff.reset();
        states.connected(&format!(
            "connected to {target}: {} node(s) subscribed, {} writable",
            config.subscribe.len(),
            config.write.len()
        ));

        // Serve until the connection is lost or the connector stops.
        let reason = loop {
            if let Some(batch) = pending.as_mut() {
                let progress = tokio::select! {
                    _ = stopped(&mut stop) => {
                        // The batch is not accepted: the next connector
                        // process gets it again (writes are at least once).
                        counters.connected.store(false, Ordering::Relaxed);
                        link.close(CLOSE_TIMEOUT).await;
                        return Ok(());
                    }
                    reason = link.down() => Progress::Interrupted(reason),
                    p = writer.process(&session, batch) => p,
                };
                match progress {
                    Progress::Done => {
                        if let Some(done) = pending.take() {
                            done.accept();
                        }
                    }
                    Progress::Interrupted(reason) => break reason,
                }
                continue;
            }
            tokio::select! {
                _ = stopped(&mut stop) => {
                    counters.connected.store(false, Ordering::Relaxed);
                    link.close(CLOSE_TIMEOUT).await;
                    return Ok(());
                }
                reason = link.down() => break reason,
                batch = channels.inbound.recv(), if inbound_open => match batch {
                    Some(batch) => pending = Some(Pending::new(batch)),
                    // The core closed the inbound side (stopping): keep
                    // publishing until `stop`.
                    None => inbound_open = false,
                },
            }
        };
        counters.connected.store(false, Ordering::Relaxed);
        Counters::bump(&counters.errors);
        states.failed(&format!("disconnected from {target}: {reason}"));
        drop(link);
        if !sleep(&mut stop, backoff.next()).await {
            return Ok(());
        }
    }
}

/// Opens a session and waits until it is active.
async fn connect(setup: &mut Setup) -> Result<Link, String> {
    let mut link = setup.open().await?;
    link.up().await?;
    Ok(link)
}

/// Resolves when the connector must stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An Err means the core dropped its sender (it is gone): stop too.
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps `delay`; `false` if the connector must stop instead.
async fn sleep(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = stopped(stop) => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Logs the link's state once per change: a failure repeating with the
/// same reason is counted (and reported with the next change), not logged.
#[derive(Default)]
struct StateLog {
    last_failure: Option<String>,
    repeats: u64,
}

impl StateLog {
    fn failed(&mut self, text: &str) {
        if self.last_failure.as_deref() == Some(text) {
            self.repeats += 1;
            return;
        }
        crate::log!("warn", "opcua: {text}{}", self.retried());
        self.last_failure = Some(text.to_string());
    }

    fn connected(&mut self, text: &str) {
        crate::log!("info", "opcua: {text}{}", self.retried());
        self.last_failure = None;
    }

    /// " (N more failed attempts)" for the repeats not logged so far.
    fn retried(&mut self) -> String {
        let n = std::mem::take(&mut self.repeats);
        if n == 0 {
            String::new()
        } else {
            format!(" (after {n} more failed attempt(s) like the last one logged)")
        }
    }
}
