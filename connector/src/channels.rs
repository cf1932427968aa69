//! The connector's ends of its rings: the same shared-memory rings a wasm
//! module uses (`edgeward_ipc::ring`), attached from the fds that came with
//! `Init`.
//!
//! - Inbound (channels the connector subscribes): one reader thread sleeps
//!   on the rings' eventfds, reads ahead up to [`BATCH_FRAMES`] frames of a
//!   ring, hands them to the driver as one [`InboundBatch`] and commits them
//!   (releases their space) only when the driver accepted the batch. A
//!   connector killed before that gets the same frames again when it
//!   restarts: nothing a module sent is lost between the ring and the
//!   driver's durable queue.
//! - Outbound (channels it publishes): [`Rings`] implements the drivers'
//!   [`PublishRings`]: a send never blocks; a full subscriber ring drops the
//!   message for that subscriber and counts it.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use edgeward_ipc::control::{Init, RingRole};
use edgeward_ipc::ring::{Consumer, Frame, Producer, SendError as RingSendError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{Inbound, InboundBatch, PublishRings, SendError};

/// Most frames handed to the driver in one batch.
pub const BATCH_FRAMES: usize = 256;

/// Counters the core reports in the worker's `Stats`.
#[derive(Debug, Default)]
pub struct RingStats {
    /// Messages read from inbound rings and accepted by the driver.
    pub msgs_in: AtomicU64,
    /// Messages sent on outbound channels (once per send).
    pub msgs_out: AtomicU64,
    /// Messages dropped for a full subscriber ring.
    pub dropped: AtomicU64,
    /// Sends refused: not granted, too large.
    pub refused: AtomicU64,
    /// Sends on a channel the policy does not grant.
    pub denials: AtomicU64,
    /// Wake-ups written to subscribers' eventfds.
    pub wakes: AtomicU64,
}

/// A ring whose other side reads what the connector sends.
struct OutRing {
    producer: Producer,
    /// The consumer's eventfd.
    wake: OwnedFd,
    /// Corrupt: no longer written (until the supervisor resets it).
    broken: bool,
    id: u32,
}

/// A ring the connector reads.
struct InRing {
    id: u32,
    channel: String,
    peer: String,
    consumer: Consumer,
    /// Our eventfd: producers write it when we parked.
    wake: OwnedFd,
    /// Corrupt: not read until the supervisor resets it.
    broken: bool,
}

/// A ring that turned out corrupt, to report to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// The ring's id.
    pub ring: u32,
    /// The sequence number expected next.
    pub seq: u64,
    /// What was wrong.
    pub what: String,
}

/// The connector's outbound rings (the drivers' [`PublishRings`]).
pub struct Rings {
    outs: Mutex<BTreeMap<String, Vec<OutRing>>>,
    max_message: usize,
    stats: Arc<RingStats>,
    corrupt: mpsc::UnboundedSender<Corrupt>,
}

/// The connector's inbound rings, until the reader thread takes them.
pub struct Inbox {
    rings: Vec<InRing>,
}

/// Attaches every ring granted in `init` from `fds` (the fds received
/// with `Init`).
///
/// # Errors
/// A ring fd missing or not a valid ring; the text names the channel.
pub fn attach(
    init: &Init,
    fds: Vec<OwnedFd>,
    stats: Arc<RingStats>,
    corrupt: mpsc::UnboundedSender<Corrupt>,
) -> Result<(Rings, Inbox), String> {
    let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let mut take = |index: usize, what: &str| {
        fds.get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| format!("Init names {what} fd #{index}, which was not received"))
    };
    let mut outs: BTreeMap<String, Vec<OutRing>> = BTreeMap::new();
    let mut ins = Vec::new();
    for grant in &init.channels {
        if grant.publish {
            outs.entry(grant.name.clone()).or_default();
        }
        for ring in &grant.rings {
            let memfd = take(ring.memfd, "a ring memfd")?;
            let wake = take(ring.eventfd, "a ring eventfd")?;
            let context = |e: edgeward_ipc::ring::RingError| {
                format!(
                    "channel {}: ring with {} (id {}): {e}",
                    grant.name, ring.peer, ring.ring
                )
            };
            match ring.role {
                RingRole::Producer => outs.entry(grant.name.clone()).or_default().push(OutRing {
                    producer: Producer::attach(&memfd).map_err(context)?,
                    wake,
                    broken: false,
                    id: ring.ring,
                }),
                RingRole::Consumer => ins.push(InRing {
                    id: ring.ring,
                    channel: grant.name.clone(),
                    peer: ring.peer.clone(),
                    consumer: Consumer::attach(&memfd).map_err(context)?,
                    wake,
                    broken: false,
                }),
            }
        }
    }
    Ok((
        Rings {
            outs: Mutex::new(outs),
            max_message: init.max_message_bytes as usize,
            stats,
            corrupt,
        },
        Inbox { rings: ins },
    ))
}

impl Rings {
    /// The eventfds this side writes (kept open by the sandbox).
    pub fn fds(&self) -> Vec<i32> {
        let outs = self.outs.lock().unwrap_or_else(|e| e.into_inner());
        outs.values()
            .flatten()
            .map(|ring| ring.wake.as_raw_fd())
            .collect()
    }

    /// The supervisor reset ring `id`: use it again.
    pub fn reset(&self, id: u32) {
        let mut outs = self.outs.lock().unwrap_or_else(|e| e.into_inner());
        for ring in outs.values_mut().flatten().filter(|r| r.id == id) {
            ring.broken = ring.producer.resume().is_err();
        }
    }
}

