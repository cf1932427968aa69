//! Policy files: one TOML file per module, deny-by-default.
//!
//! A module's name is its file's stem (`policies/temp-alert.toml` →
//! `temp-alert`). Every key is documented in `docs/policy.md`; unknown keys
//! are errors. Loading a directory never stops at the first bad file: each
//! file yields either a [`Policy`] or all the [`PolicyError`]s found in it.

mod across;
pub(crate) mod error;
mod order;
mod schema;
mod validate;

use std::path::{Path, PathBuf};

pub use across::check_across;
pub use error::PolicyError;
pub use order::start_order;
pub use schema::{DirMode, GroupStrategy, OnFull, RestartPolicy, WaitMode};
pub(crate) use validate::valid_name;

/// A validated policy, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Module name (the file stem).
    pub name: String,
    /// The policy file.
    pub file: PathBuf,
    /// Absolute path of the module's wasm.
    pub wasm: PathBuf,
    /// Line and column of the `wasm` key's value, for errors about the module.
    pub wasm_location: (usize, usize),
    /// sha256 of the wasm file as read at load time (hex).
    pub wasm_sha256: String,
    /// The language the wasm was written in, if its toolchain said
    /// (`wasm_language.rs`).
    pub wasm_language: Option<&'static str>,
    /// WASI argv (without argv\[0\]).
    pub args: Vec<String>,
    /// WASI environment.
    pub env: Vec<(String, String)>,
    /// Preopened directories.
    pub dirs: Vec<Dir>,
    /// `[channels]`.
    pub channels: Channels,
    /// `[resources]`.
    pub resources: Resources,
    /// `[schedule] tick_us`.
    pub tick_us: u64,
    /// `[restart]`.
    pub restart: Restart,
    /// `[snapshot] interval_ms`.
    pub snapshot_interval_ms: u64,
    /// `[module] after`: the modules this one starts after (once they are
    /// Ready), as written; each a valid module name, none twice, never the
    /// module itself.
    pub after: Vec<String>,
    /// Line and column of each `after` entry (parallel to `after`), for
    /// errors about it.
    pub after_locations: Vec<(usize, usize)>,
    /// `[group]`; `None` is a group of the module alone (`one_for_one`).
    pub group: Option<Group>,
    /// `[connector]` and `[network]`: set for a native connector, whose
    /// `wasm` is then the connector binary's name, `wasm_sha256` the hash
    /// of its configuration and `wasm_language` its kind.
    pub connector: Option<ConnectorPolicy>,
}

/// A connector's policy after validation (`docs/connectors.md`). Its
/// driver's keys are checked by `edgeward-connector check`, which owns
/// their schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorPolicy {
    /// `mqtt`, `modbus` or `opcua`.
    pub kind: &'static str,
    /// The `[connector]` table without `kind`, as TOML text.
    pub config_toml: String,
    /// `[network] connect`, as written, each a valid `host:port`.
    pub connect: Vec<String>,
    /// Files the table names (string values of keys ending in `_file`):
    /// the connector may read them, and nothing else outside its state dir.
    pub read_files: Vec<String>,
}

/// A connector policy's `wasm`: not a path (every module's is absolute),
/// the name of the binary that runs it (`crate::cli::connector_bin`).
pub const CONNECTOR_WASM: &str = "edgeward-connector";

/// The connector kinds (`[connector] kind`).
pub const CONNECTOR_KINDS: [&str; 3] = ["mqtt", "modbus", "opcua"];

/// `[group]` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group's name (module-name rules); the modules whose policies
    /// give the same name are its members.
    pub name: String,
    /// What a member's failure restarts (`one_for_one` when not given).
    pub strategy: GroupStrategy,
    /// Line and column of the `strategy` value, or of the `name` value when
    /// `strategy` is not given, for errors about the group.
    pub location: (usize, usize),
}

/// One granted directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    /// Absolute host path (must exist).
    pub host: PathBuf,
    /// Absolute guest path.
    pub guest: String,
    /// Read-only or read-write.
    pub mode: DirMode,
    /// Disk quota of an `rw` dir in MiB (0: none, a plain directory).
    pub quota_mib: u32,
    /// Line and column of its `host` value, for errors about it.
    pub location: (usize, usize),
}

/// Default `quota_mib` of an `rw` dir.
pub const DEFAULT_QUOTA_MIB: u32 = 64;

/// Largest `quota_mib` (1 TiB).
pub const MAX_QUOTA_MIB: u32 = 1 << 20;

/// Default `[restart] watchdog_ms` (raised to [`WATCHDOG_BUDGETS`] ×
/// `call_budget_ms` when that is larger).
pub const DEFAULT_WATCHDOG_MS: u64 = 1000;

/// The smallest `watchdog_ms` is this many call budgets. A reactor answers
/// a ping between guest calls: one that arrives just after a call began
/// waits for that call and, at worst, one more (a message delivered before
/// the loop looks at its control socket), so two budgets plus the ping's
/// own lead (`event_loop/watchdog.rs`, `ping_after`) must fit.
pub const WATCHDOG_BUDGETS: u64 = 3;

/// Smallest `watchdog_ms` other than 0 (off).
pub const MIN_WATCHDOG_MS: u64 = 100;

/// Largest `watchdog_ms` (an hour).
pub const MAX_WATCHDOG_MS: u64 = 3_600_000;

/// `[channels]` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// Channels the module may send on.
    pub publish: Vec<String>,
    /// Channels the module receives.
    pub subscribe: Vec<String>,
    /// Ring size per (publisher, subscriber, channel), KiB.
    pub capacity_kib: u32,
    /// Largest message, KiB.
    pub max_message_kib: u32,
    /// What `send` does on a full ring.
    pub on_full: OnFull,
    /// How a consumer waits.
    pub wait: WaitMode,
}

