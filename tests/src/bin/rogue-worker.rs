//! A hostile worker for the e2e suite: what a compromised worker could send
//! the supervisor, without a runtime bug to find first.
//!
//! Used as `EDGEWARD_PROCESS_MODEL=exec EDGEWARD_WORKER=<this binary>`. It
//! acts only for `serve` of a module whose name (`EDGEWARD_MODULE`, set by
//! the exec launcher) starts with `rogue`. Every other call (`fingerprint`,
//! `compile`, `inspect`, `serve` of any other module) execs the real
//! `edgeward-worker` with the same arguments: `EDGEWARD_REAL_WORKER`, else
//! the file beside this binary. The control socket (fd 3) stays open across
//! that exec, so real modules run beside rogue ones exactly as usual.
//!
//! A rogue module says Hello, takes its Init, and then acts by its mode,
//! `[wasi] args[0]` in its policy (its wasm is compiled but never run):
//!
//! | mode | what it does |
//! | --- | --- |
//! | none, `garbage` | one undecodable frame instead of Ready, then sleeps until killed |
//! | `idle` | Ready; a Heartbeat every 100 ms; answers Snapshot with "nothing to save" and Health with 0 |
//! | `ignore-stop` | as `idle`, but Stop changes nothing: it runs on until SIGKILLed (or its control socket closes) |
//! | `log-flood` | Ready; Log frames of the largest allowed size, full of lines imitating the supervisor, as fast as the socket takes them |
//! | `log-oversized` | Ready; one Log frame of 60 KiB, then idle |
//! | `forge-text` | Ready; one Log and one Fault with newlines, a carriage return, ANSI escapes and a forged supervisor line; then idle |
//! | `forge-corrupt` | Ready; RingCorrupt for every ring end it holds, every 200 ms, without touching ring memory; otherwise idle |
//! | `push-snapshots` | Ready without snapshots; then SnapshotPart (48 KiB) and SnapshotData frames nobody asked for, as fast as the socket takes them |
//! | `empty-datagram` | Ready; one zero-length datagram; then idle |
//! | `seccomp` | Ready; then what a real worker's SIGSYS handler sends when a call outside its allowlist is stopped (a `Seccomp` fault naming `ptrace`), and dies of SIGSYS as that worker does |
//!
//! In every mode it exits when the control socket closes, and exits 0 on
//! Stop wherever it reads control messages (every mode but `garbage` and
//! `ignore-stop`).

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use edgeward_ipc::control::{
    Fault, FaultKind, FromWorker, Init, LogLevel, ModuleKind, Stats, ToWorker,
};
use edgeward_ipc::frame::{self, FrameError};
use edgeward_ipc::{PROTOCOL_VERSION, SNAPSHOT_PART_BYTES};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Where the supervisor puts the control socket.
const CONTROL_FD: i32 = 3;

/// How often an idle rogue reports counters, as the real worker does.
const HEARTBEAT: Duration = Duration::from_millis(100);

/// How often `forge-corrupt` repeats its reports.
const FORGE_EVERY: Duration = Duration::from_millis(200);

/// One line of `log-flood`, imitating the supervisor's own output.
const FORGED_LINE: &str = "edgeward: module victim: forged line\n";

/// Text per `log-flood` frame: the most a `Log` message may carry.
const FLOOD_FRAME_BYTES: usize = edgeward_ipc::control::MAX_LOG_TEXT_BYTES;

/// Text of the `log-oversized` frame: most of a frame (64 KiB at most).
const OVERSIZED_LOG_BYTES: usize = 60 * 1024;

/// Text that imitates the supervisor's own output and terminal control.
const FORGED_TEXT: &str =
    "first line\nedgeward: module counter: failed: forged\r\x1b[2J\x1b[31mred and cleared";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let module = std::env::var("EDGEWARD_MODULE").unwrap_or_default();
    if args.first().map(String::as_str) != Some("serve") || !module.starts_with("rogue") {
        exec_real_worker(&args);
    }
    // SAFETY: the supervisor passes our control socket as fd 3 and nothing
    // else in this process owns it.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    // Die with the supervisor, as the real worker does, so a failed test
    // leaves no rogue behind.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    std::process::exit(serve(&control, &module));
}

/// Replaces this process with the real worker, same arguments.
fn exec_real_worker(args: &[String]) -> ! {
    let real = std::env::var_os("EDGEWARD_REAL_WORKER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|me| me.parent().map(|dir| dir.join("edgeward-worker")))
        })
        .unwrap_or_else(|| PathBuf::from("edgeward-worker"));
    let error = std::process::Command::new(&real).args(args).exec();
    eprintln!(
        "rogue-worker: cannot exec the real worker {}: {error} (set EDGEWARD_REAL_WORKER)",
        real.display()
    );
    std::process::exit(127);
}

