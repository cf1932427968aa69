//! The producing side of a ring. One producer per ring: it alone writes the
//! data region, the write position and the sequence numbers.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::layout::{self, FRAME_HEADER, WRAP};
use super::mapping::Mapping;
use super::RingError;

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The payload is larger than the ring's maximum message size; it is
    /// refused whole, never truncated.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Payload size.
        len: usize,
        /// The ring's maximum.
        max: usize,
    },
    /// Not enough free space now.
    #[error("ring full")]
    Full,
    /// The consumer published an impossible read position.
    #[error("ring corrupt: {0}")]
    Corrupt(String),
}

/// What a successful send tells the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Sequence number of the frame.
    pub seq: u64,
    /// The consumer was parked: signal its eventfd (at most once per park).
    pub wake: bool,
}

/// Writes frames into a ring.
pub struct Producer {
    map: Mapping,
    capacity: u64,
    max_message: usize,
    /// Our write position; only we change it, so no need to load it.
    write: u64,
    next_seq: u64,
    /// The consumer's read position as last loaded. It only grows, so a stale
    /// value under-estimates free space: reloaded only when space seems short.
    cached_read: u64,
}

impl Producer {
    /// Attaches to the ring in `fd`, continuing where a previous producer
    /// (possibly crashed) left off.
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
        let capacity = u64::from(capacity);
        // SYNC: Acquire: pairs with the Release store of the write position
        // by a previous producer; we continue after its last published frame.
        let write = map.atomic(layout::OFF_WRITE).load(Ordering::Acquire);
        // SYNC: Acquire: pairs with the consumer's Release in `commit`.
        let read = map.atomic(layout::OFF_READ).load(Ordering::Acquire);
        if write.wrapping_sub(read) > capacity {
            return Err(RingError::Corrupt {
                seq: 0,
                what: format!("positions read {read}, write {write} are more than a ring apart"),
            });
        }
        let mut producer = Self {
            map,
            capacity,
            max_message: max_message as usize,
            write,
            next_seq: 0,
            cached_read: read,
        };
        producer.next_seq = producer.recover_seq(read);
        Ok(producer)
    }

    /// The next sequence number after a restart: the published counter, the
    /// consumer's expectation, or one past the last unread frame, whichever
    /// is highest. (A producer that died between publishing a frame and
    /// updating the counter leaves the counter one short.)
    fn recover_seq(&self, read: u64) -> u64 {
        let stored = self
            .map
            .atomic(layout::OFF_NEXT_SEQ)
            .load(Ordering::Acquire);
        let consumer = self
            .map
            .atomic(layout::OFF_READ_SEQ)
            .load(Ordering::Acquire);
        let mut next = stored.max(consumer);
        // Positions come from shared memory: modular arithmetic only, and
        // never more than the (checked) distance from read to write.
        let unread = self.write.wrapping_sub(read);
        let mut scanned = 0u64;
        while scanned < unread {
            let pos = read.wrapping_add(scanned);
            let off = (pos % self.capacity) as usize;
            let tail = self.capacity as usize - off;
            if tail < FRAME_HEADER {
                scanned += tail as u64;
                continue;
            }
            let mut header = [0u8; FRAME_HEADER];
            self.map.read_bytes(layout::DATA + off, &mut header);
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
            if len == WRAP {
                scanned += tail as u64;
                continue;
            }
            let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            next = next.max(seq.saturating_add(1));
            scanned += layout::frame_size(len as usize) as u64;
        }
        next
    }

    /// Reloads the positions after the supervisor reset the ring (see
    /// [`super::Observer::reset`]); the producer had stopped using it.
    ///
    /// # Errors
    /// Impossible positions (the ring was scribbled on again).
    pub fn resume(&mut self) -> Result<(), RingError> {
        // SYNC: Acquire: pairs with the Release stores in `Observer::reset`.
        self.write = self.map.atomic(layout::OFF_WRITE).load(Ordering::Acquire);
        // SYNC: Acquire: as above.
        let read = self.map.atomic(layout::OFF_READ).load(Ordering::Acquire);
        if self.write.wrapping_sub(read) > self.capacity {
            return Err(RingError::Corrupt {
                seq: self.next_seq,
                what: "positions are more than a ring apart after a reset".into(),
            });
        }
        self.cached_read = read;
        self.next_seq = self.recover_seq(read);
        Ok(())
    }

    /// The sequence number the next frame will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The largest payload this ring carries.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Whether a payload of `len` bytes fits now (a later [`Producer::try_send`]
    /// of it cannot fail with [`SendError::Full`]: only we fill the ring).
    ///
    /// # Errors
    /// [`SendError::TooLarge`], or [`SendError::Corrupt`] for an impossible
    /// read position.
    pub fn has_room(&mut self, len: usize) -> Result<bool, SendError> {
        if len > self.max_message {
            return Err(SendError::TooLarge {
                len,
                max: self.max_message,
            });
        }
        self.room_for(layout::frame_size(len) as u64)
    }

    /// Space check for a frame of `need` bytes (plus a wrap skip), reloading
    /// the read position only when the cached one says no.
    fn room_for(&mut self, need: u64) -> Result<bool, SendError> {
        let off = self.write % self.capacity;
        let tail = self.capacity - off;
        let skip = if need > tail { tail } else { 0 };
        if skip + need <= self.capacity - self.write.wrapping_sub(self.cached_read) {
            return Ok(true);
        }
        // SYNC: Acquire: pairs with the consumer's Release store in
        // `Consumer::commit`: space it released is no longer being read.
        let read = self.map.atomic(layout::OFF_READ).load(Ordering::Acquire);
        let used = self.write.wrapping_sub(read);
        if used > self.capacity {
            return Err(SendError::Corrupt(format!(
                "consumer's read position {read} is beyond the write position {}",
                self.write
            )));
        }
        self.cached_read = read;
        Ok(skip + need <= self.capacity - used)
    }

    /// Writes one frame and publishes it.
    ///
    /// # Errors
    /// [`SendError::TooLarge`] or [`SendError::Full`]; nothing is written then.
    pub fn try_send(&mut self, payload: &[u8]) -> Result<Sent, SendError> {
        if payload.len() > self.max_message {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.max_message,
            });
        }
        let need = layout::frame_size(payload.len()) as u64;
        if !self.room_for(need)? {
            return Err(SendError::Full);
        }
        let off = self.write % self.capacity;
        let tail = self.capacity - off;
        let skip = if need > tail { tail } else { 0 };
        if skip >= FRAME_HEADER as u64 {
            let mut marker = [0u8; FRAME_HEADER];
            marker[0..4].copy_from_slice(&WRAP.to_le_bytes());
            self.map.write_bytes(layout::DATA + off as usize, &marker);
        }
        let start = self.write.wrapping_add(skip);
        let off = (start % self.capacity) as usize;
        let seq = self.next_seq;
        let len = payload.len() as u32;
        let mut header = [0u8; FRAME_HEADER];
        header[0..4].copy_from_slice(&len.to_le_bytes());
        header[4..8].copy_from_slice(&layout::frame_crc(len, seq, payload).to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        self.map.write_bytes(layout::DATA + off, &header);
        self.map
            .write_bytes(layout::DATA + off + FRAME_HEADER, payload);
        self.write = start.wrapping_add(need);
        self.next_seq = self.next_seq.wrapping_add(1);
        // SYNC: Release: pairs with the consumer's Acquire load of the write
        // position: every byte of the frame above is visible before the
        // position that covers it.
        self.map
            .atomic(layout::OFF_WRITE)
            .store(self.write, Ordering::Release);
        // SYNC: Release (the counter is only a restart hint, see recover_seq).
        self.map
            .atomic(layout::OFF_NEXT_SEQ)
            .store(self.next_seq, Ordering::Release);
        // SYNC: AcqRel swap: pairs with the consumer's swap in
        // `Consumer::park` (see there): if it parked before this swap, we
        // read 1 and wake it; otherwise its swap reads ours and sees the
        // write position stored above.
        let wake = self
            .map
            .atomic(layout::OFF_PARKED)
            .swap(0, Ordering::AcqRel)
            == 1;

        Ok(Sent { seq, wake })
    }

    /// Counts a message dropped because the ring was full (`on_full = "drop"`).
    pub fn record_drop(&self) {
        // SYNC: Relaxed: a statistics counter only.
        self.map
            .atomic(layout::OFF_DROPS)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Messages dropped so far.
    pub fn drops(&self) -> u64 {
        // SYNC: Relaxed: a statistics counter only.
        self.map.atomic(layout::OFF_DROPS).load(Ordering::Relaxed)
    }
}
