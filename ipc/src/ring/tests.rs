//! Ring behaviour in one process (two independent mappings of one memfd,
//! as two workers would have), plus property tests with hostile memory.

use std::os::fd::{AsFd, OwnedFd};

use proptest::prelude::*;

use super::layout::{self, DATA, FRAME_HEADER, OFF_WRITE};
use super::mapping::Mapping;
use super::*;

fn ring(capacity: u32, max: u32) -> OwnedFd {
    create("test-ring", capacity, max).unwrap()
}

fn drain(consumer: &mut Consumer) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(frame) = consumer.peek().unwrap() {
        consumer.commit(&frame);
        out.push((frame.seq, frame.payload));
    }
    out
}

#[test]
fn messages_arrive_in_order_across_many_wraps() {
    let fd = ring(4096, 1024);
    let mut producer = Producer::attach(&fd).unwrap();
    let mut consumer = Consumer::attach(&fd).unwrap();
    let mut next_expected = 0u64;
    for round in 0..2000u32 {
        let len = (round as usize * 37) % 700;
        let payload: Vec<u8> = (0..len).map(|i| (i as u32 ^ round) as u8).collect();
        match producer.try_send(&payload) {
            Ok(sent) => assert_eq!(sent.seq, u64::from(round)),
            Err(SendError::Full) => {
                for (seq, _) in drain(&mut consumer) {
                    assert_eq!(seq, next_expected);
                    next_expected += 1;
                }
                producer.try_send(&payload).unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
    for (seq, _) in drain(&mut consumer) {
        assert_eq!(seq, next_expected);
        next_expected += 1;
    }
    assert_eq!(next_expected, 2000);
}

#[test]
fn payloads_round_trip_exactly() {
    let fd = ring(8192, 2048);
    let mut producer = Producer::attach(&fd).unwrap();
    let mut consumer = Consumer::attach(&fd).unwrap();
    let messages: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; i * 13]).collect();
    let mut received = Vec::new();
    for m in &messages {
        if producer.try_send(m) == Err(SendError::Full) {
            received.extend(drain(&mut consumer).into_iter().map(|(_, p)| p));
            producer.try_send(m).unwrap();
        }
    }
    received.extend(drain(&mut consumer).into_iter().map(|(_, p)| p));
    assert_eq!(received, messages);
}

#[test]
fn a_full_ring_refuses_and_accepts_again_after_consumption() {
    let fd = ring(4096, 1024);
    let mut producer = Producer::attach(&fd).unwrap();
    let mut consumer = Consumer::attach(&fd).unwrap();
    let mut sent = 0;
    while producer.try_send(&[7u8; 100]).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 4096 / layout::frame_size(100));
    assert_eq!(producer.try_send(&[7u8; 100]), Err(SendError::Full));
    let frame = consumer.peek().unwrap().unwrap();
    consumer.commit(&frame);
    producer.try_send(&[7u8; 100]).unwrap();
    assert_eq!(drain(&mut consumer).len(), sent);
}

#[test]
fn oversized_messages_are_refused_never_truncated() {
    let fd = ring(4096, 512);
    let mut producer = Producer::attach(&fd).unwrap();
    assert_eq!(
        producer.try_send(&[0u8; 513]),
        Err(SendError::TooLarge { len: 513, max: 512 })
    );
    let consumer = Consumer::attach(&fd).unwrap();
    assert_eq!(consumer.peek().unwrap(), None);
}

