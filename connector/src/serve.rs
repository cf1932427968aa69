//! `edgeward-connector serve`: one connector, from the supervisor's `Init`
//! to its exit. The same handshake as a wasm worker (`Hello`, `Init`,
//! sandbox, `Ready`, heartbeats, `Stop`), then the driver runs on a
//! current-thread tokio runtime while a control thread answers the
//! supervisor and the ring reader feeds the driver.
//!
//! Order matters: rings are attached and the hosts file written before the
//! sandbox (which closes every other fd, drops root and forbids `mount`);
//! the connect guard's listener goes to the supervisor before any thread
//! can call `connect`; threads start only after the sandbox, so they
//! inherit every layer.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeward_ipc::control::{
    ConnectorCounters, ConnectorInit, FaultKind, FromWorker, ModuleKind, Stats, ToWorker,
};
use edgeward_ipc::frame::{self, FrameError};
use edgeward_ipc::PROTOCOL_VERSION;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::{mpsc, watch};

use crate::channels::{self, Corrupt, RingStats};
use crate::driver::{ChannelIo, Context, Counters, Publisher};
use crate::exit_code;

/// Where the supervisor puts the control socket.
const CONTROL_FD: i32 = 3;

/// How often the counters are reported while they change.
const HEARTBEAT_MS: u16 = 100;

/// How long the driver gets to finish after `Stop` before the process exits
/// anyway (the supervisor's own stop timeout is longer).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Inbound batches waiting for the driver: the reader blocks when the
/// driver is behind (the rings then fill and modules see back-pressure).
const INBOUND_QUEUE: usize = 4;

