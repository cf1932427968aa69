//! The durable store-and-forward queue: messages accepted from modules wait
//! here, on disk in the connector's state directory, until the broker has
//! acknowledged them.
//!
//! # Layout
//! A directory of *segment files* plus one *cursor file*:
//! - `<first id, 20 digits>.seg`: records appended in id order. A record is
//!   `len: u32 LE | crc: u32 LE | body` where `crc` is the CRC-32C of the
//!   `len` bytes and the body, and the body is `id: u64 | time_us: u64 |
//!   qos: u8 | flags: u8 (bit 0 = retain) | topic_len: u16 | topic | payload`
//!   (all little-endian). Ids increase by one per record and are never
//!   reused.
//! - `acked`: `"EWQ1" | head: u64 LE | crc: u32 LE`, the id of the oldest
//!   record still to send; every record below it was acknowledged (or
//!   dropped). Replaced atomically (write `acked.tmp`, fsync, rename, fsync
//!   the directory) and only now and then (batched), so a crash may send a
//!   few acknowledged messages again, never lose one.
//!
//! # Crash safety
//! An append writes a whole batch with one `pwrite` and one `fdatasync`
//! before [`Queue::append`] returns: that is when a batch may be accepted.
//! A new segment's directory entry is fsynced before anything is written
//! to it. On open every record is checked (length, CRC, increasing id); the
//! first bad one and everything after it in its segment are cut off with a
//! log line (a torn tail after a crash or power cut, or a corrupt disk), so
//! garbage is never delivered. A queue that cannot be read at all (I/O
//! errors, permissions) is moved aside by [`Queue::open_or_reset`] with a
//! log line and replaced by an empty one: the connector keeps running
//! instead of failing on every start.
//!
//! # Bounded disk use
//! A segment is closed once it reaches the segment size (an eighth of
//! `max_bytes`, between 64 KiB and 8 MiB); a segment whose records are all
//! below the persisted cursor is deleted. Disk use stays below about
//! `max_bytes` plus two segments. Memory holds a 48-byte index entry per
//! queued message, never the payloads (they are read back when sent).
//!
//! # Why hand-written and not an embedded database
//! The access pattern is a FIFO: append at the tail, acknowledge at the
//! head, read each record once or twice. An append-only log with a cursor
//! is the natural structure for it, its crash behaviour fits in this
//! comment, and it costs no dependency. Embedded key-value stores (sled,
//! redb, LMDB, SQLite) bring a B-tree, a page cache, compaction or a C
//! library, a larger binary and failure modes of their own, for none of
//! which a queue has a use.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// CRC-32C (Castagnoli) over `parts` in order: the checksum of every
/// record (the same crate and polynomial as the rings').
fn crc32c(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0, |crc, part| crc32c::crc32c_append(crc, part))
}

/// Segment file suffix.
const SEGMENT_SUFFIX: &str = ".seg";
/// The cursor file.
const CURSOR: &str = "acked";
/// The cursor file being replaced.
const CURSOR_TMP: &str = "acked.tmp";
/// First bytes of the cursor file (format version 1).
const CURSOR_MAGIC: &[u8; 4] = b"EWQ1";
/// `len` and `crc`.
const HEADER: usize = 8;
/// `id`, `time_us`, `qos`, `flags`, `topic_len`.
const BODY_FIXED: usize = 8 + 8 + 1 + 1 + 2;
/// The largest body accepted when reading (a larger length is corruption):
/// MQTT's own packet limit.
const MAX_BODY: usize = 256 * 1024 * 1024;
/// Segment size bounds.
const MIN_SEGMENT: u64 = 64 * 1024;
const MAX_SEGMENT: u64 = 8 * 1024 * 1024;

/// What to drop when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Drop the oldest queued message to make room (the default: fresh data
    /// matters more after a long outage).
    DropOldest,
    /// Drop the message that does not fit.
    DropNewest,
}

