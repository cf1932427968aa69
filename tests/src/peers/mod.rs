//! Real protocol peers for the connector tests, started on loopback:
//! Debian's mosquitto, and pymodbus and asyncua servers from a PyPI venv
//! (`scripts/setup` installs them; `peers_venv()` finds the venv).

pub mod modbus;
pub mod mosquitto;
pub mod opcua;

use std::path::PathBuf;

/// The venv with pymodbus, asyncua and paho-mqtt (`scripts/setup`):
/// `$EDGEWARD_PEERS_VENV`, else `~/.cache/edgeward/peers-venv`.
pub fn peers_venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGEWARD_PEERS_VENV") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("EDGEWARD_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/edgeward"),
        PathBuf::from,
    );
    cache.join("peers-venv")
}

/// The venv's python.
pub fn python() -> PathBuf {
    peers_venv().join("bin/python")
}

/// A free TCP port on 127.0.0.1 (bound then released: good enough for tests
/// that start their peer right away).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
