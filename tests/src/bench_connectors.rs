//! `scripts/bench connectors`: the connectors' figures (issue 15), each
//! beside a baseline measured in the same run, against real peers on
//! loopback (`tests/src/peers/`).
//!
//! - MQTT throughput, `mqtt_qos0_msgs_per_s` and `mqtt_qos1_msgs_per_s`: a
//!   module (`guests/tests/bench-publisher`) sends [`BURST`] messages of
//!   [`SIZE`] bytes as fast as its ring takes them → the MQTT connector →
//!   mosquitto → a `mosquitto_sub`; the rate is counted at the subscriber,
//!   from its first arrival to its last (its own receive timestamps, `%U`).
//!   Baseline: `mosquitto_pub -l` (C, libmosquitto, inflight window `-M`
//!   equal to the connector's) publishing as many lines of the same size
//!   straight to the same broker, to the same kind of subscriber. paho-mqtt
//!   from the peers venv was measured here at about half mosquitto_pub's
//!   rate (QoS 0 and 1): the faster client is the honest baseline.
//! - MQTT latency, `mqtt_latency_p50_us` / `_p99_us` (QoS 1, the default)
//!   and `mqtt_qos0_latency_*`: one message per ms for [`PACED`] messages,
//!   from the module's `send` (its `now_ns` in the payload) to the
//!   subscriber's receive timestamp; baseline: the bench writing a line to
//!   `mosquitto_pub -l` at the same pace, stamped when written. A QoS 1
//!   message is fsynced in the durable queue before it goes out, so each
//!   round also times an append + `fdatasync` at that pace in the state
//!   directory (in the note: this VM's disk is the larger part).
//! - `store_forward_drain_msgs_per_s`: [`DRAIN`] QoS 1 messages queued
//!   (durable queue) while the broker is unreachable, then the rate they
//!   arrive at the subscriber once it is back. "Unreachable" is a gate in
//!   the bench process (a TCP forwarder between that connector and the
//!   broker, closed: connections reset, new ones refused), so the
//!   subscriber stays connected to the broker and sees the whole drain
//!   from its first message. Baseline: the direct QoS 1 rate above.
//! - `modbus_poll_jitter_p99_us`: a Modbus connector polling a pymodbus
//!   server every 10 ms; its poll lateness from `status`, beside a bare
//!   10 ms timerfd loop in its own process during the same seconds.
//!
//! Throughput runs alternate connector and direct first; p99 figures are
//! the median of interleaved rounds, with their range.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgeward_tests::peers::modbus::ModbusServer;
use edgeward_tests::peers::mosquitto::{self, Mosquitto};
use edgeward_tests::{floor, module, policy, Gateway, GatewayDir};
use serde_json::Value;

use super::{figure, median, monotonic_ns, progress, Figure};

/// Messages per throughput run.
const BURST: u64 = 20_000;
/// Payload bytes of every message (a small telemetry record).
const SIZE: usize = 64;
/// Interleaved rounds of the throughput runs (connector and direct each).
const THROUGHPUT_ROUNDS: usize = 3;
/// Interleaved rounds of the latency runs.
const LATENCY_ROUNDS: usize = 5;
/// Messages per latency run, one per [`PACE`].
const PACED: u64 = 1500;
/// The latency runs' pace.
const PACE: Duration = Duration::from_millis(1);
/// First messages of a latency run left out (connection and file set-up).
const WARM_UP: u64 = 50;
/// QoS 1 messages queued during the outage, per drain run.
const DRAIN: u64 = 5000;
/// Drain runs (median reported).
const DRAIN_ROUNDS: usize = 3;
/// The measured connector's durable queue holds a whole burst (its
/// default, 10 000 messages, would drop the oldest of a burst that outruns
/// the broker).
const QUEUE: u64 = 4 * BURST;
/// The connector's QoS 1 inflight window (its default), and the direct
/// publisher's `-M`.
const INFLIGHT: u16 = 100;
/// Modbus rounds.
const MODBUS_ROUNDS: usize = 3;
/// Polls (and bare timer ticks) per Modbus round: about the connector's
/// lateness window (its last 1024 polls), so a round's figures are its own.
const MODBUS_POLLS: usize = 1000;
/// The Modbus poll interval.
const MODBUS_EVERY: Duration = Duration::from_millis(10);
/// How long any single wait of the suite may take.
const PATIENCE: Duration = Duration::from_secs(60);
/// A run ends early when nothing arrived for this long (QoS 0 may lose).
const IDLE: Duration = Duration::from_secs(3);

