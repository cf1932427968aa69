//! The policy file as written: serde types mirroring the TOML, unknown keys
//! rejected. Fields whose values need checks beyond their type carry their
//! source span (`Spanned`) so errors can point at them. Defaults are applied
//! in `validate.rs`, where they are also documented.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    /// Optional for a connector (which has no wasm but may have `after`).
    pub module: Option<Spanned<ModuleSection>>,
    /// A native connector instead of a wasm module (`docs/connectors.md`):
    /// `kind` plus the driver's own keys, checked by `edgeward-connector check`.
    pub connector: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub wasi: WasiSection,
    #[serde(default)]
    pub channels: ChannelsSection,
    #[serde(default)]
    pub resources: ResourcesSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    #[serde(default)]
    pub restart: RestartSection,
    #[serde(default)]
    pub snapshot: SnapshotSection,
    pub group: Option<GroupSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModuleSection {
    pub wasm: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    /// Modules this one starts after.
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
}

/// `[network]`: the endpoints a connector may reach.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkSection {
    #[serde(default)]
    pub connect: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WasiSection {
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    pub dirs: Vec<Spanned<DirEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DirEntry {
    pub host: String,
    pub guest: String,
    #[serde(default)]
    pub mode: DirMode,
    /// Disk quota of an `rw` dir, MiB (0: none).
    pub quota_mib: Option<Spanned<u32>>,
}

/// Access a module has to a granted directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirMode {
    /// Read-only (the default).
    #[default]
    Ro,
    /// Read-write.
    Rw,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChannelsSection {
    #[serde(default)]
    pub publish: Vec<Spanned<String>>,
    #[serde(default)]
    pub subscribe: Vec<Spanned<String>>,
    pub capacity_kib: Option<Spanned<u32>>,
    pub max_message_kib: Option<Spanned<u32>>,
    pub on_full: Option<OnFull>,
    pub wait: Option<Spanned<String>>,
}

/// What a `send` does when a subscriber's ring is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// Wait for space, up to the call budget, then return an error code.
    #[default]
    Block,
    /// Drop the new message and count it.
    Drop,
    /// Return an error code at once.
    Error,
}

/// How a consumer waits for messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitMode {
    /// Sleep in the kernel until woken (the default).
    #[default]
    Park,
    /// Busy-wait this many microseconds before sleeping.
    Spin {
        /// Microseconds.
        micros: u32,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResourcesSection {
    pub memory_mib: Option<Spanned<u32>>,
    pub cpu_percent: Option<Spanned<u32>>,
    pub pids: Option<Spanned<u32>>,
    pub call_budget_ms: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleSection {
    pub tick_us: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestartSection {
    pub policy: Option<RestartPolicy>,
    pub backoff_ms: Option<Spanned<Vec<u64>>>,
    pub intensity: Option<Spanned<Intensity>>,
    pub spare: Option<bool>,
    pub watchdog_ms: Option<Spanned<u64>>,
}

/// When a module's worker is restarted after it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After any end, even a clean exit.
    Always,
    /// After a trap, a crash, a kill or a non-zero exit (the default).
    #[default]
    OnFailure,
    /// Never; the module stays stopped or failed.
    Never,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Intensity {
    pub max: u32,
    pub window_s: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SnapshotSection {
    pub interval_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupSection {
    pub name: Spanned<String>,
    pub strategy: Option<Spanned<GroupStrategy>>,
}

/// What a group restarts when one of its members fails (OTP's restart
/// strategies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupStrategy {
    /// Only the failed member (the default).
    #[default]
    OneForOne,
    /// Every member of the group.
    OneForAll,
    /// The failed member and the members started after it.
    RestForOne,
}

impl GroupStrategy {
    /// The name as written in a policy, e.g. `one_for_all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneForOne => "one_for_one",
            Self::OneForAll => "one_for_all",
            Self::RestForOne => "rest_for_one",
        }
    }
}

impl std::fmt::Display for GroupStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