/// `[resources]` after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Linear memory cap, MiB.
    pub memory_mib: u32,
    /// CPU quota, percent of one core.
    pub cpu_percent: u32,
    /// Max processes/threads.
    pub pids: u32,
    /// Budget of one guest call, ms.
    pub call_budget_ms: u32,
}

/// `[restart]` after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// When to restart.
    pub policy: RestartPolicy,
    /// First backoff, ms.
    pub backoff_min_ms: u64,
    /// Largest backoff, ms.
    pub backoff_max_ms: u64,
    /// Restarts allowed within `window_s` before the module is marked failed.
    pub intensity_max: u32,
    /// The intensity window, seconds.
    pub intensity_window_s: u32,
    /// Keep a spare worker forked and in the module's cgroups, so that a
    /// restart skips process creation and the cgroup migration.
    pub spare: bool,
    /// Liveness watchdog, ms: a worker that sends nothing and answers no
    /// ping for this long is killed and restarted; 0 turns it off. Never
    /// below [`WATCHDOG_BUDGETS`] × `call_budget_ms` (unless 0).
    pub watchdog_ms: u64,
}

/// The outcome of loading one policy file.
#[derive(Debug)]
pub struct Loaded {
    /// Module name (file stem), known even when the file is invalid.
    pub name: String,
    /// The policy file.
    pub file: PathBuf,
    /// The policy, or every error found in the file.
    pub result: Result<Policy, Vec<PolicyError>>,
}

/// Loads every `*.toml` file in `dir`, sorted by name.
///
/// # Errors
/// Only if the directory itself cannot be read; problems with single files
/// are reported in each [`Loaded`].
pub fn load_dir(dir: &Path) -> std::io::Result<Vec<Loaded>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    let mut digests = WasmDigests::default();
    Ok(files
        .iter()
        .map(|f| load_file_with(f, &mut digests))
        .collect())
}

/// The sha256 and language of the wasm files read while loading policies,
/// so that modules sharing one wasm (the gateway's 14 Go modules share a
/// 2.8 MB one) read and hash it once per load. An entry is used again only
/// while the file's size, modification time and inode are unchanged.
#[derive(Default)]
pub(crate) struct WasmDigests {
    seen: std::collections::HashMap<PathBuf, (FileStamp, String, Option<&'static str>)>,
}

/// What tells one version of a file from another, short of reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl WasmDigests {
    /// The hex sha256 and language of the wasm at `path`.
    ///
    /// # Errors
    /// The file cannot be read.
    pub(crate) fn of(&mut self, path: &Path) -> std::io::Result<(String, Option<&'static str>)> {
        use sha2::{Digest, Sha256};
        use std::os::unix::fs::MetadataExt;
        let stamp = |m: &std::fs::Metadata| FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
        };
        let before = stamp(&std::fs::metadata(path)?);
        if let Some((seen, sha, language)) = self.seen.get(path) {
            if *seen == before {
                return Ok((sha.clone(), *language));
            }
        }
        let bytes = std::fs::read(path)?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let language = crate::wasm_language::language(&bytes);
        // Changed while read: hash it again next time.
        if stamp(&std::fs::metadata(path)?) == before {
            self.seen
                .insert(path.to_path_buf(), (before, sha.clone(), language));
        }
        Ok((sha, language))
    }
}

impl Policy {
    /// Whether `other` differs from this policy in anything that matters
    /// to a running module (where keys sit in the file does not).
    pub fn same_as(&self, other: &Policy) -> bool {
        let mut other = other.clone();
        other.wasm_location = self.wasm_location;
        for (mine, theirs) in self.dirs.iter().zip(&mut other.dirs) {
            theirs.location = mine.location;
        }
        if let (Some(mine), Some(theirs)) = (&self.group, &mut other.group) {
            theirs.location = mine.location;
        }
        // The order of `after` and where its entries sit do not matter.
        let sorted = |after: &[String]| {
            let mut after = after.to_vec();
            after.sort();
            after
        };
        if sorted(&self.after) != sorted(&other.after) {
            return false;
        }
        other.after.clone_from(&self.after);
        other.after_locations.clone_from(&self.after_locations);
        *self == other
    }

    /// The module's group strategy (`one_for_one` without a `[group]`).
    pub fn strategy(&self) -> GroupStrategy {
        self.group
            .as_ref()
            .map_or_else(GroupStrategy::default, |g| g.strategy)
    }

    /// Its read-write grants.
    pub fn rw_dirs(&self) -> impl Iterator<Item = &Dir> {
        self.dirs.iter().filter(|d| d.mode == DirMode::Rw)
    }
}

/// Validates a policy's text as if read from `file` (relative paths are
/// relative to its directory); `name` is the module's name.
///
/// # Errors
/// Every error found, each naming `file`, the line and the fix.
pub fn parse_text(file: &Path, name: &str, text: &str) -> Result<Policy, Vec<PolicyError>> {
    validate::parse(file, name, text, &mut WasmDigests::default())
}

/// Loads and validates one policy file.
#[cfg(test)]
pub fn load_file(file: &Path) -> Loaded {
    load_file_with(file, &mut WasmDigests::default())
}

/// [`load_file`], with the digests of wasm files already read.
fn load_file_with(file: &Path, digests: &mut WasmDigests) -> Loaded {
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = match std::fs::read_to_string(file) {
        Ok(text) => validate::parse(file, &name, &text, digests),
        Err(e) => Err(vec![PolicyError::whole_file(
            file,
            format!("cannot read policy: {e}"),
            "check the path and its permissions",
        )]),
    };
    Loaded {
        name,
        file: file.to_path_buf(),
        result,
    }
}
