//! Running one module: handshake, load, instantiate, then hand over to the
//! reactor or command loop. Shared by `serve` (exec per worker) and the
//! children of the fork server.

mod command;
mod lateness;
mod reactor;
mod slice;
mod snapshot;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use edgeward_ipc::control::{FaultKind, FromWorker, Init, ModuleKind, Stats, ToWorker};
use edgeward_ipc::{frame, PROTOCOL_VERSION};
use wasmtime::error::Context;
use wasmtime::{Engine, Instance, Linker, Module, Store};

use crate::exit_code;
use crate::host::{self, HostState};
use crate::report::Reporter;

/// What is set up once per worker-side process and reused for every module
/// it runs: in the fork server, children inherit all of it copy-on-write.
pub struct Prepared {
    /// The engine (see [`crate::engine`]).
    pub engine: Engine,
    /// Linker with every import defined.
    pub linker: Linker<HostState>,
    /// Artifacts already mapped, by path.
    pub artifacts: HashMap<String, Module>,
    /// The seccomp allowlist, compiled once.
    pub seccomp: edgeward_sandbox::seccomp::CompiledFilter,
    /// Set by the fork server once it entered fresh namespaces for all its
    /// workers: the layers it could not get.
    pub namespaces: Option<Vec<String>>,
}

impl Prepared {
    /// Builds the engine and linker.
    ///
    /// # Errors
    /// If the engine cannot be configured on this host.
    pub fn new() -> wasmtime::Result<Self> {
        let engine = crate::engine::build()?;
        crate::budget::install(&engine);
        let linker = host::linker(&engine)?;
        let seccomp =
            edgeward_sandbox::seccomp::compile().map_err(|e| wasmtime::format_err!("{e}"))?;
        Ok(Self {
            engine,
            linker,
            artifacts: HashMap::new(),
            seccomp,
            namespaces: None,
        })
    }

    /// Maps the artifact at `path` (once; later calls reuse the mapping).
    ///
    /// # Errors
    /// If the file is missing, damaged, or was compiled by another engine
    /// configuration. Reported as `FaultKind::Artifact`.
    pub fn artifact(&mut self, path: &str) -> wasmtime::Result<Module> {
        if let Some(module) = self.artifacts.get(path) {
            return Ok(module.clone());
        }
        // SAFETY: `deserialize_file` trusts the artifact's machine code. Only
        // the supervisor writes the compile cache (in its state dir, through our
        // own `compile` step) and it passes only paths inside that cache.
        let module = unsafe { Module::deserialize_file(&self.engine, path) }
            .with_context(|| format!("cannot load precompiled artifact {path}"))?;
        self.artifacts.insert(path.to_string(), module.clone());
        Ok(module)
    }
}