/// The queue's limits (`[connector.queue]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most messages queued.
    pub max_messages: u64,
    /// Most bytes queued (records as stored: payload, topic and 28 bytes).
    pub max_bytes: u64,
    /// Messages older than this (by `time_us`) are dropped.
    pub max_age_us: u64,
    /// What a full queue drops.
    pub when_full: WhenFull,
}

/// One queued publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// 0 or 1.
    pub qos: u8,
    /// The MQTT retain flag.
    pub retain: bool,
    /// When the connector received it (µs since the Unix epoch), for
    /// `max_age_s`.
    pub time_us: u64,
    /// The topic to publish to.
    pub topic: String,
    /// The MQTT payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// Bytes this message takes in a segment.
    pub(crate) fn stored_len(&self) -> u64 {
        (HEADER + BODY_FIXED + self.topic.len() + self.payload.len()) as u64
    }
}

/// What [`Queue::append`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Messages stored.
    pub stored: u64,
    /// Messages dropped to respect the limits (the oldest queued ones or
    /// new ones, per [`WhenFull`]; a message larger than `max_bytes`
    /// always).
    pub dropped: u64,
}

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A record read back for sending was not what was written.
    #[error("record {id} in {} at offset {offset} is corrupt: {why}", path.display())]
    Corrupt {
        /// The record's id.
        id: u64,
        /// Its segment.
        path: PathBuf,
        /// Its offset there.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
}

/// Adds the action and path to an I/O error.
fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> QueueError + 'a {
    move |source| QueueError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// The id in its name (no record in it is older).
    first_id: u64,
    path: PathBuf,
    /// Bytes of valid records.
    len: u64,
    /// Opened on the first read.
    reader: Option<File>,
}

/// Where one queued message is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    /// The `first_id` of its segment.
    segment: u64,
    offset: u64,
    len: u32,
    time_us: u64,
    /// Acknowledged (or dropped) while an older entry still waits.
    done: bool,
}

/// The durable queue. See the module docs.
#[derive(Debug)]
pub(crate) struct Queue {
    dir: PathBuf,
    limits: Limits,
    segment_target: u64,
    /// Sorted by `first_id`.
    segments: VecDeque<Segment>,
    /// Sorted by id; the front is never `done`.
    entries: VecDeque<Entry>,
    /// Entries not `done`, and their stored bytes.
    live: u64,
    live_bytes: u64,
    next_id: u64,
    /// Append handle on the last segment, when this process created it.
    writer: Option<File>,
    /// The head last written to the cursor file.
    persisted_head: u64,
}

