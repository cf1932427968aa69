//! The module's ends of its rings: the channel table behind the `channel`,
//! `send` and `recv` imports, and the inbox the reactor loop delivers from.
//!
//! A channel's handle is its index in the `Init` grant list (sorted by
//! name). Publishing writes to one ring per subscriber; subscribing reads
//! one ring per publisher. Rings are attached (mapped) before the sandbox
//! is applied; their memfds are then closed, only the eventfds stay open.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeward_ipc::control::{FromWorker, Init, LogLevel, OnFull, RingRole, Stats};
use edgeward_ipc::ring::{Consumer, Pending, Producer, RingError, SendError};

use super::errors::*;
use crate::report::Reporter;

/// One channel as the module sees it.
pub struct Channel {
    /// Its name.
    pub name: String,
    publish: bool,
    subscribe: bool,
    /// One producer per subscriber.
    outs: Vec<OutRing>,
    /// Indices into [`Channels::inbox`], one per publisher.
    pub ins: Vec<usize>,
}

struct OutRing {
    id: u32,
    peer: String,
    producer: Producer,
    wake: OwnedFd,
    /// Found corrupt: not written until the supervisor resets it.
    stopped: bool,
}

/// One ring this module reads.
pub struct InRing {
    /// The supervisor's ring id.
    pub id: u32,
    /// Handle of the channel it carries.
    pub channel: i32,
    /// The publishing module.
    pub peer: String,
    /// The reading end.
    pub consumer: Consumer,
    /// Written by the producer when we are parked.
    pub wake: OwnedFd,
    /// Found corrupt: not read until the supervisor resets it.
    pub stopped: bool,
}

/// Ring resets the supervisor announced to a command module's control
/// thread, applied by the guest thread at its next `send`/`recv`.
#[derive(Default)]
pub struct ResetRequests {
    any: AtomicBool,
    rings: Mutex<Vec<u32>>,
}

impl ResetRequests {
    /// Queues a reset of ring `id`.
    pub fn push(&self, id: u32) {
        self.rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
        // SYNC: Release: pairs with the Acquire swap in `Channels::apply_resets`.
        self.any.store(true, Ordering::Release);
    }
}

/// Every channel of the module.
pub struct Channels {
    /// By handle.
    pub table: Vec<Channel>,
    /// Every ring this module reads, in handle order then publisher order.
    pub inbox: Vec<InRing>,
    on_full: OnFull,
    max_message: usize,
    /// How long to busy-poll before parking.
    pub spin: Duration,
    /// Longest a blocking `send` waits for space.
    pub block_budget: Duration,
    reporter: Arc<Reporter>,
    /// Resets queued by a command module's control thread.
    pub resets: Arc<ResetRequests>,
    /// A command's last `recv`, committed at its next `recv`.
    recv_pending: Option<(usize, Pending)>,
    /// Where the next `recv` starts looking (fairness between publishers).
    recv_next: usize,
    /// A command module's counters, mirrored for its control thread.
    pub shared_stats: Option<Arc<SharedStats>>,
}

/// A command module's counters as atomics: its guest thread updates them
/// at each `send`/`recv`, its control thread reports them (the guest
/// thread may be blocked in the guest for any time).
#[derive(Default)]
pub struct SharedStats([std::sync::atomic::AtomicU64; 8]);

