//! The Init message: a policy's grants, the ring ends, the granted dirs
//! as fds, and the snapshot to restore.

use edgeward_ipc::control::{DirGrant, Init, OnFull, Restore, SandboxPlan, ToWorker};
use edgeward_ipc::frame::{self};
use edgeward_ipc::PROTOCOL_VERSION;
use std::os::fd::AsRawFd;

use super::{say, Supervisor};
use crate::policy::{DirMode, Policy};

impl Supervisor {
    /// Sends slot `i`'s worker its Init, with the fds of its ring ends.
    pub(crate) fn send_init(&mut self, i: usize) {
        // A connector's state dir and resolved grants (`connector.rs`).
        let is_connector = (self.slots[i].policy.as_ref()).is_some_and(|p| p.connector.is_some());
        let connector = match is_connector.then(|| self.connector_init(i)) {
            None => None,
            Some(Ok(connector)) => Some(connector),
            Some(Err(reason)) => {
                let slot = &mut self.slots[i];
                say!("module {}: {reason}", slot.name);
                if let Some(worker) = slot.worker.as_mut() {
                    worker.killed_because = Some(reason);
                    worker.end_cause = Some(crate::metrics::counters::EndCause::Load);
                    worker.kill();
                }
                return;
            }
        };
        let restore = self.restore_for(i);
        let slot = &self.slots[i];
        let (Some(policy), Some(artifact)) = (&slot.policy, &slot.artifact) else {
            return;
        };
        let plan = self.sandbox.plan(policy, i, slot.cgroup.as_ref());
        let mut init = init_message(policy, &artifact.to_string_lossy(), plan);
        init.connector = connector;
        // Every granted dir travels as an fd opened here (`DirGrant::passed`):
        // the module's uid then needs access to the dir itself, not to the
        // dirs above it, which it owns none of (`grant_access.rs`).
        let mut prepared_rw = slot.rw_dirs.iter().flat_map(|d| d.fds.iter());
        let mut opened_ro = Vec::new();
        let mut passed: Vec<i32> = Vec::new();
        for (grant, dir) in init.dirs.iter_mut().zip(&policy.dirs) {
            let fd = match dir.mode {
                DirMode::Rw => prepared_rw.next().map(AsRawFd::as_raw_fd),
                DirMode::Ro => open_granted(&dir.host).ok().map(|fd| {
                    let raw = fd.as_raw_fd();
                    opened_ro.push(fd);
                    raw
                }),
            };
            // Not openable (gone since the policy loaded): the worker opens
            // the path and reports the error in the module's words.
            if let Some(fd) = fd {
                grant.passed = true;
                passed.push(fd);
            }
        }
        let slots = &self.slots;
        let (channels, fds) = self.wiring.grants_for(i, policy, |j| slots[j].name.clone());
        init.channels = channels;
        let mut restore_memfd = None;
        if let Some((epoch, bytes)) = restore {
            let restore = Restore {
                epoch,
                len: bytes.len() as u64,
                inline: Vec::new(),
            };
            if restore.in_memfd() {
                match edgeward_ipc::sealed::seal("edgeward-restore", &bytes) {
                    Ok(fd) => {
                        restore_memfd = Some(fd);
                        init.restore = Some(restore);
                    }
                    Err(e) => say!(
                        "module {}: snapshot epoch {epoch} not restored: cannot make its memfd: {e}",
                        slot.name
                    ),
                }
            } else {
                init.restore = Some(Restore {
                    inline: bytes,
                    ..restore
                });
            }
        }
        // The granted dirs go first (`DirGrant::passed`), the restore
        // memfd, if any, last (`Restore` says so).
        let raw: Vec<i32> = passed
            .into_iter()
            .chain(fds.iter().map(|fd| fd.as_raw_fd()))
            .chain(restore_memfd.as_ref().map(|fd| fd.as_raw_fd()))
            .collect();
        let Some(control) = slot.worker.as_ref().and_then(|w| w.control.as_ref()) else {
            return;
        };
        if let Err(e) = frame::send(control, &ToWorker::Init(Box::new(init)), &raw) {
            say!("module {}: cannot send Init: {e}", slot.name);
        }
    }
}

/// Opens a granted dir to pass to its worker: a path handle only
/// (`O_PATH`), so opening reads nothing and needs no permission on the dir
/// itself; the worker's open through `/proc/self/fd` checks the module's.
fn open_granted(dir: &std::path::Path) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{open, OFlag};
    open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// The Init message for a policy: exactly its grants (none passed as an fd
/// yet: `send_init` decides).
pub(crate) fn init_message(policy: &Policy, artifact: &str, sandbox: SandboxPlan) -> Init {
    Init {
        protocol_version: PROTOCOL_VERSION,
        module: policy.name.clone(),
        artifact: artifact.to_string(),
        args: policy.args.clone(),
        env: policy.env.clone(),
        dirs: policy
            .dirs
            .iter()
            .map(|d| DirGrant {
                host: d.host.to_string_lossy().into_owned(),
                guest: d.guest.clone(),
                writable: d.mode == DirMode::Rw,
                passed: false,
            })
            .collect(),
        memory_limit_bytes: u64::from(policy.resources.memory_mib) << 20,
        tick_us: policy.tick_us,
        call_budget_ms: policy.resources.call_budget_ms,
        sandbox,
        channels: Vec::new(),
        max_message_bytes: policy.channels.max_message_kib << 10,
        on_full: match policy.channels.on_full {
            crate::policy::OnFull::Block => OnFull::Block,
            crate::policy::OnFull::Drop => OnFull::Drop,
            crate::policy::OnFull::Error => OnFull::Error,
        },
        spin_us: match policy.channels.wait {
            crate::policy::WaitMode::Park => 0,
            crate::policy::WaitMode::Spin { micros } => micros,
        },
        restore: None,
        stdin: false,
        connector: None,
    }
}
