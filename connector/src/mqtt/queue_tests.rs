//! The durable queue on its own: order, torn tails, corruption, the ack
//! cursor, limits, disk use, and crashes (a real `kill -9` of a process
//! appending to it, and power cuts on the test kit's power-cut disk).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeward_tests::power_cut::PowerCutDisk;

use super::{Limits, Message, Queue, WhenFull};

fn limits() -> Limits {
    Limits {
        max_messages: 1_000_000,
        max_bytes: 1 << 30,
        max_age_us: 86_400_000_000,
        when_full: WhenFull::DropOldest,
    }
}

/// The message stored with id `id` in these tests: its content is a
/// function of the id, so any record read back can be checked.
fn message(id: u64) -> Message {
    Message {
        qos: (id % 2) as u8,
        retain: id.is_multiple_of(5),
        time_us: super::now_us(),
        topic: format!("plant/gw/t{}", id % 3),
        payload: format!("payload-{id};")
            .repeat(1 + (id % 7) as usize)
            .into_bytes(),
    }
}

fn check(queue: &mut Queue, id: u64) {
    let got = queue.read(id).unwrap_or_else(|e| panic!("read {id}: {e}"));
    let want = message(id);
    assert_eq!(
        (got.qos, got.retain, &got.topic, &got.payload),
        (want.qos, want.retain, &want.topic, &want.payload),
        "record {id}"
    );
}

/// Every queued id, oldest first.
fn ids(queue: &Queue) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(id) = queue.next_from(at) {
        out.push(id);
        at = id + 1;
    }
    out
}

/// Appends messages `from..to` (ids match when the queue's next id is `from`).
fn append(queue: &mut Queue, from: u64, to: u64) {
    assert_eq!(queue.next_id(), from);
    let batch: Vec<Message> = (from..to).map(message).collect();
    let appended = queue.append(&batch).expect("append");
    assert_eq!(appended.stored, to - from);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

#[test]
fn messages_come_back_in_order_and_acked_ones_stay_gone_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    append(&mut queue, 0, 10);
    append(&mut queue, 10, 25);
    assert_eq!(queue.len(), 25);
    for id in 0..25 {
        check(&mut queue, id);
    }
    // Acks out of order: the head moves only past a contiguous prefix.
    assert!(queue.ack(1));
    assert_eq!(queue.head(), 0);
    assert!(queue.ack(0));
    assert_eq!(queue.head(), 2);
    for id in 2..10 {
        queue.ack(id);
    }
    assert!(queue.ack(12));
    assert!(
        !queue.ack(12),
        "a second ack of the same message is ignored"
    );
    queue.persist().unwrap();
    drop(queue);

    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    // 12 was acked out of order, above the cursor: it comes back (at least
    // once), everything below the cursor does not.
    assert_eq!(ids(&queue), (10..25).collect::<Vec<_>>());
    for id in 10..25 {
        check(&mut queue, id);
    }
    // New ids continue after the old ones.
    append(&mut queue, 25, 27);
    assert_eq!(queue.len(), 17);
}

#[test]
fn a_torn_tail_is_cut_off_and_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    append(&mut queue, 0, 5);
    append(&mut queue, 5, 8);
    drop(queue);
    let seg = segments(dir.path()).pop().unwrap();
    let full = std::fs::metadata(&seg).unwrap().len();
    // A crash in the middle of the last record's write.
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(full - 7).unwrap();
    drop(file);

    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    assert_eq!(ids(&queue), (0..7).collect::<Vec<_>>());
    for id in 0..7 {
        check(&mut queue, id);
    }
    // The next append never reuses the torn id's place in a way that reads
    // back wrong, and everything survives another reopen.
    append(&mut queue, 7, 9);
    drop(queue);
    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    assert_eq!(ids(&queue), (0..9).collect::<Vec<_>>());
    for id in 0..9 {
        check(&mut queue, id);
    }

    // A tail of zeros (a file extended but never written, as after a
    // power cut on some file systems) is cut off too.
    drop(queue);
    let seg = segments(dir.path()).pop().unwrap();
    let file = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut &file, &[0u8; 4096]).unwrap();
    drop(file);
    let queue = Queue::open(dir.path(), limits()).unwrap();
    assert_eq!(ids(&queue), (0..9).collect::<Vec<_>>());
}

