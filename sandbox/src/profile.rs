//! What kind of worker the runbook confines: a wasm module (forked by the
//! fork server or exec'd, no network, the module's dirs) or a connector (a
//! native network client exec'd by the supervisor, with a network grant).
//! The steps are the same; a connector's namespaces, Landlock rules and
//! seccomp list differ, and it gets one more step, the connect guard.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use super::seccomp_allowlist::Allowlist;

/// The worker kind, with what it is granted beyond the [`crate::Runbook`]'s
/// common fields.
#[derive(Debug, Clone, Copy)]
pub enum Profile<'a> {
    /// A wasm module: Landlock allows the runbook's `dirs`, the network
    /// namespace stays empty, the module allowlist applies.
    Module,
    /// A connector with its grants.
    Connector(&'a ConnectorGrants),
}

impl Profile<'_> {
    /// The seccomp allowlist this profile needs.
    pub fn allowlist(&self) -> Allowlist {
        match self {
            Profile::Module => Allowlist::Module,
            Profile::Connector(_) => Allowlist::Connector,
        }
    }
}

/// What a connector may touch. Landlock allows exactly these files, the
/// state dir and TCP connects to these ports; the connect guard sends every
/// connect to the supervisor, which checks the full address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorGrants {
    /// TCP ports the connector may connect to (Landlock's second wall: it
    /// checks ports only; addresses are the supervisor's, behind the
    /// connect guard).
    pub ports: Vec<u16>,
    /// Files it may read (CA bundle, client certificate and key). Each must
    /// exist and be a file.
    pub read_files: Vec<PathBuf>,
    /// Its one writable directory (the durable queue, OPC UA's PKI). Must
    /// exist.
    pub state_dir: PathBuf,
    /// The supervisor-written hosts file (the granted names and their
    /// addresses) bind-mounted over `/etc/hosts` in the connector's own
    /// mount namespace. A file bind mount pins the inode: the supervisor
    /// refreshes it by rewriting it in place, not by renaming a new file
    /// over it.
    pub hosts_file: PathBuf,
}

/// What the runbook leaves the worker once every step is applied.
#[derive(Debug)]
pub struct Applied {
    /// Layers this host could not apply, in words (e.g. `landlock: not
    /// supported by this kernel`), for the supervisor's log and `status`.
    pub degraded: Vec<String>,
    /// Connectors: the seccomp user-notification listener of the connect
    /// guard, `None` for modules and where the kernel has none (then
    /// `degraded` says so). The connector must send it to the supervisor
    /// over the control socket (fd 3, `SCM_RIGHTS`) and close its own copy
    /// before its first `connect`: until the supervisor holds it, a
    /// `connect` blocks, and no one else may answer it.
    pub connect_listener: Option<OwnedFd>,
}
