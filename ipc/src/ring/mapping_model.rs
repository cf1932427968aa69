//! The ring mapping as a loom model (`RUSTFLAGS="--cfg loom"`): the header
//! words are loom atomics and every data byte a loom `UnsafeCell`, so loom
//! checks every interleaving of the real producer and consumer code for
//! ordering bugs and for data races on frame bytes (a copy not ordered
//! after the write it reads is reported as a race).

use std::os::fd::AsFd;
use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU64;

use super::layout::DATA;

struct Inner {
    header: Vec<AtomicU64>,
    data: Vec<UnsafeCell<u8>>,
}

/// A shared model mapping; clones are the two processes' views.
#[derive(Clone)]
pub struct Mapping {
    inner: Arc<Inner>,
    len: usize,
}

impl Mapping {
    /// Not available in the model: rings are made with [`Mapping::model`].
    pub fn map(_fd: impl AsFd, _len: usize) -> nix::Result<Self> {
        Err(nix::errno::Errno::ENOSYS)
    }

    /// A zeroed model ring memory of `len` bytes (header page included).
    pub fn model(len: usize) -> Self {
        let inner = Inner {
            header: (0..DATA / 8).map(|_| AtomicU64::new(0)).collect(),
            data: (0..len - DATA).map(|_| UnsafeCell::new(0)).collect(),
        };
        Self {
            inner: Arc::new(inner),
            len,
        }
    }

    /// Size of the mapping.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The atomic u64 at header `offset`.
    pub fn atomic(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset < DATA);
        &self.inner.header[offset / 8]
    }

    /// Copies bytes out; header bytes are read from the atomics' values.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= self.len, "read past the ring mapping");
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = self.byte(offset + i);
        }
    }

    fn byte(&self, at: usize) -> u8 {
        if at < DATA {
            let word = self.inner.header[at / 8].load(std::sync::atomic::Ordering::Relaxed);
            word.to_le_bytes()[at % 8]
        } else {
            // SAFETY (model): loom checks this read against every write.
            self.inner.data[at - DATA].with(|p| unsafe { *p })
        }
    }

    /// Copies bytes in; header bytes are merged into the atomics.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) {
        assert!(
            offset + data.len() <= self.len,
            "write past the ring mapping"
        );
        for (i, &byte) in data.iter().enumerate() {
            let at = offset + i;
            if at < DATA {
                let word = &self.inner.header[at / 8];
                let mut bytes = word
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_le_bytes();
                bytes[at % 8] = byte;
                word.store(
                    u64::from_le_bytes(bytes),
                    std::sync::atomic::Ordering::Relaxed,
                );
            } else {
                // SAFETY (model): loom checks this write against every access.
                self.inner.data[at - DATA].with_mut(|p| unsafe { *p = byte });
            }
        }
    }
}
