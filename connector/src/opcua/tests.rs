//! Tests of the OPC UA driver against a real asyncua server
//! (`tests/peers/opcua_server.py`), driven in-process: a real mpsc for
//! inbound batches and a recording [`PublishRings`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeward_tests::peers::opcua::OpcuaServer;
use tokio::sync::{mpsc, oneshot, watch};

use super::config::{Config, ValueType};
use super::subscribe::{as_f64, encode, timestamp_us};
use super::write::{decode, to_variant};
use crate::driver::{
    ChannelIo, Context, Counters, Inbound, InboundBatch, PublishRings, Publisher, SendError,
};
use opcua_types::{DataValue, DateTime, Variant};

/// Generous bound for anything that should happen soon (no timing claim:
/// only to fail instead of hanging).
const WAIT: Duration = Duration::from_secs(60);

/// Records every send, like the core's rings would carry them.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(String, Vec<u8>)>>,
}

impl PublishRings for Recorder {
    fn send(&self, channel: &str, payload: &[u8]) -> Result<(), SendError> {
        self.sent
            .lock()
            .unwrap()
            .push((channel.to_string(), payload.to_vec()));
        Ok(())
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// The driver running on its own thread and runtime (the test's thread
/// blocks on the peer freely).
struct Driver {
    stop: watch::Sender<bool>,
    inbound: mpsc::Sender<InboundBatch>,
    rings: Arc<Recorder>,
    counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    state: tempfile::TempDir,
    seq: u64,
}

impl Driver {
    fn start(config: toml::Table, endpoints: Vec<String>) -> Self {
        Self::start_in(config, endpoints, tempfile::tempdir().unwrap())
    }

    fn start_in(config: toml::Table, endpoints: Vec<String>, state: tempfile::TempDir) -> Self {
        check_ok(&config, &endpoints);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (in_tx, in_rx) = mpsc::channel(16);
        let rings = Arc::new(Recorder::default());
        let counters = Arc::new(Counters::default());
        let ctx = Context {
            name: "plant-opcua".into(),
            config,
            endpoints,
            state_dir: state.path().to_path_buf(),
            channels: ChannelIo {
                inbound: in_rx,
                outbound: Publisher::new(rings.clone()),
            },
            counters: counters.clone(),
            stop: stop_rx,
        };
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(super::run(ctx))
        });
        Self {
            stop: stop_tx,
            inbound: in_tx,
            rings,
            counters,
            thread: Some(thread),
            state,
            seq: 0,
        }
    }

    /// Sends one message on `channel`; the receiver fires when the driver
    /// accepts its batch.
    fn send(&mut self, channel: &str, payload: &[u8]) -> oneshot::Receiver<()> {
        self.seq += 1;
        let (tx, rx) = oneshot::channel();
        let message = Inbound {
            channel: channel.into(),
            from: "control".into(),
            seq: self.seq,
            received_us: now_us() as u64,
            payload: payload.to_vec(),
        };
        self.inbound
            .blocking_send(InboundBatch::new(vec![message], tx))
            .expect("driver gone");
        rx
    }

