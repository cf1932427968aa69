//! The unsafe core: a shared mapping of a ring memfd.
//!
//! The peer on the other side may write anything at any time, so the
//! mapping is never turned into a `&[u8]` or `&mut [u8]`. Positions and
//! flags are accessed as atomics (`AtomicU64::from_ptr`, only ever on
//! 8-byte aligned offsets inside the header). Frame bytes are copied in and
//! out with raw-pointer copies, every range bounds-checked first.

use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// A `MAP_SHARED` read-write mapping of a whole ring.
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through
// atomics or bounds-checked raw copies, which are valid from any thread.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd`.
    pub fn map(fd: impl AsFd, len: usize) -> nix::Result<Self> {
        let size = std::num::NonZeroUsize::new(len).ok_or(nix::errno::Errno::EINVAL)?;
        // SAFETY: a fresh shared mapping of a memfd at an address of the
        // kernel's choosing; it aliases no Rust object.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }?;
        Ok(Self {
            base: ptr.cast(),
            len,
        })
    }

    /// Size of the mapping.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The atomic u64 at header `offset`.
    ///
    /// # Panics
    /// If `offset` is not an 8-byte aligned offset inside the header page:
    /// a programming error, never input-dependent.
    pub fn atomic(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= super::layout::DATA.min(self.len));
        // SAFETY: in bounds (checked above), 8-byte aligned (the mapping is
        // page aligned), and the memory lives as long as `self`. Concurrent
        // access by the peer is through atomics too, or is a hostile write
        // to a u64, which an atomic load tolerates.
        let ptr = self.base.as_ptr().wrapping_add(offset).cast::<u64>();
        // SAFETY: see above.
        unsafe { AtomicU64::from_ptr(ptr) }
    }

    /// Copies `out.len()` bytes at `offset` out of the mapping.
    ///
    /// # Panics
    /// If the range is outside the mapping (callers check against the ring's
    /// bounds first; this is the last line).
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let end = offset.checked_add(out.len()).expect("range overflow");
        assert!(end <= self.len, "read past the ring mapping");
        let src = self.base.as_ptr().wrapping_add(offset);
        // SAFETY: the source range is inside the mapping (checked) and the
        // destination is a distinct local buffer. The peer may be writing the
        // same bytes: we copy whatever is there and validate it afterwards
        // (lengths, CRC); no reference to the shared bytes is created.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
    }

    /// Copies `data` into the mapping at `offset`.
    ///
    /// # Panics
    /// If the range is outside the mapping.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) {
        let end = offset.checked_add(data.len()).expect("range overflow");
        assert!(end <= self.len, "write past the ring mapping");
        let dst = self.base.as_ptr().wrapping_add(offset);
        // SAFETY: the destination range is inside the mapping (checked); the
        // source is a distinct local buffer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe our own mapping; nothing refers to it
        // after drop (atomics borrowed from it cannot outlive `self`).
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}