/// Runs the connector the supervisor describes on fd 3. Returns the exit code.
pub fn run() -> i32 {
    // SAFETY: the supervisor starts us with our end of the control
    // socketpair on fd 3; nothing else in this process owns it.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    let supervisor = nix::unistd::getppid();
    let inherited_fds = edgeward_sandbox::fds::open_fds();
    let hello = FromWorker::Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    if frame::send(&control, &hello, &[]).is_err() {
        return exit_code::SUPERVISOR_GONE;
    }
    let (init, fds) = match frame::recv::<ToWorker>(&control) {
        Ok((ToWorker::Init(init), fds)) => (*init, fds),
        Ok((other, _)) => {
            return fail(
                &control,
                FaultKind::Protocol,
                format!("protocol: expected Init, got {other:?}"),
            )
        }
        Err(_) => return exit_code::SUPERVISOR_GONE,
    };
    if init.protocol_version != PROTOCOL_VERSION {
        return fail(
            &control,
            FaultKind::Protocol,
            format!(
                "protocol: supervisor speaks version {}, connector {PROTOCOL_VERSION}; install matching binaries",
                init.protocol_version
            ),
        );
    }
    let Some(connector) = init.connector.clone() else {
        return fail(
            &control,
            FaultKind::Protocol,
            "protocol: Init for a wasm module sent to edgeward-connector".into(),
        );
    };
    set_process_name(&init.module);
    let config: toml::Table = match connector.config_toml.parse() {
        Ok(table) => table,
        Err(e) => {
            return fail(
                &control,
                FaultKind::Load,
                format!("[connector] table does not parse: {e}"),
            )
        }
    };
    if let Err(errors) = crate::check(&connector.kind, &config, &connector.endpoints) {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return fail(&control, FaultKind::Load, text.join("; "));
    }
    let ring_stats = Arc::new(RingStats::default());
    let (corrupt_tx, corrupt_rx) = mpsc::unbounded_channel();
    let (rings, inbox) =
        match channels::attach(&init, fds, Arc::clone(&ring_stats), corrupt_tx.clone()) {
            Ok(attached) => attached,
            Err(e) => return fail(&control, FaultKind::Load, format!("channels: {e}")),
        };
    let host_state_dir = PathBuf::from(&connector.state_dir);
    // The state dir is used through an fd opened now, as root: the
    // connector's uid owns the dir but may not be able to walk the path
    // to it (a private state root), and needs not.
    let state_fd = match nix::fcntl::open(
        &host_state_dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            return fail(
                &control,
                FaultKind::Load,
                format!(
                    "cannot open its state dir {}: {e}",
                    host_state_dir.display()
                ),
            )
        }
    };
    let state_dir = PathBuf::from(format!("/proc/self/fd/{}", state_fd.as_raw_fd()));
    // Files the config names are copied into the state dir, readable by
    // the connector's uid alone, and the config points at the copies: a
    // root-only key file works, and the sandbox grants no path outside.
    let (config, read_files) = match crate::files::copy_named(
        config,
        &connector.read_files,
        &host_state_dir,
        &state_dir,
        init.sandbox.identity,
    ) {
        Ok(copied) => copied,
        Err(e) => return fail(&control, FaultKind::Load, e),
    };
    let hosts_path = host_state_dir.join(".hosts");
    if let Err(e) = std::fs::write(&hosts_path, &connector.hosts_file) {
        return fail(
            &control,
            FaultKind::Load,
            format!("cannot write {}: {e}", hosts_path.display()),
        );
    }
    let (stop_reader, reader_stops) = match eventfd_pair() {
        Ok(pair) => pair,
        Err(e) => return fail(&control, FaultKind::Load, format!("eventfd: {e}")),
    };
    let mut keep_fds = vec![
        0,
        1,
        2,
        CONTROL_FD,
        stop_reader.as_raw_fd(),
        reader_stops.as_raw_fd(),
        state_fd.as_raw_fd(),
    ];
    keep_fds.extend(rings.fds());
    keep_fds.extend(inbox.fds());
    let grants = edgeward_sandbox::ConnectorGrants {
        ports: connector.ports.clone(),
        read_files,
        state_dir: state_dir.clone(),
        hosts_file: hosts_path,
    };
    let seccomp =
        match edgeward_sandbox::seccomp::compile_for(edgeward_sandbox::Allowlist::Connector) {
            Ok(filter) => filter,
            Err(e) => return fail(&control, FaultKind::Sandbox, e.to_string()),
        };
    let runbook = edgeward_sandbox::Runbook {
        plan: &init.sandbox,
        dirs: &[],
        inherited_fds: &inherited_fds,
        keep_fds: &keep_fds,
        supervisor,
        inherited_namespaces: None,
        seccomp: &seccomp,
        profile: edgeward_sandbox::Profile::Connector(&grants),
    };
    let applied = match runbook.apply() {
        Ok(applied) => applied,
        Err(e) => return fail(&control, FaultKind::Sandbox, e.to_string()),
    };
    if let Some(listener) = &applied.connect_listener {
        if frame::send(&control, &FromWorker::ConnectGuard, &[listener.as_raw_fd()]).is_err() {
            return exit_code::SUPERVISOR_GONE;
        }
    }
    // The supervisor holds its copy; ours would only keep the filter's
    // notifications alive if the supervisor went away.
    drop(applied.connect_listener);
    let counters = Arc::new(Counters::default());
    if let Some(restore) = &init.restore {
        restore_counters(&counters, &restore.inline);
    }
    let (batches_tx, batches_rx) = mpsc::channel(INBOUND_QUEUE);
    let resets: Arc<Mutex<Vec<u32>>> = Arc::default();
    let rings = Arc::new(rings);
    let reader = {
        let resets = Arc::clone(&resets);
        let stats = Arc::clone(&ring_stats);
        std::thread::Builder::new()
            .name("rings".into())
            .stack_size(256 * 1024)
            .spawn(move || inbox.run(batches_tx, reader_stops, resets, stats, corrupt_tx))
    };
    if let Err(e) = reader {
        return fail(
            &control,
            FaultKind::Load,
            format!("cannot start the ring reader: {e}"),
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let control = Arc::new(control);
    let control_thread = {
        let control = Arc::clone(&control);
        let counters = Arc::clone(&counters);
        let ring_stats = Arc::clone(&ring_stats);
        let rings = Arc::clone(&rings);
        std::thread::Builder::new()
            .name("control".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                control_loop(
                    &control,
                    &counters,
                    &ring_stats,
                    &rings,
                    &resets,
                    corrupt_rx,
                    &stop_tx,
                    &stop_reader,
                )
            })
    };
    if let Err(e) = control_thread {
        return fail(
            &control,
            FaultKind::Load,
            format!("cannot start the control thread: {e}"),
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&control, FaultKind::Load, format!("tokio runtime: {e}")),
    };
    let ctx = Context {
        name: init.module.clone(),
        config,
        endpoints: connector.endpoints.clone(),
        state_dir,
        channels: ChannelIo {
            inbound: batches_rx,
            outbound: Publisher::new(rings),
        },
        counters,
        stop: stop_rx.clone(),
    };
    let ready = FromWorker::Ready {
        kind: ModuleKind::Connector,
        degraded: applied.degraded,
        snapshots: true,
    };
    if frame::send(&*control, &ready, &[]).is_err() {
        return exit_code::SUPERVISOR_GONE;
    }
    let outcome = runtime.block_on(run_driver(&connector, ctx, stop_rx));
    match outcome {
        Ok(()) => exit_code::OK,
        Err(e) => fail(
            &control,
            FaultKind::Exit,
            format!("{}: {e:#}", connector.kind),
        ),
    }
}

