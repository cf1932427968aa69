//! Rings across processes that are killed with SIGKILL at random points.
//!
//! - Producer killed mid-write, 1000 times: the consumer never accepts a torn
//!   frame and sees gap-free sequence numbers with the right payloads.
//! - Consumer killed mid-handler, repeatedly: after each restart every
//!   message not yet handled arrives; nothing is lost, and at most the one
//!   in flight is handled twice.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Child;
use std::time::Duration;

use edgeward_ipc::ring::{create, Consumer};
use edgeward_tests::{bin, command_with_fds};

/// A tiny deterministic PRNG (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn peer(mode: &str, count: u64, ring: &OwnedFd, extra: Option<&OwnedFd>) -> Child {
    let mut fds = vec![ring.as_raw_fd()];
    fds.extend(extra.map(|f| f.as_raw_fd()));
    command_with_fds(&bin("ring-peer"), &fds)
        .arg(mode)
        .arg(count.to_string())
        .spawn()
        .expect("start ring-peer")
}

fn kill_after(mut child: Child, micros: u64) {
    std::thread::sleep(Duration::from_micros(micros));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_producer_killed_at_random_points_never_leaves_a_torn_frame() {
    let ring = create("crash-producer", 16 * 1024, 1024).unwrap();
    let mut consumer = Consumer::attach(&ring).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let total = u64::MAX / 2; // never finishes on its own: always killed
    let mut expected = 0u64;
    for _ in 0..1000 {
        let producer = peer("produce", total, &ring, None);
        kill_after(producer, rng.next() % 3000);
        // Everything published so far must be whole and in order.
        while let Some(frame) = consumer
            .peek()
            .expect("a torn or corrupt frame was visible")
        {
            assert_eq!(frame.seq, expected, "gap in sequence numbers");
            let mut want = frame.seq.to_le_bytes().to_vec();
            want.extend((0..(frame.seq % 200) as u8).map(|i| i ^ (frame.seq as u8)));
            assert_eq!(frame.payload, want, "payload of seq {}", frame.seq);
            consumer.commit(&frame);
            expected += 1;
        }
    }
    assert!(
        expected > 1000,
        "producers published only {expected} frames"
    );
}

#[test]
fn a_consumer_killed_at_random_points_loses_nothing() {
    let total = 20_000u64;
    let ring = create("crash-consumer", 16 * 1024, 1024).unwrap();
    let log_path = tempfile::NamedTempFile::new().unwrap();
    let log: OwnedFd = std::fs::OpenOptions::new()
        .append(true)
        .open(log_path.path())
        .unwrap()
        .into();
    let producer = peer("produce", total, &ring, None);
    let mut rng = Rng(0x0bad_cafe_f00d_0001);
    // 300 consumers killed at random moments, then one left to finish.
    const KILLS: u32 = 300;
    let mut kills = 0;
    loop {
        let mut consumer = peer("consume", total, &ring, Some(&log));
        if kills == KILLS {
            let status = consumer.wait().unwrap();
            assert!(status.success(), "consumer failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 2000));
        if let Ok(Some(status)) = consumer.try_wait() {
            assert!(status.success(), "consumer failed: {status}");
            break;
        }
        let _ = consumer.kill();
        let _ = consumer.wait();
        kills += 1;
    }
    drop(producer);
    let bytes = std::fs::read(log_path.path()).unwrap();
    let handled: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // Every message handled at least once, in order; a seq may repeat only
    // right after itself (the one in flight when a consumer was killed).
    let mut next = 0u64;
    let mut duplicates = 0;
    for &seq in &handled {
        if seq + 1 == next {
            duplicates += 1;
            continue;
        }
        assert_eq!(seq, next, "lost or reordered message");
        next += 1;
    }
    assert_eq!(next, total, "not every message was handled");
    assert!(
        duplicates <= kills,
        "{duplicates} duplicates for {kills} kills"
    );
    assert!(
        kills > 0,
        "the consumer was never killed: test proves nothing"
    );
}