    /// The `(source_timestamp_us, value)` messages published on `channel`.
    fn values(&self, channel: &str) -> Vec<(i64, f64)> {
        self.rings
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, p)| {
                assert_eq!(p.len(), 16, "a value change is 16 bytes");
                (
                    i64::from_le_bytes(p[..8].try_into().unwrap()),
                    f64::from_le_bytes(p[8..].try_into().unwrap()),
                )
            })
            .collect()
    }

    fn count(&self, c: impl Fn(&Counters) -> u64) -> u64 {
        c(&self.counters)
    }

    fn connected(&self) -> bool {
        self.counters.connected.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.stop.send(true).unwrap();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("driver thread panicked")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the driver accepts the batch `rx` belongs to.
fn wait_accepted(what: &str, mut rx: oneshot::Receiver<()>) {
    wait_until(what, || match rx.try_recv() {
        Ok(()) => true,
        Err(oneshot::error::TryRecvError::Empty) => false,
        Err(oneshot::error::TryRecvError::Closed) => panic!("{what}: dropped without accept"),
    });
}

fn check_ok(config: &toml::Table, endpoints: &[String]) {
    if let Err(errors) = super::check(config, endpoints) {
        panic!("policy rejected: {errors:?}");
    }
}

fn policy(server: &OpcuaServer, extra: &str) -> toml::Table {
    format!(
        r#"
url = "{url}"
reconnect_min_ms = 50
reconnect_max_ms = 500
{extra}

[[subscribe]]
node = "ns=2;s=counter"
channel = "counter"
sampling_ms = 50

[[write]]
node = "ns=2;s=setpoint"
channel = "setpoint"
type = "double"

[[write]]
node = "ns=2;s=setpoint"
channel = "setpoint_as_int16"
type = "int16"
"#,
        url = server.url()
    )
    .parse()
    .unwrap()
}

/// Value changes arriving on `counter` after `index`: waits for `n` more.
fn more_values(driver: &Driver, index: usize, n: usize) -> Vec<(i64, f64)> {
    wait_until(&format!("{n} counter values"), || {
        driver.values("counter").len() >= index + n
    });
    driver.values("counter")[index..].to_vec()
}

/// Strictly increasing values and timestamps, timestamps close to now.
fn assert_in_order(values: &[(i64, f64)]) {
    for pair in values.windows(2) {
        assert!(pair[1].1 > pair[0].1, "values out of order: {values:?}");
        assert!(pair[1].0 > pair[0].0, "timestamps out of order: {values:?}");
    }
    let now = now_us();
    for (ts, _) in values {
        // Source timestamps of a server on this machine, in µs: within a
        // minute of now (ms or 100-ns units would be off by 1000x).
        assert!(
            (now - ts).abs() < 60_000_000,
            "timestamp {ts} µs is not near now ({now} µs)"
        );
    }
}

/// The whole round against one server: values, writes, refusals, server
/// restart, reconnect and resubscribe.
fn exercise(server: &mut OpcuaServer, driver: &mut Driver) {
    // Value changes flow, in order, with source timestamps.
    let first = more_values(driver, 0, 10);
    assert_in_order(&first);
    assert!(driver.connected());
    assert_eq!(
        driver.count(|c| c.received.load(Ordering::Relaxed)),
        driver.values("counter").len() as u64
    );

    // A write lands on the server.
    let done = driver.send("setpoint", &42.5f64.to_le_bytes());
    wait_accepted("the setpoint write", done);
    assert!(server
        .wait_for_write(WAIT, |w| w.node == "ns=2;s=setpoint"
            && w.value == "42.5"
            && w.status == "Good")
        .is_some());
    assert_eq!(server.read_value("ns=2;s=setpoint").unwrap(), "42.5");
    assert_eq!(driver.count(|c| c.delivered.load(Ordering::Relaxed)), 1);

    // Malformed and out-of-range writes are refused, never sent.
    let short = driver.send("setpoint", &[1, 2, 3, 4]);
    let out_of_range = driver.send("setpoint_as_int16", &70000.0f64.to_le_bytes());
    let fraction = driver.send("setpoint_as_int16", &1.5f64.to_le_bytes());
    wait_accepted("the short write", short);
    wait_accepted("the out-of-range write", out_of_range);
    wait_accepted("the fractional int16 write", fraction);
    assert_eq!(driver.count(|c| c.refused.load(Ordering::Relaxed)), 3);
    assert_eq!(driver.count(|c| c.delivered.load(Ordering::Relaxed)), 1);

    // A write the server refuses (Int16 into a Double) counts as an error.
    let errors = driver.count(|c| c.errors.load(Ordering::Relaxed));
    let mismatch = driver.send("setpoint_as_int16", &7.0f64.to_le_bytes());
    wait_accepted("the mismatched write", mismatch);
    assert!(server
        .wait_for_write(WAIT, |w| w.value == "7" && w.status == "BadTypeMismatch")
        .is_some());
    assert!(driver.count(|c| c.errors.load(Ordering::Relaxed)) > errors);
    assert_eq!(driver.count(|c| c.delivered.load(Ordering::Relaxed)), 1);
    // Only the configured writes reached the server.
    let writes = server.writes();
    assert_eq!(writes.len(), 2, "{writes:?}");

    // The server dies: the driver notices and keeps trying.
    server.kill();
    wait_until("disconnected", || !driver.connected());
    // The loss and at least one failed attempt (the snapshot may predate
    // the loss's count).
    let errors = driver.count(|c| c.errors.load(Ordering::Relaxed));
    wait_until("failed reconnects counted", || {
        driver.count(|c| c.errors.load(Ordering::Relaxed)) >= errors + 2
    });
    // A write sent while the server is down waits for it.
    let mut held = driver.send("setpoint", &7.25f64.to_le_bytes());
    // Not accepted while there is no server to write it to.
    assert_eq!(held.try_recv(), Err(oneshot::error::TryRecvError::Empty));
    let before_restart = driver.values("counter").len();
    let restarted_at = now_us();
    server.restart().unwrap();

    // Reconnected and resubscribed: new value changes flow.
    wait_until("reconnected", || {
        driver.connected() && driver.count(|c| c.reconnects.load(Ordering::Relaxed)) >= 1
    });
    let after = more_values(driver, before_restart, 5);
    assert_in_order(&after);
    assert!(
        after.iter().all(|(ts, _)| *ts >= restarted_at),
        "values after the restart carry the new server's timestamps: {after:?}"
    );
    // The held write landed on the restarted server.
    wait_accepted("the held write", held);
    assert!(server
        .wait_for_write(WAIT, |w| w.value == "7.25" && w.status == "Good")
        .is_some());
    assert_eq!(server.read_value("ns=2;s=setpoint").unwrap(), "7.25");
    assert_eq!(driver.count(|c| c.delivered.load(Ordering::Relaxed)), 2);
}

#[test]
fn security_none_subscribes_writes_and_reconnects() {
    let mut server = OpcuaServer::start().unwrap();
    let mut driver = Driver::start(policy(&server, ""), vec![server.endpoint()]);
    exercise(&mut server, &mut driver);
    driver.stop().unwrap();
}

#[test]
fn basic256sha256_sign_and_encrypt_subscribes_writes_and_reconnects() {
    let mut server = OpcuaServer::start().unwrap();
    let extra = format!(
        "security_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"\nserver_certificate_file = \"{}\"",
        server.certificate().display()
    );
    let mut driver = Driver::start(policy(&server, &extra), vec![server.endpoint()]);
    exercise(&mut server, &mut driver);
    // The client pair was generated into the state dir, once.
    let own = driver.state.path().join("pki/own/cert.der");
    assert!(
        own.is_file(),
        "generated client certificate at {}",
        own.display()
    );
    driver.stop().unwrap();
}

#[test]
fn a_server_with_another_certificate_is_refused_and_counted() {
    let server = OpcuaServer::start().unwrap();
    // A second server's certificate: a different key, same host name.
    let other = OpcuaServer::start().unwrap();
    let extra = format!(
        "security_policy = \"Basic256Sha256\"\nserver_certificate_file = \"{}\"",
        other.certificate().display()
    );
    let driver = Driver::start(policy(&server, &extra), vec![server.endpoint()]);
    wait_until("failed attempts counted", || {
        driver.count(|c| c.errors.load(Ordering::Relaxed)) >= 3
    });
    assert!(!driver.connected());
    assert!(driver.values("counter").is_empty());
    // It still stops promptly (no hang waiting for a connection).
    driver.stop().unwrap();
}

#[test]
fn a_host_not_in_the_certificate_is_refused() {
    let server = OpcuaServer::start().unwrap();
    // The certificate names `localhost`; the URL says 127.0.0.1.
    let mut config = policy(
        &server,
        &format!(
            "security_policy = \"Basic256Sha256\"\nserver_certificate_file = \"{}\"",
            server.certificate().display()
        ),
    );
    config.insert(
        "url".into(),
        format!("opc.tcp://127.0.0.1:{}/", server.port()).into(),
    );
    let driver = Driver::start(config, vec![format!("127.0.0.1:{}", server.port())]);
    wait_until("failed attempts counted", || {
        driver.count(|c| c.errors.load(Ordering::Relaxed)) >= 3
    });
    assert!(!driver.connected());
    assert!(driver.values("counter").is_empty());
    driver.stop().unwrap();
}

#[test]
fn a_user_name_and_password_log_in_and_a_wrong_password_does_not() {
    let server = OpcuaServer::start_with_user("operator", "s3cret pass").unwrap();
    let secure = format!(
        "security_policy = \"Basic256Sha256\"\nserver_certificate_file = \"{}\"\nusername = \"operator\"",
        server.certificate().display()
    );
    // The password file's trailing newline is not part of the password.
    let good = server.scratch_dir().join("good-password");
    std::fs::write(&good, "s3cret pass\n").unwrap();
    let extra = format!("{secure}\npassword_file = \"{}\"", good.display());
    let mut driver = Driver::start(policy(&server, &extra), vec![server.endpoint()]);
    more_values(&driver, 0, 3);
    let done = driver.send("setpoint", &3.0f64.to_le_bytes());
    wait_accepted("the write as operator", done);
    assert!(server
        .wait_for_write(WAIT, |w| w.value == "3.0" && w.status == "Good")
        .is_some());
    driver.stop().unwrap();

    let bad = server.scratch_dir().join("bad-password");
    std::fs::write(&bad, "guess").unwrap();
    let extra = format!("{secure}\npassword_file = \"{}\"", bad.display());
    let driver = Driver::start(policy(&server, &extra), vec![server.endpoint()]);
    wait_until("failed logins counted", || {
        driver.count(|c| c.errors.load(Ordering::Relaxed)) >= 3
    });
    assert!(!driver.connected());
    assert!(driver.values("counter").is_empty());
    driver.stop().unwrap();
}

/// Runs a python snippet in the peers venv (key and certificate
/// conversions with `cryptography`).
fn python(script: &str, args: &[&std::path::Path]) {
    let status = std::process::Command::new(edgeward_tests::peers::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "python {script}");
}

#[test]
fn a_configured_client_certificate_is_used_and_a_mismatched_key_is_an_error() {
    let server = OpcuaServer::start().unwrap();
    let secure = format!(
        "security_policy = \"Basic256Sha256\"\nserver_certificate_file = \"{}\"",
        server.certificate().display()
    );
    // A pair made by a first run (DER certificate, PKCS#8 PEM key)...
    let first = Driver::start(policy(&server, &secure), vec![server.endpoint()]);
    more_values(&first, 0, 1);
    let pki = first.state.path().join("pki");
    // ... configured in other encodings: PEM certificate, PKCS#1 DER key.
    let dir = server.scratch_dir();
    let (cert, key) = (dir.join("client.pem"), dir.join("client-key.der"));
    python(
        "import sys\n\
         from cryptography import x509\n\
         from cryptography.hazmat.primitives import serialization as s\n\
         c = x509.load_der_x509_certificate(open(sys.argv[1], 'rb').read())\n\
         open(sys.argv[2], 'wb').write(c.public_bytes(s.Encoding.PEM))\n\
         k = s.load_pem_private_key(open(sys.argv[3], 'rb').read(), None)\n\
         open(sys.argv[4], 'wb').write(k.private_bytes(s.Encoding.DER, s.PrivateFormat.TraditionalOpenSSL, s.NoEncryption()))\n",
        &[&pki.join("own/cert.der"), &cert, &pki.join("private/private.pem"), &key],
    );
    first.stop().unwrap();
    let configured = format!(
        "{secure}\ncertificate_file = \"{}\"\nprivate_key_file = \"{}\"\napplication_uri = \"urn:edgeward:connector:plant-opcua\"",
        cert.display(),
        key.display()
    );
    let driver = Driver::start(policy(&server, &configured), vec![server.endpoint()]);
    more_values(&driver, 0, 3);
    assert!(
        !driver.state.path().join("pki/own/cert.der").exists(),
        "nothing generated"
    );
    driver.stop().unwrap();

    // Another key: refused before any connection, naming the key.
    let other = dir.join("other-key.pem");
    python(
        "import sys\n\
         from cryptography.hazmat.primitives.asymmetric import rsa\n\
         from cryptography.hazmat.primitives import serialization as s\n\
         k = rsa.generate_private_key(public_exponent=65537, key_size=2048)\n\
         open(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n",
        &[&other],
    );
    let mismatched = format!(
        "{secure}\ncertificate_file = \"{}\"\nprivate_key_file = \"{}\"",
        cert.display(),
        other.display()
    );
    let driver = Driver::start(policy(&server, &mismatched), vec![server.endpoint()]);
    let error = driver.stop().unwrap_err().to_string();
    assert!(error.contains("private_key_file"), "{error}");
}

#[test]
fn stop_while_the_server_is_unreachable_returns() {
    let port = edgeward_tests::peers::free_port();
    let config: toml::Table = format!(
        "url = \"opc.tcp://localhost:{port}/\"\n[[subscribe]]\nnode = \"ns=2;s=counter\"\nchannel = \"counter\""
    )
    .parse()
    .unwrap();
    let driver = Driver::start(config, vec![format!("localhost:{port}")]);
    wait_until("failed attempts counted", || {
        driver.count(|c| c.errors.load(Ordering::Relaxed)) >= 2
    });
    assert!(!driver.connected());
    driver.stop().unwrap();
}

// ---- check ----------------------------------------------------------------

fn errors_of(text: &str, endpoints: &[&str]) -> Vec<(String, String)> {
    let table: toml::Table = text.parse().unwrap();
    let endpoints: Vec<String> = endpoints.iter().map(|s| s.to_string()).collect();
    match super::check(&table, &endpoints) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| (e.key, e.message)).collect(),
    }
}

