//! Exhaustive crash states, CrashMonkey style: the store runs a workload on
//! a simulated disk that records every append, flush, directory flush and
//! remove. After every one of those operations, every state a power cut
//! could leave is built (each unflushed append kept, dropped or torn; each
//! unflushed directory change kept or dropped), the store is reopened on it,
//! and for every module the restored epoch must be at least the last one
//! acknowledged before the cut, with exactly the bytes staged for it.
//! A second test injects an I/O error at every operation in turn.

use std::collections::BTreeMap;
use std::io;

use super::storage::Storage;
use super::store::{Staged, Store};

/// One file: what is durable, and the appends since its last flush.
#[derive(Clone, Default)]
struct SimFile {
    durable: Vec<u8>,
    /// (offset, bytes) in order.
    pending: Vec<(usize, Vec<u8>)>,
}

impl SimFile {
    fn visible(&self) -> Vec<u8> {
        let mut bytes = self.durable.clone();
        for (offset, data) in &self.pending {
            write_at(&mut bytes, *offset, data);
        }
        bytes
    }
}

fn write_at(bytes: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if bytes.len() < offset + data.len() {
        bytes.resize(offset + data.len(), 0);
    }
    bytes[offset..offset + data.len()].copy_from_slice(data);
}

#[derive(Clone)]
enum DirChange {
    Create(String),
    Remove(String, SimFile),
}

/// A disk that loses whatever was not flushed.
#[derive(Clone, Default)]
struct SimDisk {
    files: BTreeMap<String, SimFile>,
    /// Directory changes since the last directory flush.
    pending_dir: Vec<DirChange>,
    /// Operations so far; `fail_at` makes that one fail.
    ops: u64,
    fail_at: Option<u64>,
    /// Snapshots of the disk after every mutating operation.
    history: Vec<SimDisk>,
    record_history: bool,
    /// The file whose append or flush failed (or, for a failed directory
    /// flush, the file last appended to).
    failed_file: Option<String>,
    /// Files appended to after that failure.
    appended_after_failure: Vec<String>,
    last_appended: Option<String>,
}

impl SimDisk {
    fn step(&mut self) -> io::Result<()> {
        self.ops += 1;
        if self.fail_at == Some(self.ops) {
            return Err(io::Error::other("injected EIO"));
        }
        Ok(())
    }

    fn remember(&mut self) {
        if self.record_history {
            let mut copy = self.clone();
            copy.history.clear();
            copy.record_history = false;
            self.history.push(copy);
        }
    }

    /// Every disk a power cut at this moment could leave.
    fn crash_states(&self) -> Vec<SimDisk> {
        // Directory: each unflushed change kept or dropped.
        let changes = self.pending_dir.len();
        let mut states = Vec::new();
        for mask in 0..(1u32 << changes) {
            // Start from the visible files and undo the dropped changes.
            let mut files: BTreeMap<String, SimFile> = self.files.clone();
            for (i, change) in self.pending_dir.iter().enumerate().rev() {
                if mask & (1 << i) != 0 {
                    continue;
                }
                match change {
                    DirChange::Create(name) => {
                        files.remove(name);
                    }
                    DirChange::Remove(name, file) => {
                        files.insert(name.clone(), file.clone());
                    }
                }
            }
            // Contents: each unflushed append kept, dropped or torn in half.
            let mut partial: Vec<BTreeMap<String, Vec<u8>>> = vec![BTreeMap::new()];
            for (name, file) in &files {
                let mut variants = vec![file.durable.clone()];
                for (offset, data) in &file.pending {
                    let mut next = Vec::new();
                    for v in &variants {
                        next.push(v.clone());
                        let mut kept = v.clone();
                        write_at(&mut kept, *offset, data);
                        next.push(kept);
                        if data.len() > 1 {
                            let mut torn = v.clone();
                            write_at(&mut torn, *offset, &data[..data.len() / 2]);
                            next.push(torn);
                        }
                    }
                    variants = next;
                }
                partial = partial
                    .into_iter()
                    .flat_map(|p| {
                        variants.iter().map(move |v| {
                            let mut p = p.clone();
                            p.insert(name.clone(), v.clone());
                            p
                        })
                    })
                    .collect();
            }
            for image in partial {
                states.push(SimDisk {
                    files: image
                        .into_iter()
                        .map(|(n, bytes)| {
                            (
                                n,
                                SimFile {
                                    durable: bytes,
                                    pending: Vec::new(),
                                },
                            )
                        })
                        .collect(),
                    ..SimDisk::default()
                });
            }
        }
        states
    }
}