/// Topics the bench publishes on and the connectors use.
const GO_TOPIC: &str = "bench/go";
const DRAIN_TOPIC: &str = "bench/drain";

pub(super) fn suite(json: bool) -> Vec<Figure> {
    progress(
        json,
        "connectors: mosquitto, gateway with the MQTT connectors",
    );
    let broker = Mosquitto::start(mosquitto::Options::default());
    let mut mqtt = MqttBench::start(&broker);
    let mut figures = Vec::new();
    let mut direct_qos1 = Vec::new();
    let mut connector_qos1 = Vec::new();
    for qos in [0u8, 1] {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut lost = [0u64; 2];
        for round in 0..THROUGHPUT_ROUNDS {
            progress(
                json,
                &format!(
                    "mqtt qos {qos} throughput, round {}/{THROUGHPUT_ROUNDS}: {BURST} x {SIZE} B, \
                     connector and mosquitto_pub",
                    round + 1
                ),
            );
            let mut run = |via: Via| {
                let arrivals = mqtt.run(via, qos, BURST, Duration::ZERO);
                let stats = Arrivals::of(&arrivals, via, BURST);
                match via {
                    Via::Connector => {
                        lost[0] += stats.lost;
                        ours.push(stats.rate());
                    }
                    Via::Direct => {
                        lost[1] += stats.lost;
                        theirs.push(stats.rate());
                    }
                }
            };
            if round % 2 == 0 {
                run(Via::Connector);
                run(Via::Direct);
            } else {
                run(Via::Direct);
                run(Via::Connector);
            }
        }
        if qos == 1 {
            direct_qos1.clone_from(&theirs);
            connector_qos1.clone_from(&ours);
        }
        let f = figure(
            &format!("mqtt_qos{qos}_msgs_per_s"),
            median(ours.clone()),
            "msg/s",
            Some((
                &format!("mosquitto_pub_qos{qos}_msgs_per_s"),
                median(theirs.clone()),
            )),
        );
        figures.push(
            ratio_at_least(f, 0.8)
                .with_range_of(&ours)
                .with_note_text(format!(
                    "{BURST} messages of {SIZE} B per run, rate at the subscriber (mosquitto_sub \
                     --nodelay, QoS {qos}) from first to last arrival; module → ring → connector \
                     (durable queue of {QUEUE}, inflight {INFLIGHT}; module and connector at \
                     cpu_percent = 100) → mosquitto; baseline: mosquitto_pub -l -M {INFLIGHT} \
                     --nodelay straight to the broker; median of {THROUGHPUT_ROUNDS} interleaved \
                     runs each; baseline range {:?}; lost: {} (connector), {} (direct)",
                    range(&theirs),
                    lost[0],
                    lost[1]
                )),
        );
    }

    let mut latency = [Vec::new(), Vec::new()];
    let mut syncs = Vec::new();
    let latency_cpu = CpuTimes::now();
    for round in 0..LATENCY_ROUNDS {
        progress(
            json,
            &format!(
                "mqtt latency, round {}/{LATENCY_ROUNDS}: one message per ms, QoS 1 and 0, \
                 connector and mosquitto_pub",
                round + 1
            ),
        );
        for qos in [1u8, 0] {
            let order = if round % 2 == 0 {
                [Via::Connector, Via::Direct]
            } else {
                [Via::Direct, Via::Connector]
            };
            let mut pair = [(0.0, 0.0); 2];
            for via in order {
                let arrivals = mqtt.run(via, qos, PACED, PACE);
                pair[via as usize] = Arrivals::of(&arrivals, via, PACED).latency_us();
            }
            latency[usize::from(qos)].push(pair);
        }
        syncs.push(p50_p99(mqtt.fdatasync_probe()));
    }
    let sync_p50: Vec<f64> = syncs.iter().map(|s| s.0).collect();
    let sync_p99: Vec<f64> = syncs.iter().map(|s| s.1).collect();
    let (busy, steal) = latency_cpu.since();
    for qos in [1u8, 0] {
        let rounds = &latency[usize::from(qos)];
        let column = |via: Via, p99: bool| -> Vec<f64> {
            rounds
                .iter()
                .map(|r| {
                    let (p50, p99v) = r[via as usize];
                    if p99 {
                        p99v
                    } else {
                        p50
                    }
                })
                .collect()
        };
        let name = if qos == 1 {
            "mqtt_latency"
        } else {
            "mqtt_qos0_latency"
        };
        for (pct, p99) in [("p50", false), ("p99", true)] {
            let ours = column(Via::Connector, p99);
            let theirs = column(Via::Direct, p99);
            figures.push(
                figure(
                    &format!("{name}_{pct}_us"),
                    median(ours.clone()),
                    "us",
                    Some((
                        &format!("mosquitto_pub_q{qos}_latency_{pct}_us"),
                        median(theirs.clone()),
                    )),
                )
                .with_range_of(&ours)
                .with_note_text(format!(
                    "QoS {qos}, one {SIZE}-byte message per ms, {PACED} per run (the first \
                     {WARM_UP} left out): the module's send to the subscriber's receive; \
                     baseline: a line written to mosquitto_pub -l at the same pace to the \
                     subscriber's receive; {pct} of each run, median of {LATENCY_ROUNDS} \
                     interleaved rounds; baseline range {:?}; the machine was {busy:.0}% busy \
                     meanwhile ({steal:.0}% stolen by the hypervisor){}",
                    range(&theirs),
                    if qos == 1 {
                        format!(
                            "; QoS 1 messages are fsynced in the durable queue before they go \
                             out: a {SIZE}-byte append + fdatasync in the state directory at \
                             the same pace took p50 {:.0} µs (range {:?}), p99 {:.0} µs (range \
                             {:?}) in the same rounds",
                            median(sync_p50.clone()),
                            range(&sync_p50),
                            median(sync_p99.clone()),
                            range(&sync_p99)
                        )
                    } else {
                        String::new()
                    }
                )),
            );
        }
    }

    let mut drains = Vec::new();
    let mut reconnects = Vec::new();
    for round in 0..DRAIN_ROUNDS {
        progress(
            json,
            &format!(
                "store and forward, round {}/{DRAIN_ROUNDS}: {DRAIN} QoS 1 messages queued while \
                 the broker is unreachable, then drained",
                round + 1
            ),
        );
        let (rate, reconnect_ms) = mqtt.drain();
        drains.push(rate);
        reconnects.push(reconnect_ms);
    }
    figures.push(
        figure(
            "store_forward_drain_msgs_per_s",
            median(drains.clone()),
            "msg/s",
            Some(("mosquitto_pub_qos1_msgs_per_s", median(direct_qos1))),
        )
        .with_range_of(&drains)
        .with_note_text(format!(
            "{DRAIN} QoS 1 messages of {SIZE} B in the durable queue, sent once the broker is \
             reachable again (a gate in the bench between that connector and mosquitto: \
             closed, then opened); rate at the subscriber from first to last arrival, median \
             of {DRAIN_ROUNDS}; the connector's live QoS 1 rate was {:.0} msg/s; gate opened to \
             first arrival {:.0} ms (median, range {:?}: reconnect backoff 50–200 ms)",
            median(connector_qos1),
            median(reconnects.clone()),
            range(&reconnects)
        )),
    );
    drop(mqtt);
    drop(broker);

    figures.extend(modbus_suite(json));
    figures
}