fn has(errors: &[(String, String)], key: &str, fragment: &str) -> bool {
    errors.iter().any(|(k, m)| k == key && m.contains(fragment))
}

const GOOD: &str = r#"
url = "opc.tcp://plc.local:4840/"
[[subscribe]]
node = "ns=2;s=counter"
channel = "counter"
[[write]]
node = "ns=2;s=setpoint"
channel = "setpoint"
type = "double"
"#;

#[test]
fn check_accepts_a_good_policy_and_applies_defaults() {
    assert!(errors_of(GOOD, &["plc.local:4840"]).is_empty());
    let config = Config::parse(&GOOD.parse().unwrap(), &["PLC.local:4840".into()]).unwrap();
    assert_eq!(config.publishing_interval, Duration::from_millis(100));
    assert_eq!(config.reconnect_min, Duration::from_millis(100));
    assert_eq!(config.reconnect_max, Duration::from_millis(10_000));
    assert_eq!(config.subscribe[0].sampling_ms, 100);
    assert_eq!(config.write[0].value_type, ValueType::Double);
    // No port in the URL: OPC UA's 4840.
    let text = GOOD.replace("plc.local:4840/", "plc.local/");
    assert!(errors_of(&text, &["plc.local:4840"]).is_empty());
}

#[test]
fn check_rejects_a_server_not_granted() {
    let errors = errors_of(GOOD, &["plc.local:4841", "other:4840"]);
    assert!(
        has(
            &errors,
            "url",
            "add \"plc.local:4840\" to [network] connect"
        ),
        "{errors:?}"
    );
}