#[test]
fn a_corrupt_record_is_detected_by_its_crc_and_cut_with_the_rest_of_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    append(&mut queue, 0, 6);
    drop(queue);
    // A second segment: a new process always starts one.
    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    append(&mut queue, 6, 9);
    drop(queue);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2);
    // Flip one payload bit of record 3 in the first segment.
    let mut data = std::fs::read(&segs[0]).unwrap();
    let needle = b"payload-3;";
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    data[at + 2] ^= 0x20;
    std::fs::write(&segs[0], &data).unwrap();

    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    // 0..3 intact; 3, 4, 5 lost with a log line; the later segment intact.
    assert_eq!(ids(&queue), vec![0, 1, 2, 6, 7, 8]);
    for id in [0, 1, 2, 6, 7, 8] {
        check(&mut queue, id);
    }

    // Damage after opening is caught when the record is read back.
    let segs = segments(dir.path());
    let mut data = std::fs::read(&segs[1]).unwrap();
    let needle = b"payload-7;";
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    data[at] = b'P';
    std::fs::write(&segs[1], &data).unwrap();
    let err = queue.read(7).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    check(&mut queue, 8);
}

#[test]
fn the_ack_cursor_survives_crashes_in_its_replacement_and_damage_means_resend_not_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    append(&mut queue, 0, 10);
    for id in 0..4 {
        queue.ack(id);
    }
    queue.persist().unwrap();
    // Acked but not persisted yet when the process dies.
    for id in 4..6 {
        queue.ack(id);
    }
    drop(queue);
    // A crash while writing the next cursor left a partial temporary file.
    std::fs::write(dir.path().join("acked.tmp"), b"EWQ1\x09").unwrap();

    let queue = Queue::open(dir.path(), limits()).unwrap();
    assert_eq!(
        ids(&queue),
        (4..10).collect::<Vec<_>>(),
        "old cursor stands"
    );
    assert!(!dir.path().join("acked.tmp").exists());
    drop(queue);

    // A damaged cursor: every stored message is sent again, none lost.
    let cursor = dir.path().join("acked");
    let mut data = std::fs::read(&cursor).unwrap();
    data[5] ^= 1;
    std::fs::write(&cursor, &data).unwrap();
    let mut queue = Queue::open(dir.path(), limits()).unwrap();
    assert_eq!(ids(&queue), (0..10).collect::<Vec<_>>());
    check(&mut queue, 0);
}

#[test]
fn a_full_queue_drops_the_oldest_or_the_newest_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let mut oldest = limits();
    oldest.max_messages = 5;
    let mut queue = Queue::open(&dir.path().join("oldest"), oldest).unwrap();
    append(&mut queue, 0, 3);
    let batch: Vec<Message> = (3..8).map(message).collect();
    let appended = queue.append(&batch).unwrap();
    assert_eq!((appended.stored, appended.dropped), (5, 3));
    assert_eq!(ids(&queue), (3..8).collect::<Vec<_>>());
    drop(queue);
    let queue = Queue::open(&dir.path().join("oldest"), oldest).unwrap();
    assert_eq!(
        ids(&queue),
        (3..8).collect::<Vec<_>>(),
        "drops survive a restart"
    );

    let mut newest = limits();
    newest.max_messages = 5;
    newest.when_full = WhenFull::DropNewest;
    let mut queue = Queue::open(&dir.path().join("newest"), newest).unwrap();
    append(&mut queue, 0, 3);
    let batch: Vec<Message> = (3..8).map(message).collect();
    let appended = queue.append(&batch).unwrap();
    assert_eq!((appended.stored, appended.dropped), (2, 3));
    assert_eq!(ids(&queue), (0..5).collect::<Vec<_>>());
    for id in 0..5 {
        check(&mut queue, id);
    }

    // Bytes: room for exactly two of these.
    let big = |n: u8| Message {
        qos: 1,
        retain: false,
        time_us: super::now_us(),
        topic: "t".into(),
        payload: vec![n; 1000],
    };
    let mut by_bytes = limits();
    by_bytes.max_bytes = 2 * big(0).stored_len();
    let mut queue = Queue::open(&dir.path().join("bytes"), by_bytes).unwrap();
    let appended = queue.append(&[big(1), big(2), big(3)]).unwrap();
    assert_eq!((appended.stored, appended.dropped), (3, 1));
    assert_eq!(queue.len(), 2);
    assert_eq!(queue.bytes(), by_bytes.max_bytes);
    let first = queue.next_from(0).unwrap();
    assert_eq!(queue.read(first).unwrap().payload, vec![2; 1000]);
    // A message larger than max_bytes can never fit: dropped whatever the policy.
    let huge = Message {
        payload: vec![0; 3000],
        ..big(9)
    };
    let appended = queue.append(&[huge]).unwrap();
    assert_eq!((appended.stored, appended.dropped), (0, 1));
    assert_eq!(queue.len(), 2);

    // Age.
    let mut by_age = limits();
    by_age.max_age_us = 60_000_000;
    let mut queue = Queue::open(&dir.path().join("age"), by_age).unwrap();
    let old = Message {
        time_us: super::now_us() - 120_000_000,
        ..message(0)
    };
    queue.append(&[old, message(1)]).unwrap();
    assert_eq!(queue.expire(super::now_us()), 1);
    assert_eq!(ids(&queue), vec![1]);
}