/// Adds the target "ratio >= `min`" and whether the figure meets it.
fn ratio_at_least(mut f: Figure, min: f64) -> Figure {
    f.target = Some(format!("ratio >= {min}"));
    f.met = Some(f.ratio.is_some_and(|r| r >= min));
    f
}

/// Adds the target "<= `max` unit" and whether the figure meets it.
fn at_most(mut f: Figure, max: f64) -> Figure {
    f.target = Some(format!("<= {max} {}", f.unit));
    f.met = Some(f.value <= max);
    f
}

impl Figure {
    fn with_range_of(mut self, values: &[f64]) -> Self {
        self.range = Some(range(values));
        self
    }

    fn with_note_text(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }
}

fn range(values: &[f64]) -> [f64; 2] {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    [super::round(lo), super::round(hi)]
}

/// p50 and p99 (nearest rank) of `values`.
fn p50_p99(mut values: Vec<f64>) -> (f64, f64) {
    assert!(!values.is_empty(), "no samples");
    values.sort_by(f64::total_cmp);
    let rank = |pct: usize| values[(values.len() * pct).div_ceil(100).clamp(1, values.len()) - 1];
    (rank(50), rank(99))
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, ns: turns the module's send
/// stamps (`now_ns`, monotonic) into the subscriber's clock (`%U`,
/// realtime).
fn realtime_offset_ns() -> i128 {
    let before = monotonic_ns();
    let real = realtime_ns();
    let after = monotonic_ns();
    i128::from(real) - i128::from(before / 2 + after / 2)
}

fn realtime_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).expect("clock");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// The machine's CPU time counters (`/proc/stat`, all CPUs), to say how
/// busy it was while something was measured: other processes and the
/// hypervisor's steal show in tails.
#[derive(Clone, Copy)]
struct CpuTimes {
    total: f64,
    idle: f64,
    steal: f64,
}

