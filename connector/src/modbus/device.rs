//! One device: its connection, its poll schedule and its writes, in one
//! task so every request on the connection is serialized.
//!
//! Link state (logged once per change, not per retry):
//! - up: the device answered a request on the current connection (a value
//!   or an exception; a device without polls: the TCP connect succeeded);
//! - down: a connect failed, a request timed out, the connection broke, or
//!   the answer did not match the request. The connection is dropped and
//!   made again after a delay that starts at `reconnect_min_ms` and doubles
//!   per failure up to `reconnect_max_ms`; it resets once the device
//!   answers. Every failure counts in `errors`, every connection after the
//!   first in `reconnects`.
//!
//! Exceptions (the device answered "illegal address" etc.) count in
//! `errors` and are logged once per change per poll group; the connection
//! stays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_modbus::client::{tcp, Context as Client, Reader as _, Writer as _};
use tokio_modbus::{ExceptionCode, Slave};

use super::config::DevicePlan;
use super::decode::{Encoded, Table};
use super::poll::{groups, next_due, Data, Group, Health};
use super::stopped;
use super::stream::Watched;
use super::timer::Timer;
use crate::driver::{Counters, Publisher, SendError};
use crate::log;
use crate::pacing::{held_back, Backoff, LogLimit};

/// Whether every device is up; keeps `Counters::connected` in step.
pub struct Links {
    up: Mutex<Vec<bool>>,
    counters: Arc<Counters>,
}

impl Links {
    /// `devices` devices, all down.
    pub fn new(devices: usize, counters: Arc<Counters>) -> Self {
        counters.connected.store(false, Ordering::Relaxed);
        Self {
            up: Mutex::new(vec![false; devices]),
            counters,
        }
    }

    fn set(&self, device: usize, up: bool) {
        let mut links = self.up.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get_mut(device) {
            *link = up;
        }
        let all = !links.is_empty() && links.iter().all(|&l| l);
        self.counters.connected.store(all, Ordering::Relaxed);
    }
}

/// A write the router checked and encoded: put it on the device.
#[derive(Debug)]
pub struct WriteJob {
    /// Table (holding or coil).
    pub table: Table,
    /// First address.
    pub address: u16,
    /// What to write.
    pub encoded: Encoded,
    /// Completed (or dropped) once the write was attempted.
    pub done: oneshot::Sender<()>,
}

/// What a device task shares with the rest of the driver.
#[derive(Clone)]
pub struct Shared {
    /// Sends polled values.
    pub publisher: Publisher,
    /// The connector's counters.
    pub counters: Arc<Counters>,
    /// Link states of all devices.
    pub links: Arc<Links>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Starting,
    Up,
    Down,
}

/// The result of one request.
enum Outcome<T> {
    Answer(T),
    Exception(ExceptionCode),
    /// The connection is unusable (timeout, I/O, mismatched answer).
    Failed(String),
}

async fn request<T, F>(timeout: Duration, call: F) -> Outcome<T>
where
    F: std::future::Future<Output = tokio_modbus::Result<T>>,
{
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Outcome::Failed(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Ok(Ok(Err(code))) => Outcome::Exception(code),
        Ok(Ok(Ok(value))) => Outcome::Answer(value),
    }
}

fn describe(code: ExceptionCode) -> String {
    let name = match code {
        ExceptionCode::IllegalFunction => "illegal function",
        ExceptionCode::IllegalDataAddress => "illegal data address",
        ExceptionCode::IllegalDataValue => "illegal data value",
        ExceptionCode::ServerDeviceFailure => "server device failure",
        ExceptionCode::Acknowledge => "acknowledge",
        ExceptionCode::ServerDeviceBusy => "server device busy",
        ExceptionCode::MemoryParityError => "memory parity error",
        ExceptionCode::GatewayPathUnavailable => "gateway path unavailable",
        ExceptionCode::GatewayTargetDevice => "gateway target device failed to respond",
        ExceptionCode::Custom(_) => "device-specific",
    };
    format!("exception {} ({name})", u8::from(code))
}

/// Records how late a poll started (bounded: the core drains it).
fn record_lateness(counters: &Counters, lateness: Duration) {
    let micros = u32::try_from(lateness.as_micros()).unwrap_or(u32::MAX);
    let mut samples = counters
        .poll_lateness_us
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if samples.len() < 4096 {
        samples.push(micros);
    }
}

struct Device {
    plan: DevicePlan,
    index: usize,
    shared: Shared,
    client: Option<Client>,
    /// Set by the current connection's stream at end-of-stream.
    closed: Arc<AtomicBool>,
    link: Link,
    backoff: Backoff,
    next_connect: Instant,
    connections: u64,
    groups: Vec<Group>,
    write_log: LogLimit,
    publish_log: LogLimit,
}

