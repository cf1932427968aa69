//! Requests and responses on the control socket (JSON, one line each).
//! Human-debuggable: `echo '{"cmd":"status"}' | socat - UNIX:/run/edgeward/control.sock`.

use serde::{Deserialize, Serialize};

use crate::status::StatusReport;

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Report every module.
    Status,
    /// Stop everything (as SIGTERM).
    Stop,
    /// Restart one module now (clears its failed state and intensity).
    Restart {
        /// Module name.
        module: String,
    },
    /// Read the policy directory again and apply only the difference (as
    /// SIGHUP); answered with what it does, once new wasm is compiled.
    Reload {
        /// Apply a policy directory with no policies (stop every module);
        /// refused otherwise, as an emptied directory is more often a
        /// mistake than an intent.
        #[serde(default)]
        allow_empty: bool,
    },
    /// Upgrade a running module to another wasm: snapshot, switch, probation,
    /// health check; answered once committed or rolled back.
    Upgrade {
        /// Module name.
        module: String,
        /// Absolute path of the new wasm (the client resolves it).
        wasm: std::path::PathBuf,
        /// How long the new version must run before its health check, ms.
        health_ms: u64,
    },
    /// Take a snapshot of one module now; answered once it is durable.
    Snapshot {
        /// Module name.
        module: String,
    },
}

/// How a request is answered.
#[derive(Debug)]
pub enum Reply {
    /// Now (boxed: a status report is large, `Later` is nothing).
    Now(Box<Response>),
    /// Later, by the supervisor (the client's connection is kept open).
    Later,
}

/// The supervisor's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A human message for successful actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The report, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
    /// The durable snapshot epoch, for `snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl Response {
    /// A success with a message.
    pub fn done(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            error: None,
            message: Some(message.into()),
            status: None,
            epoch: None,
        }
    }

    /// A refusal.
    pub fn refused(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(error.into()),
            message: None,
            status: None,
            epoch: None,
        }
    }
}
