//! `edgeward run --metrics ADDR`: Prometheus metrics at `/metrics`, a
//! status page at `/` and its data at `/status.json`.
//!
//! - `counters.rs`: what the event loop counts (end causes, denials,
//!   reloads, upgrades, snapshot commit times);
//! - `published.rs`: the view the loop publishes every second;
//! - `probe.rs`: what a scrape reads from `/proc` and the cgroups;
//! - `encode.rs`: the Prometheus text, through `prometheus-client`;
//! - `http.rs`: the listener thread; `page.html`: the page.
//!
//! The loop never waits for the listener: it swaps an `Arc` under a mutex
//! once a second, and the listener thread clones that `Arc` per request.

pub mod counters;
pub mod encode;
mod http;
/// The listener's bounds (docs/operations.md pins them).
#[cfg(test)]
pub mod http_limits {
    pub use super::http::{CONNECTION_DEADLINE, MAX_CONNECTIONS, MAX_REQUEST_BYTES};
}
pub mod probe;
pub mod published;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use published::Published;

/// How often the event loop refreshes the view.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address does not parse or resolve.
    #[error(
        "--metrics {addr}: not an address (use HOST:PORT, e.g. 127.0.0.1:9477 or 0.0.0.0:9477)"
    )]
    Address {
        /// What was given.
        addr: String,
    },
    /// It cannot be bound (in use, not ours, a port below 1024 without
    /// the capability).
    #[error("--metrics {addr}: cannot listen: {source}")]
    Bind {
        /// What was given.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The thread could not be started.
    #[error("--metrics: cannot start the listener thread: {0}")]
    Thread(std::io::Error),
}

/// The running listener and the view it serves.
pub struct Exporter {
    latest: Arc<Mutex<Arc<Published>>>,
    local: SocketAddr,
}

impl Exporter {
    /// Binds `addr` now (so a bad address fails `edgeward run` at once)
    /// and serves it from a thread of its own.
    ///
    /// # Errors
    /// The address is not one, cannot be bound, or the thread cannot start.
    pub fn start(addr: &str) -> Result<Exporter, MetricsError> {
        let resolved: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| MetricsError::Address {
                addr: addr.to_string(),
            })?;
        let listener = TcpListener::bind(resolved).map_err(|source| MetricsError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let local = listener.local_addr().unwrap_or(resolved);
        let latest = Arc::new(Mutex::new(Arc::new(Published::empty())));
        let shared = Arc::clone(&latest);
        std::thread::Builder::new()
            .name("metrics-http".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                // Signals are the event loop's (its signalfd), never this thread's.
                let _ = nix::sys::signal::pthread_sigmask(
                    nix::sys::signal::SigmaskHow::SIG_BLOCK,
                    Some(&nix::sys::signal::SigSet::all()),
                    None,
                );
                http::serve(listener, shared);
            })
            .map_err(MetricsError::Thread)?;
        Ok(Exporter { latest, local })
    }

    /// The address it listens on (the port the kernel chose for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Replaces the view the listener serves.
    pub fn publish(&self, view: Published) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
    }
}