impl Queue {
    /// Opens the queue in `dir` (created if missing), checking every record
    /// and cutting off a torn or corrupt tail (logged), then applies
    /// `limits` to what it found (dropping the oldest, logged).
    ///
    /// # Errors
    /// The directory or a file in it cannot be read or repaired.
    pub(crate) fn open(dir: &Path, limits: Limits) -> Result<Self, QueueError> {
        fs::create_dir_all(dir).map_err(io_err("creating the queue directory", dir))?;
        let head = read_cursor(dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
            let entry = entry.map_err(io_err("listing", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == CURSOR_TMP {
                // A replacement the crash interrupted: the old cursor stands.
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            } else if let Some(first) = name
                .strip_suffix(SEGMENT_SUFFIX)
                .and_then(|stem| stem.parse::<u64>().ok())
            {
                names.push((first, entry.path()));
            }
        }
        names.sort_unstable();

        let mut queue = Self {
            dir: dir.to_path_buf(),
            limits,
            segment_target: (limits.max_bytes / 8).clamp(MIN_SEGMENT, MAX_SEGMENT),
            segments: VecDeque::new(),
            entries: VecDeque::new(),
            live: 0,
            live_bytes: 0,
            next_id: head,
            writer: None,
            persisted_head: head,
        };
        let count = names.len();
        let mut last_id: Option<u64> = None;
        for (i, (first_id, path)) in names.into_iter().enumerate() {
            let data = fs::read(&path).map_err(io_err("reading", &path))?;
            let mut offset = 0usize;
            let mut found = Vec::new();
            let mut bad = None;
            while offset < data.len() {
                match parse(&data[offset..]) {
                    Ok((id, message, len)) if last_id.is_none_or(|last| id > last) => {
                        last_id = Some(id);
                        found.push((id, offset, len, message.time_us));
                        offset += len;
                    }
                    Ok(_) => {
                        bad = Some("record id out of order");
                        break;
                    }
                    Err(why) => {
                        bad = Some(why);
                        break;
                    }
                }
            }
            if let Some(why) = bad {
                let cut = data.len() - offset;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("opening to repair", &path))?;
                file.set_len(offset as u64)
                    .map_err(io_err("truncating", &path))?;
                file.sync_all().map_err(io_err("syncing", &path))?;
                if i + 1 == count {
                    crate::log!(
                        "warn",
                        "durable queue: torn tail in {} at offset {offset} ({why}): cut off {cut} \
                         bytes (a write interrupted by a crash; it was never accepted)",
                        path.display()
                    );
                } else {
                    crate::log!(
                        "error",
                        "durable queue: corrupt record in {} at offset {offset} ({why}): cut off \
                         {cut} bytes; messages stored there are lost (a damaged disk?)",
                        path.display()
                    );
                }
            }
            if found.iter().all(|&(id, ..)| id < head) {
                // Nothing left to send in it (or nothing valid at all).
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                continue;
            }
            for (id, offset, len, time_us) in found {
                if id >= head {
                    queue.entries.push_back(Entry {
                        id,
                        segment: first_id,
                        offset: offset as u64,
                        len: len as u32,
                        time_us,
                        done: false,
                    });
                    queue.live += 1;
                    queue.live_bytes += len as u64;
                }
            }
            queue.segments.push_back(Segment {
                first_id,
                path,
                len: offset as u64,
                reader: None,
            });
        }
        queue.next_id = last_id.map_or(head, |last| (last + 1).max(head));

        let expired = queue.expire(now_us());
        let mut over = 0;
        while queue.live > limits.max_messages || queue.live_bytes > limits.max_bytes {
            queue.drop_front();
            over += 1;
        }
        if expired + over > 0 {
            crate::log!(
                "warn",
                "durable queue: dropped {} messages older than max_age_s and {over} over \
                 max_messages/max_bytes while opening",
                expired
            );
        }
        Ok(queue)
    }

    /// [`Queue::open`], and if the queue cannot be read, moves it aside to
    /// `<dir>.unreadable-<unix seconds>` (logged: its messages are not
    /// sent) and opens an empty one.
    ///
    /// # Errors
    /// Neither could be done (the state directory itself is unusable).
    pub(crate) fn open_or_reset(dir: &Path, limits: Limits) -> Result<Self, QueueError> {
        match Self::open(dir, limits) {
            Ok(queue) => Ok(queue),
            Err(e) => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut aside = dir.as_os_str().to_owned();
                aside.push(format!(".unreadable-{secs}"));
                let aside = PathBuf::from(aside);
                fs::rename(dir, &aside).map_err(io_err("moving aside", dir))?;
                crate::log!(
                    "error",
                    "durable queue unreadable ({e}): moved it aside to {} and started an empty \
                     queue; the messages in it will not be sent (inspect or delete it)",
                    aside.display()
                );
                Self::open(dir, limits)
            }
        }
    }

    /// Messages queued (not yet acknowledged or dropped).
    pub(crate) fn len(&self) -> u64 {
        self.live
    }

    /// Their stored bytes.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The id of the oldest queued message, or the next id if empty.
    pub(crate) fn head(&self) -> u64 {
        self.entries.front().map_or(self.next_id, |e| e.id)
    }