impl Storage for SimDisk {
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.files
            .get(name)
            .map(SimFile::visible)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let failed = self.step();
        if !self.files.contains_key(name) {
            self.files.insert(name.to_string(), SimFile::default());
            self.pending_dir.push(DirChange::Create(name.to_string()));
        }
        if self.failed_file.is_some() {
            self.appended_after_failure.push(name.to_string());
        }
        if failed.is_err() {
            self.failed_file = Some(name.to_string());
        }
        self.last_appended = Some(name.to_string());
        let file = self.files.get_mut(name).expect("inserted");
        let offset = file.visible().len();
        // A failed write may still have written a prefix.
        let written = if failed.is_err() {
            &data[..data.len() / 2]
        } else {
            data
        };
        file.pending.push((offset, written.to_vec()));
        self.remember();
        failed
    }

    fn flush(&mut self, name: &str) -> io::Result<()> {
        let failed = self.step();
        if failed.is_err() {
            self.failed_file = Some(name.to_string());
        }
        if failed.is_ok() {
            if let Some(file) = self.files.get_mut(name) {
                file.durable = file.visible();
                file.pending.clear();
            }
        }
        self.remember();
        failed
    }

    fn flush_dir(&mut self) -> io::Result<()> {
        let failed = self.step();
        if failed.is_err() {
            self.failed_file = self.last_appended.clone();
        }
        if failed.is_ok() {
            self.pending_dir.clear();
        }
        self.remember();
        failed
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.step()?;
        if let Some(file) = self.files.remove(name) {
            self.pending_dir
                .push(DirChange::Remove(name.to_string(), file));
        }
        self.remember();
        Ok(())
    }
}

const MODULES: [&str; 3] = ["alarm", "counter", "filter"];
const SHA: [u8; 32] = [9; 32];

/// A deterministic workload: rounds of stages (some unchanged) and a commit.
struct Workload {
    seed: u64,
}

impl Workload {
    fn next(&mut self) -> u64 {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.seed >> 33
    }
}

/// (module, epoch) → bytes staged with that epoch.
type StagedBytes = BTreeMap<(String, u64), Vec<u8>>;

/// From which operation count on each set of epochs counts as acknowledged.
type AckedFrom = Vec<(u64, BTreeMap<String, u64>)>;

/// Runs `rounds` commits; returns the bytes of every staged epoch and, per
/// operation count, the acknowledged epochs from then on.
fn run_workload(
    store: &mut Store<SimDisk>,
    rounds: usize,
    seed: u64,
) -> (StagedBytes, AckedFrom, usize) {
    let mut w = Workload { seed };
    let mut staged = StagedBytes::new();
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut acked_from = vec![(0, acked.clone())];
    let mut failures = 0;
    for round in 0..rounds {
        for module in MODULES {
            if w.next().is_multiple_of(3) {
                continue;
            }
            let len = (w.next() % 300) as usize;
            // Every fourth stage repeats the last bytes: not rewritten.
            let bytes: Vec<u8> = if w.next().is_multiple_of(4) {
                staged
                    .iter()
                    .rev()
                    .find(|((m, _), _)| m == module)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default()
            } else {
                (0..len)
                    .map(|i| (i as u64 ^ round as u64 ^ w.next()) as u8)
                    .collect()
            };
            match store.stage(module, SHA, &bytes).unwrap() {
                Staged::New(epoch) => {
                    staged.insert((module.to_string(), epoch), bytes);
                }
                Staged::Unchanged(epoch) => {
                    assert_eq!(staged[&(module.to_string(), epoch)], bytes);
                }
            }
        }
        match store.commit() {
            Ok(done) => {
                for (module, epoch) in done {
                    acked.insert(module, epoch);
                }
                acked_from.push((store.storage().ops, acked.clone()));
            }
            Err(_) => failures += 1,
        }
    }
    (staged, acked_from, failures)
}

/// Reopens a store on `disk` and checks every module against `acked`.
fn check_restore(disk: SimDisk, acked: &BTreeMap<String, u64>, staged: &StagedBytes, what: &str) {
    let (store, _reports) = Store::open(disk).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    for (module, &epoch) in acked {
        let (record, _) = store.restore(module, &SHA);
        let record = record.unwrap_or_else(|| panic!("{what}: {module} lost (acked {epoch})"));
        assert!(
            record.epoch >= epoch,
            "{what}: {module} restored epoch {} < acknowledged {epoch}",
            record.epoch
        );
        assert_eq!(
            &record.payload,
            &staged[&(module.clone(), record.epoch)],
            "{what}: {module} epoch {} has other bytes than were staged",
            record.epoch
        );
    }
}

