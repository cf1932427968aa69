//! Peer: Debian's mosquitto broker (`apt-get install mosquitto
//! mosquitto-clients`), started on loopback from a configuration written
//! to a temporary directory: a plain listener on a free port, optionally a
//! TLS listener (CA and server certificate made with the `openssl` CLI,
//! SAN `localhost` and `127.0.0.1`) and a password file
//! (`mosquitto_passwd`). Persistence is on, in that directory, so a broker
//! stopped with SIGTERM and restarted keeps what it holds for persistent
//! subscribers. Plus [`Subscriber`] (a `mosquitto_sub` with a persistent
//! session collecting messages) and [`publish`] (`mosquitto_pub`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::free_port;

/// How long a start or a stop may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// What the broker offers.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also listen with TLS on a second port.
    pub tls: bool,
    /// Require this user name and password (no anonymous clients).
    pub user: Option<(String, String)>,
    /// The TLS listener requires a client certificate signed by its CA
    /// ([`Mosquitto::client_cert_file`], [`Mosquitto::client_key_file`]).
    pub client_certificates: bool,
}

/// A running (or stopped) mosquitto. Dropping it kills it.
pub struct Mosquitto {
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    user: Option<(String, String)>,
    child: Option<Child>,
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and a server certificate for `localhost`/`127.0.0.1` in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=edgeward-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write ext.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Makes a client certificate (`client.crt`, key `client.key`) signed by
/// the CA in `dir`.
fn make_client_certificate(dir: &Path) {
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=edgeward-connector",
    ]);
    // Extensions make it an X.509 v3 certificate (rustls refuses v1).
    std::fs::write(dir.join("client-ext.cnf"), "extendedKeyUsage=clientAuth\n")
        .expect("write client-ext.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "2",
        "-extfile",
        "client-ext.cnf",
    ]);
}

/// Makes a second, unrelated CA (`other-ca.crt`) in `dir`: a client that
/// trusts it must refuse the broker.
pub fn make_other_ca(dir: &Path) -> PathBuf {
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=edgeward-other-ca",
        ])
        .current_dir(dir));
    dir.join("other-ca.crt")
}

impl Mosquitto {
    /// Writes the configuration and starts the broker; returns once it
    /// accepts connections.
    ///
    /// # Panics
    /// mosquitto or openssl is missing, or the broker does not come up
    /// (the message has its log).
    pub fn start(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let tls_port = options.tls.then(free_port);
        let mut conf = String::new();
        // Stay root when started as root (else mosquitto switches to its own
        // user, which cannot read the temporary directory).
        if nix::unistd::geteuid().is_root() {
            conf.push_str("user root\n");
        }
        conf.push_str(&format!(
            "persistence true\npersistence_location {}/\nautosave_interval 1\nlog_dest stderr\n\
             log_type all\nmax_queued_messages 100000\nmax_inflight_messages 0\nqueue_qos0_messages true\n",
            dir.path().display()
        ));
        match &options.user {
            Some((user, password)) => {
                let file = dir.path().join("passwd");
                std::fs::write(&file, "").expect("create passwd");
                run(Command::new("mosquitto_passwd")
                    .arg("-b")
                    .arg(&file)
                    .args([user, password]));
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
            None => conf.push_str("allow_anonymous true\n"),
        }
        conf.push_str(&format!("listener {port} 127.0.0.1\n"));
        if let Some(tls_port) = tls_port {
            make_certificates(dir.path());
            let d = dir.path().display();
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\n\
                 keyfile {d}/server.key\n"
            ));
            if options.client_certificates {
                make_client_certificate(dir.path());
                conf.push_str("require_certificate true\n");
            }
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        let mut broker = Self {
            dir,
            port,
            tls_port,
            user: options.user,
            child: None,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("open mosquitto.log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start mosquitto ({e}): apt-get install -y --no-install-recommends mosquitto mosquitto-clients")
            });
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        for port in ports {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                    panic!("mosquitto exited ({status}):\n{}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not listen on {port}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The plain (non-TLS) listener's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS listener's port (its certificate names `localhost` and
    /// `127.0.0.1`).
    ///
    /// # Panics
    /// Started without TLS.
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("broker started without tls")
    }

    /// The CA that signed the TLS listener's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A client certificate the TLS listener accepts (PEM; see
    /// [`Options::client_certificates`]).
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.path().join("client.crt")
    }