#[test]
fn check_names_unknown_and_mistyped_keys() {
    let errors = errors_of(&format!("colour = 1\n{GOOD}"), &["plc.local:4840"]);
    assert!(has(&errors, "colour", "unknown key"), "{errors:?}");
    let errors = errors_of(
        &format!("publishing_interval_ms = \"fast\"\n{GOOD}"),
        &["plc.local:4840"],
    );
    assert!(
        has(&errors, "publishing_interval_ms", "invalid type"),
        "{errors:?}"
    );
    let text = GOOD.replace(
        "channel = \"counter\"",
        "channel = \"counter\"\nsampling = 5",
    );
    let errors = errors_of(&text, &["plc.local:4840"]);
    assert!(
        has(&errors, "subscribe[0].sampling", "sampling_ms"),
        "{errors:?}"
    );
    let text = GOOD.replace("channel = \"setpoint\"\n", "");
    let errors = errors_of(&text, &["plc.local:4840"]);
    assert!(has(&errors, "write[0].channel", "missing"), "{errors:?}");
}

#[test]
fn check_rejects_bad_values_with_the_fix() {
    let e = |text: String| errors_of(&text, &["plc.local:4840"]);
    let errors = e(GOOD.replace("type = \"double\"", "type = \"f16\""));
    assert!(
        has(&errors, "write[0].type", "use double, float"),
        "{errors:?}"
    );
    let errors = e(GOOD.replace("ns=2;s=counter", "counter"));
    assert!(
        has(&errors, "subscribe[0].node", "ns=2;s=counter"),
        "{errors:?}"
    );
    let errors = e(GOOD.replace("opc.tcp://", "http://"));
    assert!(has(&errors, "url", "opc.tcp://HOST:PORT/"), "{errors:?}");
    let errors = e(format!("security_policy = \"Basic128Rsa15\"\n{GOOD}"));
    assert!(
        has(&errors, "security_policy", "Basic256Sha256"),
        "{errors:?}"
    );
    let errors = e(format!("security_mode = \"Sign\"\n{GOOD}"));
    assert!(
        has(&errors, "security_mode", "security_policy"),
        "{errors:?}"
    );
    let errors = e(format!(
        "security_policy = \"Basic256Sha256\"\nsecurity_mode = \"None\"\ntrust_any_server = true\n{GOOD}"
    ));
    assert!(
        has(&errors, "security_mode", "SignAndEncrypt"),
        "{errors:?}"
    );
    // Security without a way to trust the server.
    let errors = e(format!("security_policy = \"Basic256Sha256\"\n{GOOD}"));
    assert!(
        has(&errors, "server_certificate_file", "trust_any_server"),
        "{errors:?}"
    );
    let errors = e(format!("certificate_file = \"/c.der\"\n{GOOD}"));
    assert!(has(&errors, "private_key_file", "missing"), "{errors:?}");
    let errors = e(format!("username = \"op\"\n{GOOD}"));
    assert!(has(&errors, "password_file", "missing"), "{errors:?}");
    let errors = e(format!(
        "reconnect_min_ms = 500\nreconnect_max_ms = 100\n{GOOD}"
    ));
    assert!(
        has(&errors, "reconnect_max_ms", "reconnect_min_ms"),
        "{errors:?}"
    );
    let errors = e(format!("publishing_interval_ms = 0\n{GOOD}"));
    assert!(has(&errors, "publishing_interval_ms", "1 to"), "{errors:?}");
    // One channel, one node.
    let errors = e(format!(
        "{GOOD}\n[[write]]\nnode = \"ns=2;s=other\"\nchannel = \"setpoint\"\ntype = \"int16\"\n"
    ));
    assert!(
        has(&errors, "write[1].channel", "exactly one node"),
        "{errors:?}"
    );
    let errors = e("url = \"opc.tcp://plc.local:4840/\"".into());
    assert!(has(&errors, "subscribe", "nothing to do"), "{errors:?}");
}