/// Runs the driver; after a stop request it gets [`STOP_GRACE`] to return.
async fn run_driver(
    connector: &ConnectorInit,
    ctx: Context,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let driver = crate::run(&connector.kind, ctx);
    tokio::pin!(driver);
    tokio::select! {
        result = &mut driver => return result,
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    match tokio::time::timeout(STOP_GRACE, driver).await {
        Ok(result) => result,
        Err(_) => {
            crate::log!(
                "warn",
                "the driver did not stop within {STOP_GRACE:?}: exiting anyway"
            );
            Ok(())
        }
    }
}

/// Answers the supervisor until it says Stop or goes away; reports the
/// counters while they change (and on every Ping).
#[allow(clippy::too_many_arguments)]
fn control_loop(
    control: &OwnedFd,
    counters: &Counters,
    ring_stats: &RingStats,
    rings: &channels::Rings,
    resets: &Mutex<Vec<u32>>,
    mut corrupt: mpsc::UnboundedReceiver<Corrupt>,
    stop: &watch::Sender<bool>,
    stop_reader: &OwnedFd,
) {
    let mut reported: Option<(Stats, ConnectorCounters)> = None;
    let mut polls = Polls::default();
    loop {
        let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(HEARTBEAT_MS)).unwrap_or(1);
        while let Ok(c) = corrupt.try_recv() {
            let report = FromWorker::RingCorrupt {
                ring: c.ring,
                seq: c.seq,
                what: c.what,
            };
            let _ = frame::send(control, &report, &[]);
        }
        let now = current(counters, ring_stats, &mut polls);
        if reported.as_ref() != Some(&now) && beat(control, &now) {
            reported = Some(now);
        }
        if ready == 0 {
            continue;
        }
        match frame::recv::<ToWorker>(control) {
            Ok((ToWorker::Stop, _)) => {
                let _ = stop.send(true);
                let _ = nix::unistd::write(stop_reader, &1u64.to_ne_bytes());
                // The driver finishes on the runtime thread; this thread
                // only keeps the socket open until the process exits.
                std::thread::sleep(STOP_GRACE * 2);
                std::process::exit(exit_code::OK);
            }
            Ok((ToWorker::Ping, _)) => {
                let now = current(counters, ring_stats, &mut polls);
                if beat(control, &now) {
                    reported = Some(now);
                }
            }
            Ok((ToWorker::Snapshot, _)) => {
                let bytes = serde_json::to_vec(&counters.snapshot()).unwrap_or_default();
                let _ = frame::send(control, &FromWorker::SnapshotData(bytes), &[]);
            }
            Ok((ToWorker::Health, _)) => {
                let healthy = counters.connected.load(Ordering::Relaxed);
                let _ = frame::send(control, &FromWorker::Health(i32::from(!healthy)), &[]);
            }
            Ok((ToWorker::RingReset { ring }, _)) => {
                rings.reset(ring);
                // The reader picks it up within its periodic look (500 ms).
                resets.lock().unwrap_or_else(|e| e.into_inner()).push(ring);
            }
            Ok((ToWorker::Init(_), _)) => {
                let _ = frame::send(
                    control,
                    &FromWorker::Fault(edgeward_ipc::control::Fault {
                        kind: FaultKind::Protocol,
                        message: "protocol: a second Init".into(),
                    }),
                    &[],
                );
                std::process::exit(exit_code::LOAD_FAILED);
            }
            Err(FrameError::WouldBlock) => {}
            Err(_) => std::process::exit(exit_code::SUPERVISOR_GONE),
        }
    }
}

/// Sends the worker's counters and the connector's; `false` when the
/// socket had no room (offered again at the next beat).
fn beat(control: &OwnedFd, (stats, counters): &(Stats, ConnectorCounters)) -> bool {
    frame::try_send(control, &FromWorker::Heartbeat(*stats), &[]).is_ok()
        && frame::try_send(control, &FromWorker::Connector(*counters), &[]).is_ok()
}

/// How many recent polls the lateness figures cover, as a worker's ticks.
const LATENESS_WINDOW: usize = 1024;

/// The polls seen so far, and the lateness of the most recent ones.
#[derive(Default)]
struct Polls {
    count: u64,
    recent: std::collections::VecDeque<u32>,
    /// Every poll so far, by lateness (`edgeward_tick_lateness_seconds`).
    histogram: edgeward_ipc::control::LatenessHistogram,
}

