//! Supervisor ⇄ worker control messages.
//!
//! The conversation is:
//!
//! 1. worker → [`FromWorker::Hello`] (protocol version, pid);
//! 2. supervisor → [`ToWorker::Init`] (everything the module is granted);
//! 3. worker → [`FromWorker::Ready`] once the module is instantiated and its
//!    `ew_init` returned 0 (a command module: once it is instantiated), or
//!    [`FromWorker::Fault`] and exit;
//! 4. then any number of [`FromWorker::Log`] / [`FromWorker::Heartbeat`], until the
//!    supervisor sends [`ToWorker::Stop`] or the worker faults. On request
//!    the worker answers [`ToWorker::Snapshot`], [`ToWorker::Health`] and
//!    [`ToWorker::Ping`], and takes a ring back after [`ToWorker::RingReset`].
//!
//! Liveness: every message a worker sends counts as a sign of life. When a
//! Ready worker has sent nothing for half its `watchdog_ms`, the supervisor
//! sends it [`ToWorker::Ping`], which the worker answers with a
//! [`FromWorker::Heartbeat`]; a worker still silent after the whole
//! `watchdog_ms` (stopped, stuck in a host call, deadlocked) is killed.
//!
//! Fields may be added only together with a [`crate::PROTOCOL_VERSION`] bump.

use serde::{Deserialize, Serialize};

/// A message from the supervisor to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Load and start the module. Sent once, after the worker's `Hello`.
    Init(Box<Init>),
    /// Stop gracefully: finish the current guest call and exit 0.
    Stop,
    /// The supervisor reset ring `ring` (after a corruption report and the
    /// death of its other side): use it again from its new positions.
    RingReset {
        /// The ring's id, as in [`RingGrant::ring`].
        ring: u32,
    },
    /// Take a snapshot: call `ew_snapshot` and answer with
    /// [`FromWorker::SnapshotData`] or [`FromWorker::SnapshotFailed`].
    Snapshot,
    /// Are you healthy? A reactor calls its `ew_health` export (0 when it
    /// exports none), a command answers 0; the answer is
    /// [`FromWorker::Health`]. Asked at the end of an upgrade's probation.
    Health,
    /// Are you alive? Sent to a Ready worker that has sent nothing for half
    /// its `watchdog_ms`, never before `Ready`. The worker answers with a
    /// [`FromWorker::Heartbeat`] carrying its current counters, even if
    /// unchanged, as soon as its loop reads the control socket: a reactor
    /// reads it between guest calls, so the answer comes within about one
    /// call budget; a command's control thread answers at once. Like every
    /// heartbeat the answer never waits for room: a full socket means the
    /// supervisor has plenty of this worker's messages to read, each a sign
    /// of life. Last in the enum, so the other requests keep their wire
    /// numbers.
    Ping,
}

/// Everything a worker needs to run its one module. Nothing outside this
/// message is granted to the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Init {
    /// Protocol version the supervisor speaks; must equal the worker's.
    pub protocol_version: u32,
    /// Module name (the policy file's stem), used in logs and fault reports.
    pub module: String,
    /// Absolute path of the precompiled artifact (`.cwasm`) to map.
    pub artifact: String,
    /// WASI argv, without argv\[0\] (the worker passes the module name there).
    pub args: Vec<String>,
    /// WASI environment, exactly as granted.
    pub env: Vec<(String, String)>,
    /// WASI preopened directories, exactly as granted.
    pub dirs: Vec<DirGrant>,
    /// Cap on the guest's linear memory, in bytes.
    pub memory_limit_bytes: u64,
    /// Period of `ew_on_tick` in microseconds; 0 disables ticks.
    pub tick_us: u64,
    /// Time budget of one guest call, in milliseconds.
    pub call_budget_ms: u32,
    /// How the worker confines itself before running guest code.
    pub sandbox: SandboxPlan,
    /// The channels granted, sorted by name: a channel's handle is its index.
    pub channels: Vec<ChannelGrant>,
    /// What `send` does when a subscriber's ring is full.
    pub on_full: OnFull,
    /// Largest message `send` accepts, bytes (`max_message_kib`).
    pub max_message_bytes: u32,
    /// Microseconds to busy-poll the rings before sleeping (0 = park at once).
    pub spin_us: u32,
    /// The state to hand back before the module counts as running: the
    /// newest durable snapshot taken by this same wasm, if any.
    pub restore: Option<Restore>,
    /// The guest reads the worker's stdin (`edgeward exec`, whose worker
    /// inherits the user's terminal or pipe). Otherwise it has none: a
    /// supervised module's stdin is `/dev/null` and is not granted.
    pub stdin: bool,
    /// Set for a connector worker (`edgeward-connector`): `artifact`,
    /// `args`, `env`, `dirs` and `tick_us` are then unused; `restore`
    /// carries its counters (its snapshot).
    pub connector: Option<ConnectorInit>,
}

