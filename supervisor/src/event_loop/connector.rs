//! Connectors (`edgeward-connector`, `docs/connectors.md`): what the
//! supervisor does for them beyond a module's lifecycle. Their `Init`
//! carries the driver's table, the resolved grants (as the connector's
//! `/etc/hosts`) and a state dir of their own; their connect guard (a
//! seccomp listener) is answered here, each denial logged and counted;
//! their counters are kept for `status`.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;

use edgeward_ipc::control::{ConnectorCounters, ConnectorInit};

use super::background::{AfterJob, Output};
use super::{say, Supervisor, Token};
use crate::net_grant::resolve::{parse_endpoint, resolve};
use crate::net_grant::{ConnectGuard, Verdict};

/// Notifications answered per readiness of one guard before the loop
/// serves others.
const ANSWERS_PER_TURN: usize = 16;

impl Supervisor {
    /// What slot `i`'s connector worker needs beyond a module's `Init`:
    /// its state dir (created, owned by its uid) and its `/etc/hosts` (from
    /// the grants [`Supervisor::grants_ready`] resolved).
    ///
    /// # Errors
    /// The state dir cannot be made; in words for the module's `last_error`.
    pub(crate) fn connector_init(&mut self, i: usize) -> Result<ConnectorInit, String> {
        let identity = self.sandbox.identity(i);
        let slot = &mut self.slots[i];
        let Some(connector) = slot.policy.as_ref().and_then(|p| p.connector.clone()) else {
            return Err("not a connector".into());
        };
        let state_dir = self.options.state.join("connectors").join(&slot.name);
        std::fs::create_dir_all(&state_dir)
            .and_then(|()| {
                std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("cannot create its state dir {}: {e}", state_dir.display()))?;
        if let Some((uid, gid)) = identity {
            chown_tree(&state_dir, uid, gid).map_err(|e| {
                format!(
                    "cannot give its state dir {} to uid {uid}: {e}",
                    state_dir.display()
                )
            })?;
        }
        let Some((_, grants)) = &slot.net_grants else {
            return Err("its network grants are not resolved".into());
        };
        let init = ConnectorInit {
            kind: connector.kind.to_string(),
            config_toml: connector.config_toml.clone(),
            endpoints: connector.connect.clone(),
            hosts_file: grants.hosts_file(),
            state_dir: state_dir.to_string_lossy().into_owned(),
            read_files: connector.read_files.clone(),
            ports: grants.ports(),
        };
        Ok(init)
    }

    /// Whether slot `i`'s grants are resolved for its policy (always, for
    /// a module). If not, starts resolving them on a job thread (the
    /// resolver may wait on DNS) and returns `false`: the start goes on
    /// once they are ([`Supervisor::grants_resolved`]).
    pub(crate) fn grants_ready(&mut self, i: usize) -> bool {
        let slot = &mut self.slots[i];
        let Some(connect) = slot
            .policy
            .as_ref()
            .and_then(|p| p.connector.as_ref())
            .map(|c| c.connect.clone())
        else {
            return true;
        };
        if slot
            .net_grants
            .as_ref()
            .is_some_and(|(resolved_for, _)| *resolved_for == connect)
        {
            return true;
        }
        if slot.resolving.is_some() {
            return false;
        }
        let work = move || {
            let result = connect
                .iter()
                .map(|e| parse_endpoint(e))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|endpoints| resolve(&endpoints));
            Output::Grants(connect, result)
        };
        match self.in_background("resolve", work, AfterJob::StartWithGrants(i)) {
            Ok(id) => self.slots[i].resolving = Some(id),
            Err(e) => self.start_failed(i, format!("cannot resolve its grants: no thread: {e}")),
        }
        false
    }

    /// Slot `i`'s grants were resolved (by job `id`), or a name could not be.
    pub(crate) fn grants_resolved(
        &mut self,
        i: usize,
        id: crate::jobs::JobId,
        connect: Vec<String>,
        result: Result<crate::net_grant::resolve::ResolvedGrants, String>,
    ) {
        let slot = &mut self.slots[i];
        if slot.resolving != Some(id) {
            return; // the module went (or its policy changed) meanwhile
        }
        slot.resolving = None;
        match result {
            Ok(grants) => {
                slot.net_grants = Some((connect, grants));
                self.spawn(i);
            }
            Err(e) => self.start_failed(i, format!("network.connect: {e}")),
        }
    }

    /// Slot `i`'s connector sent its connect guard's listener (`fds`):
    /// watch it, answer its notifications with the slot's grants.
    pub(super) fn connect_guard_arrived(&mut self, i: usize, mut fds: Vec<OwnedFd>) {
        let slot = &mut self.slots[i];
        let grants = slot.net_grants.as_ref().map(|(_, grants)| grants.clone());
        let (Some(grants), Some(worker)) = (grants, slot.worker.as_mut()) else {
            return self.violation(
                i,
                "a connect guard from a module that is not a connector".into(),
            );
        };
        if fds.len() != 1 || worker.guard.is_some() {
            return self.violation(
                i,
                "a connect guard without exactly one fd, or a second one".into(),
            );
        }
        let Some(pid) = worker.pid else {
            return self.violation(i, "a connect guard before its pid was known".into());
        };
        let guard = ConnectGuard::new(fds.remove(0), pid, grants);
        super::watch(
            &self.epoll,
            &guard.fd(),
            Token::Guard {
                slot: i,
                generation: worker.generation,
            },
        );
        worker.guard = Some(guard);
    }

    /// Slot `i`'s connect guard has notifications: answer them (a few per
    /// turn), log and count each denial.
    pub(super) fn on_connect_guard(&mut self, i: usize, generation: u32) {
        let name = self.slots[i].name.clone();
        let slot = &mut self.slots[i];
        let Some(worker) = slot.worker.as_mut().filter(|w| w.generation == generation) else {
            return;
        };
        let Some(guard) = worker.guard.as_mut() else {
            return;
        };
        let mut denied = Vec::new();
        for _ in 0..ANSWERS_PER_TURN {
            match guard.answer_one() {
                Ok(None) => break,
                Ok(Some(Verdict::Granted { .. })) => slot.network.granted += 1,
                // Granted, but a step of ours failed (e.g. out of fds): the
                // connector's connect fails with that errno; not a denial.
                Ok(Some(Verdict::Failed { error })) => {
                    say!("module {name}: a granted connection failed: {error}");
                }
                Ok(Some(Verdict::Denied { what })) => {
                    slot.network.denied += 1;
                    denied.push(what);
                }
                Err(e) => {
                    // The connector is gone (or its filter is): stop
                    // watching; its exit is handled as any worker's.
                    if let Some(guard) = worker.guard.take() {
                        super::unwatch(&self.epoll, &guard.fd());
                    }
                    if !matches!(e, crate::net_grant::GuardError::Gone) {
                        say!("module {name}: its connect guard failed: {e}");
                    }
                    break;
                }
            }
        }
        for what in denied {
            self.audit(
                i,
                crate::metrics::counters::DenialKind::Network,
                1,
                &format!("a connection to {what}: not in [network] connect"),
            );
        }
    }

    /// Slot `i`'s connector reported its counters.
    pub(super) fn connector_counters(&mut self, i: usize, counters: ConnectorCounters) {
        self.slots[i].connector = Some(counters);
    }
}

/// Gives `dir` and everything in it to `uid:gid` (a connector's state dir:
/// its queue files survive a change of the uid range).
fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}
