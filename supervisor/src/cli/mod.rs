//! The command line: `edgeward run | exec | check | status | stop | restart | reload | upgrade | snapshot | new`.

pub mod check;
pub mod check_sandbox;
pub mod client;
pub mod exec;
pub mod new;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// edgeward: run many WebAssembly modules, each in its own hardened process.
#[derive(Debug, Parser)]
#[command(name = "edgeward", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the control socket is (client commands).
#[derive(Debug, clap::Args)]
pub struct ControlArg {
    /// Control socket of the running supervisor.
    #[arg(
        long,
        env = "EDGEWARD_CONTROL",
        default_value = "/run/edgeward/control.sock"
    )]
    pub control: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor in the foreground (it can be PID 1).
    Run {
        /// Directory of policy files (one *.toml per module).
        #[arg(
            long,
            env = "EDGEWARD_POLICIES",
            default_value = "/etc/edgeward/policies"
        )]
        policies: PathBuf,
        /// State directory (compile cache, snapshots).
        #[arg(long, env = "EDGEWARD_STATE", default_value = "/var/lib/edgeward")]
        state: PathBuf,
        #[command(flatten)]
        control: ControlArg,
        /// Grace period between Stop and SIGKILL when stopping, in ms.
        #[arg(long, env = "EDGEWARD_STOP_TIMEOUT_MS", default_value_t = 1000)]
        stop_timeout_ms: u64,
        /// How long a module may take to become ready, in ms.
        #[arg(long, env = "EDGEWARD_READY_TIMEOUT_MS", default_value_t = 10_000)]
        ready_timeout_ms: u64,
        /// First uid/gid of the per-module range (module N runs as base + N).
        #[arg(long, env = "EDGEWARD_UID_BASE", default_value_t = 300_000)]
        uid_base: u32,
        /// MiB added to a module's `memory_mib` for its cgroup memory limit
        /// (the worker's own runtime).
        #[arg(long, env = "EDGEWARD_RUNTIME_OVERHEAD_MIB", default_value_t = crate::sandbox_plan::DEFAULT_RUNTIME_OVERHEAD_MIB)]
        runtime_overhead_mib: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics and the status
        /// page at http://ADDR/ (e.g. 127.0.0.1:9477; off when not given).
        #[arg(long, env = "EDGEWARD_METRICS", value_name = "HOST:PORT")]
        metrics: Option<String>,
        /// How edgeward writes its log: `text` lines, or `json` (one
        /// object a line: time, level, module, event, fields).
        #[arg(long, env = "EDGEWARD_LOG_FORMAT", value_enum, default_value_t = crate::log_sink::Format::Text)]
        log_format: crate::log_sink::Format,
    },
    /// Run one command module once, in a worker's sandbox, with this
    /// terminal's stdin, stdout and stderr; exit with its exit code (134 if
    /// it trapped, 128+N if killed by signal N, 125 if it could not run).
    Exec {
        /// The module (a WASI preview 1 command: `_start`).
        wasm: PathBuf,
        /// Grant a directory: HOST[:GUEST][:ro] (GUEST defaults to HOST,
        /// read-write unless :ro). Repeatable. The module writes as the
        /// directory's owner; nothing is chowned.
        #[arg(long = "dir", value_name = "HOST[:GUEST][:ro]")]
        dirs: Vec<String>,
        /// Set an environment variable: KEY=VALUE. Repeatable.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        envs: Vec<String>,
        /// Take limits and grants from this policy file (its [module] wasm
        /// must exist; FILE.wasm is run instead).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The guest's memory cap in MiB (default: the policy's, else 32).
        #[arg(long)]
        memory_mib: Option<u32>,
        /// State directory whose compile cache is used (if it is not
        /// writable: $XDG_CACHE_HOME/edgeward-exec or ~/.cache/edgeward-exec).
        #[arg(long, env = "EDGEWARD_STATE", default_value = "/var/lib/edgeward")]
        state: PathBuf,
        /// First uid of the module range (exec runs as a uid of its own
        /// above every gateway's).
        #[arg(long, env = "EDGEWARD_UID_BASE", default_value_t = 300_000)]
        uid_base: u32,
        /// MiB added to memory_mib for the cgroup limit.
        #[arg(long, env = "EDGEWARD_RUNTIME_OVERHEAD_MIB", default_value_t = crate::sandbox_plan::DEFAULT_RUNTIME_OVERHEAD_MIB)]
        runtime_overhead_mib: u64,
        /// The module's arguments (after --).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Validate every policy and module; exit 0 if all are valid, 1 otherwise.
    Check {
        /// Directory of policy files.
        #[arg(
            long,
            env = "EDGEWARD_POLICIES",
            default_value = "/etc/edgeward/policies"
        )]
        policies: PathBuf,
        /// The state directory `run` will use: rw dirs must not overlap it.
        #[arg(long, env = "EDGEWARD_STATE", default_value = "/var/lib/edgeward")]
        state: PathBuf,
        /// Report which sandbox layers this host enforces instead (exit 1 if any is missing).
        #[arg(long)]
        sandbox: bool,
    },
    /// Create NAME/ with a working module (tick, a channel, a snapshot),
    /// its SDK, an executable NAME/build and NAME/policies/NAME.toml.
    New {
        /// The module's language.
        #[arg(long, value_enum)]
        lang: new::Lang,
        /// The module's name (also its directory, policy and channel).
        name: String,
        /// Where to create NAME/.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Show every module: a table, or the stable JSON with --json.
    Status {
        /// Print JSON (the stable interface) instead of a table.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw a live table (language, messages a second, memory) every
        /// --interval-ms until Ctrl-C, or until edgeward stops.
        #[arg(long)]
        watch: bool,
        /// Refresh period of --watch, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        interval_ms: u64,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Stop all modules and the supervisor (as SIGTERM); waits until done.
    Stop {
        #[command(flatten)]
        control: ControlArg,
    },
    /// Restart one module now (also clears a `failed` state).
    Restart {
        /// Module name (its policy file's stem).
        module: String,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Read the policy directory again and apply only the difference (as
    /// SIGHUP): start added modules, stop removed ones (after a final
    /// snapshot), restart changed ones; exit 1 if a policy was rejected.
    Reload {
        /// Apply an empty policy directory (stops every module); refused
        /// without it.
        #[arg(long)]
        allow_empty: bool,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Upgrade a running module to another wasm: validate and compile it,
    /// snapshot the module, start the new version from that state, keep it
    /// on probation, check its health, then switch for good; on any failure
    /// roll back to the old version and state. Returns once decided: exit 0
    /// upgraded, 1 refused or rolled back (the message says why).
    Upgrade {
        /// Module name (its policy file's stem).
        module: String,
        /// The new version's wasm file.
        wasm: PathBuf,
        /// How long the new version must run before its health check, ms.
        #[arg(long, default_value_t = 1000)]
        health_ms: u64,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Take a snapshot of one module now; returns once it is durable and
    /// prints its epoch.
    Snapshot {
        /// Module name (its policy file's stem).
        module: String,
        #[command(flatten)]
        control: ControlArg,
    },
}

/// The `edgeward-worker` binary: `EDGEWARD_WORKER`, else beside this binary.
pub fn worker_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEWARD_WORKER") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("edgeward-worker")))
        .unwrap_or_else(|| PathBuf::from("edgeward-worker"))
}

/// The `edgeward-connector` binary: `EDGEWARD_CONNECTOR`, else beside this
/// binary.
pub fn connector_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEWARD_CONNECTOR") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("edgeward-connector")))
        .unwrap_or_else(|| PathBuf::from("edgeward-connector"))
}
