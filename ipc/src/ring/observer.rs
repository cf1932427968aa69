//! The supervisor's view of a ring: metrics for `status`, and the reset
//! after a side reported corruption. The supervisor never reads frames.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::layout;
use super::mapping::Mapping;
use super::RingError;

/// Counters of one ring as its header claims them. Both workers can write
/// the header, so these are a worker's word: clamped, never trusted for
/// anything but display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Bytes written and not yet consumed (0..=capacity).
    pub depth_bytes: u64,
    /// Frames written and not yet consumed.
    pub depth_msgs: u64,
    /// Messages the producer dropped on a full ring.
    pub drops: u64,
    /// Frames the producer has written in total (its next sequence number).
    pub sent: u64,
}

/// A mapping of a ring that only reads its counters, and resets it.
pub struct Observer {
    map: Mapping,
    capacity: u32,
    max_message: u32,
}

impl Observer {
    /// Maps the ring in `fd`, which must have been made by [`super::create`]
    /// with these sizes (the supervisor remembers them; the header is not
    /// trusted for them).
    ///
    /// # Errors
    /// The memfd cannot be mapped, or its size does not match.
    pub fn attach(fd: impl AsFd, capacity: u32, max_message: u32) -> Result<Self, RingError> {
        layout::check_sizes(capacity, max_message)?;
        let map = Mapping::map(fd, layout::total_size(capacity))?;
        Ok(Self {
            map,
            capacity,
            max_message,
        })
    }

    /// The ring's counters (see [`RingStats`] on trust).
    pub fn stats(&self) -> RingStats {
        // SYNC: Relaxed everywhere: a snapshot of counters for display.
        let load = |off| self.map.atomic(off).load(Ordering::Relaxed);
        let write = load(layout::OFF_WRITE);
        let read = load(layout::OFF_READ);
        let sent = load(layout::OFF_NEXT_SEQ);
        let consumed = load(layout::OFF_READ_SEQ);
        RingStats {
            depth_bytes: write.wrapping_sub(read).min(u64::from(self.capacity)),
            depth_msgs: sent
                .saturating_sub(consumed)
                .min(u64::from(self.capacity) / layout::FRAME_HEADER as u64),
            drops: load(layout::OFF_DROPS),
            sent,
        }
    }

    /// Makes the ring empty and valid again, after its peer that did not
    /// report the corruption is dead and the reporting side stopped using
    /// it. The header is rewritten from the sizes the supervisor knows;
    /// sequence numbers continue from the consumer's last committed one, so
    /// a subscriber's view stays monotonic. Unconsumed frames are lost: they
    /// were behind a corrupt frame and cannot be trusted.
    pub fn reset(&self) {
        // SYNC: Relaxed: read by the supervisor only to pick the new base.
        let base = self
            .map
            .atomic(layout::OFF_READ_SEQ)
            .load(Ordering::Relaxed);
        layout::init_header(&self.map, self.capacity, self.max_message);
        // SYNC: Relaxed: published by the Release stores below.
        self.map
            .atomic(layout::OFF_PARKED)
            .store(0, Ordering::Relaxed);
        for (off, value) in [
            (layout::OFF_NEXT_SEQ, base),
            (layout::OFF_READ_SEQ, base),
            (layout::OFF_READ, 0),
            (layout::OFF_WRITE, 0),
        ] {
            // SYNC: Release: pairs with the Acquire loads in
            // `Producer::resume` / `Consumer::resume` and in `attach`.
            self.map.atomic(off).store(value, Ordering::Release);
        }
    }
}
