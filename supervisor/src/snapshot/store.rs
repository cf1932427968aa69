//! Staging, group commit, compaction and the restore choice.
//!
//! The durability contract: [`Store::commit`] returns the epochs it made
//! durable, only after the bytes and every directory entry needed to find
//! them were flushed. Those are the *acknowledged* epochs. After a crash at
//! any point, [`Store::open`] finds, for every module, an epoch at least as
//! new as its last acknowledged one, with exactly the bytes staged for it
//! (proven by `crash_tests.rs` on a simulated disk).

use std::collections::BTreeMap;

use super::record::{Record, RecordError, MAX_PAYLOAD};
use super::storage::Storage;

/// Records kept per module: the newest and one to fall back to (plus the
/// newest of the wasm before the current one, see [`Store::keep`]).
const KEEP: usize = 2;

/// A segment is compacted once it is this many times the live records…
const GROWTH: u64 = 4;
/// …and at least this large.
const ROLL_MIN_BYTES: u64 = 64 << 10;

/// What [`Store::stage`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    /// New bytes: they get this epoch at the next commit.
    New(u64),
    /// The same bytes as the module's newest staged or durable record:
    /// nothing is rewritten; that record's epoch.
    Unchanged(u64),
}

/// Something found while opening the store, for the log and `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The segment file.
    pub segment: String,
    /// The module, when the damaged record's header names it.
    pub module: Option<String>,
    /// What was wrong and what it cost.
    pub what: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A storage operation failed; nothing of this commit is acknowledged.
    /// The staged records stay staged, and the next commit writes them into
    /// a fresh segment.
    #[error("snapshot store: {op} {file}: {source}")]
    Io {
        /// `append`, `flush`, `flush directory`, `list`, `read`.
        op: &'static str,
        /// The file (or directory) concerned.
        file: String,
        /// The error.
        source: std::io::Error,
    },
    /// The module name or payload cannot be stored.
    #[error("snapshot of {module}: {reason}")]
    Refused {
        /// Module.
        module: String,
        /// Why.
        reason: String,
    },
}

/// The snapshot store of one gateway.
pub struct Store<S: Storage> {
    storage: S,
    /// Durable records per module, newest first, as [`prune`] leaves them.
    live: BTreeMap<String, Vec<Record>>,
    /// Records waiting for the next commit, one per module.
    staged: BTreeMap<String, Record>,
    /// Highest epoch ever seen or given per module: epochs are never reused,
    /// not even those of damaged or unacknowledged records.
    epochs: BTreeMap<String, u64>,
    /// The segment commits append to, and its size; `None`: the next commit
    /// starts a fresh segment.
    active: Option<(String, u64)>,
    next_segment: u64,
    roll_min_bytes: u64,
}

/// Trims a module's live records (newest first) to the newest [`KEEP`], and
/// the newest one taken by another wasm than the newest record's. That one
/// is an upgrade's way back: while a new version is on probation (or after
/// a crash then) its snapshots must not push out the state the old version
/// is restored from when the upgrade is rolled back.
fn prune(list: &mut Vec<Record>) {
    let Some(newest_wasm) = list.first().map(|r| r.wasm_sha256) else {
        return;
    };
    let mut kept = 0;
    let mut other_wasm_kept = false;
    list.retain(|r| {
        let other_wasm = r.wasm_sha256 != newest_wasm;
        let keep = kept < KEEP || (other_wasm && !other_wasm_kept);
        if keep {
            kept += 1;
            other_wasm_kept |= other_wasm;
        }
        keep
    });
}

/// Maps an I/O error of `op` on `file` to a [`StoreError`].
fn io(op: &'static str, file: &str) -> impl FnOnce(std::io::Error) -> StoreError {
    let file = file.to_string();
    move |source| StoreError::Io { op, file, source }
}

fn segment_name(n: u64) -> String {
    format!("seg-{n:016x}.log")
}