/// Says Hello, takes the Init and acts by its mode. Returns the exit code.
fn serve(control: &OwnedFd, module: &str) -> i32 {
    let hello = FromWorker::Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: nix::unistd::getpid().as_raw() as u32,
    };
    if frame::send(control, &hello, &[]).is_err() {
        return 0;
    }
    // The ring fds (and a restore memfd) stay open for the rogue's life: it
    // holds its ring ends as a real worker would.
    let (init, _fds) = match frame::recv::<ToWorker>(control) {
        Ok((ToWorker::Init(init), fds)) => (*init, fds),
        Ok((other, _)) => {
            eprintln!("rogue-worker[{module}]: expected Init, got {other:?}");
            return 1;
        }
        Err(_) => return 0,
    };
    // Non-blocking from here on: sends that must go out wait in `send`, so
    // the flooding modes can read Stop while the socket is full.
    set_nonblocking(control);
    let mode = init.args.first().map(String::as_str).unwrap_or("garbage");
    match mode {
        "garbage" => garbage(control),
        "idle" => {
            ready(control, true);
            idle(control, OnStop::Exit, |_| {})
        }
        "ignore-stop" => {
            ready(control, true);
            idle(control, OnStop::Ignore, |_| {})
        }
        "log-flood" => {
            ready(control, false);
            let text = FORGED_LINE.repeat(FLOOD_FRAME_BYTES / FORGED_LINE.len());
            flood(control, || FromWorker::Log {
                level: LogLevel::Info,
                text: text.clone(),
            })
        }
        "log-oversized" => {
            ready(control, false);
            send(
                control,
                &FromWorker::Log {
                    level: LogLevel::Info,
                    text: FORGED_LINE.repeat(OVERSIZED_LOG_BYTES / FORGED_LINE.len()),
                },
            );
            idle(control, OnStop::Exit, |_| {})
        }
        "forge-text" => {
            ready(control, true);
            send(
                control,
                &FromWorker::Log {
                    level: LogLevel::Warn,
                    text: FORGED_TEXT.into(),
                },
            );
            send(
                control,
                &FromWorker::Fault(Fault {
                    kind: FaultKind::Trap,
                    message: FORGED_TEXT.into(),
                }),
            );
            idle(control, OnStop::Exit, |_| {})
        }
        "forge-corrupt" => {
            ready(control, true);
            forge_corrupt(control, &init)
        }
        "push-snapshots" => {
            ready(control, false);
            let mut part = true;
            flood(control, || {
                part = !part;
                if part {
                    FromWorker::SnapshotData(vec![0x5a; 16])
                } else {
                    FromWorker::SnapshotPart(vec![0xa5; SNAPSHOT_PART_BYTES])
                }
            })
        }
        "seccomp" => {
            ready(control, true);
            send(
                control,
                &FromWorker::Fault(Fault {
                    kind: FaultKind::Seccomp,
                    message: "seccomp: denied syscall ptrace".into(),
                }),
            );
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSYS);
            // SIGSYS's default action ends the process; if it was ignored:
            159
        }
        "empty-datagram" => {
            ready(control, true);
            send_raw(control, &[]);
            idle(control, OnStop::Exit, |_| {})
        }
        other => {
            eprintln!(
                "rogue-worker[{module}]: unknown mode {other:?} in [wasi] args (modes: garbage, idle, ignore-stop, log-flood, log-oversized, forge-text, forge-corrupt, push-snapshots, empty-datagram, seccomp)"
            );
            64
        }
    }
}

/// An undecodable frame (an enum tag no message has) instead of Ready; the
/// supervisor must kill us.
fn garbage(control: &OwnedFd) -> i32 {
    send_raw(control, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x42]);
    std::thread::sleep(Duration::from_secs(60));
    0
}

fn ready(control: &OwnedFd, snapshots: bool) {
    send(
        control,
        &FromWorker::Ready {
            kind: ModuleKind::Reactor,
            degraded: vec![],
            snapshots,
        },
    );
}

/// Sends, waiting for room; exits when the supervisor is gone.
fn send(control: &OwnedFd, message: &FromWorker) {
    while !try_send(control, message) {
        wait_writable(control);
    }
}

