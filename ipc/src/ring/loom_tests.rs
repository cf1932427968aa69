//! Model tests of the ring's index protocol with loom: every interleaving
//! (up to a preemption bound) of the real `Producer` and `Consumer` code,
//! with frame bytes checked for data races.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p edgeward-ipc --release --lib loom_tests`
//! (scripts/test does, with its own target dir).

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::layout::{self, MIN_CAPACITY};
use super::mapping::Mapping;
use super::{Consumer, Producer, SendError};

/// Frames of a quarter of the ring: three fit, the fourth wraps.
const BIG: usize = (MIN_CAPACITY / 4) as usize;

fn model_ring() -> Mapping {
    let map = Mapping::model(layout::total_size(MIN_CAPACITY));
    layout::init_header(&map, MIN_CAPACITY, MIN_CAPACITY / 4);
    map
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|b| (b as u8) ^ (i as u8)).collect()
}

/// Preemption bound 2 unless `LOOM_MAX_PREEMPTIONS` says otherwise
/// (scripts/stress raises it).
fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b
}

/// Producer and consumer race through full, wrap-around and empty edges:
/// every frame arrives once, in order, intact, and no byte is read while
/// it may be written.
#[test]
fn frames_arrive_in_order_across_full_wrap_and_empty() {
    builder().check(|| {
        let map = model_ring();
        let sizes = [BIG, BIG, BIG, BIG, 8];
        let producer_map = map.clone();
        let producer = thread::spawn(move || {
            let mut producer = Producer::attach_model(producer_map).unwrap();
            for (i, &len) in sizes.iter().enumerate() {
                loop {
                    match producer.try_send(&payload(i, len)) {
                        Ok(sent) => {
                            assert_eq!(sent.seq, i as u64);
                            break;
                        }
                        Err(SendError::Full) => thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
        let mut consumer = Consumer::attach_model(map).unwrap();
        let mut next = 0;
        while next < sizes.len() {
            match consumer.peek().unwrap() {
                Some(frame) => {
                    assert_eq!(frame.seq, next as u64);
                    assert_eq!(frame.payload, payload(next, sizes[next]));
                    consumer.commit(&frame);
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
    });
}

/// The eventfd, modelled: a counter and a condition variable.
#[derive(Default)]
struct Wake {
    count: Mutex<u64>,
    signal: Condvar,
}

/// The park/wake handshake never loses a wake-up: a consumer that parked
/// and sleeps is always woken by a later frame. (A lost wake-up shows as a
/// deadlock, which loom reports.)
#[test]
fn a_parked_consumer_is_never_left_asleep() {
    builder().check(|| {
        let map = model_ring();
        let wake = Arc::new(Wake::default());
        let producer_map = map.clone();
        let producer_wake = Arc::clone(&wake);
        const FRAMES: usize = 3;
        let producer = thread::spawn(move || {
            let mut producer = Producer::attach_model(producer_map).unwrap();
            for i in 0..FRAMES {
                let sent = producer.try_send(&payload(i, 8)).unwrap();
                if sent.wake {
                    *producer_wake.count.lock().unwrap() += 1;
                    producer_wake.signal.notify_one();
                }
            }
        });
        let mut consumer = Consumer::attach_model(map).unwrap();
        let mut received = 0;
        while received < FRAMES {
            if let Some(frame) = consumer.peek().unwrap() {
                consumer.commit(&frame);
                received += 1;
                continue;
            }
            if consumer.park().unwrap() {
                let mut count = wake.count.lock().unwrap();
                while *count == 0 {
                    count = wake.signal.wait(count).unwrap();
                }
                *count = 0;
            }
        }
        producer.join().unwrap();
    });
}

/// A consumer that "dies" after handling a frame but before committing is
/// replaced by a new one attached to the same memory while the producer
/// keeps writing: the frame comes again with the same seq, nothing is lost.
#[test]
fn a_consumer_restarted_mid_handler_gets_the_frame_again() {
    builder().check(|| {
        let map = model_ring();
        let producer_map = map.clone();
        let producer = thread::spawn(move || {
            let mut producer = Producer::attach_model(producer_map).unwrap();
            for i in 0..3 {
                producer.try_send(&payload(i, 8)).unwrap();
            }
        });
        let first = loop {
            let consumer = Consumer::attach_model(map.clone()).unwrap();
            match consumer.peek().unwrap() {
                Some(frame) => break frame,
                None => thread::yield_now(),
            }
        };
        // Killed here: no commit.
        let mut restarted = Consumer::attach_model(map).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            match restarted.peek().unwrap() {
                Some(frame) => {
                    restarted.commit(&frame);
                    seen.push(frame.seq);
                }
                None => thread::yield_now(),
            }
        }
        assert_eq!(first.seq, 0);
        assert_eq!(seen, vec![0, 1, 2]);
        producer.join().unwrap();
    });
}