    /// The id the next stored message gets.
    #[cfg(test)]
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Segment files now on disk (for tests and the disk-use bound).
    #[cfg(test)]
    pub(crate) fn segment_files(&self) -> usize {
        self.segments.len()
    }

    /// Appends `messages` in order, making room per the limits, and makes
    /// them durable (one write and one `fdatasync`) before returning.
    ///
    /// # Errors
    /// The write or the sync failed: none of `messages` is stored (messages
    /// dropped to make room stay dropped). The segment is not written to
    /// again (after a failed sync its pages may be lost at the next power
    /// cut, whatever later syncs say).
    pub(crate) fn append(&mut self, messages: &[Message]) -> Result<Appended, QueueError> {
        let mut out = Appended::default();
        let first_new = self.next_id;
        let mut buf = Vec::new();
        let mut base = None;
        for message in messages {
            let len = message.stored_len();
            if len > self.limits.max_bytes || BODY_FIXED + message.topic.len() > MAX_BODY {
                out.dropped += 1;
                continue;
            }
            let mut fits = true;
            while self.live + 1 > self.limits.max_messages
                || self.live_bytes + len > self.limits.max_bytes
            {
                if self.limits.when_full == WhenFull::DropOldest && self.live > 0 {
                    self.drop_front();
                    out.dropped += 1;
                } else {
                    fits = false;
                    break;
                }
            }
            if !fits {
                out.dropped += 1;
                continue;
            }
            let base = match base {
                Some(base) => base,
                None => {
                    let b = self.writable_segment()?;
                    base = Some(b);
                    b
                }
            };
            let id = self.next_id;
            self.next_id += 1;
            let segment = self.segments.back().map_or(id, |s| s.first_id);
            self.entries.push_back(Entry {
                id,
                segment,
                offset: base + buf.len() as u64,
                len: len as u32,
                time_us: message.time_us,
                done: false,
            });
            encode(&mut buf, id, message);
            self.live += 1;
            self.live_bytes += len;
            out.stored += 1;
        }
        let Some(base) = base else { return Ok(out) };
        let written = match &self.writer {
            Some(file) => file
                .write_all_at(&buf, base)
                .and_then(|()| file.sync_data()),
            None => Err(io::Error::other("no segment open for writing")),
        };
        match written {
            Ok(()) => {
                if let Some(segment) = self.segments.back_mut() {
                    segment.len = base + buf.len() as u64;
                }
                Ok(out)
            }
            Err(source) => {
                // Not stored: forget the batch (its ids are not reused) and
                // leave the segment. Cutting the partial write off is best
                // effort: recovery checks every record anyway.
                if let Some(file) = self.writer.take() {
                    let _ = file.set_len(base);
                }
                while self.entries.back().is_some_and(|e| e.id >= first_new) {
                    if let Some(e) = self.entries.pop_back() {
                        if !e.done {
                            self.live -= 1;
                            self.live_bytes -= u64::from(e.len);
                        }
                    }
                }
                let path = self
                    .segments
                    .back()
                    .map_or_else(|| self.dir.clone(), |s| s.path.clone());
                Err(QueueError::Io {
                    action: "appending to",
                    path,
                    source,
                })
            }
        }
    }