/// A durable snapshot handed back to a (re)starting module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// Its epoch.
    pub epoch: u64,
    /// Its length in bytes.
    pub len: u64,
    /// The bytes, when at most [`crate::SNAPSHOT_PART_BYTES`]; otherwise
    /// empty, and the bytes are in a sealed memfd: the last fd sent with
    /// `Init`.
    pub inline: Vec<u8>,
}

impl Restore {
    /// Whether the bytes come in a memfd rather than inline.
    pub fn in_memfd(&self) -> bool {
        self.len as usize > crate::SNAPSHOT_PART_BYTES
    }
}

/// One channel a module may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelGrant {
    /// The channel's name, as in the policies.
    pub name: String,
    /// The module may send on it.
    pub publish: bool,
    /// The module receives it.
    pub subscribe: bool,
    /// The rings of this channel the module is an end of: one per
    /// subscriber when publishing, one per publisher when subscribing.
    pub rings: Vec<RingGrant>,
}

/// One ring end handed to a worker. The fds travel beside the `Init`
/// message (SCM_RIGHTS); these are indices into that fd list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingGrant {
    /// The supervisor's id of the ring (unique within a gateway run).
    pub ring: u32,
    /// The module at the other end.
    pub peer: String,
    /// Which end this worker is.
    pub role: RingRole,
    /// Index of the ring's memfd in the fds received with `Init`.
    pub memfd: usize,
    /// Index of the ring's eventfd (the consumer's wakeup) in those fds.
    pub eventfd: usize,
}

/// Which end of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingRole {
    /// This worker writes (publishes) into the ring.
    Producer,
    /// This worker reads (subscribes) from it.
    Consumer,
}

/// What `send` does when a subscriber's ring is full (`channels.on_full`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnFull {
    /// Wait for space up to the call budget, then return `EW_ERR_FULL`.
    #[default]
    Block,
    /// Drop the message for the full subscriber, count it, return 0.
    Drop,
    /// Return `EW_ERR_FULL` at once; nothing is sent to anyone.
    Error,
}

/// The sandbox a worker applies to itself (see `worker/src/sandbox/`).
/// The supervisor decides it; the worker only carries it out, step by
/// step, and reports each layer it could not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPlan {
    /// `cgroup.procs` files to write the worker's pid into: one per cgroup v1
    /// controller, or one for cgroup v2. Empty when the host has no usable cgroups.
    pub cgroup_procs: Vec<String>,
    /// The module's own uid and gid; `None` when the supervisor cannot switch
    /// identities (it is not root), which is reported as a degraded layer.
    pub identity: Option<(u32, u32)>,
    /// `RLIMIT_NOFILE` for the worker.
    pub max_fds: u64,
    /// `RLIMIT_NPROC` for the module's uid (threads count).
    pub max_threads: u64,
}

/// One preopened directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// Host path (absolute).
    pub host: String,
    /// Path the guest sees (absolute).
    pub guest: String,
    /// `true` for `rw`, `false` for `ro`.
    pub writable: bool,
    /// The directory itself comes with `Init` as an fd: the first fds of
    /// the message, one per passed grant, in grant order (the supervisor
    /// prepared it: a quota volume, owned by the module's uid). The worker
    /// uses it instead of opening `host`, which its mount namespace may show
    /// differently; `host` is then for messages only.
    pub passed: bool,
}

/// Which entry points a module has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleKind {
    /// Exports `ew_*` handlers the worker calls.
    Reactor,
    /// A plain WASI program (`_start`) running as a long-lived service.
    Command,
    /// A native connector (`edgeward-connector`): MQTT, Modbus TCP or OPC UA.
    Connector,
}

