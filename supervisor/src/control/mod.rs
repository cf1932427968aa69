//! The control socket: how `edgeward status|stop|restart` reach a running
//! supervisor. One JSON request line per connection, one JSON response line.

pub mod clients;
pub mod protocol;
pub mod server;