/// Sends bytes no encoder would produce, waiting for room; exits when the
/// supervisor is gone.
fn send_raw(control: &OwnedFd, bytes: &[u8]) {
    loop {
        match frame::send_bytes(control, bytes, &[]) {
            Ok(()) => return,
            Err(FrameError::WouldBlock) => wait_writable(control),
            Err(_) => std::process::exit(0),
        }
    }
}

/// Sends without waiting; `false` if the socket is full. Exits when the
/// supervisor is gone.
fn try_send(control: &OwnedFd, message: &FromWorker) -> bool {
    match frame::try_send(control, message, &[]) {
        Ok(()) => true,
        Err(FrameError::WouldBlock) => false,
        Err(_) => std::process::exit(0),
    }
}

fn wait_writable(control: &OwnedFd) {
    let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLOUT)];
    let _ = poll(&mut fds, PollTimeout::NONE);
}

/// What a rogue does on Stop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnStop {
    /// Exit 0, as a well-behaved worker does.
    Exit,
    /// Nothing: run on until killed (`ignore-stop`).
    Ignore,
}

/// Reads every pending control message and answers it as a well-behaved
/// reactor would: Stop exits 0 (unless `on_stop` says to ignore it),
/// Snapshot is "nothing to save", Health is 0, Ping a Heartbeat, a
/// RingReset needs nothing.
/// Exits when the socket is closed.
fn answer_control(control: &OwnedFd, on_stop: OnStop) {
    loop {
        match frame::recv::<ToWorker>(control) {
            Ok((ToWorker::Stop, _)) if on_stop == OnStop::Exit => std::process::exit(0),
            Ok((ToWorker::Stop, _)) => {}
            Ok((ToWorker::Snapshot, _)) => {
                send(control, &FromWorker::SnapshotFailed(String::new()))
            }
            Ok((ToWorker::Health, _)) => send(control, &FromWorker::Health(0)),
            // A Heartbeat answers; like the real worker's, it never waits
            // for room (a full socket is sign of life enough).
            Ok((ToWorker::Ping, _)) => {
                let _ = try_send(control, &FromWorker::Heartbeat(Stats::default()));
            }
            Ok((ToWorker::RingReset { .. } | ToWorker::Init(_), _)) => {}
            Err(FrameError::WouldBlock) => return,
            Err(FrameError::Closed) => std::process::exit(0),
            Err(e) => {
                eprintln!("rogue-worker: bad frame from the supervisor: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Heartbeats every [`HEARTBEAT`] and answers control messages, forever;
/// `every_beat` runs after each beat with the time since idling began.
fn idle(control: &OwnedFd, on_stop: OnStop, mut every_beat: impl FnMut(Duration)) -> ! {
    let start = Instant::now();
    let mut next_beat = start;
    loop {
        let wait = next_beat.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).unwrap_or(0) > 0 {
            answer_control(control, on_stop);
        }
        if Instant::now() >= next_beat {
            let _ = try_send(control, &FromWorker::Heartbeat(Stats::default()));
            every_beat(start.elapsed());
            next_beat += HEARTBEAT;
        }
    }
}

/// RingCorrupt for every ring end it holds, every [`FORGE_EVERY`]; idle
/// otherwise.
fn forge_corrupt(control: &OwnedFd, init: &Init) -> ! {
    let rings: Vec<u32> = init
        .channels
        .iter()
        .flat_map(|channel| channel.rings.iter().map(|grant| grant.ring))
        .collect();
    let mut forged = 0u32;
    idle(control, OnStop::Exit, |elapsed| {
        let due = (elapsed.as_millis() / FORGE_EVERY.as_millis()) as u32 + 1;
        while forged < due {
            forged += 1;
            for &ring in &rings {
                send(
                    control,
                    &FromWorker::RingCorrupt {
                        ring,
                        seq: 0,
                        what: "forged by rogue-worker".into(),
                    },
                );
            }
        }
    })
}

/// Sends `next()` whenever the socket has room, as fast as it takes them,
/// and answers control messages in between, forever.
fn flood(control: &OwnedFd, mut next: impl FnMut() -> FromWorker) -> ! {
    let mut pending = next();
    loop {
        let mut fds = [PollFd::new(
            control.as_fd(),
            PollFlags::POLLIN | PollFlags::POLLOUT,
        )];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            answer_control(control, OnStop::Exit);
        }
        while try_send(control, &pending) {
            pending = next();
        }
    }
}

fn set_nonblocking(control: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(control, FcntlArg::F_GETFL).unwrap_or(0);
    let _ = fcntl(
        control,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    );
}
