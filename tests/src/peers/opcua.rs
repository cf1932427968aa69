//! Peer: an asyncua 2.1 OPC UA server (`tests/peers/opcua_server.py`) on
//! `opc.tcp://localhost:PORT/`, with security None and Basic256Sha256
//! SignAndEncrypt, `ns=2;s=counter` (Int32, +1 every 100 ms, with source
//! timestamps) and a writable `ns=2;s=setpoint` (Double).
//!
//! The server prints every client write (node, value, the status it
//! answered); [`OpcuaServer::writes`] collects them across restarts, so a
//! test can see exactly what landed. [`OpcuaServer::read_value`] reads a node
//! back with a separate asyncua client.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::{free_port, python};

/// How long the server may take to listen (asyncua imports and builds its
/// address space in about 1–2 s; generous for loaded CI machines).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One client write the server handled.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcuaWrite {
    /// The node written, as the server prints it (`ns=2;s=setpoint`).
    pub node: String,
    /// The value written, as Python's `repr` (`4.5`, `7`, `True`).
    pub value: String,
    /// The status the server answered (`Good`, `BadTypeMismatch`, ...).
    pub status: String,
}

/// A running asyncua server. Dropping it kills the server.
pub struct OpcuaServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    user: Option<(String, String)>,
    writes: Arc<Mutex<Vec<OpcuaWrite>>>,
}

impl OpcuaServer {
    /// Starts a server on a free port and waits until it listens. Its
    /// certificate is made in a fresh directory (see [`Self::certificate`]).
    ///
    /// # Errors
    /// The venv's python is missing (run `scripts/setup`), or the server
    /// exited or did not become ready (its log is in the error).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_inner(None)
    }

    /// Like [`Self::start`], but the server accepts only the user `name`
    /// with `password` (no anonymous sessions).
    ///
    /// # Errors
    /// As [`Self::start`].
    pub fn start_with_user(name: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_inner(Some((name.to_string(), password.to_string())))
    }

    fn start_inner(user: Option<(String, String)>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory for the OPC UA server")?;
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            user,
            writes: Arc::default(),
        };
        server.spawn()?;
        Ok(server)
    }

    /// Its TCP port on loopback.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its endpoint URL, `opc.tcp://localhost:PORT/`.
    pub fn url(&self) -> String {
        format!("opc.tcp://localhost:{}/", self.port)
    }

    /// `localhost:PORT`, as a policy's `[network] connect` grants it.
    pub fn endpoint(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// The server's certificate (DER), the same across restarts.
    pub fn certificate(&self) -> PathBuf {
        self.pki_dir().join("cert.der")
    }

    /// A scratch directory that lives as long as the server (for a test's
    /// client certificates and state).
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every client write the server handled so far (across restarts), in order.
    pub fn writes(&self) -> Vec<OpcuaWrite> {
        self.writes.lock().expect("writes lock").clone()
    }

    /// Waits up to `timeout` for a client write matching `pred`.
    pub fn wait_for_write(
        &self,
        timeout: Duration,
        pred: impl Fn(&OpcuaWrite) -> bool,
    ) -> Option<OpcuaWrite> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(w) = self.writes().into_iter().find(|w| pred(w)) {
                return Some(w);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads `node`'s value with a separate asyncua client (security None),
    /// as Python's `repr` of the value.
    ///
    /// # Errors
    /// The client failed (its output is in the error).
    pub fn read_value(&self, node: &str) -> anyhow::Result<String> {
        let script = "import asyncio, sys\n\
            from asyncua import Client\n\
            async def main():\n    \
                async with Client(sys.argv[1]) as c:\n        \
                    print(repr(await c.get_node(sys.argv[2]).read_value()))\n\
            asyncio.run(main())\n";
        let out = Command::new(python())
            .args(["-c", script, &self.url(), node])
            .output()
            .context("run an asyncua client")?;
        if !out.status.success() {
            bail!(
                "reading {node} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Kills the server abruptly (SIGKILL): connections drop without a goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (if running) and starts it again on the same port
    /// with the same certificate; waits until it listens.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("server-pki")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let script = super::super::repo_root().join("tests/peers/opcua_server.py");
        let log_path = self.dir.path().join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let mut command = Command::new(python());
        command
            .arg(&script)
            .arg(self.port.to_string())
            .arg(self.pki_dir());
        if let Some((name, password)) = &self.user {
            command.arg(format!("{name}:{password}"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "start {} with {} (run scripts/setup for the peers venv)",
                    script.display(),
                    python().display()
                )
            })?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let writes = Arc::clone(&self.writes);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ready ") {
                    let _ = ready_tx.send(());
                } else if let Some(rest) = line.strip_prefix("write ") {
                    // "NODEID VALUE STATUS": the node id has no spaces, the
                    // status is the last word, the value is what is between.
                    let (node, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                    let (value, status) = rest.rsplit_once(' ').unwrap_or((rest, ""));
                    writes.lock().expect("writes lock").push(OpcuaWrite {
                        node: node.to_string(),
                        value: value.to_string(),
                        status: status.to_string(),
                    });
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        bail!(
                            "OPC UA server exited ({status}) before listening: {}",
                            std::fs::read_to_string(&log_path).unwrap_or_default()
                        );
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "OPC UA server did not listen within {READY_TIMEOUT:?}: {}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for OpcuaServer {
    fn drop(&mut self) {
        self.kill();
    }
}