#[test]
fn no_crash_state_loses_an_acknowledged_epoch() {
    let mut checked = 0usize;
    let mut points = 0usize;
    for seed in 1..=12u64 {
        let disk = SimDisk {
            record_history: true,
            ..SimDisk::default()
        };
        let (mut store, _) = Store::open(disk).unwrap();
        store.set_roll_min_bytes(1500);
        let (staged, acked_from, _) = run_workload(&mut store, 40, seed);
        let history = store.storage().history.clone();
        for (i, moment) in history.iter().enumerate() {
            let op = i as u64 + 1;
            // Acknowledged before this operation ran.
            let acked = &acked_from
                .iter()
                .rev()
                .find(|(from, _)| *from < op)
                .expect("the empty set is first")
                .1;
            points += 1;
            for state in moment.crash_states() {
                check_restore(state, acked, &staged, &format!("seed {seed}, op {op}"));
                checked += 1;
            }
        }
    }
    eprintln!("crash states checked: {checked} at {points} operations");
    assert!(checked > 2500, "only {checked} states");
}

#[test]
fn the_last_state_of_the_previous_wasm_survives_the_new_ones_snapshots_and_compaction() {
    const NEW: [u8; 32] = [7; 32];
    let (mut store, _) = Store::open(SimDisk::default()).unwrap();
    store.set_roll_min_bytes(1);
    for round in 0..3u8 {
        store.stage("counter", SHA, &[round; 8]).unwrap();
        store.commit().unwrap();
    }
    // An upgrade: the new wasm snapshots many times (compacting on the way).
    for round in 10..20u8 {
        store.stage("counter", NEW, &[round; 8]).unwrap();
        store.commit().unwrap();
    }
    let (record, _) = store.restore("counter", &SHA);
    assert_eq!(
        record.map(|r| (r.epoch, r.payload.clone())),
        Some((3, vec![2; 8]))
    );
    assert_eq!(store.restore("counter", &NEW).0.map(|r| r.epoch), Some(13));
    // And after a restart.
    let disk = store.storage().clone();
    let (store, _) = Store::open(disk).unwrap();
    assert_eq!(store.restore("counter", &SHA).0.map(|r| r.epoch), Some(3));
    assert_eq!(store.acknowledged("counter"), Some(13));
}

#[test]
fn group_commit_flushes_at_most_twice_and_skips_unchanged_state() {
    let (mut store, _) = Store::open(SimDisk::default()).unwrap();
    for module in MODULES {
        store.stage(module, SHA, b"first").unwrap();
    }
    let before = store.storage().ops;
    store.commit().unwrap();
    // New segment: append, flush, directory flush (plus list/remove, free).
    assert_eq!(store.storage().ops - before, 3);
    for round in 0..5u8 {
        for module in MODULES {
            store.stage(module, SHA, &[round; 10]).unwrap();
        }
        let before = store.storage().ops;
        store.commit().unwrap();
        assert_eq!(store.storage().ops - before, 2, "append + one flush");
    }
    assert_eq!(
        store.stage("counter", SHA, &[4; 10]).unwrap(),
        Staged::Unchanged(6)
    );
    let before = store.storage().ops;
    assert!(store.commit().unwrap().is_empty());
    assert_eq!(store.storage().ops, before, "nothing rewritten");
}

#[test]
fn an_io_error_anywhere_acknowledges_nothing_and_the_next_commit_starts_afresh() {
    // Count the operations of a clean run, then fail each one in turn.
    let (mut clean, _) = Store::open(SimDisk::default()).unwrap();
    clean.set_roll_min_bytes(1500);
    run_workload(&mut clean, 12, 77);
    let total = clean.storage().ops;
    for fail_at in 1..=total {
        let disk = SimDisk {
            fail_at: Some(fail_at),
            ..SimDisk::default()
        };
        let (mut store, _) = Store::open(disk).unwrap();
        store.set_roll_min_bytes(1500);
        let (mut staged, acked_from, failures) = run_workload(&mut store, 12, 77);
        if failures == 0 {
            continue; // the failing operation was a best-effort remove
        }
        // The store retries: the next commit succeeds.
        let bytes = b"after the failure".to_vec();
        let Staged::New(epoch) = store.stage("counter", SHA, &bytes).unwrap() else {
            panic!("new bytes");
        };
        staged.insert(("counter".to_string(), epoch), bytes);
        let done = store
            .commit()
            .unwrap_or_else(|e| panic!("EIO at op {fail_at}: the retry failed: {e}"));
        let mut acked = acked_from.last().unwrap().1.clone();
        for (module, epoch) in done {
            acked.insert(module, epoch);
        }
        // After the failure, no append went to the segment that failed, and
        // a later commit succeeded (the store retried in a fresh segment).
        let disk = store.storage();
        let failed = disk.failed_file.clone().expect("a failure was injected");
        assert!(
            !disk.appended_after_failure.contains(&failed),
            "EIO at op {fail_at}: appended to {failed} again"
        );
        assert!(
            !disk.appended_after_failure.is_empty(),
            "EIO at op {fail_at}: nothing written after the failure"
        );
        // Power cut at the end: only what was flushed survives, and every
        // acknowledged epoch is in it.
        for state in disk.crash_states() {
            check_restore(state, &acked, &staged, &format!("EIO at op {fail_at}"));
        }
    }
}
