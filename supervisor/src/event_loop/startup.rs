//! `edgeward run`'s start-up: policies loaded and checked, the state dir
//! locked, the fork server started, every wasm compiled (or found in the
//! cache), the rings made, then each module's cgroup made and its worker
//! spawned in start order, and the event loop entered.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::{say, Options, Supervisor, Token};
use crate::compile_cache::{CompileCache, Outcome};
use crate::control::clients::Clients;
use crate::control::server::ControlServer;
use crate::launcher::{Launcher, ProcessModel};
use crate::policy;
use crate::slot::Slot;

/// Runs the supervisor until it is stopped. Returns the exit code.
///
/// # Errors
/// Start-up failures: unreadable policy dir, unusable state dir, control
/// socket in use, worker binary missing.
pub fn run(options: Options, started: Instant) -> anyhow::Result<i32> {
    let signals = crate::signals::install()?;
    let loaded = policy::load_dir(&options.policies).with_context(|| {
        format!(
            "cannot read policy directory {} (set --policies or EDGEWARD_POLICIES)",
            options.policies.display()
        )
    })?;
    // An existing directory this user cannot write fails here too, with the
    // flag to pass, not later at its compile cache.
    crate::durable::create_dir_all(&options.state)
        .and_then(|()| {
            use nix::unistd::{access, AccessFlags};
            access(&options.state, AccessFlags::W_OK | AccessFlags::X_OK).map_err(Into::into)
        })
        .with_context(|| {
            format!(
                "cannot create or write state directory {} (set --state or EDGEWARD_STATE to a directory this user can write)",
                options.state.display()
            )
        })?;
    // Before anything touches the state or the cgroups; held until we exit.
    let _state_lock = crate::state_lock::StateLock::acquire(&options.state)?;
    let loaded = policy::check_across(loaded, &options.state, &[]);
    let control = ControlServer::bind(&options.control)?;
    let metrics = match options.metrics.as_deref() {
        Some(addr) => {
            let exporter = crate::metrics::Exporter::start(addr)?;
            say!(
                "metrics at http://{0}/metrics, status page at http://{0}/",
                exporter.local_addr()
            );
            Some((exporter, Instant::now()))
        }
        None => None,
    };
    let model = ProcessModel::from_env()?;
    if !options.worker_bin.is_file() {
        anyhow::bail!(
            "worker binary {} not found (install it beside edgeward or set EDGEWARD_WORKER)",
            options.worker_bin.display()
        );
    }
    let mut launcher = Launcher::new(model, options.worker_bin.clone());
    // The fork server initialises its engine while we detect the sandbox.
    launcher.prestart()?;
    let mut sandbox = crate::sandbox_plan::HostSandbox::detect(
        options.uid_base,
        options.runtime_overhead_mib,
        &options.state,
    );
    // Before the first worker migrates (cgroup v1 only).
    sandbox.favor_migrations();
    let fingerprint = launcher.fingerprint()?;

    let cache = CompileCache::open(&options.state, fingerprint)?;

    let mut slots: Vec<Slot> = loaded
        .into_iter()
        .map(|l| match l.result {
            Ok(policy) => Slot::new(policy),
            Err(errors) => {
                for e in &errors {
                    say!("module {}: invalid policy: {e}", l.name);
                }
                let reason = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" | ");
                Slot::failed(l.name, format!("invalid policy: {reason}"))
            }
        })
        .collect();
    if slots.is_empty() {
        say!(
            "no policies (*.toml) in {}; running with no modules",
            options.policies.display()
        );
    }

    // An upgraded module runs its upgrade's active slot, not its policy's wasm.
    let upgrades = crate::upgrade::record::UpgradeDir::new(&options.state);
    let wanted: Vec<(usize, (String, PathBuf))> = slots
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| {
            let upgraded = crate::upgrade::runbook::adopt_record(&upgrades, s);
            let policy = s.policy.as_ref()?;
            Some((
                i,
                upgraded.unwrap_or_else(|| (policy.wasm_sha256.clone(), policy.wasm.clone())),
            ))
        })
        .collect();
    let pairs: Vec<(String, PathBuf)> = wanted.iter().map(|(_, w)| w.clone()).collect();
    // Modules that can never start as they are, and why.
    let mut unstartable: Vec<(usize, String)> = Vec::new();
    for ((i, (sha, _)), outcome) in wanted.iter().zip(cache.ensure(&options.worker_bin, &pairs)) {
        let slot = &mut slots[*i];
        match outcome {
            Outcome::Hit(path) if slot.policy.as_ref().is_some_and(|p| p.connector.is_some()) => {
                slot.artifact = Some(path); // the connector binary: nothing compiled
            }
            Outcome::Hit(path) => {
                say!("module {}: compile cache hit ({})", slot.name, &sha[..12]);
                slot.artifact = Some(path);
            }
            Outcome::Compiled(path, ms) => {
                say!("module {}: compiled {} in {ms} ms", slot.name, &sha[..12]);
                slot.artifact = Some(path);
            }
            Outcome::Failed(reason) => {
                let wasm = slot.policy.as_ref().map(|p| p.wasm.display().to_string());
                unstartable.push((*i, format!("wasm {} {reason}", wasm.unwrap_or_default())));
            }
        }
    }

    let (wiring, wiring_errors) = {
        let policies: Vec<Option<&policy::Policy>> =
            slots.iter().map(|s| s.policy.as_ref()).collect();
        crate::channels::Wiring::build(&policies)
    };
    unstartable.extend(wiring_errors.into_iter().map(|e| (e.slot, e.reason)));
    if !wiring.rings.is_empty() {
        say!("data plane: {} ring(s)", wiring.rings.len());
    }

    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
    epoll.add(
        signals.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, Token::Signal.encode()),
    )?;
    let jobs = crate::jobs::Jobs::new().context("eventfd for background jobs")?;
    epoll.add(
        jobs.fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, Token::Jobs.encode()),
    )?;
    epoll.add(
        control.fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, Token::Control.encode()),
    )?;
    // The fork server (handshaken by `fingerprint` above) is read from the
    // start: its watchdog's Pongs come before any worker is launched.
    if let Some(fd) = launcher.take_new_zygote_socket() {
        epoll.add(
            fd,
            EpollEvent::new(EpollFlags::EPOLLIN, Token::Zygote.encode()),
        )?;
    }

    say!(
        "sandbox: {}; module uids from {}",
        sandbox.cgroup_description(),
        sandbox.identity(0).map_or_else(
            || "(none: not root)".to_string(),
            |(uid, _)| uid.to_string()
        )
    );
    let mut sandbox = sandbox;
    let quota = crate::volume::available();
    if let Err(why) = &quota {
        let quota_wanted = slots
            .iter()
            .filter_map(|s| s.policy.as_ref())
            .any(|p| p.rw_dirs().any(|d| d.quota_mib > 0));
        if quota_wanted {
            sandbox.warnings.push(format!(
                "disk quotas unavailable ({why}): rw dirs with quota_mib are plain directories, a module can fill their filesystem"
            ));
        }
    }
    for warning in &sandbox.warnings {
        say!("WARNING: {warning}");
    }
    let mut supervisor = Supervisor {
        options,
        epoll,
        signals,
        control: Some(control),
        clients: Clients::new(),
        jobs,
        after_jobs: std::collections::HashMap::new(),
        launcher,
        slots,
        started,
        shutdown_deadline: None,
        other_children: Vec::new(),
        // Its watchdog starts with the loop.
        fork_server_heard: Instant::now(),
        fork_server_pinged: false,
        stop_queue: Vec::new(),
        ignored_signals: std::collections::HashMap::new(),
        pending_spawns: std::collections::VecDeque::new(),
        placement_logged: None,
        unclaimed_exits: std::collections::HashMap::new(),
        all_ready_logged: false,
        sandbox,
        wiring,
        snapshots: crate::snapshot::rounds::Snapshots::default(),
        cache,
        reload: super::reload::ReloadProgress::Idle,
        upgrades,
        quota,
        metrics,
        totals: Default::default(),
    };
    supervisor.open_snapshots();
    say!(
        "supervising {} module(s) from {} ({} workers)",
        supervisor.slots.len(),
        supervisor.options.policies.display(),
        match model {
            ProcessModel::Zygote => "fork-server",
            ProcessModel::Exec => "exec-per",
        }
    );
    for (i, reason) in unstartable {
        supervisor.unstartable(i, reason);
    }
    // In start order; a module whose predecessors are not ready yet waits
    // (`order.rs` starts it once they are).
    let order = {
        let policies: Vec<Option<&policy::Policy>> =
            supervisor.slots.iter().map(|s| s.policy.as_ref()).collect();
        policy::start_order(&policies)
    };
    // Cgroups an earlier run left behind are emptied before any worker of
    // this run exists: eviction may wait (up to 2 s a module), and the
    // event loop, which answers workers and watches the fork server, is
    // not running yet.
    for &i in &order {
        if let Some(policy) = supervisor.slots[i].policy.as_ref() {
            if supervisor.sandbox.cgroup_left_over(policy) {
                supervisor.prepare_cgroup(i);
            }
        }
    }
    // The others are made just before their spawn, so the fork server
    // forks the first workers while the later cgroups are made; a cgroup
    // made now has no tasks to evict.
    for i in order {
        if supervisor.slots[i].cgroup.is_none() {
            supervisor.prepare_cgroup(i);
        }
        supervisor.spawn(i);
    }

    supervisor.event_loop()
}

impl Supervisor {
    /// Makes slot `i`'s cgroup at start-up, killing what an earlier run left
    /// in it (a cgroup made now has nothing to evict). A failure is logged;
    /// `spawn` tries again and fails the start with the reason.
    fn prepare_cgroup(&mut self, i: usize) {
        let Some(policy) = self.slots[i].policy.as_ref() else {
            return;
        };
        let name = &self.slots[i].name;
        match self.sandbox.cgroup(policy) {
            Ok(cgroup) => {
                let (stale, waited) = cgroup.as_ref().map_or((0, Duration::ZERO), |c| {
                    c.evict_stale(Duration::from_secs(2))
                });
                if stale > 0 || waited > Duration::from_millis(5) {
                    say!(
                        "module {name}: an earlier run left tasks in its cgroup: killed {stale}, waited {} ms for them to be reaped",
                        waited.as_millis()
                    );
                }
                self.slots[i].cgroup = cgroup;
            }
            Err(e) => say!("module {name}: cannot set up its cgroup yet: {e}"),
        }
    }
}