/// The longest text a `Log` message may carry, in bytes. A worker sends at
/// most 1 KiB of guest bytes per line, which lossy UTF-8 decoding can grow
/// to three times that; anything longer comes from a worker that no longer
/// follows the protocol.
pub const MAX_LOG_TEXT_BYTES: usize = 4096;

/// A message from a worker to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// First message of every worker.
    Hello {
        /// Protocol version the worker speaks.
        protocol_version: u32,
        /// The worker's pid as it sees it.
        pid: u32,
    },
    /// The module is instantiated and initialised; it now counts as running.
    Ready {
        /// Reactor or command.
        kind: ModuleKind,
        /// Sandbox layers this host could not apply, in words (empty when
        /// every layer is in force).
        degraded: Vec<String>,
        /// It can be asked for snapshots: a reactor exporting `ew_snapshot`,
        /// or a command importing `snapshot_put`.
        snapshots: bool,
    },
    /// A line the guest logged with the `log` import.
    Log {
        /// Severity the guest gave.
        level: LogLevel,
        /// The text (lossily UTF-8 decoded), at most [`MAX_LOG_TEXT_BYTES`]:
        /// the supervisor takes a longer one as a protocol violation.
        text: String,
    },
    /// Counters: periodic while they change, and the answer to
    /// [`ToWorker::Ping`] (then sent even if unchanged).
    Heartbeat(Stats),
    /// Why the worker is about to exit abnormally. The supervisor shows
    /// `message` as the module's `last_error`.
    Fault(Fault),
    /// A ring holds something impossible. The worker stopped using it (the
    /// module's other rings go on) and waits for [`ToWorker::RingReset`].
    RingCorrupt {
        /// The ring's id.
        ring: u32,
        /// The sequence number expected next.
        seq: u64,
        /// What was wrong.
        what: String,
    },
    /// The module's state, as it gave it to `snapshot_put` (at most
    /// [`crate::MAX_SNAPSHOT_BYTES`]): the last part, after the
    /// [`FromWorker::SnapshotPart`]s that precede it.
    SnapshotData(Vec<u8>),
    /// A leading part of the snapshot that the next
    /// [`FromWorker::SnapshotData`] completes ([`snapshot_messages`]).
    SnapshotPart(Vec<u8>),
    /// No snapshot this time, in words: `ew_snapshot` returned non-zero or
    /// never called `snapshot_put` (a trap is reported as a Fault instead).
    /// Empty when it returned 1, "nothing to save".
    SnapshotFailed(String),
    /// The answer to [`ToWorker::Health`]: 0 healthy, anything else not.
    Health(i32),
    /// A connector's seccomp listener for its `connect` calls comes with
    /// this message (one fd, SCM_RIGHTS), sent after its sandbox runbook
    /// and before its first connect (and before `Ready`). The supervisor answers each notification: it
    /// connects a socket of its own to the address if `[network] connect`
    /// grants it and installs it in the connector, or refuses with `EACCES`
    /// and counts the denial (`supervisor/src/net_grant/`).
    ConnectGuard,
    /// A connector's counters, sent beside each heartbeat.
    Connector(ConnectorCounters),
}

/// What a connector counts (see `connector/src/driver.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorCounters {
    /// Connected to every peer right now.
    pub connected: bool,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Peer errors: failed connects, timeouts, exceptions, disconnects.
    pub errors: u64,
    /// Messages delivered to peers.
    pub delivered: u64,
    /// Messages received from peers and sent on a channel.
    pub received: u64,
    /// Messages in the durable queue now.
    pub queued: u64,
    /// Messages the durable queue dropped (full or too old).
    pub queue_dropped: u64,
    /// Writes refused by the policy, or messages that were not a valid write.
    pub refused: u64,
}

/// What a connector worker runs (sent in [`Init::connector`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorInit {
    /// `mqtt`, `modbus` or `opcua`.
    pub kind: String,
    /// The policy's `[connector]` table without `kind`, as TOML text (the
    /// connector's drivers own its schema: `edgeward-connector check`).
    pub config_toml: String,
    /// `[network] connect`, as written (`host:port`).
    pub endpoints: Vec<String>,
    /// The connector's `/etc/hosts`: each granted name with the addresses
    /// the supervisor resolved and allows. Bind-mounted over `/etc/hosts`
    /// in the connector's own mount namespace.
    pub hosts_file: String,
    /// Its durable state directory (read-write, owned by its uid).
    pub state_dir: String,
    /// Files the config names (keys ending in `_file`): readable.
    pub read_files: Vec<String>,
    /// TCP ports of the granted endpoints (Landlock's second wall).
    pub ports: Vec<u16>,
}

