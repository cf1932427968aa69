//! Fuzz target: arbitrary bytes as a ring's memory, seen by a consumer
//! (and a producer attaching after it). Whatever the bytes, every call
//! returns — a frame, "empty" or an error — and never panics or reads out
//! of bounds; a frame handed out has a valid length and CRC.
#![no_main]

use edgeward_ipc::ring::{self, Consumer, Producer, RingError};
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::FileExt;

const CAPACITY: u32 = 4096;
const MAX_MESSAGE: u32 = 1024;
/// Header offsets the input may overwrite (positions, flags, sequence
/// numbers), leaving magic and sizes valid so the deep paths are reached;
/// with the first input byte odd, the whole header is overwritten too.
const POSITIONS: [u64; 6] = [64, 128, 192, 256, 320, 384];

fuzz_target!(|data: &[u8]| {
    let Ok(fd) = ring::create("fuzz", CAPACITY, MAX_MESSAGE) else {
        return;
    };
    let file = std::fs::File::from(fd);
    let (head, rest) = data.split_at(data.len().min(48));
    if data.first().is_some_and(|b| b & 1 == 1) {
        let _ = file.write_all_at(rest, 0);
    } else {
        for (i, chunk) in head.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            // Positions near real values reach more code than raw u64s.
            let value = u64::from_le_bytes(word) % (4 * u64::from(CAPACITY));
            let _ = file.write_all_at(&value.to_le_bytes(), POSITIONS[i]);
        }
        let _ = file.write_all_at(&rest[..rest.len().min(CAPACITY as usize)], 4096);
    }
    if let Ok(mut consumer) = Consumer::attach(&file) {
        for _ in 0..64 {
            match consumer.peek() {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= MAX_MESSAGE as usize);
                    consumer.commit(&frame);
                }
                Ok(None) => break,
                Err(RingError::Corrupt { .. }) => break,
                Err(other) => panic!("unexpected error kind: {other}"),
            }
            let _ = consumer.park();
        }
    }
    if let Ok(mut producer) = Producer::attach(&file) {
        for len in [0usize, 7, 100, 1024] {
            let _ = producer.try_send(&vec![0x5a; len]);
        }
    }
});