#[test]
fn disk_use_stays_bounded_as_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut small = limits();
    small.max_bytes = 512 * 1024; // 64 KiB segments
    let mut queue = Queue::open(dir.path(), small).unwrap();
    let payload = vec![7u8; 1000];
    for round in 0..50u64 {
        let batch: Vec<Message> = (0..20)
            .map(|_| Message {
                qos: 1,
                retain: false,
                time_us: super::now_us(),
                topic: "t".into(),
                payload: payload.clone(),
            })
            .collect();
        queue.append(&batch).unwrap();
        let mut at = 0;
        while let Some(id) = queue.next_from(at) {
            queue.ack(id);
            at = id + 1;
        }
        queue.persist().unwrap();
        let on_disk: u64 = segments(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(
            segments(dir.path()).len() <= 2 && on_disk <= 2 * 64 * 1024 + 21_000,
            "round {round}: {} segments, {on_disk} bytes",
            segments(dir.path()).len()
        );
    }
    assert_eq!(queue.len(), 0);
    assert!(queue.segment_files() <= 1);
}

#[test]
fn an_unreadable_queue_is_moved_aside_not_a_crash_loop() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mqtt-queue");
    let mut queue = Queue::open(&dir, limits()).unwrap();
    append(&mut queue, 0, 3);
    drop(queue);
    // A "segment" that cannot be read as a file.
    std::fs::create_dir(dir.join("00000000000000000100.seg")).unwrap();
    assert!(Queue::open(&dir, limits()).is_err());

    let mut queue = Queue::open_or_reset(&dir, limits()).unwrap();
    assert_eq!(queue.len(), 0);
    append(&mut queue, 0, 1);
    let aside: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mqtt-queue.unreadable-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
}

/// The helper process of the kill test: appends batches to the queue in
/// `EDGEWARD_QUEUE_CHILD` forever, printing `synced N` once messages up to
/// id N are durable and `persisting H` before moving the cursor to H.
#[test]
#[ignore = "run by a_kill_9_at_any_moment_loses_nothing_accepted"]
fn queue_kill_child() {
    let Some(dir) = std::env::var_os("EDGEWARD_QUEUE_CHILD") else {
        return;
    };
    let mut queue = Queue::open(Path::new(&dir), limits()).unwrap();
    let mut round = 0u64;
    loop {
        round += 1;
        let from = queue.next_id();
        let to = from + 1 + (round * 7919) % 40;
        let batch: Vec<Message> = (from..to).map(message).collect();
        queue.append(&batch).unwrap();
        println!("synced {}", to - 1);
        if round.is_multiple_of(5) {
            // Ack the older half of what is queued.
            let mut at = 0;
            for _ in 0..queue.len() / 2 {
                let Some(id) = queue.next_from(at) else { break };
                queue.ack(id);
                at = id + 1;
            }
            println!("persisting {}", queue.head());
            queue.persist().unwrap();
        }
    }
}

/// What a crashed writer announced: the highest id it reported durable and
/// the highest cursor it started to write.
#[derive(Default)]
struct Announced {
    synced: Option<u64>,
    persisting: u64,
}

