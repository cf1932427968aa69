//! Test guest for the connector tests (tests/tests/connectors.rs): logs
//! every message it receives and can pass messages on, so a test sees what
//! a connector delivered and can drive a connector's writes.
//!
//! - Every message on any subscribed channel is logged at info level as
//!   `echo-log: CHANNEL seq=S len=N hex=…` (at most 64 bytes shown), plus
//!   `f64=V` when it is 8 bytes and `ts_us=T f64=V` when 16 (the Modbus and
//!   OPC UA connectors' encodings).
//! - `--forward FROM:TO` (repeatable as one comma-separated list):
//!   messages from channel FROM are sent on, unchanged, on channel TO.

use edgeward::{Channel, Incoming};

struct EchoLog {
    /// (from handle, to channel).
    forwards: Vec<(i32, Channel)>,
}

impl edgeward::Module for EchoLog {
    fn init() -> Result<Self, i32> {
        let mut forwards = Vec::new();
        if let Some(list) = edgeward::arg::<String>("--forward") {
            for pair in list.split(',') {
                let (from, to) = pair.split_once(':').ok_or(-1)?;
                forwards.push((edgeward::channel(from)?.handle(), edgeward::channel(to)?));
            }
        }
        Ok(EchoLog { forwards })
    }

    fn on_message(&mut self, message: Incoming<'_>) -> Result<(), i32> {
        let bytes = message.bytes();
        let handle = message.channel().handle();
        let hex: String = bytes.iter().take(64).map(|b| format!("{b:02x}")).collect();
        let mut line = format!(
            "echo-log: channel#{handle} seq={} len={} hex={hex}",
            message.seq(),
            bytes.len()
        );
        if bytes.len() == 8 {
            let value = f64::from_le_bytes(bytes.try_into().map_err(|_| -1)?);
            line.push_str(&format!(" f64={value}"));
        } else if bytes.len() == 16 {
            let ts = i64::from_le_bytes(bytes[..8].try_into().map_err(|_| -1)?);
            let value = f64::from_le_bytes(bytes[8..].try_into().map_err(|_| -1)?);
            line.push_str(&format!(" ts_us={ts} f64={value}"));
        }
        edgeward::info(&line);
        for (from, to) in &self.forwards {
            if *from == handle {
                to.send(bytes)?;
            }
        }
        Ok(())
    }
}

edgeward::module!(EchoLog);
