//! The consuming side of a ring. One consumer per ring: it alone publishes
//! the read position. It trusts nothing in the ring.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::layout::{self, FRAME_HEADER, WRAP};
use super::mapping::Mapping;
use super::RingError;

/// One message, copied out of the ring and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its sequence number (the same on a redelivery after a crash).
    pub seq: u64,
    /// The payload.
    pub payload: Vec<u8>,
    /// Read position after this frame.
    next: u64,
}

/// A frame whose header was checked and whose payload is still in the
/// ring (see [`Consumer::next_frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Its sequence number.
    pub seq: u64,
    /// Payload length in bytes (at most the ring's maximum message).
    pub len: usize,
    crc: u32,
    /// Offset of the payload in the mapping (checked against the bounds).
    data: usize,
    /// Read position after this frame.
    next: u64,
}

/// Reads frames from a ring.
pub struct Consumer {
    map: Mapping,
    capacity: u64,
    max_message: usize,
    /// Committed read position (ours; published on commit).
    read: u64,
    /// The sequence number the next frame must carry.
    expected_seq: u64,
    /// The producer's write position as last loaded (it only grows: frames
    /// below it stay valid until we commit past them).
    cached_write: std::cell::Cell<u64>,
    /// Right after attach, the first frame may carry `expected_seq - 1`: a
    /// consumer killed inside `commit` published its expectation but not
    /// yet its read position, so that frame comes again.
    resuming: bool,
}

impl Consumer {
    /// Attaches to the ring in `fd`, resuming at the last committed position
    /// (a restarted consumer gets every message not yet committed).
    ///
    /// # Errors
    /// Not a valid ring, or impossible positions.
    pub fn attach(fd: impl AsFd) -> Result<Self, RingError> {
        let (map, capacity, max_message) = layout::attach(fd)?;
        Self::from_mapping(map, capacity, max_message)
    }

    /// Attaches to a model mapping (loom model tests only).
    #[cfg(loom)]
    pub(crate) fn attach_model(map: Mapping) -> Result<Self, RingError> {
        let (capacity, max_message) = layout::read_sizes(&map)?;
        Self::from_mapping(map, capacity, max_message)
    }

    fn from_mapping(map: Mapping, capacity: u32, max_message: u32) -> Result<Self, RingError> {
        // SYNC: Acquire: pairs with a previous consumer's Release in `commit`.
        let read = map.atomic(layout::OFF_READ).load(Ordering::Acquire);
        let expected_seq = map.atomic(layout::OFF_READ_SEQ).load(Ordering::Acquire);
        let consumer = Self {
            map,
            capacity: u64::from(capacity),
            max_message: max_message as usize,
            read,
            expected_seq,
            cached_write: std::cell::Cell::new(read),
            resuming: true,
        };
        consumer.available()?;
        Ok(consumer)
    }

    /// Bytes between the read and write positions, checked. The write
    /// position is reloaded only when everything known was consumed.
    fn available(&self) -> Result<u64, RingError> {
        let cached = self.cached_write.get().wrapping_sub(self.read);
        if cached != 0 && cached <= self.capacity {
            return Ok(cached);
        }
        // SYNC: Acquire: pairs with the producer's Release store of the write
        // position: every frame byte before it is visible to the copies below.
        let write = self.map.atomic(layout::OFF_WRITE).load(Ordering::Acquire);
        let available = write.wrapping_sub(self.read);
        if available > self.capacity {
            return Err(self.corrupt(format!(
                "write position {write} is not within one ring of the read position {}",
                self.read
            )));
        }
        self.cached_write.set(write);
        Ok(available)
    }

    fn corrupt(&self, what: String) -> RingError {
        RingError::Corrupt {
            seq: self.expected_seq,
            what,
        }
    }

    /// The next frame, verified, without consuming it; `Ok(None)` when empty.
    /// Call [`Consumer::commit`] once it was handled.
    ///
    /// # Errors
    /// [`RingError::Corrupt`]: the ring must stop; nothing of it is delivered.
    pub fn peek(&self) -> Result<Option<Frame>, RingError> {
        match self.next_frame()? {
            Some(pending) => self.copy_out(&pending).map(Some),
            None => Ok(None),
        }
    }

    /// `pending`'s payload copied out and checked, as a [`Frame`].
    fn copy_out(&self, pending: &Pending) -> Result<Frame, RingError> {
        let mut payload = vec![0u8; pending.len];
        self.read_payload(pending, &mut payload)?;
        Ok(Frame {
            seq: pending.seq,
            payload,
            next: pending.next,
        })
    }