/// Runs the module the supervisor describes on `control`, to the end.
/// Returns the process exit code.
pub fn serve(prepared: &mut Prepared, control: OwnedFd) -> i32 {
    let supervisor = nix::unistd::getppid();
    let control = match control_on_fd_3(control) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgeward-worker: cannot place the control socket on fd 3: {e}");
            return exit_code::LOAD_FAILED;
        }
    };
    // Everything open now was inherited; the sandbox closes what is not ours.
    let inherited_fds = edgeward_sandbox::fds::open_fds();
    let hello = FromWorker::Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    if frame::send(&control, &hello, &[]).is_err() {
        return exit_code::SUPERVISOR_GONE;
    }
    let (mut init, mut ring_fds) = match frame::recv::<ToWorker>(&control) {
        Ok((ToWorker::Init(init), fds)) => (*init, fds),
        Ok((other, _)) => {
            let reporter = Reporter::new(control, String::from("?"));
            reporter.fault(
                FaultKind::Protocol,
                format!("protocol: expected Init, got {other:?}"),
            );
            return exit_code::LOAD_FAILED;
        }
        Err(_) => return exit_code::SUPERVISOR_GONE,
    };
    crate::zygote::set_process_name(&init.module);
    let reporter = Arc::new(Reporter::new(control, init.module.clone()));
    if init.protocol_version != PROTOCOL_VERSION {
        reporter.fault(
            FaultKind::Protocol,
            format!(
                "protocol: supervisor speaks version {}, worker {PROTOCOL_VERSION}; install matching binaries",
                init.protocol_version
            ),
        );
        return exit_code::LOAD_FAILED;
    }
    if init.connector.is_some() {
        reporter.fault(
            FaultKind::Protocol,
            "protocol: a connector's Init sent to edgeward-worker (connectors run edgeward-connector)".into(),
        );
        return exit_code::LOAD_FAILED;
    }
    // The prepared rw dirs come first among the fds; the worker opens them
    // through /proc/self/fd (as WASI and Landlock take paths), so they are
    // exactly the directories the supervisor prepared, whatever this mount
    // namespace shows at their host paths. Closed once the sandbox is up.
    let passed = init.dirs.iter().filter(|d| d.passed).count();
    if ring_fds.len() < passed {
        reporter.fault(
            FaultKind::Protocol,
            format!("protocol: Init grants {passed} passed dir(s) but carries fewer fds"),
        );
        return exit_code::LOAD_FAILED;
    }
    let dir_fds: Vec<OwnedFd> = ring_fds.drain(..passed).collect();
    for (grant, fd) in init.dirs.iter_mut().filter(|d| d.passed).zip(&dir_fds) {
        grant.host = format!("/proc/self/fd/{}", fd.as_raw_fd());
    }
    // Only this module's artifact stays mapped; the others' files close.
    prepared.artifacts.retain(|path, _| *path == init.artifact);
    // Their fd numbers are free now, and the WASI dirs opened below may
    // take them: only what is still open counts as inherited, or step 6
    // would close a granted dir (seen in gateways of 23+ modules).
    let open_now = edgeward_sandbox::fds::open_fds();
    let inherited_fds: Vec<_> = inherited_fds
        .into_iter()
        .filter(|fd| open_now.contains(fd))
        .collect();
    let module = match prepared.artifact(&init.artifact) {
        Ok(m) => m,
        Err(e) => {
            // A distinct kind: the supervisor may delete and recompile it.
            reporter.fault(FaultKind::Artifact, format!("{e:#}"));
            return exit_code::LOAD_FAILED;
        }
    };
    // Preopened dirs are opened before the sandbox: they are the handles the
    // module is given. Landlock then allows exactly these paths.
    let wasi = match host::wasi::context(&init) {
        Ok(w) => w,
        Err(e) => {
            reporter.fault(FaultKind::Load, format!("{e:#}"));
            return exit_code::LOAD_FAILED;
        }
    };
    snapshot::receive(&mut init, &mut ring_fds, &reporter);
    // Rings are mapped before the sandbox; only their eventfds stay open.
    let channels = match host::channels::Channels::attach(&init, ring_fds, Arc::clone(&reporter)) {
        Ok(c) => c,
        Err(e) => {
            reporter.fault(FaultKind::Load, format!("channels: {e}"));
            return exit_code::LOAD_FAILED;
        }
    };
    let mut keep_fds = vec![0, 1, 2, edgeward_sandbox::sigsys::CONTROL_FD];
    keep_fds.extend(fds_open_on(&init.artifact, &inherited_fds));
    keep_fds.extend(channels.wake_fds().map(|(_, fd)| fd.as_raw_fd()));
    let runbook = edgeward_sandbox::Runbook {
        plan: &init.sandbox,
        profile: edgeward_sandbox::Profile::Module,
        dirs: &init.dirs,
        inherited_fds: &inherited_fds,
        keep_fds: &keep_fds,
        supervisor,
        inherited_namespaces: prepared.namespaces.as_deref(),
        seccomp: &prepared.seccomp,
    };
    // Before the sandbox: sched_setattr is not on the seccomp allowlist.
    if slice::wanted(init.tick_us) {
        slice::shorten();
    }
    let degraded = match runbook.apply() {
        Ok(applied) => applied.degraded,
        Err(e) => {
            reporter.fault(FaultKind::Sandbox, e.to_string());
            return exit_code::LOAD_FAILED;
        }
    };
    // WASI holds its own handles of the passed dirs now.
    drop(dir_fds);
    // Threads start only now, so they inherit every sandbox layer.
    let runtime = match host::wasi::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            reporter.fault(FaultKind::Load, format!("{e:#}"));
            return exit_code::LOAD_FAILED;
        }
    };
    let _entered = runtime.enter();
    match instantiate(prepared, &module, wasi, channels, &mut init, &reporter) {
        Ok(loaded) => match loaded.kind {
            ModuleKind::Reactor => reactor::run(loaded, &init, &reporter, degraded),
            ModuleKind::Command => command::run(loaded, &reporter, degraded),
            // `instantiate` tells reactors from commands; a connector's Init
            // was refused above.
            ModuleKind::Connector => exit_code::LOAD_FAILED,
        },
        Err(fault) => {
            reporter.fault(fault.0, fault.1);
            exit_code::LOAD_FAILED
        }
    }
}

/// Moves the control socket to fd 3, where the SIGSYS handler writes.
fn control_on_fd_3(control: OwnedFd) -> std::io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let target = edgeward_sandbox::sigsys::CONTROL_FD;
    if control.as_raw_fd() == target {
        return Ok(control);
    }
    if std::fs::metadata(format!("/proc/self/fd/{target}")).is_ok() {
        return Err(std::io::Error::other("fd 3 is already in use"));
    }
    // SAFETY: dup2 onto fd 3, which is free (checked above).
    if unsafe { libc::dup2(control.as_raw_fd(), target) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(control);
    // SAFETY: fd 3 was just created by dup2 and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(target) })
}

