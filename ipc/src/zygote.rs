//! Supervisor ⇄ fork-server (zygote) messages.
//!
//! The zygote is one `edgeward-worker zygote` process that set up the wasmtime
//! engine once and forks a worker per request, so workers share its pages
//! copy-on-write. Every worker ends up a child of the supervisor (see
//! `worker/src/zygote.rs`), which reaps it like any other child.
//!
//! The zygote reads requests in order but answers spawns as they complete:
//! it forks a spawn's intermediate process and goes on to the next request
//! while the intermediate forks the worker, so spawns overlap. Each
//! [`ToZygote::Spawn`] carries a request number that its
//! [`FromZygote::Spawned`] or [`FromZygote::SpawnFailed`] repeats. Each
//! [`ToZygote::Ping`] is answered with [`FromZygote::Pong`] once every
//! spawn requested before it is answered. The supervisor watches the zygote
//! like a worker: every reply is a sign of life; a zygote silent for a
//! while is pinged, and killed if it stays silent (stopped, or stuck in a
//! fork).

use serde::{Deserialize, Serialize};

/// A request from the supervisor to the zygote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToZygote {
    /// Fork a worker for `module`. Two fds travel with it: the worker's end of
    /// its control socketpair, then the write end of its output pipe (the
    /// worker's stdout and stderr).
    Spawn {
        /// Chosen by the supervisor, unique among its outstanding requests;
        /// the reply repeats it (replies come in completion order).
        request: u64,
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
    /// Are you alive? Answered with [`FromZygote::Pong`] once the spawn
    /// requests sent before it are answered. No fds travel with it (any that do are
    /// closed).
    Ping,
}

/// How a forked worker came to be in its module's cgroup.
///
/// Moving a running process into a cgroup (writing `cgroup.procs`) waits
/// for an RCU grace period, 10 to 20 ms, unless the hierarchy is mounted
/// with `favordynmods`. A process created in its cgroup by
/// `clone3(CLONE_INTO_CGROUP)` (cgroup v2, Linux 5.7) never migrates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Created in its cgroup by `clone3(CLONE_INTO_CGROUP)`: no migration.
    Clone3,
    /// The worker joins its cgroups itself (a migration), because `why`
    /// (cgroup v1, a kernel without `CLONE_INTO_CGROUP`, no cgroup at all).
    Joins {
        /// Why `clone3(CLONE_INTO_CGROUP)` was not used, for the log.
        why: String,
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
        /// The [`ToZygote::Spawn`] this answers.
        request: u64,
        /// Its pid (a child of the supervisor).
        pid: u32,
        /// How it came to be in its cgroup.
        placement: Placement,
    },
    /// The fork failed.
    SpawnFailed {
        /// The [`ToZygote::Spawn`] this answers.
        request: u64,
        /// Why.
        reason: String,
    },
    /// The answer to [`ToZygote::Ping`]. Not the answer to a `Spawn`.
    Pong,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_and_pong_are_appended_and_round_trip() {
        // Only ever appended: `Hello` stays number 0, so a fork server of
        // another build is still understood to be one, and its version
        // mismatch is reported in words.
        let requests = [
            (
                0,
                ToZygote::Spawn {
                    request: 1,
                    module: "counter".into(),
                    artifact: "/cache/counter.cwasm".into(),
                    cgroup_procs: vec![],
                },
            ),
            (1, ToZygote::Ping),
        ];
        for (number, request) in requests {
            let bytes = postcard::to_stdvec(&request).unwrap();
            assert_eq!(bytes[0], number, "{request:?}");
            assert_eq!(crate::frame::decode::<ToZygote>(&bytes).unwrap(), request);
        }
        let replies = [
            (
                0,
                FromZygote::Hello {
                    protocol_version: crate::PROTOCOL_VERSION,
                    engine_fingerprint: "0123456789abcdef".into(),
                },
            ),
            (
                1,
                FromZygote::Spawned {
                    request: 1,
                    pid: 7,
                    placement: Placement::Clone3,
                },
            ),
            (
                2,
                FromZygote::SpawnFailed {
                    request: 2,
                    reason: "fork: EAGAIN".into(),
                },
            ),
            (3, FromZygote::Pong),
        ];
        for (number, reply) in replies {
            let bytes = postcard::to_stdvec(&reply).unwrap();
            assert_eq!(bytes[0], number, "{reply:?}");
            assert_eq!(crate::frame::decode::<FromZygote>(&bytes).unwrap(), reply);
        }
    }
}