/// Runs device `index` of the plan until `stop`: connects, polls on
/// schedule, performs the writes the router sends.
pub async fn run(
    plan: DevicePlan,
    index: usize,
    shared: Shared,
    mut writes: mpsc::Receiver<WriteJob>,
    mut stop: watch::Receiver<bool>,
) {
    let now = Instant::now();
    let mut device = Device {
        groups: groups(&plan.polls, now),
        backoff: Backoff::new(plan.reconnect_min, plan.reconnect_max),
        plan,
        index,
        shared,
        client: None,
        closed: Arc::new(AtomicBool::new(false)),
        link: Link::Starting,
        next_connect: now,
        connections: 0,
        write_log: LogLimit::default(),
        publish_log: LogLimit::default(),
    };
    let mut writes_open = true;
    let timer = Timer::new();
    loop {
        // The next thing to do on its own: connect, or the next poll.
        let wake = if device.client.is_none() {
            Some(device.next_connect)
        } else {
            next_due(&device.groups).map(|i| device.groups[i].due)
        };
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            job = writes.recv(), if writes_open => match job {
                Some(job) => {
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => return,
                        () = device.write(job) => {}
                    }
                }
                None => writes_open = false,
            },
            () = sleep_until(&timer, wake) => {
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => return,
                    () = device.step() => {}
                }
            }
        }
    }
}

async fn sleep_until(timer: &Timer, when: Option<Instant>) {
    match when {
        Some(when) => timer.sleep_until(when).await,
        None => std::future::pending().await,
    }
}

impl Device {
    /// Connects if disconnected, else runs the poll due first.
    async fn step(&mut self) {
        if self.client.is_none() {
            self.connect().await;
            return;
        }
        if let Some(i) = next_due(&self.groups) {
            self.poll(i).await;
        }
    }