/// Inherited fds that refer to `path` (the mapped artifact).
fn fds_open_on(path: &str, fds: &[i32]) -> Vec<i32> {
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
    fds.iter()
        .copied()
        .filter(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|t| t == want))
        .collect()
}

/// An instantiated module, ready for its first call.
pub(crate) struct Loaded {
    store: Store<HostState>,
    instance: Instance,
    kind: ModuleKind,
}

fn instantiate(
    prepared: &Prepared,
    module: &Module,
    wasi: wasmtime_wasi::p1::WasiP1Ctx,
    channels: host::channels::Channels,
    init: &mut Init,
    reporter: &Arc<Reporter>,
) -> Result<Loaded, (FaultKind, String)> {
    let is_command = module.get_export("_start").is_some();
    let puts_snapshots = module
        .imports()
        .any(|i| i.module() == host::imports::MODULE && i.name() == "snapshot_put");
    let memory_limit = usize::try_from(init.memory_limit_bytes).unwrap_or(usize::MAX);
    let limits = host::limits::Limits::new(memory_limit);
    let mut store = Store::new(
        &prepared.engine,
        HostState {
            wasi,
            limits,
            reporter: Arc::clone(reporter),
            stats: Stats::default(),
            log_limit: Default::default(),
            channels,
            memory: None,
            call_ticks: None,
            current_seq: -1,
            is_command,
            snapshot: None,
            command_state: (is_command && puts_snapshots).then(Default::default),
            // A command reads its state with `snapshot_get`; a reactor's
            // stays in `init` for `ew_restore`.
            restored: if is_command {
                init.restore.take().map(|r| (r.epoch, r.inline))
            } else {
                None
            },
        },
    );
    store.limiter(|state| &mut state.limits);
    let budget = std::time::Duration::from_millis(u64::from(init.call_budget_ms));
    let linker = &prepared.linker;
    let instance = crate::budget::call(&mut store, budget, |store| {
        linker.instantiate(store, module)
    })
    .map_err(|e| {
        if e.downcast_ref::<wasmtime::Trap>().is_some() {
            let (kind, headline) =
                describe_failure(&store, "instantiation", init.call_budget_ms, &e);
            (kind, headline)
        } else {
            (FaultKind::Load, format!("cannot instantiate: {e:#}"))
        }
    })?;
    store.data_mut().memory = instance.get_memory(&mut store, "memory");
    let kind = if is_command {
        ModuleKind::Command
    } else {
        ModuleKind::Reactor
    };
    Ok(Loaded {
        store,
        instance,
        kind,
    })
}

/// Names why a guest call failed, in an operator's words: the call budget,
/// the wasm memory limit, or the trap itself.
fn describe_failure(
    store: &Store<HostState>,
    export: &str,
    budget_ms: u32,
    error: &wasmtime::Error,
) -> (FaultKind, String) {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => (
            FaultKind::Budget,
            format!("exceeded call budget of {budget_ms} ms in {export}"),
        ),
        Some(_) if store.data().limits.memory_refused => (
            FaultKind::Trap,
            format!(
                "wasm memory limit {} MiB reached (in {export})",
                store.data().limits.memory_bytes >> 20
            ),
        ),
        _ => (
            FaultKind::Trap,
            crate::fault::describe_trap(export, error).0,
        ),
    }
}

/// Runs one guest call of the event loop under the watchdog's deadline,
/// telling the host imports when it started (a blocking `send` must give up
/// before the budget runs out).
pub(crate) fn watched_call<R>(
    store: &mut Store<HostState>,
    watchdog: &crate::budget::Watchdog,
    call: impl FnOnce(&mut Store<HostState>) -> R,
) -> R {
    let started = watchdog.start_call(store);
    store.data_mut().call_ticks = Some((started, watchdog.periods()));
    let result = call(store);
    store.data_mut().call_ticks = None;
    result
}

/// Reports a failed guest call and returns the exit code the worker should use.
pub(crate) fn report_trap(
    reporter: &Reporter,
    store: &Store<HostState>,
    export: &str,
    budget_ms: u32,
    error: &wasmtime::Error,
) -> i32 {
    let (kind, headline) = describe_failure(store, export, budget_ms, error);
    let (_, detail) = crate::fault::describe_trap(export, error);
    if !detail.is_empty() {
        reporter.log(
            edgeward_ipc::control::LogLevel::Error,
            format!("{headline}\n{detail}"),
        );
    }
    reporter.fault(kind, headline);
    exit_code::TRAPPED
}
