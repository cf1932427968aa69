//! The A/B slots of upgraded modules, on disk: which wasm is active, and
//! which one an upgrade in progress is trying.
//!
//! `<state>/upgrades/<module>.json` holds an [`UpgradeRecord`];
//! `<state>/upgrades/<module>/<sha256>.wasm` holds the wasm of each slot
//! (content-addressed, at most the active and the pending one). Every
//! change is written to a temporary file, flushed, renamed over the record
//! and the directory flushed (`durable::write_atomic`), so after a crash at
//! any moment the record is either the old or the new one. At start, a
//! record with a `pending` slot means an upgrade was cut short: the active
//! slot runs (rollback), so exactly one slot is ever active.
//!
//! A module without a record runs the wasm its policy names. A record is
//! tied to that wasm (`policy_sha256`): when an operator points the policy at
//! another wasm, the policy wins and the record is dropped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;

/// One module's slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    /// sha256 of the wasm the policy named when the module was upgraded.
    pub policy_sha256: String,
    /// sha256 of the wasm that runs (the active slot).
    pub active: String,
    /// sha256 of the wasm an upgrade in progress is trying, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// `<state>/upgrades`.
pub struct UpgradeDir {
    dir: PathBuf,
}

impl UpgradeDir {
    /// The upgrade directory of a state dir (created when first written).
    pub fn new(state: &Path) -> Self {
        Self {
            dir: state.join("upgrades"),
        }
    }

    fn record_path(&self, module: &str) -> PathBuf {
        self.dir.join(format!("{module}.json"))
    }

    /// Where the wasm with `sha256` of `module` is kept.
    pub fn wasm_path(&self, module: &str, sha256: &str) -> PathBuf {
        self.dir.join(module).join(format!("{sha256}.wasm"))
    }

    /// The module's record, if it has one.
    ///
    /// # Errors
    /// The record exists but cannot be read or parsed (in words, with the
    /// path).
    pub fn read(&self, module: &str) -> Result<Option<UpgradeRecord>, String> {
        let path = self.record_path(module);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is damaged ({e})", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Replaces the module's record durably, and removes the wasm copies no
    /// slot names any more.
    ///
    /// # Errors
    /// Any step of the write; the previous record then stays in force.
    pub fn write(&self, module: &str, record: &UpgradeRecord) -> io::Result<()> {
        durable::create_dir_all(&self.dir)?;
        // Only this single-threaded supervisor writes here (the state dir
        // is locked), so any temporary file is a crash's leftover.
        durable::remove_temp_files(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        durable::write_atomic(&self.record_path(module), &bytes)?;
        self.remove_wasm_except(module, &[Some(&record.active), record.pending.as_ref()]);
        Ok(())
    }

    /// Removes the module's record and wasm copies: it runs its policy's
    /// wasm again.
    ///
    /// # Errors
    /// The record exists and cannot be removed.
    pub fn remove(&self, module: &str) -> io::Result<()> {
        match fs::remove_file(self.record_path(module)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        durable::fsync_dir(&self.dir)?;
        let _ = fs::remove_dir_all(self.dir.join(module));
        Ok(())
    }

    /// Keeps `bytes` (a wasm with `sha256`) as a slot of `module`, durably.
    /// Returns its path.
    ///
    /// # Errors
    /// Any step of the write.
    pub fn store_wasm(&self, module: &str, sha256: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        durable::create_dir_all(&self.dir.join(module))?;
        let path = self.wasm_path(module, sha256);
        durable::write_atomic(&path, bytes)?;
        Ok(path)
    }

    fn remove_wasm_except(&self, module: &str, keep: &[Option<&String>]) {
        let Ok(entries) = fs::read_dir(self.dir.join(module)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let sha = name.strip_suffix(".wasm").unwrap_or(&name);
            if !keep.iter().flatten().any(|k| k.as_str() == sha) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(active: &str, pending: Option<&str>) -> UpgradeRecord {
        UpgradeRecord {
            policy_sha256: "p".into(),
            active: active.into(),
            pending: pending.map(Into::into),
        }
    }

    #[test]
    fn records_round_trip_and_only_named_wasm_copies_stay() {
        let state = tempfile::tempdir().unwrap();
        let dir = UpgradeDir::new(state.path());
        assert_eq!(dir.read("m"), Ok(None));
        for sha in ["a", "b", "c"] {
            dir.store_wasm("m", sha, sha.as_bytes()).unwrap();
        }
        dir.write("m", &record("a", Some("b"))).unwrap();
        assert_eq!(dir.read("m"), Ok(Some(record("a", Some("b")))));
        assert!(dir.wasm_path("m", "a").is_file() && dir.wasm_path("m", "b").is_file());
        assert!(!dir.wasm_path("m", "c").exists(), "unnamed copy kept");
        dir.write("m", &record("b", None)).unwrap();
        assert!(!dir.wasm_path("m", "a").exists());
        dir.remove("m").unwrap();
        assert_eq!(dir.read("m"), Ok(None));
        assert!(!dir.wasm_path("m", "b").exists());
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_file() {
        let state = tempfile::tempdir().unwrap();
        let dir = UpgradeDir::new(state.path());
        fs::create_dir_all(state.path().join("upgrades")).unwrap();
        fs::write(state.path().join("upgrades/m.json"), b"{\"active\":").unwrap();
        let error = dir.read("m").unwrap_err();
        assert!(error.contains("upgrades/m.json is damaged"), "{error}");
    }
}