    /// The header of the next frame, checked against the ring's bounds and
    /// the expected sequence number; `Ok(None)` when empty. The payload is
    /// not read yet: copy it with [`Consumer::read_payload`] straight into
    /// its destination (the guest's memory), which also checks the CRC.
    ///
    /// # Errors
    /// [`RingError::Corrupt`]: the ring must stop.
    pub fn next_frame(&self) -> Result<Option<Pending>, RingError> {
        self.next_frame_at(
            self.read,
            self.available()?,
            self.expected_seq,
            self.resuming,
        )
    }

    /// The frame after `previous` (peeked, not yet committed), or the first
    /// uncommitted one when `previous` is `None`. Reading ahead lets a
    /// caller handle several frames and then release them all with one
    /// [`Consumer::commit`] of the last (a connector persists a batch with
    /// one `fsync`). Frames the producer published after the batch started
    /// may be seen only after that commit.
    ///
    /// # Errors
    /// [`RingError::Corrupt`], as [`Consumer::peek`].
    pub fn peek_after(&self, previous: Option<&Frame>) -> Result<Option<Frame>, RingError> {
        let Some(previous) = previous else {
            return self.peek();
        };
        let ahead = previous.next.wrapping_sub(self.read);
        let available = self.available()?;
        if ahead > available {
            return Err(self.corrupt(format!(
                "read-ahead position {} is past the write position",
                previous.next
            )));
        }
        match self.next_frame_at(
            previous.next,
            available - ahead,
            previous.seq.wrapping_add(1),
            false,
        )? {
            Some(pending) => self.copy_out(&pending).map(Some),
            None => Ok(None),
        }
    }

    /// [`Consumer::next_frame`] from read position `pos` with `available`
    /// bytes published after it, expecting `expected_seq`.
    fn next_frame_at(
        &self,
        mut pos: u64,
        mut available: u64,
        expected_seq: u64,
        resuming: bool,
    ) -> Result<Option<Pending>, RingError> {
        loop {
            if available == 0 {
                return Ok(None);
            }
            let off = (pos % self.capacity) as usize;
            let tail = (self.capacity as usize - off) as u64;
            if tail < FRAME_HEADER as u64 {
                // Too little room for a header: both sides skip to the start.
                if available < tail {
                    return Err(
                        self.corrupt("write position inside the ring's tail padding".into())
                    );
                }
                pos = pos.wrapping_add(tail);
                available -= tail;
                continue;
            }
            if available < FRAME_HEADER as u64 {
                return Err(self.corrupt(format!(
                    "{available} bytes published, less than a frame header"
                )));
            }
            // The header is copied out once; everything below uses the copy.
            let mut header = [0u8; FRAME_HEADER];
            self.map.read_bytes(layout::DATA + off, &mut header);
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
            if len == WRAP {
                if available < tail {
                    return Err(self.corrupt("wrap marker past the write position".into()));
                }
                pos = pos.wrapping_add(tail);
                available -= tail;
                continue;
            }
            if len as usize > self.max_message {
                return Err(self.corrupt(format!(
                    "frame length {len} exceeds the maximum {}",
                    self.max_message
                )));
            }
            let size = layout::frame_size(len as usize) as u64;
            if size > tail {
                return Err(
                    self.corrupt(format!("frame of {size} bytes crosses the end of the ring"))
                );
            }
            if size > available {
                return Err(self.corrupt(format!(
                    "frame of {size} bytes extends past the write position"
                )));
            }
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            let redelivery = resuming && seq.checked_add(1) == Some(expected_seq);
            if seq != expected_seq && !redelivery {
                return Err(self.corrupt(format!("frame carries seq {seq}")));
            }
            return Ok(Some(Pending {
                seq,
                len: len as usize,
                crc,
                data: layout::DATA + off + FRAME_HEADER,
                next: pos.wrapping_add(size),
            }));
        }
    }

