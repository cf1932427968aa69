//! One side of a ring in its own process, for the crash tests: it is killed
//! with SIGKILL at random points and restarted.
//!
//! - `ring-peer produce N`: attach a producer to the ring on fd 3 and send
//!   until N frames are published in total. Each payload starts with its own
//!   sequence number, followed by a filler derived from it.
//! - `ring-peer consume N`: attach a consumer to the ring on fd 3; for each
//!   frame, append its seq to the file on fd 4 (the "handler"), then commit.
//!   Exit after seq N-1 was handled.
//! - `ring-peer flood N SIZE`: send N frames of SIZE bytes as fast as the
//!   ring allows (bench).
//! - `ring-peer sockflood N SIZE`: send N SIZE-byte messages on the socket on
//!   fd 3 (the bench's baseline).

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

use edgeward_ipc::ring::{Consumer, Producer, SendError};

/// The payload for a sequence number: the number, then 0..200 filler bytes.
fn payload(seq: u64) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.extend((0..(seq % 200) as u8).map(|i| i ^ (seq as u8)));
    p
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: u64 = args.get(1).and_then(|n| n.parse().ok()).expect("count");
    // SAFETY: the test passes the ring memfd as fd 3 (and a file as fd 4);
    // nothing else in this process owns them.
    let ring = unsafe { OwnedFd::from_raw_fd(3) };
    match args.first().map(String::as_str) {
        Some("produce") => {
            let mut producer = Producer::attach(&ring).expect("attach producer");
            loop {
                let seq = producer.next_seq();
                if seq >= total {
                    return;
                }
                match producer.try_send(&payload(seq)) {
                    Ok(_) => {}
                    Err(SendError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        Some("consume") => {
            // SAFETY: see above (fd 4).
            let mut log = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(4) });
            let mut consumer = Consumer::attach(&ring).expect("attach consumer");
            // A predecessor may have handled the last frame and been killed
            // before it could exit.
            if consumer.next_seq() >= total {
                return;
            }
            loop {
                match consumer.peek().expect("ring corrupt") {
                    Some(frame) => {
                        assert_eq!(
                            frame.payload,
                            payload(frame.seq),
                            "payload of seq {}",
                            frame.seq
                        );
                        log.write_all(&frame.seq.to_le_bytes()).expect("log");
                        consumer.commit(&frame);
                        if frame.seq + 1 == total {
                            return;
                        }
                    }
                    None => std::thread::yield_now(),
                }
            }
        }
        Some("flood") => {
            let size: usize = args.get(2).and_then(|n| n.parse().ok()).expect("size");
            let message = vec![0x5a; size];
            let mut producer = Producer::attach(&ring).expect("attach producer");
            let mut sent = 0;
            while sent < total {
                match producer.try_send(&message) {
                    Ok(_) => sent += 1,
                    Err(SendError::Full) => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        Some("sockflood") => {
            let size: usize = args.get(2).and_then(|n| n.parse().ok()).expect("size");
            let message = vec![0x5a; size];
            for _ in 0..total {
                nix::sys::socket::send(
                    std::os::fd::AsRawFd::as_raw_fd(&ring),
                    &message,
                    nix::sys::socket::MsgFlags::empty(),
                )
                .expect("send");
            }
        }
        _ => std::process::exit(64),
    }
}
