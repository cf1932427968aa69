//! The Modbus TCP driver (issue 15): polls registers and bits of devices on
//! fixed-rate schedules and publishes each value on a channel; performs the
//! writes modules send, limited to the addresses the policy allows. See
//! `connector/src/driver.rs` for the contract.
//!
//! - `config.rs`: the `[connector]` keys, defaults and checks → a plan.
//! - `decode.rs`: registers ⇄ numbers (types, byte/word orders, scaling).
//! - `poll.rs`: poll groups (adjacent reads merged) and their schedule.
//! - `device.rs`: one task per device: connection, polls, writes, backoff.
//! - `write.rs`: inbound write messages → checked, encoded device writes.
//! - `../pacing.rs` (shared): backoff, log lines at most once per interval per kind.
//! - `stream.rs`: the TCP stream, watched for the device closing it.
//! - `timer.rs`: a µs-precise sleep (timerfd) for the schedule.

mod config;
mod decode;
mod device;
mod poll;
mod stream;
mod timer;
mod write;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::driver::{ConfigError, Context};

/// How long the tasks get to finish after stop before they are aborted.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Checks the `[connector]` table (without `kind`) of a modbus connector;
/// `endpoints` is the policy's `[network] connect`.
///
/// # Errors
/// Every problem found, each naming its key and the fix.
pub fn check(config: &toml::Table, endpoints: &[String]) -> Result<(), Vec<ConfigError>> {
    config::plan(config, endpoints).map(|_| ())
}

/// Runs the connector until `ctx.stop` fires: one task per device (its
/// connection, polls and writes) and one routing inbound writes.
///
/// # Errors
/// The configuration does not pass [`check`], or a task panicked.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let plan = config::plan(&ctx.config, &ctx.endpoints).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid [connector] table: {}", lines.join("; "))
    })?;
    let Context {
        channels,
        counters,
        mut stop,
        ..
    } = ctx;
    let links = Arc::new(device::Links::new(
        plan.devices.len(),
        Arc::clone(&counters),
    ));
    let shared = device::Shared {
        publisher: channels.outbound,
        counters: Arc::clone(&counters),
        links,
    };
    let mut tasks = JoinSet::new();
    let mut routes = HashMap::new();
    for (index, plan) in plan.devices.into_iter().enumerate() {
        // One write in flight per device: the router waits for each.
        let (jobs, queue) = mpsc::channel(1);
        for write in &plan.writes {
            routes.insert(
                write.channel.clone(),
                write::Route {
                    device: plan.name.clone(),
                    jobs: jobs.clone(),
                    allow: write.allow.clone(),
                },
            );
        }
        tasks.spawn(device::run(
            plan,
            index,
            shared.clone(),
            queue,
            stop.clone(),
        ));
    }
    tasks.spawn(write::route(
        routes,
        channels.inbound,
        Arc::clone(&counters),
        stop.clone(),
    ));
    let result = loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break Ok(()),
            done = tasks.join_next() => match done {
                Some(Err(e)) => break Err(anyhow::anyhow!("a modbus task failed: {e}")),
                // Tasks end only on stop; an empty set waits for it too.
                Some(Ok(())) => {}
                None => {
                    stopped(&mut stop).await;
                    break Ok(());
                }
            },
        }
    };
    // The tasks saw the stop too; give requests in flight a moment.
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    counters.connected.store(false, Ordering::Relaxed);
    result
}

/// Resolves when `stop` becomes true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