#[test]
fn an_uncommitted_frame_is_redelivered_to_a_restarted_consumer() {
    let fd = ring(4096, 1024);
    let mut producer = Producer::attach(&fd).unwrap();
    for i in 0..5u8 {
        producer.try_send(&[i; 10]).unwrap();
    }
    let mut consumer = Consumer::attach(&fd).unwrap();
    let first = consumer.peek().unwrap().unwrap();
    consumer.commit(&first);
    let second = consumer.peek().unwrap().unwrap();
    drop(consumer); // crashed in the handler of `second`
    let mut restarted = Consumer::attach(&fd).unwrap();
    let again = restarted.peek().unwrap().unwrap();
    assert_eq!(again, second, "the in-flight frame comes again, same seq");
    let rest = drain(&mut restarted);
    assert_eq!(
        rest.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

#[test]
fn a_batch_read_ahead_is_released_by_one_commit_and_redelivered_whole_if_not() {
    let fd = ring(4096, 1024);
    let mut producer = Producer::attach(&fd).unwrap();
    for i in 0..40u8 {
        producer.try_send(&[i; 50]).unwrap();
    }
    let read_batch = |consumer: &Consumer, max: usize| {
        let mut batch: Vec<Frame> = Vec::new();
        while batch.len() < max {
            match consumer.peek_after(batch.last()).unwrap() {
                Some(frame) => batch.push(frame),
                None => break,
            }
        }
        batch
    };
    let consumer = Consumer::attach(&fd).unwrap();
    let batch = read_batch(&consumer, 10);
    assert_eq!(
        batch.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(batch[9].payload, vec![9u8; 50]);
    drop(consumer); // died before committing: the whole batch comes again
    let mut restarted = Consumer::attach(&fd).unwrap();
    let again = read_batch(&restarted, 10);
    assert_eq!(again, batch);
    restarted.commit(again.last().unwrap());
    let rest = drain(&mut restarted);
    assert_eq!(rest.first().map(|(s, _)| *s), Some(10));
    assert_eq!(rest.len(), 30);
    // Room came back for the producer: the ring wraps under read-ahead too.
    for round in 0..200u32 {
        producer.try_send(&round.to_le_bytes()).unwrap();
        if round % 7 == 6 {
            let batch = read_batch(&restarted, 100);
            assert_eq!(batch.len(), 7);
            restarted.commit(batch.last().unwrap());
        }
    }
}

#[test]
fn a_restarted_producer_continues_the_sequence() {
    let fd = ring(4096, 1024);
    let mut consumer = Consumer::attach(&fd).unwrap();
    let mut producer = Producer::attach(&fd).unwrap();
    producer.try_send(b"a").unwrap();
    producer.try_send(b"b").unwrap();
    drop(producer);
    // Simulate a crash between publishing a frame and bumping the counter.
    let mut producer = Producer::attach(&fd).unwrap();
    producer.try_send(b"c").unwrap();
    let map = Mapping::map(&fd, layout::total_size(4096)).unwrap();
    map.atomic(layout::OFF_NEXT_SEQ)
        .store(2, std::sync::atomic::Ordering::SeqCst);
    drop(producer);
    let mut producer = Producer::attach(&fd).unwrap();
    assert_eq!(producer.try_send(b"d").unwrap().seq, 3);
    let got = drain(&mut consumer);
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    // And after everything was consumed, the consumer's expectation wins.
    map.atomic(layout::OFF_NEXT_SEQ)
        .store(0, std::sync::atomic::Ordering::SeqCst);
    drop(producer);
    let mut producer = Producer::attach(&fd).unwrap();
    assert_eq!(producer.try_send(b"e").unwrap().seq, 4);
    assert_eq!(drain(&mut consumer).len(), 1);
}

#[test]
fn an_unpublished_frame_is_invisible() {
    let fd = ring(4096, 1024);
    let consumer = Consumer::attach(&fd).unwrap();
    // A producer died after writing a frame but before publishing it: the
    // bytes are there, the write position is not.
    let map = Mapping::map(&fd, layout::total_size(4096)).unwrap();
    map.write_bytes(
        DATA,
        &[
            5, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5,
        ],
    );
    assert_eq!(consumer.peek().unwrap(), None);
}

#[test]
fn hostile_memory_is_reported_not_trusted() {
    let capacity = 4096;
    let setup = || {
        let fd = ring(capacity, 1024);
        let mut producer = Producer::attach(&fd).unwrap();
        producer.try_send(b"hello ring").unwrap();
        let map = Mapping::map(&fd, layout::total_size(capacity)).unwrap();
        (fd, map)
    };
    // A flipped payload byte: bad CRC.
    let (fd, map) = setup();
    map.write_bytes(DATA + 16, b"J");
    let err = Consumer::attach(&fd).unwrap().peek().unwrap_err();
    assert!(
        matches!(&err, RingError::Corrupt { what, .. } if what.contains("CRC")),
        "{err}"
    );
    // An impossible length.
    let (fd, map) = setup();
    map.write_bytes(DATA, &100_000u32.to_le_bytes());
    let err = Consumer::attach(&fd).unwrap().peek().unwrap_err();
    assert!(
        matches!(&err, RingError::Corrupt { what, .. } if what.contains("exceeds")),
        "{err}"
    );
    // A write position more than a ring ahead.
    let (fd, map) = setup();
    map.atomic(OFF_WRITE)
        .store(1 << 40, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        Consumer::attach(&fd),
        Err(RingError::Corrupt { .. })
    ));
    // A length that runs past the published bytes.
    let (fd, map) = setup();
    map.write_bytes(DATA, &1000u32.to_le_bytes());
    let err = Consumer::attach(&fd).unwrap().peek().unwrap_err();
    assert!(
        matches!(&err, RingError::Corrupt { what, .. } if what.contains("past the write position")),
        "{err}"
    );
    // A sequence number from the past (further back than one redelivery).
    let (fd, map) = setup();
    let mut producer = Producer::attach(&fd).unwrap();
    producer.try_send(b"second").unwrap();
    let mut c = Consumer::attach(&fd).unwrap();
    for _ in 0..2 {
        let f = c.peek().unwrap().unwrap();
        c.commit(&f);
    }
    map.atomic(layout::OFF_READ)
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let err = Consumer::attach(&fd).unwrap().peek().unwrap_err();
    assert!(
        matches!(&err, RingError::Corrupt { what, .. } if what.contains("carries seq 0")),
        "{err}"
    );
}

#[test]
fn a_consumer_killed_inside_commit_gets_its_frame_again() {
    let fd = ring(4096, 1024);
    let mut producer = Producer::attach(&fd).unwrap();
    producer.try_send(b"one").unwrap();
    producer.try_send(b"two").unwrap();
    // Killed after publishing its expectation (1) but before its read position.
    let map = Mapping::map(&fd, layout::total_size(4096)).unwrap();
    map.atomic(layout::OFF_READ_SEQ)
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let mut consumer = Consumer::attach(&fd).unwrap();
    let got = drain(&mut consumer);
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn a_parked_consumer_is_woken_once_per_park() {
    let fd = ring(4096, 1024);
    let mut producer = Producer::attach(&fd).unwrap();
    let mut consumer = Consumer::attach(&fd).unwrap();
    assert!(!producer.try_send(b"x").unwrap().wake, "nobody parked");
    assert!(
        !consumer.park().unwrap(),
        "must not sleep with a frame waiting"
    );
    drain(&mut consumer);
    assert!(consumer.park().unwrap());
    assert!(
        producer.try_send(b"y").unwrap().wake,
        "first frame after park wakes"
    );
    assert!(!producer.try_send(b"z").unwrap().wake, "one wake per batch");
}

#[test]
fn bad_sizes_and_foreign_memfds_are_refused() {
    assert!(matches!(create("r", 5000, 100), Err(RingError::Invalid(_))));
    assert!(matches!(
        create("r", 4096, 2048),
        Err(RingError::Invalid(_))
    ));
    let foreign: OwnedFd =
        nix::sys::memfd::memfd_create("x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    nix::unistd::ftruncate(&foreign, 8192).unwrap();
    assert!(matches!(
        Consumer::attach(foreign.as_fd()),
        Err(RingError::Invalid(_))
    ));
    // Sealed: neither side can resize the ring under the other.
    let fd = ring(4096, 1024);
    assert!(nix::unistd::ftruncate(&fd, 100).is_err());
}

proptest! {
    #[test]
    fn any_message_sequence_round_trips(sizes in proptest::collection::vec(0usize..=1024, 1..200)) {
        let fd = ring(8192, 1024);
        let mut producer = Producer::attach(&fd).unwrap();
        let mut consumer = Consumer::attach(&fd).unwrap();
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let payload = vec![(i % 251) as u8; *size];
            if producer.try_send(&payload) == Err(SendError::Full) {
                got.extend(drain(&mut consumer).into_iter().map(|(_, p)| p));
                producer.try_send(&payload).unwrap();
            }
            expected.push(payload);
        }
        got.extend(drain(&mut consumer).into_iter().map(|(_, p)| p));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_ring_memory_never_panics_and_only_valid_frames_pass(
        garbage in proptest::collection::vec(any::<u8>(), 0..4096),
        at in 0usize..4096,
        write in any::<u64>(),
        read in any::<u64>(),
    ) {
        let fd = ring(4096, 1024);
        let map = Mapping::map(&fd, layout::total_size(4096)).unwrap();
        let end = (at + garbage.len()).min(4096);
        map.write_bytes(DATA + at, &garbage[..end - at]);
        map.atomic(OFF_WRITE).store(write, std::sync::atomic::Ordering::SeqCst);
        map.atomic(layout::OFF_READ).store(read, std::sync::atomic::Ordering::SeqCst);
        if let Ok(consumer) = Consumer::attach(&fd) {
            if let Ok(Some(frame)) = consumer.peek() {
                // Anything delivered carries a matching CRC and fits the limits.
                prop_assert!(frame.payload.len() <= 1024);
            }
        }
    }
}

#[test]
fn single_copy_path_checks_length_and_crc() {
    let fd = ring(4096, 1024);
    let mut producer = Producer::attach(&fd).unwrap();
    let mut consumer = Consumer::attach(&fd).unwrap();
    producer.try_send(b"hello ring").unwrap();
    let pending = consumer.next_frame().unwrap().unwrap();
    assert_eq!((pending.seq, pending.len), (0, 10));
    let mut wrong = [0u8; 3];
    assert!(consumer.read_payload(&pending, &mut wrong).is_err());
    let mut out = [0u8; 10];
    consumer.read_payload(&pending, &mut out).unwrap();
    assert_eq!(&out, b"hello ring");
    consumer.commit_pending(&pending);
    assert_eq!(consumer.next_frame().unwrap(), None);

    // A payload changed after the header was checked fails its CRC.
    producer.try_send(b"second").unwrap();
    let pending = consumer.next_frame().unwrap().unwrap();
    let map = Mapping::map(&fd, layout::total_size(4096)).unwrap();
    map.write_bytes(DATA + layout::frame_size(10) + FRAME_HEADER, b"X");
    let mut out = [0u8; 6];
    assert!(matches!(
        consumer.read_payload(&pending, &mut out),
        Err(RingError::Corrupt { seq: 1, .. })
    ));
}

#[test]
fn has_room_agrees_with_try_send() {
    let fd = ring(4096, 1024);
    let mut producer = Producer::attach(&fd).unwrap();
    let mut sent = 0;
    while producer.has_room(1000).unwrap() {
        producer.try_send(&[1u8; 1000]).unwrap();
        sent += 1;
    }
    assert_eq!(sent, 4096 / layout::frame_size(1000));
    assert_eq!(producer.try_send(&[1u8; 1000]), Err(SendError::Full));
    assert!(matches!(
        producer.has_room(5000),
        Err(SendError::TooLarge { .. })
    ));
}

#[test]
fn observer_counts_and_reset_lets_both_sides_resume() {
    let fd = ring(4096, 512);
    let observer = Observer::attach(&fd, 4096, 512).unwrap();
    let mut producer = Producer::attach(&fd).unwrap();
    let mut consumer = Consumer::attach(&fd).unwrap();
    for i in 0..5u8 {
        producer.try_send(&[i; 40]).unwrap();
    }
    let frame = consumer.peek().unwrap().unwrap();
    consumer.commit(&frame);
    producer.record_drop();
    let stats = observer.stats();
    assert_eq!(stats.depth_msgs, 4);
    assert_eq!(stats.depth_bytes, 4 * layout::frame_size(40) as u64);
    assert_eq!((stats.drops, stats.sent), (1, 5));

    // Scribble, detect, reset, resume: sequence numbers continue from the
    // consumer's last commit, the scribbled frames are gone.
    let map = Mapping::map(&fd, layout::total_size(4096)).unwrap();
    map.write_bytes(DATA + layout::frame_size(40), &[0xff; 16]);
    assert!(consumer.peek().is_err());
    observer.reset();
    consumer.resume().unwrap();
    producer.resume().unwrap();
    assert_eq!(observer.stats().depth_msgs, 0);
    assert_eq!(producer.next_seq(), 1);
    producer.try_send(b"after").unwrap();
    let frame = consumer.peek().unwrap().unwrap();
    assert_eq!((frame.seq, frame.payload.as_slice()), (1, &b"after"[..]));
}

#[test]
fn verify_finds_a_bad_frame_anywhere_and_changes_nothing() {
    let fd = ring(4096, 256);
    let mut producer = Producer::attach(&fd).unwrap();
    for i in 0..20u8 {
        producer.try_send(&[i; 40]).unwrap();
    }
    // Intact: every waiting frame is checked, nothing is consumed.
    assert_eq!(verify(&fd).unwrap(), 20);
    assert_eq!(verify(&fd).unwrap(), 20);
    let mut consumer = Consumer::attach(&fd).unwrap();
    let first = consumer.peek().unwrap().unwrap();
    assert_eq!(first.seq, 0);
    consumer.commit(&first);
    assert_eq!(verify(&fd).unwrap(), 19);
    // A flipped byte in the last frame's payload is found, though the
    // consumer would reach it only after 18 good ones.
    let map = Mapping::map(&fd, layout::total_size(4096)).unwrap();
    let last_payload = DATA + 19 * layout::frame_size(40) + FRAME_HEADER;
    map.write_bytes(last_payload, b"!");
    let err = verify(&fd).unwrap_err();
    assert!(
        matches!(&err, RingError::Corrupt { what, seq } if what.contains("CRC") && *seq == 19),
        "{err}"
    );
    // And the real consumer still gets the 18 good ones first.
    for seq in 1..19 {
        let frame = consumer.peek().unwrap().unwrap();
        assert_eq!(frame.seq, seq);
        consumer.commit(&frame);
    }
    assert!(consumer.peek().is_err());
}