impl SharedStats {
    /// Stores `stats`.
    pub fn store(&self, stats: &Stats) {
        let values = [
            stats.ticks,
            stats.msgs_in,
            stats.msgs_out,
            stats.denials,
            stats.dropped,
            stats.refused,
            stats.wakes,
            stats.path_denials,
        ];
        for (slot, value) in self.0.iter().zip(values) {
            // SYNC: Relaxed: counters for display; no other data depends on them.
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// The last stored counters.
    pub fn load(&self) -> Stats {
        // SYNC: Relaxed: as in `store`.
        let v: Vec<u64> = self.0.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        Stats {
            ticks: v[0],
            msgs_in: v[1],
            msgs_out: v[2],
            denials: v[3],
            dropped: v[4],
            refused: v[5],
            wakes: v[6],
            path_denials: v[7],
            // A command module has no tick loop, so no tick lateness.
            tick_lateness: None,
        }
    }
}

impl Channels {
    /// Attaches every ring end granted in `init`; `fds` are the descriptors
    /// received with it.
    ///
    /// # Errors
    /// A grant naming a missing fd, or a ring that is not valid.
    pub fn attach(init: &Init, fds: Vec<OwnedFd>, reporter: Arc<Reporter>) -> Result<Self, String> {
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        let mut take = |index: usize, what: &str| {
            fds.get_mut(index)
                .and_then(Option::take)
                .ok_or_else(|| format!("Init names {what} fd #{index}, which was not received"))
        };
        let mut table = Vec::new();
        let mut inbox = Vec::new();
        for (handle, grant) in init.channels.iter().enumerate() {
            let mut channel = Channel {
                name: grant.name.clone(),
                publish: grant.publish,
                subscribe: grant.subscribe,
                outs: Vec::new(),
                ins: Vec::new(),
            };
            for ring in &grant.rings {
                let memfd = take(ring.memfd, "a ring memfd")?;
                let wake = take(ring.eventfd, "a ring eventfd")?;
                let context = |e: RingError| {
                    format!(
                        "channel {}: ring with {} (id {}): {e}",
                        grant.name, ring.peer, ring.ring
                    )
                };
                match ring.role {
                    RingRole::Producer => channel.outs.push(OutRing {
                        id: ring.ring,
                        peer: ring.peer.clone(),
                        producer: Producer::attach(&memfd).map_err(context)?,
                        wake,
                        stopped: false,
                    }),
                    RingRole::Consumer => {
                        channel.ins.push(inbox.len());
                        inbox.push(InRing {
                            id: ring.ring,
                            channel: handle as i32,
                            peer: ring.peer.clone(),
                            consumer: Consumer::attach(&memfd).map_err(context)?,
                            wake,
                            stopped: false,
                        });
                    }
                }
                // The mapping stays; the memfd itself is no longer needed.
                drop(memfd);
            }
            table.push(channel);
        }
        Ok(Self {
            table,
            inbox,
            on_full: init.on_full,
            max_message: init.max_message_bytes as usize,
            spin: Duration::from_micros(u64::from(init.spin_us)),
            block_budget: Duration::from_millis(u64::from(init.call_budget_ms.max(1))),
            reporter,
            resets: Arc::default(),
            recv_pending: None,
            recv_next: 0,
            shared_stats: None,
        })
    }

    /// The eventfds of every ring this module reads.
    pub fn wake_fds(&self) -> impl Iterator<Item = (usize, &OwnedFd)> {
        self.inbox.iter().enumerate().map(|(i, r)| (i, &r.wake))
    }

    /// The handle of channel `name`, if granted.
    pub fn handle(&self, name: &[u8]) -> Option<i32> {
        self.table
            .iter()
            .position(|c| c.name.as_bytes() == name)
            .map(|i| i as i32)
    }

    /// `send`: writes `payload` to every subscriber of channel `handle`.
    /// `call_ticks` is the watchdog tick count when the current guest call
    /// started (`None` for a command module, which has no per-call budget).
    pub fn send(
        &mut self,
        stats: &mut Stats,
        handle: i32,
        payload: &[u8],
        call_ticks: Option<(u64, u64)>,
    ) -> i32 {
        self.apply_resets();
        let Some(channel) = usize::try_from(handle)
            .ok()
            .and_then(|h| self.table.get_mut(h))
        else {
            return EW_ERR_INVALID;
        };
        if !channel.publish {
            stats.denials += 1;
            return EW_ERR_DENIED;
        }
        if payload.len() > self.max_message {
            stats.refused += 1;
            return EW_ERR_TOO_LARGE;
        }
        let mut corrupt = Vec::new();
        if self.on_full != OnFull::Drop {
            // All or nothing: wait until every subscriber has room (only we
            // fill these rings, so room found stays room).
            // Read the clock only once a ring turned out full.
            let mut deadline = None;
            let mut round = 0u32;
            loop {
                let mut all = true;
                for out in channel.outs.iter_mut().filter(|o| !o.stopped) {
                    match out.producer.has_room(payload.len()) {
                        Ok(true) => {}
                        Ok(false) => all = false,
                        Err(e) => {
                            out.stopped = true;
                            corrupt.push((
                                out.id,
                                out.producer.next_seq(),
                                format!("{e} (subscriber {})", out.peer),
                            ));
                        }
                    }
                }
                if all {
                    break;
                }
                let budget_spent = call_ticks
                    .is_some_and(|(start, periods)| crate::budget::ticks() >= start + periods - 1);
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.block_budget);
                if self.on_full == OnFull::Error || Instant::now() >= deadline || budget_spent {
                    stats.refused += 1;
                    self.report_corrupt(corrupt);
                    return EW_ERR_FULL;
                }
                backoff(round);
                round += 1;
            }
        }
        for out in channel.outs.iter_mut().filter(|o| !o.stopped) {
            match out.producer.try_send(payload) {
                Ok(sent) => {
                    if sent.wake {
                        stats.wakes += 1;
                        let _ = nix::unistd::write(&out.wake, &1u64.to_ne_bytes());
                    }
                }
                Err(SendError::Full) => {
                    out.producer.record_drop();
                    stats.dropped += 1;
                }
                Err(SendError::TooLarge { .. }) => {
                    // The ring's maximum is the policy's; cannot differ.
                    stats.refused += 1;
                }
                Err(SendError::Corrupt(what)) => {
                    out.stopped = true;
                    corrupt.push((
                        out.id,
                        out.producer.next_seq(),
                        format!("{what} (subscriber {})", out.peer),
                    ));
                }
            }
        }
        stats.msgs_out += 1;
        self.report_corrupt(corrupt);
        self.maybe_heartbeat(stats);
        EW_OK
    }

    /// Tells the supervisor about rings found corrupt (already stopped).
    pub fn report_corrupt(&self, rings: Vec<(u32, u64, String)>) {
        for (ring, seq, what) in rings {
            self.reporter.log(
                LogLevel::Error,
                format!("ring corrupt at seq {seq}: {what}; ring stopped"),
            );
            self.reporter
                .send(&FromWorker::RingCorrupt { ring, seq, what });
        }
    }

    /// Stops inbox ring `index` after `error` and reports it.
    pub fn inbox_corrupt(&mut self, index: usize, error: RingError) {
        let ring = &mut self.inbox[index];
        ring.stopped = true;
        let (seq, what) = match error {
            RingError::Corrupt { seq, what } => (seq, what),
            other => (ring.consumer.next_seq(), other.to_string()),
        };
        self.reporter.log(
            LogLevel::Error,
            format!(
                "ring corrupt: channel {} from {} at seq {seq}: {what}; ring stopped",
                self.table[ring.channel as usize].name, ring.peer
            ),
        );
        self.reporter.send(&FromWorker::RingCorrupt {
            ring: ring.id,
            seq,
            what,
        });
    }

    /// The supervisor reset ring `id`: use it again.
    pub fn reset(&mut self, id: u32) {
        for ring in self.inbox.iter_mut().filter(|r| r.id == id) {
            ring.stopped = ring.consumer.resume().is_err();
        }
        if self
            .recv_pending
            .is_some_and(|(i, _)| self.inbox[i].id == id)
        {
            self.recv_pending = None;
        }
        for out in self.table.iter_mut().flat_map(|c| &mut c.outs) {
            if out.id == id {
                out.stopped = out.producer.resume().is_err();
            }
        }
    }

    fn apply_resets(&mut self) {
        // SYNC: Acquire: pairs with the Release store in `ResetRequests::push`.
        if !self.resets.any.swap(false, Ordering::Acquire) {
            return;
        }
        let ids = std::mem::take(&mut *self.resets.rings.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids {
            self.reset(id);
        }
    }

    /// For command modules: mirrors the counters for the control thread.
    pub(crate) fn maybe_heartbeat(&self, stats: &Stats) {
        if let Some(shared) = &self.shared_stats {
            shared.store(stats);
        }
    }

    /// `recv` and `recv_wait` (command modules): waits until a message of
    /// channel `handle` arrives, at most `timeout` (`None`: for ever; zero:
    /// only looks), copies it into `out` and returns its length, or
    /// `EW_ERR_TIMEOUT`. The message is committed at the next `recv`, so a
    /// crash before then delivers it again.
    pub fn recv(
        &mut self,
        stats: &mut Stats,
        handle: i32,
        out: &mut [u8],
        timeout: Option<Duration>,
    ) -> i32 {
        let rings = match self.subscribed_rings(stats, handle) {
            Ok(rings) => rings,
            Err(code) => return code,
        };
        if let Some((index, pending)) = self.recv_pending.take() {
            self.inbox[index].consumer.commit_pending(&pending);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.apply_resets();
            if let Some(code) = self.try_recv(stats, &rings, out) {
                self.maybe_heartbeat(stats);
                return code;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return EW_ERR_TIMEOUT;
            }
            self.wait_for(&rings, deadline);
        }
    }

    /// The inbox indices of channel `handle`'s rings, if this module
    /// subscribes to it (`EW_ERR_DENIED`, counted, if not).
    fn subscribed_rings(&self, stats: &mut Stats, handle: i32) -> Result<Vec<usize>, i32> {
        let Some(channel) = usize::try_from(handle).ok().and_then(|h| self.table.get(h)) else {
            return Err(EW_ERR_INVALID);
        };
        if !channel.subscribe {
            stats.denials += 1;
            return Err(EW_ERR_DENIED);
        }
        Ok(channel.ins.clone())
    }

    /// For a channel's fd (`channel_fd`): whether channel `handle` is
    /// subscribed (`EW_ERR_DENIED`, counted, if not).
    pub fn check_subscribed(&self, stats: &mut Stats, handle: i32) -> Result<(), i32> {
        self.subscribed_rings(stats, handle).map(|_| ())
    }

    /// Whether this module subscribes to channel `handle`.
    pub fn is_subscribed(&self, handle: i32) -> bool {
        usize::try_from(handle)
            .ok()
            .and_then(|h| self.table.get(h))
            .is_some_and(|c| c.subscribe)
    }

    /// Whether a message of channel `handle` may be waiting: one of its
    /// rings holds a frame. The message the last `recv` returned counts
    /// until the next `recv` commits it, so right after a `recv` this can
    /// be a false alarm (`recv_wait` with timeout 0 tells).
    pub fn readable(&mut self, handle: i32) -> bool {
        self.apply_resets();
        let Some(channel) = usize::try_from(handle).ok().and_then(|h| self.table.get(h)) else {
            return false;
        };
        channel.ins.iter().any(|&i| {
            let ring = &self.inbox[i];
            !ring.stopped && ring.consumer.depth() > 0
        })
    }

    /// Parks until one of channels `handles` may have a message or
    /// `deadline` passes (a wake-up may come early: callers look again).
    pub fn wait_readable(&mut self, handles: &[i32], deadline: Option<Instant>) {
        let mut rings: Vec<usize> = handles
            .iter()
            .filter_map(|&h| usize::try_from(h).ok().and_then(|h| self.table.get(h)))
            .flat_map(|c| c.ins.iter().copied())
            .collect();
        rings.sort_unstable();
        rings.dedup();
        self.wait_for(&rings, deadline);
    }

    /// Sequence number of the last message `recv` returned.
    pub fn last_recv_seq(&self) -> i64 {
        self.recv_pending.map_or(-1, |(_, p)| p.seq as i64)
    }

    /// One look at `rings`, starting after the last one served.
    fn try_recv(&mut self, stats: &mut Stats, rings: &[usize], out: &mut [u8]) -> Option<i32> {
        for k in 0..rings.len() {
            let index = rings[(self.recv_next + k) % rings.len()];
            let ring = &self.inbox[index];
            if ring.stopped {
                continue;
            }
            match ring.consumer.next_frame() {
                Ok(None) => continue,
                Ok(Some(pending)) => {
                    if pending.len > out.len() {
                        return Some(EW_ERR_TOO_LARGE);
                    }
                    if let Err(e) = ring
                        .consumer
                        .read_payload(&pending, &mut out[..pending.len])
                    {
                        self.inbox_corrupt(index, e);
                        continue;
                    }
                    self.recv_pending = Some((index, pending));
                    self.recv_next = (self.recv_next + k + 1) % rings.len();
                    stats.msgs_in += 1;
                    return Some(pending.len as i32);
                }
                Err(e) => self.inbox_corrupt(index, e),
            }
        }
        None
    }

    /// Spins, then parks on `rings` until one may have a frame or
    /// `deadline` passes.
    fn wait_for(&mut self, rings: &[usize], deadline: Option<Instant>) {
        let spin_until = Instant::now() + self.spin;
        let spin_until = deadline.map_or(spin_until, |d| d.min(spin_until));
        while Instant::now() < spin_until {
            if rings.iter().any(|&i| self.inbox[i].consumer.depth() > 0) {
                return;
            }
            std::hint::spin_loop();
        }
        let mut polls = Vec::with_capacity(rings.len());
        for &i in rings {
            let ring = &self.inbox[i];
            if ring.stopped {
                continue;
            }
            match ring.consumer.park() {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    self.inbox_corrupt(i, e);
                    return;
                }
            }
            polls.push(libc::pollfd {
                fd: ring.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // A stopped ring is waited for by time: its reset comes by message.
        let mut timeout =
            (polls.len() < rings.len() || polls.is_empty()).then_some(Duration::from_millis(100));
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        // To the nanosecond (ppoll): a guest's timer due in 300 µs must not
        // wait for a whole millisecond.
        let timespec = timeout.map(|t| libc::timespec {
            // Not `as libc::time_t`: a deprecated alias on musl.
            tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let timespec_ptr = timespec
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `polls` is a valid array of pollfd and `timespec_ptr` null
        // or a valid timespec, both for the call's duration; no signal mask.
        unsafe {
            libc::ppoll(
                polls.as_mut_ptr(),
                polls.len() as libc::nfds_t,
                timespec_ptr,
                std::ptr::null(),
            )
        };
        for &i in rings {
            drain_eventfd(&self.inbox[i].wake);
        }
    }
}

/// Clears an eventfd's counter (non-blocking; nothing to read is fine).
pub fn drain_eventfd(fd: &OwnedFd) {
    let mut value = [0u8; 8];
    let _ = nix::unistd::read(fd.as_fd(), &mut value);
}

/// Waiting for ring space: spin briefly, then yield, then sleep.
fn backoff(round: u32) {
    match round {
        0..=63 => std::hint::spin_loop(),
        64..=127 => std::thread::yield_now(),
        _ => std::thread::sleep(Duration::from_micros(50)),
    }
}