    /// Copies the payload of `pending` into `out` (exactly `pending.len`
    /// bytes) and checks its CRC. On an error `out` holds garbage that must
    /// not be handed on.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] on a CRC mismatch (the ring must stop), or
    /// when `out` has the wrong length (a caller bug, reported the same way
    /// so it cannot be mistaken for a message).
    pub fn read_payload(&self, pending: &Pending, out: &mut [u8]) -> Result<(), RingError> {
        if out.len() != pending.len {
            return Err(self.corrupt(format!(
                "payload buffer of {} bytes for a frame of {}",
                out.len(),
                pending.len
            )));
        }
        self.map.read_bytes(pending.data, out);
        if layout::frame_crc(pending.len as u32, pending.seq, out) != pending.crc {
            return Err(self.corrupt(format!("bad CRC in frame seq {}", pending.seq)));
        }
        Ok(())
    }

    /// Checks every frame between the read and the write position as
    /// [`Consumer::peek`] would, moving only this consumer's own position:
    /// nothing is published, so the ring's real consumer and producer see no
    /// change. Returns how many frames were checked.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] for the first bad frame.
    pub fn scan(&mut self) -> Result<u64, RingError> {
        let mut payload = Vec::new();
        let mut frames = 0;
        while let Some(pending) = self.next_frame()? {
            payload.resize(pending.len, 0);
            self.read_payload(&pending, &mut payload)?;
            self.read = pending.next;
            self.expected_seq = pending.seq.wrapping_add(1);
            self.resuming = false;
            frames += 1;
        }
        Ok(frames)
    }

    /// Consumes `pending` (after its handler returned): its space is released.
    pub fn commit_pending(&mut self, pending: &Pending) {
        self.commit_at(pending.next, pending.seq);
    }

    /// Consumes `frame` (after its handler returned): its space is released.
    pub fn commit(&mut self, frame: &Frame) {
        self.commit_at(frame.next, frame.seq);
    }

    fn commit_at(&mut self, next: u64, seq: u64) {
        self.read = next;
        self.expected_seq = seq.wrapping_add(1);
        self.resuming = false;
        // SYNC: Relaxed, then the Release below publishes it together with
        // the read position.
        self.map
            .atomic(layout::OFF_READ_SEQ)
            .store(self.expected_seq, Ordering::Relaxed);
        // SYNC: Release: pairs with the producer's Acquire load of the read
        // position: we are done reading the bytes before it.
        self.map
            .atomic(layout::OFF_READ)
            .store(self.read, Ordering::Release);
    }

    /// Says the consumer is about to sleep on its eventfd. Returns `false` if
    /// a frame arrived meanwhile (then it must not sleep).
    ///
    /// # Errors
    /// As [`Consumer::peek`], for impossible positions.
    pub fn park(&self) -> Result<bool, RingError> {
        // SYNC: AcqRel swap: the producer's `swap(0)` of the same flag and
        // this one are totally ordered (both are read-modify-writes). If ours
        // comes first, the producer reads 1 and wakes us. If the producer's
        // comes first, ours reads from it (Acquire pairs with its Release):
        // its write-position store is visible to the load below. So either
        // we are woken or we see the frame. (The consumer never writes the
        // flag otherwise, which keeps the producer's swaps and ours one
        // release sequence.)
        self.map
            .atomic(layout::OFF_PARKED)
            .swap(1, Ordering::AcqRel);
        if self.available()? > 0 {
            return Ok(false);
        }
        Ok(true)
    }

    /// Reloads the positions after the supervisor reset the ring (see
    /// [`super::Observer::reset`]); the consumer had stopped using it.
    ///
    /// # Errors
    /// Impossible positions (the ring was scribbled on again).
    pub fn resume(&mut self) -> Result<(), RingError> {
        // SYNC: Acquire: pairs with the Release stores in `Observer::reset`.
        self.read = self.map.atomic(layout::OFF_READ).load(Ordering::Acquire);
        self.expected_seq = self
            .map
            .atomic(layout::OFF_READ_SEQ)
            .load(Ordering::Acquire);
        self.cached_write.set(self.read);
        self.resuming = false;
        self.available().map(|_| ())
    }

    /// The sequence number the next frame will carry: everything before it
    /// was committed (handled) by this consumer or a predecessor.
    pub fn next_seq(&self) -> u64 {
        self.expected_seq
    }

    /// The largest payload this ring carries.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Messages the producer dropped on a full ring.
    pub fn drops(&self) -> u64 {
        // SYNC: Relaxed: a statistics counter only.
        self.map.atomic(layout::OFF_DROPS).load(Ordering::Relaxed)
    }

    /// Bytes waiting to be read (for depth metrics).
    pub fn depth(&self) -> u64 {
        self.available().unwrap_or(0)
    }
}
