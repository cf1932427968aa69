//! Byte layout of a ring: header fields, frame header, sizes.

use super::mapping::Mapping;
use super::RingError;

/// `EWRING01` in little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"EWRING01");
/// Layout version.
pub const VERSION: u32 = 1;

/// Header offsets. Each field the two sides write lives on its own cache line.
pub const OFF_MAGIC: usize = 0;
/// Layout version (u32).
pub const OFF_VERSION: usize = 8;
/// Data capacity in bytes (u32).
pub const OFF_CAPACITY: usize = 12;
/// Largest payload (u32).
pub const OFF_MAX_MESSAGE: usize = 16;
/// Producer's published write position (u64).
pub const OFF_WRITE: usize = 64;
/// Consumer's published read position (u64).
pub const OFF_READ: usize = 128;
/// Consumer says it sleeps on the eventfd (u64: 0 or 1).
pub const OFF_PARKED: usize = 192;
/// Producer's next sequence number (u64), so a restarted producer continues.
pub const OFF_NEXT_SEQ: usize = 256;
/// Frames dropped by the producer (`on_full = "drop"`) (u64).
pub const OFF_DROPS: usize = 320;
/// Consumer's next expected sequence number, published with its read position (u64).
pub const OFF_READ_SEQ: usize = 384;
/// The data region starts on its own page.
pub const DATA: usize = 4096;

/// Frame header: len u32 | crc32c u32 | seq u64.
pub const FRAME_HEADER: usize = 16;
/// `len` value marking "the rest of the data region is unused; go to 0".
pub const WRAP: u32 = u32::MAX;

/// Smallest capacity.
pub const MIN_CAPACITY: u32 = 4096;
/// Largest capacity.
pub const MAX_CAPACITY: u32 = 64 << 20;

/// Bytes a frame with `len` payload bytes occupies.
pub fn frame_size(len: usize) -> usize {
    FRAME_HEADER + len.div_ceil(8) * 8
}

/// memfd size for a capacity.
pub fn total_size(capacity: u32) -> usize {
    DATA + capacity as usize
}

/// Checks creation sizes.
pub fn check_sizes(capacity: u32, max_message: u32) -> Result<(), RingError> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(RingError::Invalid(format!(
            "capacity {capacity} must be a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}"
        )));
    }
    if max_message == 0 || max_message > capacity / 4 {
        return Err(RingError::Invalid(format!(
            "max message {max_message} must be 1..={} (a quarter of the capacity)",
            capacity / 4
        )));
    }
    Ok(())
}

/// Writes a fresh header (positions zero).
pub fn init_header(map: &Mapping, capacity: u32, max_message: u32) {
    map.write_bytes(OFF_VERSION, &VERSION.to_le_bytes());
    map.write_bytes(OFF_CAPACITY, &capacity.to_le_bytes());
    map.write_bytes(OFF_MAX_MESSAGE, &max_message.to_le_bytes());
    // SYNC: Release: the fields above are visible to whoever sees the magic.
    map.atomic(OFF_MAGIC)
        .store(MAGIC, std::sync::atomic::Ordering::Release);
}

/// The sizes a mapped ring claims, checked against the mapping.
pub fn read_sizes(map: &Mapping) -> Result<(u32, u32), RingError> {
    // SYNC: Acquire: pairs with the Release store of the magic in `init_header`.
    let magic = map
        .atomic(OFF_MAGIC)
        .load(std::sync::atomic::Ordering::Acquire);
    if magic != MAGIC {
        return Err(RingError::Invalid("bad magic".into()));
    }
    let mut word = [0u8; 4];
    map.read_bytes(OFF_VERSION, &mut word);
    if u32::from_le_bytes(word) != VERSION {
        return Err(RingError::Invalid(format!(
            "layout version {}",
            u32::from_le_bytes(word)
        )));
    }
    map.read_bytes(OFF_CAPACITY, &mut word);
    let capacity = u32::from_le_bytes(word);
    map.read_bytes(OFF_MAX_MESSAGE, &mut word);
    let max_message = u32::from_le_bytes(word);
    check_sizes(capacity, max_message)?;
    if total_size(capacity) != map.len() {
        return Err(RingError::Invalid(format!(
            "capacity {capacity} does not match the memfd size {}",
            map.len()
        )));
    }
    Ok((capacity, max_message))
}

/// Maps the whole ring in `fd` and checks its header: what both sides do
/// first on attach. Returns the mapping, the capacity and the max message.
pub fn attach(fd: impl std::os::fd::AsFd) -> Result<(Mapping, u32, u32), RingError> {
    let len = nix::sys::stat::fstat(fd.as_fd())?.st_size as usize;
    let map = Mapping::map(fd, len)?;
    let (capacity, max_message) = read_sizes(&map)?;
    Ok((map, capacity, max_message))
}

/// The CRC32C a frame carries: over len, seq and payload.
pub fn frame_crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &seq.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}