    /// The offset where the next append goes, starting a new segment when
    /// there is no writer or the current segment is full.
    fn writable_segment(&mut self) -> Result<u64, QueueError> {
        if let (Some(_), Some(segment)) = (&self.writer, self.segments.back()) {
            if segment.len < self.segment_target {
                return Ok(segment.len);
            }
        }
        self.writer = None;
        let path = self
            .dir
            .join(format!("{:020}{SEGMENT_SUFFIX}", self.next_id));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        // The new name must survive a power cut before records in it count.
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment {
            first_id: self.next_id,
            path,
            len: 0,
            reader: None,
        });
        self.writer = Some(file);
        Ok(0)
    }

    /// The id of the first queued message at or after `id`.
    pub(crate) fn next_from(&self, id: u64) -> Option<u64> {
        let start = self.entries.partition_point(|e| e.id < id);
        self.entries.range(start..).find(|e| !e.done).map(|e| e.id)
    }

    /// Reads message `id` back.
    ///
    /// # Errors
    /// It is not queued (`Corrupt` with why "not queued"), or its file
    /// cannot be read or does not hold it any more.
    pub(crate) fn read(&mut self, id: u64) -> Result<Message, QueueError> {
        let entry = self
            .entries
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .and_then(|i| self.entries.get(i).copied());
        let segment = entry.and_then(|e| {
            self.segments
                .binary_search_by_key(&e.segment, |s| s.first_id)
                .ok()
        });
        let (Some(entry), Some(segment)) = (entry, segment) else {
            return Err(QueueError::Corrupt {
                id,
                path: self.dir.clone(),
                offset: 0,
                why: "not queued",
            });
        };
        let segment = &mut self.segments[segment];
        if segment.reader.is_none() {
            segment.reader =
                Some(File::open(&segment.path).map_err(io_err("opening", &segment.path))?);
        }
        let mut buf = vec![0; entry.len as usize];
        if let Some(reader) = &segment.reader {
            reader
                .read_exact_at(&mut buf, entry.offset)
                .map_err(io_err("reading", &segment.path))?;
        }
        let corrupt = |why| QueueError::Corrupt {
            id,
            path: segment.path.clone(),
            offset: entry.offset,
            why,
        };
        match parse(&buf) {
            Ok((found, message, _)) if found == id => Ok(message),
            Ok(_) => Err(corrupt("another record is there")),
            Err(why) => Err(corrupt(why)),
        }
    }

    /// Marks message `id` sent and acknowledged (or given up): the head
    /// moves past it once every older one is done too. Returns whether it
    /// was queued.
    pub(crate) fn ack(&mut self, id: u64) -> bool {
        let Ok(i) = self.entries.binary_search_by_key(&id, |e| e.id) else {
            return false;
        };
        let entry = &mut self.entries[i];
        if entry.done {
            return false;
        }
        entry.done = true;
        self.live -= 1;
        self.live_bytes -= u64::from(entry.len);
        self.pop_done();
        true
    }

    /// Drops the oldest queued message.
    fn drop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.live -= 1;
            self.live_bytes -= u64::from(entry.len);
        }
        self.pop_done();
    }

    fn pop_done(&mut self) {
        while self.entries.front().is_some_and(|e| e.done) {
            self.entries.pop_front();
        }
    }

    /// Drops queued messages older than `max_age_s` at `now_us`; returns
    /// how many.
    pub(crate) fn expire(&mut self, now_us: u64) -> u64 {
        let mut dropped = 0;
        while self
            .entries
            .front()
            .is_some_and(|e| e.time_us.saturating_add(self.limits.max_age_us) < now_us)
        {
            self.drop_front();
            dropped += 1;
        }
        dropped
    }

    /// Whether the head moved since the cursor was last written.
    pub(crate) fn cursor_dirty(&self) -> bool {
        self.head() != self.persisted_head
    }

    /// Writes the cursor (if the head moved) atomically and deletes the
    /// segments wholly below it.
    ///
    /// # Errors
    /// The cursor could not be written (it is retried next time; older
    /// messages may be sent again after a crash, none is lost) or a
    /// consumed segment not deleted.
    pub(crate) fn persist(&mut self) -> Result<(), QueueError> {
        let head = self.head();
        if head != self.persisted_head {
            write_cursor(&self.dir, head)?;
            self.persisted_head = head;
        }
        while let Some(front) = self.segments.front() {
            let is_last = self.segments.len() == 1;
            let consumed = match self.segments.get(1) {
                Some(next) => next.first_id <= head,
                None => head >= self.next_id,
            };
            // The segment being appended to stays until it is full.
            let in_use = is_last && self.writer.is_some() && front.len < self.segment_target;
            if !consumed || in_use {
                break;
            }
            let path = front.path.clone();
            fs::remove_file(&path).map_err(io_err("removing", &path))?;
            self.segments.pop_front();
            if is_last {
                self.writer = None;
            }
        }
        Ok(())
    }
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Appends the record for `message` with `id` to `buf`.
fn encode(buf: &mut Vec<u8>, id: u64, message: &Message) {
    let body_len = BODY_FIXED + message.topic.len() + message.payload.len();
    let len = (body_len as u32).to_le_bytes();
    let start = buf.len();
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&message.time_us.to_le_bytes());
    buf.push(message.qos);
    buf.push(u8::from(message.retain));
    buf.extend_from_slice(&(message.topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(message.topic.as_bytes());
    buf.extend_from_slice(&message.payload);
    let crc = crc32c(&[&len, &buf[start + HEADER..]]);
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the record at the start of `buf`: its id, message and length.
fn parse(buf: &[u8]) -> Result<(u64, Message, usize), &'static str> {
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let le64 = |b: &[u8]| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    if buf.len() < HEADER {
        return Err("record header cut short");
    }
    let len = le32(&buf[..4]) as usize;
    if !(BODY_FIXED..=MAX_BODY + BODY_FIXED).contains(&len) {
        return Err("impossible record length");
    }
    let Some(body) = buf.get(HEADER..HEADER + len) else {
        return Err("record cut short");
    };
    if crc32c(&[&buf[..4], body]) != le32(&buf[4..8]) {
        return Err("checksum mismatch");
    }
    let id = le64(&body[..8]);
    let time_us = le64(&body[8..16]);
    let qos = body[16];
    let flags = body[17];
    let topic_len = usize::from(u16::from_le_bytes([body[18], body[19]]));
    if qos > 1 || flags > 1 || BODY_FIXED + topic_len > len {
        return Err("invalid record fields");
    }
    let topic = std::str::from_utf8(&body[BODY_FIXED..BODY_FIXED + topic_len])
        .map_err(|_| "topic is not UTF-8")?;
    Ok((
        id,
        Message {
            qos,
            retain: flags == 1,
            time_us,
            topic: topic.to_owned(),
            payload: body[BODY_FIXED + topic_len..].to_vec(),
        },
        HEADER + len,
    ))
}

/// The head the cursor file records: 0 if there is none, or (logged) if it
/// is damaged: everything left on disk is sent again rather than lost.
fn read_cursor(dir: &Path) -> Result<u64, QueueError> {
    let path = dir.join(CURSOR);
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    let valid = data.len() == 16
        && &data[..4] == CURSOR_MAGIC
        && crc32c(&[&data[..12]]).to_le_bytes() == data[12..16];
    if !valid {
        crate::log!(
            "warn",
            "durable queue: cursor {} is damaged: sending every stored message again \
             (the subscriber may see duplicates)",
            path.display()
        );
        return Ok(0);
    }
    let mut head = [0; 8];
    head.copy_from_slice(&data[4..12]);
    Ok(u64::from_le_bytes(head))
}

/// Replaces the cursor file atomically.
fn write_cursor(dir: &Path, head: u64) -> Result<(), QueueError> {
    let mut data = Vec::with_capacity(16);
    data.extend_from_slice(CURSOR_MAGIC);
    data.extend_from_slice(&head.to_le_bytes());
    let crc = crc32c(&[&data]);
    data.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(CURSOR_TMP);
    let file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    file.write_all_at(&data, 0)
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing", &tmp))?;
    let path = dir.join(CURSOR);
    fs::rename(&tmp, &path).map_err(io_err("renaming into", &path))?;
    sync_dir(dir)
}

/// Makes `dir`'s entries durable.
fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing the directory", dir))
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