impl Announced {
    fn line(&mut self, line: &str) {
        // The first line printed follows the harness's "test ... " on its line.
        if let Some((_, n)) = line.split_once("synced ") {
            self.synced = Some(n.trim().parse().unwrap());
        } else if let Some((_, n)) = line.split_once("persisting ") {
            self.persisting = self.persisting.max(n.trim().parse().unwrap());
        }
    }

    /// Everything announced durable and not possibly acked is there, in
    /// order, intact; whatever else is there is intact too.
    fn verify(&self, dir: &Path) -> Queue {
        let mut queue = Queue::open(dir, limits()).unwrap();
        let present = ids(&queue);
        if let Some(synced) = self.synced {
            for id in self.persisting..=synced {
                assert!(
                    present.binary_search(&id).is_ok(),
                    "message {id} was durable (synced up to {synced}, cursor at most {}) but \
                     is gone; present: {}..",
                    self.persisting,
                    present.first().copied().unwrap_or(0)
                );
            }
        }
        for id in present {
            check(&mut queue, id);
        }
        queue
    }
}

#[test]
fn a_kill_9_at_any_moment_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut announced = Announced::default();
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "mqtt::queue::tests::queue_kill_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("EDGEWARD_QUEUE_CHILD", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a different number of batches each round.
        let target = 20 + round * 37;
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen < target && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if line.contains("synced ") {
                seen += 1;
            }
            announced.line(&line);
        }
        child.kill().unwrap();
        // Lines printed before the kill count as announced too.
        for line in lines.map_while(Result::ok) {
            announced.line(&line);
        }
        child.wait().unwrap();
        assert!(seen >= target, "the child stopped early (round {round})");
        drop(announced.verify(dir.path()));
    }
}

/// Power cuts land while the queue is being appended to, acknowledged and
/// its cursor moved: after each, every message announced durable and not
/// possibly acknowledged is there, intact and in order. Runs in its own
/// process: an unmount fails with EBUSY while any process holds a file of
/// the disk open, and other tests fork (a child holds the parent's
/// descriptors until it execs).
#[test]
fn a_power_cut_after_the_fsync_loses_nothing_accepted() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "mqtt::queue::tests::queue_power_cut_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EDGEWARD_QUEUE_POWER_CUT", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("POWER CUTS DONE"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The body of [`a_power_cut_after_the_fsync_loses_nothing_accepted`].
#[test]
#[ignore = "run by a_power_cut_after_the_fsync_loses_nothing_accepted"]
fn queue_power_cut_child() {
    if std::env::var_os("EDGEWARD_QUEUE_POWER_CUT").is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let at = root.path().join("disk");
    std::fs::create_dir(&at).unwrap();
    let mut disk = PowerCutDisk::mount(&at, 0x9e3779b9)
        .expect("mount the FUSE power-cut disk (root and /dev/fuse)");
    disk.set_flush_delay(Duration::from_millis(2));
    let mut announced = Announced::default();
    let mut undone = 0;
    for cut in 0..12u64 {
        let mut queue = Queue::open(&at, limits()).unwrap();
        let writer = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut round = 0u64;
            loop {
                round += 1;
                let from = queue.next_id();
                let to = from + 1 + (round * 7919 + cut) % 30;
                let batch: Vec<Message> = (from..to).map(message).collect();
                if queue.append(&batch).is_err() {
                    return lines;
                }
                lines.push(format!("synced {}", to - 1));
                if round.is_multiple_of(4) {
                    let mut at = 0;
                    for _ in 0..queue.len() / 2 {
                        let Some(id) = queue.next_from(at) else { break };
                        queue.ack(id);
                        at = id + 1;
                    }
                    lines.push(format!("persisting {}", queue.head()));
                    if queue.persist().is_err() {
                        return lines;
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20 + cut * 13));
        disk.power_off();
        let lines = writer.join().unwrap();
        for line in &lines {
            announced.line(line);
        }
        let report = disk.cut().unwrap();
        if report.kept_bytes + report.dropped_bytes + report.entries_undone > 0 {
            undone += 1;
        }
        drop(announced.verify(&at));
    }
    assert!(announced.synced.is_some(), "nothing was ever written");
    println!("POWER CUTS DONE: {undone} of 12 cuts lost or tore unflushed writes or names");
}