// ---- encodings ----------------------------------------------------------------

#[test]
fn writes_convert_with_range_checks() {
    assert_eq!(to_variant(2.5, ValueType::Double), Ok(Variant::Double(2.5)));
    assert_eq!(to_variant(2.5, ValueType::Float), Ok(Variant::Float(2.5)));
    assert_eq!(
        to_variant(-32768.0, ValueType::Int16),
        Ok(Variant::Int16(-32768))
    );
    assert!(to_variant(32768.0, ValueType::Int16).is_err());
    assert!(to_variant(1.5, ValueType::Int16).is_err());
    assert_eq!(
        to_variant(65535.0, ValueType::UInt16),
        Ok(Variant::UInt16(65535))
    );
    assert!(to_variant(-1.0, ValueType::UInt16).is_err());
    assert_eq!(
        to_variant(-2147483648.0, ValueType::Int32),
        Ok(Variant::Int32(i32::MIN))
    );
    assert!(to_variant(2147483648.0, ValueType::Int32).is_err());
    assert_eq!(
        to_variant(4294967295.0, ValueType::UInt32),
        Ok(Variant::UInt32(u32::MAX))
    );
    assert!(to_variant(4294967296.0, ValueType::UInt32).is_err());
    assert_eq!(
        to_variant(-9.0e18, ValueType::Int64),
        Ok(Variant::Int64(-9_000_000_000_000_000_000))
    );
    assert!(to_variant(9.3e18, ValueType::Int64).is_err());
    assert_eq!(
        to_variant(1.0, ValueType::Boolean),
        Ok(Variant::Boolean(true))
    );
    assert_eq!(
        to_variant(0.0, ValueType::Boolean),
        Ok(Variant::Boolean(false))
    );
    assert!(to_variant(2.0, ValueType::Boolean).is_err());
    assert!(to_variant(f64::NAN, ValueType::Double).is_err());
    assert!(to_variant(f64::INFINITY, ValueType::Float).is_err());
    assert!(to_variant(1e300, ValueType::Float).is_err());
    assert_eq!(decode(&3.5f64.to_le_bytes()), Ok(3.5));
    assert!(decode(&[0; 7]).is_err());
    assert!(decode(&[0; 9]).is_err());
}

#[test]
fn value_changes_encode_as_timestamp_and_f64() {
    let message = encode(1_700_000_000_123_456, -2.5);
    assert_eq!(&message[..8], &1_700_000_000_123_456i64.to_le_bytes());
    assert_eq!(&message[8..], &(-2.5f64).to_le_bytes());
    assert_eq!(as_f64(&Variant::Boolean(true)), Some(1.0));
    assert_eq!(as_f64(&Variant::UInt64(7)), Some(7.0));
    assert_eq!(as_f64(&Variant::from("text")), None);
    // Source timestamp first, the server's when the source's is missing.
    let source = DateTime::ymd_hms(2026, 1, 2, 3, 4, 5);
    let server = DateTime::ymd_hms(2026, 1, 2, 3, 4, 6);
    let mut value = DataValue::value_only(1.0f64);
    value.source_timestamp = Some(source);
    value.server_timestamp = Some(server);
    assert_eq!(timestamp_us(&value), 1_767_323_045_000_000);
    value.source_timestamp = None;
    assert_eq!(timestamp_us(&value), 1_767_323_046_000_000);
    value.source_timestamp = Some(DateTime::null());
    assert_eq!(timestamp_us(&value), 1_767_323_046_000_000);
}
