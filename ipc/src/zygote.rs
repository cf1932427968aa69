//! Supervisor ⇄ fork-server (zygote) messages.
//!
//! The zygote is one `edgeward-worker zygote` process that set up the wasmtime
//! engine once and forks a worker per request, so workers share its pages
//! copy-on-write. Every worker ends up a child of the supervisor (see
//! `worker/src/zygote.rs`), which reaps it like any other child.

use serde::{Deserialize, Serialize};

/// A request from the supervisor to the zygote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToZygote {
    /// Fork a worker for `module`. Two fds travel with it: the worker's end of
    /// its control socketpair, then the write end of its output pipe (the
    /// worker's stdout and stderr).
    Spawn {
        /// Module name, for the worker's process title and reports.
        module: String,
        /// Artifact the worker will load; the zygote maps it first so all
        /// workers of one artifact share the mapping.
        artifact: String,
        /// The module's `cgroup.procs` files. The worker joins them at once,
        /// before its Hello: a spare worker waiting for `Init` has then
        /// already paid for the migration (on cgroup v1, an RCU grace
        /// period of 10 to 20 ms).
        cgroup_procs: Vec<String>,
    },
}

/// A reply from the zygote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromZygote {
    /// First message: the zygote is ready to fork.
    Hello {
        /// Protocol version the zygote speaks.
        protocol_version: u32,
        /// Identifies the engine configuration: artifacts compiled under another
        /// fingerprint cannot be loaded. Part of the compile-cache key.
        engine_fingerprint: String,
    },
    /// The worker was forked.
    Spawned {
        /// Its pid (a child of the supervisor).
        pid: u32,
    },
    /// The fork failed.
    SpawnFailed {
        /// Why.
        reason: String,
    },
}