impl CpuTimes {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu user nice system idle iowait irq softirq steal ...
        let v: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|x| x.parse().ok())
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
        Self {
            total: v.iter().sum(),
            idle: at(3) + at(4),
            steal: at(7),
        }
    }

    /// Busy and steal percentages since `self`.
    fn since(self) -> (f64, f64) {
        let now = Self::now();
        let total = (now.total - self.total).max(1.0);
        (
            100.0 * (1.0 - (now.idle - self.idle) / total),
            100.0 * (now.steal - self.steal) / total,
        )
    }
}

/// Which publisher a run measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    /// The module through the MQTT connector.
    Connector = 0,
    /// `mosquitto_pub` straight to the broker.
    Direct = 1,
}

/// One message as the subscriber got it.
struct Arrival {
    /// Its receive timestamp, ns (CLOCK_REALTIME).
    at_ns: u64,
    payload: Vec<u8>,
}

/// What one run's arrivals say.
struct Arrivals {
    /// Arrivals, in order.
    count: u64,
    /// Messages of the run that never arrived.
    lost: u64,
    first_ns: u64,
    last_ns: u64,
    /// One-way latencies of the messages after the warm-up, µs.
    latencies_us: Vec<f64>,
}

impl Arrivals {
    /// Decodes `arrivals` of a run of `sent` messages through `via`: the
    /// connector's payloads carry `now_ns` and the message number as u64
    /// LE; the direct publisher's lines the same as 20 and 12 digits.
    fn of(arrivals: &[Arrival], via: Via, sent: u64) -> Self {
        assert!(
            arrivals.len() > 1,
            "{via:?}: {} of {sent} messages arrived",
            arrivals.len()
        );
        let offset = realtime_offset_ns();
        let mut seen = BTreeSet::new();
        let mut latencies_us = Vec::new();
        for a in arrivals {
            let (sent_ns, seq) = match via {
                Via::Connector => (
                    u64::from_le_bytes(a.payload[..8].try_into().expect("8 bytes")),
                    u64::from_le_bytes(a.payload[8..16].try_into().expect("8 bytes")),
                ),
                Via::Direct => (digits(&a.payload[..20]), digits(&a.payload[20..32])),
            };
            if seen.insert(seq) && seq >= WARM_UP {
                let sent_real = i128::from(sent_ns) + offset;
                latencies_us.push((i128::from(a.at_ns) - sent_real) as f64 / 1000.0);
            }
        }
        Self {
            count: arrivals.len() as u64,
            lost: sent.saturating_sub(seen.len() as u64),
            first_ns: arrivals[0].at_ns,
            last_ns: arrivals[arrivals.len() - 1].at_ns,
            latencies_us,
        }
    }

    /// Messages per second from the first arrival to the last.
    fn rate(&self) -> f64 {
        (self.count - 1) as f64 * 1e9 / (self.last_ns - self.first_ns).max(1) as f64
    }

    /// p50 and p99 latency, µs.
    fn latency_us(&self) -> (f64, f64) {
        p50_p99(self.latencies_us.clone())
    }
}

/// An ASCII decimal number.
fn digits(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {:?}", String::from_utf8_lossy(bytes)))
}