/// Severity of a guest log line; the guest passes it as an `i32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// 0
    Error,
    /// 1
    Warn,
    /// 2
    Info,
    /// 3
    Debug,
}

impl LogLevel {
    /// Maps the guest's `level` argument; unknown values count as `Info`.
    pub fn from_guest(level: i32) -> Self {
        match level {
            0 => LogLevel::Error,
            1 => LogLevel::Warn,
            3 => LogLevel::Debug,
            _ => LogLevel::Info,
        }
    }

    /// Lower-case name used in the supervisor's output.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// Counters a worker reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Ticks delivered to the guest.
    pub ticks: u64,
    /// Messages handled by the guest.
    pub msgs_in: u64,
    /// Messages sent by the guest (counted once per `send`, whatever the
    /// number of subscribers).
    pub msgs_out: u64,
    /// `channel()` or `send()` calls on a channel the policy does not grant.
    pub denials: u64,
    /// `path_open` calls refused for a path outside the module's granted
    /// dirs or a write to a read-only one (protocol 12).
    pub path_denials: u64,
    /// Messages dropped for a full subscriber ring (`on_full = "drop"`).
    pub dropped: u64,
    /// Sends refused: a full ring (`block` timed out, or `error`), or a
    /// message over `max_message_kib`.
    pub refused: u64,
    /// Wake-ups written to subscribers' eventfds.
    pub wakes: u64,
    /// How late the recent `ew_on_tick` calls started; `None` for a module
    /// that does not tick (or before its first tick).
    pub tick_lateness: Option<TickLateness>,
}

/// Lateness of a reactor's recent ticks: from each tick's due time to the
/// start of its `ew_on_tick` call (a call covering coalesced expirations
/// counts from the oldest), over the last `ticks` ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickLateness {
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile (nearest rank), µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// Ticks the figures cover.
    pub ticks: u32,
    /// Every tick of this worker so far, by lateness: the Prometheus
    /// histogram `edgeward_tick_lateness_seconds` (protocol 12).
    pub histogram: LatenessHistogram,
}

/// Upper bounds of the tick lateness histogram's buckets, µs; a last,
/// unbounded bucket follows. From "on time" for a 1 ms tick to "a tick
/// missed by a tenth of a second".
pub const LATENESS_BUCKETS_US: [u64; 10] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000,
];

/// Tick lateness counted by bucket since a worker started (not
/// cumulative across buckets: `counts[i]` holds the ticks with lateness
/// in `(LATENESS_BUCKETS_US[i-1], LATENESS_BUCKETS_US[i]]`, the last one
/// those above every bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatenessHistogram {
    /// Ticks per bucket.
    pub counts: [u64; LATENESS_BUCKETS_US.len() + 1],
    /// Sum of every tick's lateness, µs.
    pub sum_us: u64,
}

impl LatenessHistogram {
    /// Counts one tick `lateness_us` late.
    pub fn record(&mut self, lateness_us: u64) {
        let bucket = LATENESS_BUCKETS_US.partition_point(|&bound| bound < lateness_us);
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(lateness_us);
    }

    /// Adds another worker's counts (a module's total over its workers).
    pub fn add(&mut self, other: &LatenessHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Ticks counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What went wrong in a worker, in words an operator understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Machine-readable class.
    pub kind: FaultKind,
    /// One line for `last_error`, e.g. `trap: unreachable in counter::on_tick`.
    pub message: String,
}

/// Class of a worker fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    /// The module could not be set up or instantiated (missing import,
    /// start function trapped, WASI or ring setup failed). A precompiled
    /// artifact that cannot be loaded is [`FaultKind::Artifact`] instead.
    Load,
    /// `ew_init` returned non-zero.
    InitFailed,
    /// A guest call trapped.
    Trap,
    /// A command module's `_start` returned or called `proc_exit` with a non-zero code.
    Exit,
    /// The supervisor broke the protocol (unexpected message, version mismatch).
    Protocol,
    /// A sandbox step failed; the worker refused to run the guest.
    Sandbox,
    /// The guest made a system call outside the seccomp allowlist.
    Seccomp,
    /// A guest call ran past its `call_budget_ms`.
    Budget,
    /// The precompiled artifact could not be loaded (missing, damaged, or
    /// from another engine): the supervisor's compile cache entry is bad,
    /// not the module, so deleting and recompiling it may cure the fault.
    /// Last in the enum so the other kinds keep their wire numbers (the
    /// worker's SIGSYS handler encodes `Seccomp` by hand).
    Artifact,
}