/// The counters now, as reported: ring traffic as the worker's `Stats`
/// (polls as ticks, the lateness of the last [`LATENESS_WINDOW`] as tick
/// lateness), the rest as [`ConnectorCounters`].
fn current(counters: &Counters, ring: &RingStats, polls: &mut Polls) -> (Stats, ConnectorCounters) {
    let fresh = std::mem::take(
        &mut *counters
            .poll_lateness_us
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    polls.count += fresh.len() as u64;
    for &us in &fresh {
        polls.histogram.record(u64::from(us));
    }
    polls.recent.extend(fresh);
    let excess = polls.recent.len().saturating_sub(LATENESS_WINDOW);
    polls.recent.drain(..excess);
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let stats = Stats {
        ticks: polls.count,
        msgs_in: get(&ring.msgs_in),
        msgs_out: get(&ring.msgs_out),
        denials: get(&ring.denials),
        path_denials: 0,
        dropped: get(&ring.dropped),
        refused: get(&ring.refused),
        wakes: get(&ring.wakes),
        tick_lateness: lateness_of(polls.recent.iter().copied().collect(), polls.histogram),
    };
    (stats, counters.snapshot())
}

/// p50/p99/max of poll lateness samples (nearest rank), `None` if none.
fn lateness_of(
    mut samples: Vec<u32>,
    histogram: edgeward_ipc::control::LatenessHistogram,
) -> Option<edgeward_ipc::control::TickLateness> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = |p: usize| samples[((samples.len() * p).div_ceil(100)).saturating_sub(1)];
    Some(edgeward_ipc::control::TickLateness {
        p50_us: u64::from(rank(50)),
        p99_us: u64::from(rank(99)),
        max_us: u64::from(*samples.last().expect("not empty")),
        ticks: samples.len() as u32,
        histogram,
    })
}

/// Sets the counters from the last snapshot (the totals survive restarts;
/// `connected` and `queued` are the new process's own).
fn restore_counters(counters: &Counters, bytes: &[u8]) {
    let Ok(saved) = serde_json::from_slice::<ConnectorCounters>(bytes) else {
        crate::log!(
            "warn",
            "the saved counters do not parse: starting from zero"
        );
        return;
    };
    let set = |c: &std::sync::atomic::AtomicU64, v: u64| c.store(v, Ordering::Relaxed);
    set(&counters.reconnects, saved.reconnects);
    set(&counters.errors, saved.errors);
    set(&counters.delivered, saved.delivered);
    set(&counters.received, saved.received);
    set(&counters.queue_dropped, saved.queue_dropped);
    set(&counters.refused, saved.refused);
}

/// Reports a fault and returns the matching exit code.
fn fail(control: &OwnedFd, kind: FaultKind, message: String) -> i32 {
    crate::log!("error", "{message}");
    let _ = frame::send(
        control,
        &FromWorker::Fault(edgeward_ipc::control::Fault { kind, message }),
        &[],
    );
    exit_code::LOAD_FAILED
}

/// A non-blocking eventfd and a second handle to it: one end for the
/// control thread to signal, one for the ring reader to poll.
fn eventfd_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let fd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_NONBLOCK | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
    )?;
    let owned: OwnedFd = fd.into();
    let other = owned.try_clone()?;
    Ok((owned, other))
}

/// `ew:<name>` in `ps`, like the wasm workers.
fn set_process_name(name: &str) {
    let mut title = format!("ew:{name}").into_bytes();
    title.truncate(15);
    title.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, title.as_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_figures_are_nearest_rank() {
        assert_eq!(lateness_of(Vec::new(), Default::default()), None);
        let l = lateness_of((1..=100).collect(), Default::default()).unwrap();
        assert_eq!((l.p50_us, l.p99_us, l.max_us, l.ticks), (50, 99, 100, 100));
        let l = lateness_of(vec![7], Default::default()).unwrap();
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (7, 7, 7));
    }

    #[test]
    fn counters_survive_a_snapshot_round_trip_except_live_state() {
        let counters = Counters::default();
        counters.delivered.store(42, Ordering::Relaxed);
        counters.queue_dropped.store(3, Ordering::Relaxed);
        counters.queued.store(9, Ordering::Relaxed);
        counters.connected.store(true, Ordering::Relaxed);
        let bytes = serde_json::to_vec(&counters.snapshot()).unwrap();
        let restored = Counters::default();
        restore_counters(&restored, &bytes);
        let snap = restored.snapshot();
        assert_eq!((snap.delivered, snap.queue_dropped), (42, 3));
        assert_eq!((snap.queued, snap.connected), (0, false));
    }
}
