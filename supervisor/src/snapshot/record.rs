//! One snapshot record on disk. All integers little-endian.
//!
//! ```text
//! 0  magic "EWSNAP01"        8
//! 8  format version u16      (1)
//! 10 module name length u16  (1..=255)
//! 12 payload length u32
//! 16 epoch u64
//! 24 wasm sha256             32
//! 56 header crc32c u32       over bytes 0..56 and the module name
//! 60 module name
//! .. payload
//! .. payload crc32c u32      over the payload
//! ```
//!
//! Two CRCs: a record whose header is intact but whose payload is not is
//! skipped and reported by module and epoch, and the records after it are
//! still reachable; a broken header ends the scan of that segment.

/// `EWSNAP01`.
pub const MAGIC: [u8; 8] = *b"EWSNAP01";
/// Format version written and accepted.
pub const VERSION: u16 = 1;
/// Fixed header size before the module name.
const HEADER: usize = 60;
/// Largest payload accepted (a snapshot is a module's state, not bulk data).
pub const MAX_PAYLOAD: usize = edgeward_ipc::MAX_SNAPSHOT_BYTES;

/// A module's state at one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Module name.
    pub module: String,
    /// sha256 of the wasm that produced it.
    pub wasm_sha256: [u8; 32],
    /// Epoch, monotonic per module.
    pub epoch: u64,
    /// The guest's bytes.
    pub payload: Vec<u8>,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not enough bytes for what the header promises (a torn tail).
    #[error("truncated record")]
    Truncated,
    /// The header is damaged: nothing after it in this segment can be found.
    #[error("damaged record header: {0}")]
    BadHeader(String),
    /// The header is intact, the payload is not: this record is skipped.
    #[error("{module} epoch {epoch}: payload CRC mismatch")]
    BadPayload {
        /// Module named in the header.
        module: String,
        /// Epoch named in the header.
        epoch: u64,
        /// Total size of the record, to continue after it.
        size: usize,
    },
}

impl Record {
    /// Bytes this record takes on disk.
    pub fn encoded_len(&self) -> usize {
        HEADER + self.module.len() + self.payload.len() + 4
    }

    /// Appends the encoding to `out`.
    ///
    /// # Panics
    /// If the module name is empty or longer than 255 bytes, or the payload
    /// over [`MAX_PAYLOAD`]: the store checks both before staging.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!((1..=255).contains(&self.module.len()) && self.payload.len() <= MAX_PAYLOAD);
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.module.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.wasm_sha256);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..]), self.module.as_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(self.module.as_bytes());
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&crc32c::crc32c(&self.payload).to_le_bytes());
    }

    /// Decodes the record at the start of `bytes`; returns it and its size.
    ///
    /// # Errors
    /// See [`RecordError`]; every field is checked before it is used.
    pub fn decode(bytes: &[u8]) -> Result<(Record, usize), RecordError> {
        if bytes.len() < HEADER {
            return Err(RecordError::Truncated);
        }
        if bytes[0..8] != MAGIC {
            return Err(RecordError::BadHeader("bad magic".into()));
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4"));
        let version = u16_at(8);
        let name_len = usize::from(u16_at(10));
        let payload_len = u32_at(12) as usize;
        let epoch = u64::from_le_bytes(bytes[16..24].try_into().expect("8"));
        if bytes.len() < HEADER + name_len {
            return Err(RecordError::Truncated);
        }
        let name = &bytes[HEADER..HEADER + name_len];
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..56]), name);
        if crc != u32_at(56) {
            return Err(RecordError::BadHeader("header CRC mismatch".into()));
        }
        // The header is trustworthy from here on.
        if version != VERSION {
            return Err(RecordError::BadHeader(format!(
                "format version {version}, this edgeward reads {VERSION}"
            )));
        }
        if name_len == 0 || name_len > 255 || payload_len > MAX_PAYLOAD {
            return Err(RecordError::BadHeader("impossible lengths".into()));
        }
        let module = String::from_utf8(name.to_vec())
            .map_err(|_| RecordError::BadHeader("module name is not UTF-8".into()))?;
        let size = HEADER + name_len + payload_len + 4;
        if bytes.len() < size {
            return Err(RecordError::Truncated);
        }
        let payload = &bytes[HEADER + name_len..size - 4];
        if crc32c::crc32c(payload) != u32_at(size - 4) {
            return Err(RecordError::BadPayload {
                module,
                epoch,
                size,
            });
        }
        let mut wasm_sha256 = [0u8; 32];
        wasm_sha256.copy_from_slice(&bytes[24..56]);
        Ok((
            Record {
                module,
                wasm_sha256,
                epoch,
                payload: payload.to_vec(),
            },
            size,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            module: "counter".into(),
            wasm_sha256: [7; 32],
            epoch: 42,
            payload: b"state bytes".to_vec(),
        }
    }

    #[test]
    fn round_trips() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        assert_eq!(bytes.len(), sample().encoded_len());
        assert_eq!(Record::decode(&bytes).unwrap(), (sample(), bytes.len()));
    }

    /// Every byte position, each class of damage: decoding never panics,
    /// never returns a record that differs from the one written.
    #[test]
    fn every_damaged_or_truncated_byte_is_caught() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(
                Record::decode(&bytes[..cut]).unwrap_err(),
                RecordError::Truncated
            );
        }
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                match Record::decode(&damaged) {
                    Ok((record, _)) => panic!("byte {at} ^ {flip:#x} accepted: {record:?}"),
                    Err(RecordError::BadPayload { module, epoch, .. }) => {
                        assert!(at >= 60 + 7, "payload error for a header byte {at}");
                        assert_eq!((module.as_str(), epoch), ("counter", 42));
                    }
                    Err(_) => {}
                }
            }
        }
    }
}