    /// Its private key (PKCS#8 PEM).
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// The broker's directory (configuration, certificates, log, database).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Whether it is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            // A paused broker acts on SIGTERM only once it runs again.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let deadline = Instant::now() + PATIENCE;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("mosquitto did not stop on {signal}:\n{}", self.log());
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }

    /// Stops it cleanly (SIGTERM: it saves its database) and waits.
    pub fn stop(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    }

    /// Kills it (SIGKILL: what it did not save is lost) and waits.
    pub fn kill(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is read or
    /// answered, as a hung broker or a silent network. [`Mosquitto::kill`]
    /// or [`Mosquitto::restart`] end it.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
        }
    }

    /// Starts it again (stopping it first if running) on the same ports,
    /// with the same database.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Arguments for mosquitto_sub/pub to reach the plain listener.
    fn client_args(&self) -> Vec<String> {
        let mut args = vec![
            "-h".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        if let Some((user, password)) = &self.user {
            args.extend([
                "-u".to_owned(),
                user.clone(),
                "-P".to_owned(),
                password.clone(),
            ]);
        }
        args
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A message a [`Subscriber`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct Inbox {
    messages: Vec<Received>,
}

/// A `mosquitto_sub` with a persistent session (`-c -i ID`, QoS 1): across
/// a broker restart it reconnects and gets what the broker held for it.
/// Dropping it kills it.
pub struct Subscriber {
    child: Child,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
}

impl Subscriber {
    /// Subscribes `client_id` to `filter` on `broker`; returns once the
    /// broker acknowledged the subscription.
    ///
    /// # Panics
    /// mosquitto_sub is missing or does not subscribe in time.
    pub fn start(broker: &Mosquitto, client_id: &str, filter: &str) -> Self {
        let marker = format!("Received SUBSCRIBE from {client_id}");
        let already = broker.log().matches(&marker).count();
        let mut child = Command::new("mosquitto_sub")
            .args(broker.client_args())
            .args(["-c", "-i", client_id, "-q", "1", "-t", filter])
            // One line per message, payload in hex: binary-safe.
            .args(["-F", "MSG %t %x"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub (apt-get install mosquitto-clients)");
        let stdout = child.stdout.take().expect("piped stdout");
        let inbox: Arc<(Mutex<Inbox>, Condvar)> = Arc::default();
        let writer = Arc::clone(&inbox);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let (lock, cvar) = &*writer;
                let mut inbox = lock.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(rest) = line.strip_prefix("MSG ") {
                    let (topic, hex_payload) = rest.rsplit_once(' ').unwrap_or((rest, ""));
                    inbox.messages.push(Received {
                        topic: topic.to_owned(),
                        payload: hex::decode(hex_payload).unwrap_or_default(),
                    });
                }
                cvar.notify_all();
            }
        });
        // The broker logs the SUBSCRIBE before it answers with the SUBACK:
        // from then on the subscription is in place.
        let deadline = Instant::now() + PATIENCE;
        while broker.log().matches(&marker).count() <= already {
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub did not subscribe to {filter}:\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, inbox }
    }

    /// Everything received so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        let (lock, _) = &*self.inbox;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .messages
            .clone()
    }

    /// Waits until `done` holds for the messages received (or `timeout`
    /// passed) and returns them.
    pub fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let (lock, cvar) = &*self.inbox;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cvar
            .wait_timeout_while(guard, timeout, |i| !done(&i.messages))
            .unwrap_or_else(|e| e.into_inner());
        guard.messages.clone()
    }

    /// Waits for at least `n` messages (or `timeout`) and returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, |m| m.len() >= n)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `payload` (any bytes) to `topic` with `qos` through
/// `mosquitto_pub`.
///
/// # Panics
/// mosquitto_pub fails.
pub fn publish(broker: &Mosquitto, topic: &str, payload: &[u8], qos: u8) {
    let mut child = Command::new("mosquitto_pub")
        .args(broker.client_args())
        .args(["-t", topic, "-q", &qos.to_string(), "-s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mosquitto_pub (apt-get install mosquitto-clients)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(payload).expect("write to mosquitto_pub");
    }
    let out = child.wait_with_output().expect("wait for mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub to {topic} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