    async fn connect(&mut self) {
        let address = self.plan.address.clone();
        let timeout = self.plan.timeout;
        let unit = self.plan.unit;
        let closed = Arc::new(AtomicBool::new(false));
        let watched = Arc::clone(&closed);
        let attempt = async {
            let stream = TcpStream::connect(address.as_str())
                .await
                .map_err(|e| e.to_string())?;
            // Requests are small and answered one at a time: no Nagle delay.
            let _ = stream.set_nodelay(true);
            Ok::<_, String>(tcp::attach_slave(
                Watched::new(stream, watched),
                Slave(unit),
            ))
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "connect timed out after {} ms",
                timeout.as_millis()
            )),
        };
        match result {
            Ok(client) => {
                self.connections += 1;
                if self.connections > 1 {
                    Counters::bump(&self.shared.counters.reconnects);
                }
                self.client = Some(client);
                self.closed = closed;
                // A new schedule from now: slots missed while down are not
                // late polls, they are the outage `errors` already counts.
                let now = Instant::now();
                for group in &mut self.groups {
                    group.due = now;
                }
                if self.groups.is_empty() {
                    self.answered();
                }
            }
            Err(reason) => {
                Counters::bump(&self.shared.counters.errors);
                if self.link != Link::Down {
                    log!(
                        "warn",
                        "device {}: cannot connect to {}: {reason}; retrying every {}..{} ms",
                        self.plan.name,
                        self.plan.address,
                        self.plan.reconnect_min.as_millis(),
                        self.plan.reconnect_max.as_millis()
                    );
                    self.link = Link::Down;
                }
                self.retry_later();
            }
        }
    }

    fn retry_later(&mut self) {
        self.next_connect = Instant::now() + self.backoff.next();
    }

    /// The device answered: it is up.
    fn answered(&mut self) {
        self.backoff.reset();
        if self.link != Link::Up {
            log!(
                "info",
                "device {}: connected to {} (unit {})",
                self.plan.name,
                self.plan.address,
                self.plan.unit
            );
            self.link = Link::Up;
            self.shared.links.set(self.index, true);
        }
    }

    /// The connection is unusable: drop it and reconnect later.
    fn disconnect(&mut self, what: &str, reason: &str) {
        Counters::bump(&self.shared.counters.errors);
        let reason = if self.closed.load(Ordering::Relaxed) {
            "the device closed the connection"
        } else {
            reason
        };
        self.client = None;
        if self.link != Link::Down {
            log!(
                "warn",
                "device {}: {what}: {reason}: disconnected, reconnecting",
                self.plan.name
            );
            self.link = Link::Down;
            self.shared.links.set(self.index, false);
        }
        self.retry_later();
    }

    async fn poll(&mut self, i: usize) {
        let counters = Arc::clone(&self.shared.counters);
        let timeout = self.plan.timeout;
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let group = &self.groups[i];
        record_lateness(&counters, group.start(Instant::now()));
        let (address, count) = (group.address, group.count);
        let outcome = match group.table {
            Table::Holding => request(timeout, client.read_holding_registers(address, count))
                .await
                .map(Data::Registers),
            Table::Input => request(timeout, client.read_input_registers(address, count))
                .await
                .map(Data::Registers),
            Table::Coil => request(timeout, client.read_coils(address, count))
                .await
                .map(Data::Bits),
            Table::Discrete => request(timeout, client.read_discrete_inputs(address, count))
                .await
                .map(Data::Bits),
        };
        match outcome {
            Outcome::Answer(data) => {
                self.answered();
                self.publish(i, &data);
                self.set_health(i, Health::Ok);
            }
            Outcome::Exception(code) => {
                Counters::bump(&counters.errors);
                self.answered();
                self.set_health(i, Health::Exception(u8::from(code)));
            }
            Outcome::Failed(reason) => {
                let group = &self.groups[i];
                let what = format!(
                    "reading {} {}..{}",
                    group.table.name(),
                    group.address,
                    u32::from(group.address) + u32::from(group.count) - 1
                );
                self.disconnect(&what, &reason);
                return;
            }
        }
        for skipped in self.groups[i].advance(Instant::now()) {
            record_lateness(&counters, skipped);
        }
    }

    /// Logs a group's outcome when it changes.
    fn set_health(&mut self, i: usize, health: Health) {
        let group = &mut self.groups[i];
        if group.health == health {
            return;
        }
        let was = std::mem::replace(&mut group.health, health);
        let channels: Vec<&str> = group.members.iter().map(|m| m.channel.as_str()).collect();
        let what = format!(
            "device {}: reading {} {}..{} (channels {})",
            self.plan.name,
            group.table.name(),
            group.address,
            u32::from(group.address) + u32::from(group.count) - 1,
            channels.join(", ")
        );
        match health {
            Health::Exception(code) => {
                log!("warn", "{what}: {}", describe(ExceptionCode::new(code)));
            }
            Health::Ok if matches!(was, Health::Exception(_)) => {
                log!("info", "{what}: answers again");
            }
            Health::Ok | Health::Unknown => {}
        }
    }

    fn publish(&mut self, i: usize, data: &Data) {
        let counters = &self.shared.counters;
        for (channel, value) in self.groups[i].decode(data) {
            let Some(value) = value else {
                Counters::bump(&counters.errors);
                if let Some(n) = self.publish_log.ready() {
                    log!(
                        "warn",
                        "device {}: the answer for {channel} was too short{}",
                        self.plan.name,
                        held_back(n)
                    );
                }
                continue;
            };
            match self.shared.publisher.send(channel, &value.to_message()) {
                // A full ring dropped it for one subscriber only (the core
                // counts that): the value was still published.
                Ok(()) | Err(SendError::Full) => Counters::bump(&counters.received),
                Err(e) => {
                    if let Some(n) = self.publish_log.ready() {
                        log!("warn", "channel {channel}: {e}{}", held_back(n));
                    }
                }
            }
        }
    }

    async fn write(&mut self, job: WriteJob) {
        let counters = Arc::clone(&self.shared.counters);
        let timeout = self.plan.timeout;
        let target = format!("{} {}", job.table.name(), job.address);
        let Some(client) = self.client.as_mut() else {
            Counters::bump(&counters.errors);
            if let Some(n) = self.write_log.ready() {
                log!(
                    "warn",
                    "device {}: write to {target} dropped: not connected{}",
                    self.plan.name,
                    held_back(n)
                );
            }
            return;
        };
        let address = job.address;
        let outcome = match &job.encoded {
            Encoded::Coil(on) => request(timeout, client.write_single_coil(address, *on)).await,
            Encoded::Registers(words) if words.len() == 1 => {
                request(timeout, client.write_single_register(address, words[0])).await
            }
            Encoded::Registers(words) => {
                request(timeout, client.write_multiple_registers(address, words)).await
            }
        };
        match outcome {
            Outcome::Answer(()) => {
                Counters::bump(&counters.delivered);
                self.answered();
            }
            Outcome::Exception(code) => {
                Counters::bump(&counters.errors);
                self.answered();
                if let Some(n) = self.write_log.ready() {
                    log!(
                        "warn",
                        "device {}: write to {target} refused by the device: {}{}",
                        self.plan.name,
                        describe(code),
                        held_back(n)
                    );
                }
            }
            Outcome::Failed(reason) => {
                self.disconnect(&format!("writing {target}"), &reason);
            }
        }
        let _ = job.done.send(());
    }
}

impl<T> Outcome<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Answer(v) => Outcome::Answer(f(v)),
            Outcome::Exception(c) => Outcome::Exception(c),
            Outcome::Failed(r) => Outcome::Failed(r),
        }
    }
}