impl PublishRings for Rings {
    fn send(&self, channel: &str, payload: &[u8]) -> Result<(), SendError> {
        let mut outs = self.outs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rings) = outs.get_mut(channel) else {
            self.stats.denials.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::NotGranted(channel.to_string()));
        };
        if payload.len() > self.max_message {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.max_message,
            });
        }
        let mut result = Ok(());
        for ring in rings.iter_mut().filter(|r| !r.broken) {
            match ring.producer.try_send(payload) {
                Ok(sent) => {
                    if sent.wake {
                        wake(&ring.wake);
                        self.stats.wakes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(RingSendError::Full) => {
                    ring.producer.record_drop();
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    result = Err(SendError::Full);
                }
                Err(RingSendError::TooLarge { len, max }) => {
                    return Err(SendError::TooLarge { len, max });
                }
                Err(RingSendError::Corrupt(what)) => {
                    ring.broken = true;
                    let _ = self.corrupt.send(Corrupt {
                        ring: ring.id,
                        seq: ring.producer.next_seq(),
                        what: what.clone(),
                    });
                    result = Err(SendError::Broken(what));
                }
            }
        }
        self.stats.msgs_out.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// Writes 1 to an eventfd (a full counter already means "wake up").
fn wake(fd: &OwnedFd) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// Clears an eventfd's counter (non-blocking: the rings' eventfds are
/// created `EFD_NONBLOCK` by the supervisor).
fn drain_eventfd(fd: &OwnedFd) {
    let mut buf = [0u8; 8];
    let _ = nix::unistd::read(fd, &mut buf);
}

impl Inbox {
    /// The eventfds this side sleeps on (kept open by the sandbox).
    pub fn fds(&self) -> Vec<i32> {
        self.rings.iter().map(|r| r.wake.as_raw_fd()).collect()
    }

    /// Runs the reader until `stop` is readable or the driver is gone:
    /// batches go to `batches`; `resets` names rings the supervisor reset.
    /// Runs on its own thread (it blocks in `poll`).
    pub fn run(
        mut self,
        batches: mpsc::Sender<InboundBatch>,
        stop: OwnedFd,
        resets: Arc<Mutex<Vec<u32>>>,
        stats: Arc<RingStats>,
        corrupt: mpsc::UnboundedSender<Corrupt>,
    ) {
        loop {
            for id in std::mem::take(&mut *resets.lock().unwrap_or_else(|e| e.into_inner())) {
                for ring in self.rings.iter_mut().filter(|r| r.id == id) {
                    ring.broken = ring.consumer.resume().is_err();
                }
            }
            let mut progressed = false;
            for ring in self.rings.iter_mut().filter(|r| !r.broken) {
                match read_batch(ring) {
                    Ok(frames) if frames.is_empty() => {}
                    Ok(frames) => {
                        progressed = true;
                        let last = frames.last().cloned();
                        let received_us = now_us();
                        let messages = frames
                            .into_iter()
                            .map(|frame| Inbound {
                                channel: ring.channel.clone(),
                                from: ring.peer.clone(),
                                seq: frame.seq,
                                received_us,
                                payload: frame.payload,
                            })
                            .collect::<Vec<_>>();
                        let count = messages.len() as u64;
                        let (accepted, was_accepted) = oneshot::channel();
                        if batches
                            .blocking_send(InboundBatch::new(messages, accepted))
                            .is_err()
                        {
                            return; // the driver is gone: the connector stops
                        }
                        if was_accepted.blocking_recv().is_err() {
                            return; // dropped unaccepted: stopping, frames stay in the ring
                        }
                        if let Some(last) = last {
                            ring.consumer.commit(&last);
                        }
                        stats.msgs_in.fetch_add(count, Ordering::Relaxed);
                    }
                    Err(e) => {
                        ring.broken = true;
                        let _ = corrupt.send(Corrupt {
                            ring: ring.id,
                            seq: ring.consumer.next_seq(),
                            what: e.to_string(),
                        });
                    }
                }
            }
            if progressed {
                continue;
            }
            // Nothing to read: park every ring, then sleep on the eventfds.
            let mut all_parked = true;
            for ring in self.rings.iter().filter(|r| !r.broken) {
                if !ring.consumer.park().unwrap_or(true) {
                    all_parked = false;
                }
            }
            if !all_parked {
                continue;
            }
            let mut fds: Vec<PollFd> = Vec::with_capacity(self.rings.len() + 1);
            fds.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
            for ring in &self.rings {
                fds.push(PollFd::new(ring.wake.as_fd(), PollFlags::POLLIN));
            }
            // A periodic look even without a wake-up: a reset ring, or a
            // producer that died between publishing and waking us.
            let _ = poll(&mut fds, PollTimeout::from(500u16));
            let stopping = fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
            if stopping {
                return;
            }
            for ring in &self.rings {
                drain_eventfd(&ring.wake);
            }
        }
    }
}

/// Reads ahead up to [`BATCH_FRAMES`] frames of `ring`, uncommitted.
fn read_batch(ring: &InRing) -> Result<Vec<Frame>, edgeward_ipc::ring::RingError> {
    let mut frames: Vec<Frame> = Vec::new();
    while frames.len() < BATCH_FRAMES {
        match ring.consumer.peek_after(frames.last())? {
            Some(frame) => frames.push(frame),
            None => break,
        }
    }
    Ok(frames)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