fn segment_number(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

impl<S: Storage> Store<S> {
    /// Opens the store: reads every segment, keeps the newest valid records
    /// per module, and reports every damaged or torn record it skipped.
    /// Damage never makes opening fail; only an unreadable directory does.
    ///
    /// # Errors
    /// The directory or a segment cannot be read at all.
    pub fn open(mut storage: S) -> Result<(Self, Vec<Report>), StoreError> {
        let mut segments: Vec<(u64, String)> = storage
            .list()
            .map_err(io("list", "snapshot directory"))?
            .into_iter()
            .filter_map(|name| segment_number(&name).map(|n| (n, name)))
            .collect();
        segments.sort();
        let mut store = Self {
            storage,
            live: BTreeMap::new(),
            staged: BTreeMap::new(),
            epochs: BTreeMap::new(),
            active: None,
            next_segment: segments.last().map_or(0, |(n, _)| n + 1),
            roll_min_bytes: ROLL_MIN_BYTES,
        };
        let mut reports = Vec::new();
        for (_, name) in &segments {
            let bytes = store.storage.read(name).map_err(io("read", name))?;
            store.scan(name, &bytes, &mut reports);
        }
        Ok((store, reports))
    }

    fn scan(&mut self, segment: &str, bytes: &[u8], reports: &mut Vec<Report>) {
        let mut pos = 0;
        while pos < bytes.len() {
            match Record::decode(&bytes[pos..]) {
                Ok((record, size)) => {
                    pos += size;
                    self.note_epoch(&record.module, record.epoch);
                    self.keep(record);
                }
                Err(RecordError::BadPayload {
                    module,
                    epoch,
                    size,
                }) => {
                    self.note_epoch(&module, epoch);
                    reports.push(Report {
                        segment: segment.to_string(),
                        what: format!(
                            "snapshot {module} epoch {epoch} is damaged (payload CRC mismatch); an older epoch is used"
                        ),
                        module: Some(module),
                    });
                    pos += size;
                }
                Err(RecordError::Truncated) if bytes[pos..].iter().all(|&b| b == 0) => break,
                Err(e) => {
                    reports.push(Report {
                        segment: segment.to_string(),
                        module: None,
                        what: format!(
                            "{e} at offset {pos}; the {} byte(s) after it are not read",
                            bytes.len() - pos
                        ),
                    });
                    break;
                }
            }
        }
    }

    fn note_epoch(&mut self, module: &str, epoch: u64) {
        let seen = self.epochs.entry(module.to_string()).or_insert(0);
        *seen = (*seen).max(epoch);
    }

    /// Adds a durable record to the live set (see [`prune`]).
    fn keep(&mut self, record: Record) {
        let list = self.live.entry(record.module.clone()).or_default();
        if list.iter().any(|r| r.epoch == record.epoch) {
            return;
        }
        list.push(record);
        list.sort_by_key(|r| std::cmp::Reverse(r.epoch));
        prune(list);
    }

    /// Compacts once the active segment exceeds `bytes` (and four times the
    /// live records); tests make it small.
    #[cfg(test)]
    pub fn set_roll_min_bytes(&mut self, bytes: u64) {
        self.roll_min_bytes = bytes;
    }

    /// Stages `payload` as `module`'s newest state, taken by the wasm with
    /// `wasm_sha256`. It becomes durable at the next [`Store::commit`].
    ///
    /// # Errors
    /// A module name outside 1..=255 bytes, or a payload over 16 MiB.
    pub fn stage(
        &mut self,
        module: &str,
        wasm_sha256: [u8; 32],
        payload: &[u8],
    ) -> Result<Staged, StoreError> {
        if !(1..=255).contains(&module.len()) || payload.len() > MAX_PAYLOAD {
            return Err(StoreError::Refused {
                module: module.to_string(),
                reason: format!(
                    "{} bytes of state (at most {MAX_PAYLOAD}) or a bad module name",
                    payload.len()
                ),
            });
        }
        let newest = self
            .staged
            .get(module)
            .or_else(|| self.live.get(module).and_then(|l| l.first()));
        if let Some(r) = newest {
            if r.payload == payload && r.wasm_sha256 == wasm_sha256 {
                return Ok(Staged::Unchanged(r.epoch));
            }
        }
        let epoch = self.epochs.get(module).copied().unwrap_or(0) + 1;
        self.epochs.insert(module.to_string(), epoch);
        self.staged.insert(
            module.to_string(),
            Record {
                module: module.to_string(),
                wasm_sha256,
                epoch,
                payload: payload.to_vec(),
            },
        );
        Ok(Staged::New(epoch))
    }

    /// Makes every staged record durable together: one flush when appending
    /// to the active segment, two when starting a fresh one. Returns the
    /// (module, epoch) pairs now acknowledged.
    ///
    /// # Errors
    /// An I/O error: nothing of this commit is acknowledged, the records stay
    /// staged, and the next commit writes everything into a fresh segment
    /// (a file whose write or flush failed is never appended to again).
    pub fn commit(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        if self.staged.is_empty() {
            return Ok(Vec::new());
        }
        let live_bytes: u64 = self
            .live
            .values()
            .flatten()
            .map(|r| r.encoded_len() as u64)
            .sum();
        let roll = match &self.active {
            None => true,
            Some((_, len)) => *len > self.roll_min_bytes.max(GROWTH * live_bytes),
        };
        let mut next_live = self.live.clone();
        for record in self.staged.values() {
            let list = next_live.entry(record.module.clone()).or_default();
            list.insert(0, record.clone());
            prune(list);
        }
        let mut bytes = Vec::new();
        let segment = if roll {
            for record in next_live.values().flatten() {
                record.encode(&mut bytes);
            }
            segment_name(self.next_segment)
        } else {
            for record in self.staged.values() {
                record.encode(&mut bytes);
            }
            self.active.as_ref().expect("not rolling").0.clone()
        };
        if let Err(e) = self.write(&segment, &bytes, roll) {
            // Never append to a segment whose write or flush failed.
            self.active = None;
            if roll {
                // It acknowledged nothing, and a disk that stays full for
                // an hour of rounds must not fill its directory with them.
                let _ = self.storage.remove(&segment);
                self.next_segment += 1;
            }
            return Err(e);
        }
        let acknowledged = self
            .staged
            .values()
            .map(|r| (r.module.clone(), r.epoch))
            .collect();
        self.staged.clear();
        self.live = next_live;
        if roll {
            let old = self.next_segment;
            self.next_segment += 1;
            self.active = Some((segment, bytes.len() as u64));
            self.remove_segments_before(old);
        } else if let Some((_, len)) = &mut self.active {
            *len += bytes.len() as u64;
        }
        Ok(acknowledged)
    }

    fn write(&mut self, segment: &str, bytes: &[u8], new_file: bool) -> Result<(), StoreError> {
        self.storage
            .append(segment, bytes)
            .map_err(io("append", segment))?;
        self.storage.flush(segment).map_err(io("flush", segment))?;
        if new_file {
            self.storage
                .flush_dir()
                .map_err(io("flush directory", "snapshot directory"))?;
        }
        Ok(())
    }

    /// Removes the segments a compaction replaced. Not flushed: an old
    /// segment that survives a crash only holds older epochs.
    fn remove_segments_before(&mut self, number: u64) {
        let Ok(names) = self.storage.list() else {
            return;
        };
        for name in names {
            if segment_number(&name).is_some_and(|n| n < number) {
                let _ = self.storage.remove(&name);
            }
        }
    }

    /// The newest acknowledged record of `module`: its epoch and the
    /// guest's bytes in it.
    pub fn newest(&self, module: &str) -> Option<(u64, usize)> {
        self.live
            .get(module)
            .and_then(|l| l.first())
            .map(|r| (r.epoch, r.payload.len()))
    }

    /// The newest acknowledged epoch of `module`.
    pub fn acknowledged(&self, module: &str) -> Option<u64> {
        self.live
            .get(module)
            .and_then(|l| l.first())
            .map(|r| r.epoch)
    }

    /// The record to restore `module` from when it runs the wasm with
    /// `wasm_sha256`: its newest durable record taken by that same wasm.
    /// A newer one from another wasm is not handed over (that takes an
    /// upgrade); the second value then says so.
    pub fn restore(
        &self,
        module: &str,
        wasm_sha256: &[u8; 32],
    ) -> (Option<&Record>, Option<String>) {
        let Some(list) = self.live.get(module) else {
            return (None, None);
        };
        let found = list.iter().find(|r| &r.wasm_sha256 == wasm_sha256);
        let note = match (list.first(), found) {
            (Some(newest), Some(r)) if newest.epoch != r.epoch => Some(format!(
                "snapshot epoch {} was taken by another wasm; restored epoch {} instead",
                newest.epoch, r.epoch
            )),
            (Some(newest), None) => Some(format!(
                "snapshot epoch {} was taken by another wasm; not restored (an upgrade hands state across versions)",
                newest.epoch
            )),
            _ => None,
        };
        (found, note)
    }

    /// The storage (for its counters).
    pub fn storage(&self) -> &S {
        &self.storage
    }
}