/// The messages that carry `state` to the supervisor: parts of
/// [`crate::SNAPSHOT_PART_BYTES`], the last one as
/// [`FromWorker::SnapshotData`].
pub fn snapshot_messages(state: &[u8]) -> Vec<FromWorker> {
    let mut parts: Vec<&[u8]> = state.chunks(crate::SNAPSHOT_PART_BYTES).collect();
    let last = parts.pop().unwrap_or(&[]).to_vec();
    parts
        .into_iter()
        .map(|p| FromWorker::SnapshotPart(p.to_vec()))
        .chain(std::iter::once(FromWorker::SnapshotData(last)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SNAPSHOT_PART_BYTES;

    fn reassemble(messages: Vec<FromWorker>) -> Vec<u8> {
        let mut out = Vec::new();
        let last = messages.len() - 1;
        for (i, m) in messages.into_iter().enumerate() {
            match m {
                FromWorker::SnapshotPart(p) if i < last => {
                    assert_eq!(p.len(), SNAPSHOT_PART_BYTES);
                    out.extend(p);
                }
                FromWorker::SnapshotData(p) if i == last => out.extend(p),
                other => panic!("unexpected {other:?} at {i}"),
            }
        }
        out
    }

    #[test]
    fn a_snapshot_of_any_size_travels_in_parts_that_fit_a_frame() {
        for len in [
            0,
            1,
            SNAPSHOT_PART_BYTES,
            SNAPSHOT_PART_BYTES + 1,
            5 * SNAPSHOT_PART_BYTES - 3,
        ] {
            let state: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let messages = snapshot_messages(&state);
            assert_eq!(messages.len(), len.div_ceil(SNAPSHOT_PART_BYTES).max(1));
            for m in &messages {
                assert!(postcard::to_stdvec(m).unwrap().len() <= crate::MAX_FRAME_BYTES);
            }
            assert_eq!(reassemble(messages), state, "len {len}");
        }
    }

    #[test]
    fn ping_is_appended_and_round_trips() {
        // Requests are only ever appended: `Init` stays number 0, so a worker
        // of another build still reads the supervisor's first request as
        // `Init` and reports the version mismatch in words.
        let requests = [
            ToWorker::Stop,
            ToWorker::RingReset { ring: 3 },
            ToWorker::Snapshot,
            ToWorker::Health,
            ToWorker::Ping,
        ];
        for (number, request) in (1u8..).zip(requests) {
            let bytes = postcard::to_stdvec(&request).unwrap();
            assert_eq!(bytes[0], number, "{request:?}");
            let back: ToWorker = crate::frame::decode(&bytes).unwrap();
            assert_eq!(back, request);
        }
        let answer = FromWorker::Heartbeat(Stats {
            msgs_in: 7,
            ..Stats::default()
        });
        let bytes = postcard::to_stdvec(&answer).unwrap();
        assert_eq!(crate::frame::decode::<FromWorker>(&bytes).unwrap(), answer);
    }

    #[test]
    fn fault_kinds_keep_their_wire_numbers() {
        // Kinds are only ever appended: a number never changes meaning, and
        // the SIGSYS handler's hand-made `Seccomp` frame stays right.
        let kinds = [
            FaultKind::Load,
            FaultKind::InitFailed,
            FaultKind::Trap,
            FaultKind::Exit,
            FaultKind::Protocol,
            FaultKind::Sandbox,
            FaultKind::Seccomp,
            FaultKind::Budget,
            FaultKind::Artifact,
        ];
        for (number, kind) in kinds.into_iter().enumerate() {
            assert_eq!(
                postcard::to_stdvec(&kind).unwrap(),
                [number as u8],
                "{kind:?}"
            );
        }
    }
}