/// A unique MQTT client id for one run.
fn client_id(role: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("bench-{role}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// New lines of the broker's log from where it was when made: the broker
/// logs every packet (`log_type all`), so only the tail is read.
struct LogTail {
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    fn new(broker: &Mosquitto) -> Self {
        let path = broker.dir().join("mosquitto.log");
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self { path, offset }
    }

    /// Waits until the log since then contains `needle`.
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut text = String::new();
            if let Ok(mut file) = std::fs::File::open(&self.path) {
                let _ = file.seek(SeekFrom::Start(self.offset));
                let _ = file.read_to_string(&mut text);
            }
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the broker never logged {needle:?}; its log since:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A `mosquitto_sub` (clean session) collecting arrivals with its own
/// receive timestamps. Dropping it kills it.
struct Subscriber {
    child: Child,
    inbox: Arc<(Mutex<Vec<Arrival>>, Condvar)>,
}

impl Subscriber {
    /// Subscribes to `topic` at `qos`; returns once the broker has the
    /// subscription.
    fn start(broker: &Mosquitto, topic: &str, qos: u8) -> Self {
        let id = client_id("sub");
        let tail = LogTail::new(broker);
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-i", &id, "-q", &qos.to_string(), "-t", topic])
            // Receive time (realtime, ns) and the payload in hex.
            .args(["-F", "%U %x", "--nodelay"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub (apt-get install mosquitto-clients)");
        let stdout = child.stdout.take().expect("piped stdout");
        let inbox: Arc<(Mutex<Vec<Arrival>>, Condvar)> = Arc::default();
        let writer = Arc::clone(&inbox);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(arrival) = parse_arrival(&line) else {
                    continue;
                };
                let (lock, cvar) = &*writer;
                lock.lock().unwrap_or_else(|e| e.into_inner()).push(arrival);
                cvar.notify_all();
            }
        });
        tail.wait_for(&format!("Received SUBSCRIBE from {id}"));
        Self { child, inbox }
    }

    /// Waits for `n` arrivals, or until none came for [`IDLE`], and
    /// returns them.
    fn wait(&self, n: u64) -> Vec<Arrival> {
        let (lock, cvar) = &*self.inbox;
        let deadline = Instant::now() + PATIENCE;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = guard.len();
        let mut last_change = Instant::now();
        while (guard.len() as u64) < n {
            let now = Instant::now();
            if now > deadline || now.duration_since(last_change) > IDLE {
                break;
            }
            guard = cvar
                .wait_timeout(guard, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if guard.len() != seen {
                seen = guard.len();
                last_change = Instant::now();
            }
        }
        std::mem::take(&mut *guard)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `SECONDS.NANOS HEX` as `mosquitto_sub -F "%U %x"` prints it.
fn parse_arrival(line: &str) -> Option<Arrival> {
    let (stamp, hex_payload) = line.split_once(' ')?;
    let (secs, nanos) = stamp.split_once('.')?;
    let at_ns = secs.parse::<u64>().ok()? * 1_000_000_000 + nanos.parse::<u64>().ok()?;
    Some(Arrival {
        at_ns,
        payload: hex::decode(hex_payload).ok()?,
    })
}

/// The gateway of the MQTT figures: the publisher module, `north` (the
/// connector measured, straight to the broker) and `relay` (for the drain,
/// through a [`Gate`]).
struct MqttBench<'a> {
    broker: &'a Mosquitto,
    gate: Gate,
    gateway: Gateway,
    dir: GatewayDir,
}

/// The MQTT connector policy: `extra` keys, broker `endpoint`.
fn mqtt_policy(endpoint: &str, extra: &str, channels: &str) -> String {
    format!(
        "[connector]\nkind = \"mqtt\"\nbroker = \"{endpoint}\"\ninflight = {INFLIGHT}\n{extra}\n\
         [network]\nconnect = [\"{endpoint}\"]\n[channels]\n{channels}\n[resources]\ncpu_percent = 100\n"
    )
}

impl<'a> MqttBench<'a> {
    fn start(broker: &'a Mosquitto) -> Self {
        let gate = Gate::open_to(broker.port());
        let dir = GatewayDir::new();
        dir.add_policy(
            "publisher",
            &policy(
                "bench_publisher",
                "[channels]\npublish = [\"q0\", \"q1\", \"drain\"]\nsubscribe = [\"go\"]\n\
                 [resources]\ncpu_percent = 100",
            ),
        )
        .add_policy(
            "north",
            &mqtt_policy(
                &format!("localhost:{}", broker.port()),
                &format!(
                    "client_id = \"bench-north\"\n\
                     [connector.queue]\nmax_messages = {QUEUE}\n\
                     [[connector.publish]]\nchannel = \"q0\"\ntopic = \"bench/q0\"\nqos = 0\n\
                     [[connector.publish]]\nchannel = \"q1\"\ntopic = \"bench/q1\"\nqos = 1\n\
                     [[connector.subscribe]]\nchannel = \"go\"\ntopic = \"{GO_TOPIC}\"\nqos = 1"
                ),
                "subscribe = [\"q0\", \"q1\"]\npublish = [\"go\"]",
            ),
        )
        .add_policy(
            "relay",
            &mqtt_policy(
                &format!("localhost:{}", gate.port),
                &format!(
                    "client_id = \"bench-relay\"\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n\
                     [connector.queue]\nmax_messages = {}\n\
                     [[connector.publish]]\nchannel = \"drain\"\ntopic = \"{DRAIN_TOPIC}\"\nqos = 1",
                    DRAIN * 2
                ),
                "subscribe = [\"drain\"]",
            ),
        );
        let gateway = dir.start();
        gateway.wait_for(PATIENCE, "both MQTT connectors connected", |s| {
            ["north", "relay"]
                .iter()
                .all(|m| counters(s, m)["connected"] == true)
                && module(s, "publisher")["state"] == "running"
        });
        Self {
            broker,
            gate,
            gateway,
            dir,
        }
    }

    /// Asks the publisher module for a burst (through `north`).
    fn trigger(&self, channel: &str, count: u64, interval: Duration) {
        let seen = self.gateway.log().matches("publisher: go ").count();
        mosquitto::publish(
            self.broker,
            GO_TOPIC,
            format!("{channel} {count} {} {SIZE}", interval.as_micros()).as_bytes(),
            1,
        );
        // Its log line says it took it (and the connector is up).
        let deadline = Instant::now() + PATIENCE;
        while self.gateway.log().matches("publisher: go ").count() <= seen {
            assert!(
                Instant::now() < deadline,
                "the publisher module never took the trigger; log:\n{}",
                self.gateway.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// One run: `count` messages at QoS `qos` through `via`, one per
    /// `interval` (zero: flat out). Returns what the subscriber got.
    fn run(&mut self, via: Via, qos: u8, count: u64, interval: Duration) -> Vec<Arrival> {
        let topic = match via {
            Via::Connector => format!("bench/q{qos}"),
            Via::Direct => format!("direct/q{qos}"),
        };
        let subscriber = Subscriber::start(self.broker, &topic, qos);
        match via {
            Via::Connector => self.trigger(&format!("q{qos}"), count, interval),
            Via::Direct => {
                let mut publisher = DirectPublisher::start(self.broker, &topic, qos);
                // mosquitto_pub reads its stdin only some time after the
                // broker has its connection: one line through first.
                publisher.prime(&subscriber);
                publisher.send(count, interval);
            }
        }
        subscriber.wait(count)
    }

    /// [`PACED`] appends of [`SIZE`] bytes, each followed by
    /// `fdatasync`, one per [`PACE`], in the gateway's state directory
    /// (the durable queue's file system): how long each took, µs. A flush
    /// issued now and then costs more than back to back on this VM, so the
    /// probe keeps the latency runs' pace.
    fn fdatasync_probe(&self) -> Vec<f64> {
        let path = self.dir.state().join("fdatasync-probe");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the fdatasync probe file");
        let start = Instant::now();
        let took = (0..PACED)
            .map(|i| {
                let due = start + PACE * (i as u32 + 1);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let at = Instant::now();
                file.write_all(&[i as u8; SIZE]).expect("append");
                file.sync_data().expect("fdatasync");
                at.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        let _ = std::fs::remove_file(&path);
        took
    }

    /// One drain: the gate closed, [`DRAIN`] QoS 1 messages queued by
    /// `relay`, the gate opened. Returns the drain rate at the subscriber
    /// and the milliseconds from the opening to the first arrival.
    fn drain(&mut self) -> (f64, f64) {
        let before =
            number(&counters(&self.gateway.try_status().expect("status"), "relay")["delivered"]);
        self.gate.close();
        self.gateway.wait_for(PATIENCE, "relay disconnected", |s| {
            counters(s, "relay")["connected"] == false
        });
        self.trigger("drain", DRAIN, Duration::ZERO);
        let status = self
            .gateway
            .wait_for(PATIENCE, "the drain messages queued", |s| {
                number(&counters(s, "relay")["queued"]) >= DRAIN
            });
        assert_eq!(
            number(&counters(&status, "relay")["delivered"]),
            before,
            "messages went out while the gate was closed"
        );
        let subscriber = Subscriber::start(self.broker, DRAIN_TOPIC, 1);
        let opened = realtime_ns();
        self.gate.open();
        let arrivals = subscriber.wait(DRAIN);
        let stats = Arrivals::of(&arrivals, Via::Connector, DRAIN);
        assert_eq!(stats.lost, 0, "the drain lost messages");
        self.gateway.wait_for(PATIENCE, "the queue drained", |s| {
            number(&counters(s, "relay")["queued"]) == 0
        });
        (
            stats.rate(),
            stats.first_ns.saturating_sub(opened) as f64 / 1e6,
        )
    }
}

/// The counters `status` shows for connector `name`.
fn counters(status: &Value, name: &str) -> Value {
    module(status, name)["connector"]["counters"].clone()
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// `mosquitto_pub -l`: one message per line of its stdin.
struct DirectPublisher {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl DirectPublisher {
    /// Starts it and waits until the broker has its connection.
    fn start(broker: &Mosquitto, topic: &str, qos: u8) -> Self {
        let id = client_id("pub");
        let tail = LogTail::new(broker);
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-i", &id, "-q", &qos.to_string(), "-t", topic])
            .args(["-M", &INFLIGHT.to_string(), "--nodelay", "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_pub (apt-get install mosquitto-clients)");
        let stdin = child.stdin.take();
        tail.wait_for(&format!(" as {id} ("));
        Self { child, stdin }
    }

    /// Sends one line and waits until `subscriber` got it (its arrival
    /// is taken out).
    fn prime(&mut self, subscriber: &Subscriber) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{:0width$}\n", 0, width = SIZE).as_bytes())
            .expect("write to mosquitto_pub");
        let primer = subscriber.wait(1);
        assert_eq!(primer.len(), 1, "mosquitto_pub's first line never arrived");
    }

    /// Sends `count` lines of [`SIZE`] bytes with the newline (`now_ns` in
    /// 20 digits, the number in 12, padding), one per `interval` (zero:
    /// all at once), then closes its stdin and waits for it to exit.
    fn send(mut self, count: u64, interval: Duration) {
        let mut stdin = self.stdin.take().expect("stdin");
        let line = |seq: u64| {
            let mut line = format!("{:020}{seq:012}", monotonic_ns());
            line.extend(std::iter::repeat_n('.', SIZE - line.len()));
            line.push('\n');
            line
        };
        if interval.is_zero() {
            let all: String = (0..count).map(line).collect();
            stdin
                .write_all(all.as_bytes())
                .expect("write to mosquitto_pub");
        } else {
            let start = Instant::now();
            for seq in 0..count {
                let due = start + interval * (seq as u32 + 1);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                stdin
                    .write_all(line(seq).as_bytes())
                    .expect("write to mosquitto_pub");
            }
        }
        drop(stdin);
        let deadline = Instant::now() + PATIENCE;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for DirectPublisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder from a port of its own to the broker that can be
/// closed (its connections reset, new ones refused: the broker is
/// unreachable for whoever goes through it) and opened again.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Gate {
    /// Starts it, open, forwarding to `127.0.0.1:target`.
    fn open_to(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the gate");
        let port = listener.local_addr().expect("gate address").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let thread = {
            let (open, stop, connections) = (
                Arc::clone(&open),
                Arc::clone(&stop),
                Arc::clone(&connections),
            );
            std::thread::spawn(move || {
                Self::serve(Some(listener), port, target, &open, &stop, &connections);
            })
        };
        Self {
            port,
            open,
            stop,
            connections,
            thread: Some(thread),
        }
    }

    fn serve(
        mut listener: Option<TcpListener>,
        port: u16,
        target: u16,
        open: &AtomicBool,
        stop: &AtomicBool,
        connections: &Mutex<Vec<TcpStream>>,
    ) {
        while !stop.load(Ordering::Relaxed) {
            if !open.load(Ordering::Relaxed) {
                // No listener: connects are refused, as by a stopped broker.
                listener = None;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let Some(l) = listener.as_ref() else {
                // The port was ours a moment ago; retry until it binds.
                listener = TcpListener::bind(("127.0.0.1", port)).ok();
                if let Some(l) = &listener {
                    l.set_nonblocking(true).expect("nonblocking listener");
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
                continue;
            };
            match l.accept() {
                Ok((client, _)) => {
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                        continue;
                    };
                    let mut guard = connections.lock().unwrap_or_else(|e| e.into_inner());
                    for s in [&client, &upstream] {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_nodelay(true);
                        guard.push(s.try_clone().expect("clone a gate socket"));
                    }
                    drop(guard);
                    let pipe = |mut from: TcpStream, mut to: TcpStream| {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        });
                    };
                    pipe(
                        client.try_clone().expect("clone"),
                        upstream.try_clone().expect("clone"),
                    );
                    pipe(upstream, client);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Closes it: live connections reset, new ones refused.
    fn close(&self) {
        self.open.store(false, Ordering::Relaxed);
        // The accepting thread drops its listener within a millisecond.
        std::thread::sleep(Duration::from_millis(20));
        for s in self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Opens it again (on the same port).
    fn open(&self) {
        self.open.store(true, Ordering::Relaxed);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The Modbus figures: a connector polling a pymodbus server every 10 ms,
/// in [`MODBUS_ROUNDS`] rounds of [`MODBUS_POLLS`] polls, each beside a
/// bare timerfd loop at the same period during the same seconds.
///
/// `status` shows the lateness of the connector's last 1024 polls (as a
/// worker's ticks): a round reads it once, at its end.
fn modbus_suite(json: bool) -> Vec<Figure> {
    progress(
        json,
        "modbus: pymodbus server, connector polling every 10 ms",
    );
    let plc = ModbusServer::start();
    let dir = GatewayDir::new();
    dir.add_policy(
        "plc-sink",
        &policy("bench_sink", "[channels]\nsubscribe = [\"plc\"]"),
    )
    .add_policy(
        "south",
        &format!(
            "[connector]\nkind = \"modbus\"\n\
             [[connector.device]]\nname = \"plc1\"\naddress = \"{addr}\"\ntimeout_ms = 300\n\
             [[connector.device.poll]]\nchannel = \"plc\"\nevery_ms = {every}\n\
             table = \"holding\"\naddress = 20\ntype = \"f32\"\n\
             [network]\nconnect = [\"{addr}\"]\n[channels]\npublish = [\"plc\"]\n",
            addr = plc.address(),
            every = MODBUS_EVERY.as_millis()
        ),
    );
    let gateway = dir.start();
    gateway.wait_for(PATIENCE, "south connected and polling", |s| {
        counters(s, "south")["connected"] == true && module(s, "south")["ticks"].as_u64() > Some(50)
    });
    let mut rounds = Vec::new();
    let cpu = CpuTimes::now();
    for round in 0..MODBUS_ROUNDS {
        progress(
            json,
            &format!(
                "modbus round {}/{MODBUS_ROUNDS}: {MODBUS_POLLS} polls, bare timerfd loop beside",
                round + 1
            ),
        );
        rounds.push(modbus_round(&dir));
    }
    let (busy, steal) = cpu.since();
    let errors = number(&counters(&gateway.try_status().expect("status"), "south")["errors"]);
    drop(gateway);
    drop(plc);
    let of = |f: fn(&ModbusRound) -> f64| rounds.iter().map(f).collect::<Vec<f64>>();
    let (p99, p50) = (of(|r| r.p99), of(|r| r.p50));
    let (timer_p99, timer_p50) = (of(|r| r.timer_p99), of(|r| r.timer_p50));
    vec![
        figure(
            "modbus_poll_lateness_p50_us",
            median(p50.clone()),
            "us",
            Some(("timerfd_10ms_lateness_p50_us", median(timer_p50.clone()))),
        )
        .with_range_of(&p50)
        .with_note_text(format!(
            "p50 of each round's polls (status), median of {MODBUS_ROUNDS} rounds; \
             baseline range {:?}",
            range(&timer_p50)
        )),
        at_most(
            figure(
                "modbus_poll_jitter_p99_us",
                median(p99.clone()),
                "us",
                Some(("timerfd_10ms_lateness_p99_us", median(timer_p99.clone()))),
            ),
            1000.0,
        )
        .with_range_of(&p99)
        .with_note_text(format!(
            "how late polls every 10 ms start (pymodbus server, one f32 read each): p99 of \
             each round's {MODBUS_POLLS} polls (the connector's status), median of \
             {MODBUS_ROUNDS} rounds; {errors} peer errors; baseline: a bare 10 ms timerfd loop \
             in its own process during the same seconds, range {:?}; the machine was \
             {busy:.0}% busy meanwhile ({steal:.0}% stolen by the hypervisor)",
            range(&timer_p99)
        )),
    ]
}

/// One Modbus round's figures, µs.
struct ModbusRound {
    p50: f64,
    p99: f64,
    timer_p50: f64,
    timer_p99: f64,
}

/// [`MODBUS_POLLS`] polls beside a bare timerfd loop, then the
/// connector's lateness figures for them.
fn modbus_round(dir: &GatewayDir) -> ModbusRound {
    let timer = floor::timer_lateness(MODBUS_POLLS, MODBUS_EVERY);
    let answer = super::control_request(&dir.control(), r#"{"cmd":"status"}"#);
    let m = module(&answer["status"], "south");
    let figure = |key: &str| {
        m[key]
            .as_f64()
            .unwrap_or_else(|| panic!("the Modbus connector reported no {key}: {m}"))
    };
    let (timer_p50, timer_p99) = p50_p99(timer.iter().map(|ns| *ns as f64 / 1000.0).collect());
    ModbusRound {
        p50: figure("tick_lateness_p50_us"),
        p99: figure("tick_lateness_p99_us"),
        timer_p50,
        timer_p99,
    }
}
