//! gw-manual-entry: an operator's hand-held reading of the barrel
//! temperature, entered by writing a number to the file `temperature` in
//! the directory granted read-only as `/inject` (in the demo,
//! `policies/data/inject/temperature` of its copy):
//!
//! ```sh
//! echo 91.5 > $DEMO/policies/data/inject/temperature
//! ```
//!
//! Every tick (500 ms) it looks at the file; when it changed (contents or
//! modification time) and its first line that is not a `#` comment is a
//! number, it publishes it on `temp-filtered` as `(n: u64, celsius: f64,
//! t_ns: i64)`, beside `gw-temp-filter`'s readings, so `gw-temp-alert`
//! judges it as it judges theirs (above 85.0: an ALERT). What the file
//! holds when the module starts is taken as already entered.
//!
//! With `--source plc` it takes its readings from a PLC instead: each
//! message on a subscribed channel that is one `f64` (what a Modbus
//! connector publishes for a polled register, `docs/connectors.md`) is
//! published on `temp-filtered` the same way, and the file is not read
//! (`policies/connectors/plc-temperature.toml`, the demo's Modbus option).
//!
//! The number of readings entered survives restarts through a snapshot.

use std::io::Read as _;
use std::time::SystemTime;

use edgeward::{Channel, Incoming, Message};

const FILE: &str = "/inject/temperature";

struct ManualEntry {
    out: Channel,
    entered: u64,
    /// What the file held at the last look.
    seen: Option<(SystemTime, String)>,
    /// The last error reading it, logged once.
    failed: Option<String>,
    /// `--source plc`: readings come as messages, not from the file.
    from_plc: bool,
}

fn look() -> std::io::Result<(SystemTime, String)> {
    // The open file's metadata (fd_filestat_get): a granted dir's handle
    // answers a read but not a stat by path.
    let mut file = std::fs::File::open(FILE)?;
    let modified = file.metadata()?.modified()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok((modified, text))
}

fn reading(text: &str) -> Option<f64> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?
        .parse()
        .ok()
}

impl edgeward::Module for ManualEntry {
    fn init() -> Result<Self, i32> {
        Ok(ManualEntry {
            out: edgeward::channel("temp-filtered")?,
            entered: 0,
            seen: look().ok(),
            failed: None,
            from_plc: edgeward::arg::<String>("--source").as_deref() == Some("plc"),
        })
    }

    fn on_message(&mut self, message: Incoming<'_>) -> Result<(), i32> {
        let Some(celsius) = message.value::<f64>().filter(|c| c.is_finite()) else {
            return Ok(()); // not a PLC reading
        };
        self.entered += 1;
        if self.entered == 1 {
            edgeward::info(&format!("first PLC reading {celsius:.1} C"));
        }
        self.out
            .send_value(&(self.entered, celsius, edgeward::now_ns()))
    }

    fn on_tick(&mut self, now_ns: u64) -> Result<(), i32> {
        if self.from_plc {
            return Ok(());
        }
        let now = match look() {
            Ok(now) => now,
            Err(e) => {
                let error = e.to_string();
                if self.failed.as_ref() != Some(&error) {
                    edgeward::warn(&format!("cannot read {FILE}: {error}"));
                    self.failed = Some(error);
                }
                return Ok(());
            }
        };
        self.failed = None;
        if self.seen.as_ref() == Some(&now) {
            return Ok(());
        }
        let celsius = reading(&now.1);
        self.seen = Some(now);
        let Some(celsius) = celsius.filter(|c| c.is_finite()) else {
            edgeward::warn(&format!("{FILE} changed but holds no number"));
            return Ok(());
        };
        self.entered += 1;
        edgeward::info(&format!(
            "operator reading {celsius:.1} C (entry {})",
            self.entered
        ));
        self.out.send_value(&(self.entered, celsius, now_ns))
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.entered.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), i32> {
        self.entered = u64::decode(state).ok_or(-1)?;
        Ok(())
    }
}

edgeward::module!(ManualEntry);
