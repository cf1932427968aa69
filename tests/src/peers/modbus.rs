//! Peer: a pymodbus 3.16 Modbus TCP server (`tests/peers/modbus_server.py`,
//! its register map is documented at the top of the script) on 127.0.0.1,
//! unit 1, controlled through its stdin: stall/resume answering, and read or
//! set values without going through Modbus.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{free_port, python};

/// How long the server may take to accept connections (Python start).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a control command may take to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A Modbus data table of the test server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Holding registers.
    Holding,
    /// Input registers.
    Input,
    /// Coils.
    Coil,
    /// Discrete inputs.
    Discrete,
}

impl Table {
    fn letter(self) -> &'static str {
        match self {
            Table::Holding => "h",
            Table::Input => "i",
            Table::Coil => "c",
            Table::Discrete => "d",
        }
    }
}

/// A running pymodbus server. Dropping it kills the process.
pub struct ModbusServer {
    port: u16,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    replies: Option<mpsc::Receiver<String>>,
    log: tempfile::NamedTempFile,
}

/// The server script.
pub fn script() -> PathBuf {
    crate::repo_root().join("tests/peers/modbus_server.py")
}

impl ModbusServer {
    /// Starts a server on a free port and waits until it accepts
    /// connections.
    ///
    /// # Panics
    /// If the venv's python is missing (run `scripts/setup`) or the server
    /// does not come up.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (see [`ModbusServer::start`]).
    ///
    /// # Panics
    /// See [`ModbusServer::start`].
    pub fn start_on(port: u16) -> Self {
        let log = tempfile::NamedTempFile::new().expect("create the server's log file");
        let mut server = Self {
            port,
            child: None,
            stdin: None,
            replies: None,
            log,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let python = python();
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup (it creates the peers venv with pymodbus)",
            python.display()
        );
        // Appended to across restarts.
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log.path())
            .expect("open the server's log");
        let mut child = Command::new(&python)
            .arg(script())
            .arg(self.port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", script().display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        self.stdin = child.stdin.take();
        self.replies = Some(rx);
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("modbus server exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "modbus server did not accept on port {} within {START_TIMEOUT:?}: {}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the server logged (stderr) so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn command(&mut self, line: &str) -> String {
        let stdin = self
            .stdin
            .as_mut()
            .expect("the modbus server is not running");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("send {line:?} to the modbus server: {e}"));
        let reply = self
            .replies
            .as_ref()
            .expect("running")
            .recv_timeout(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("no reply to {line:?}: {e}; log: {}", self.log_text()));
        assert!(!reply.starts_with("error"), "{line:?}: {reply}");
        reply
    }

    /// From now on every Modbus request hangs unanswered (connections are
    /// still accepted), until [`ModbusServer::resume`].
    pub fn stall(&mut self) {
        self.command("stall");
    }

    /// Answers again (hung requests are answered too).
    pub fn resume(&mut self) {
        self.command("resume");
    }

    /// `count` values from `address` of `table`, read directly (not over
    /// Modbus, so it works while stalled); bits as 0/1.
    ///
    /// # Panics
    /// If the addresses are not in the server's map.
    pub fn get(&mut self, table: Table, address: u16, count: u16) -> Vec<u16> {
        let reply = self.command(&format!("get {} {address} {count}", table.letter()));
        reply
            .strip_prefix("values")
            .unwrap_or_else(|| panic!("unexpected reply {reply:?}"))
            .split_whitespace()
            .map(|v| v.parse().expect("a number"))
            .collect()
    }

    /// One holding register.
    pub fn holding(&mut self, address: u16) -> u16 {
        self.get(Table::Holding, address, 1)[0]
    }

    /// One coil.
    pub fn coil(&mut self, address: u16) -> bool {
        self.get(Table::Coil, address, 1)[0] != 0
    }

    /// Sets `values` from `address` of `table` directly (bits: 0/1).
    pub fn set(&mut self, table: Table, address: u16, values: &[u16]) {
        let values: Vec<String> = values.iter().map(ToString::to_string).collect();
        self.command(&format!(
            "set {} {address} {}",
            table.letter(),
            values.join(" ")
        ));
    }

    /// Stops the server cleanly (closing its stdin ends it; its connections
    /// are closed), or kills it after 5 s.
    pub fn stop(&mut self) {
        self.stdin = None;
        if let Some(child) = self.child.as_mut() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        self.stdin = None;
        self.replies = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it if running, then starts it again on the same port with the
    /// initial register map (waits until it accepts).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for ModbusServer {
    fn drop(&mut self) {
        self.kill();
    }
}
