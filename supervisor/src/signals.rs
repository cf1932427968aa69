//! Signals as events: every catchable asynchronous signal is blocked and
//! read from a signalfd in the event loop (no async-signal handlers at all),
//! which acts on it by its [`meaning`].
//!
//! Blocking matters twice over. A signal left at its default action would
//! end or stop the supervisor (SIGUSR1, SIGALRM, SIGTSTP…) with its modules
//! left unsupervised; and when edgeward is PID 1 of a PID namespace, the
//! kernel silently drops every signal sent from inside the namespace that
//! has no handler, so it would never know. A blocked signal is always
//! queued, so each one reaches the loop, which acts on it or logs that it
//! ignores it. The table is in `docs/operations.md`, "Signals and PID 1"
//! (pinned by this module's tests).

use anyhow::Context;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What a signal read from the signalfd asks of the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// A child ended (a worker, the fork server, a tool, an orphan adopted
    /// as PID 1 or subreaper): wait for every child that has.
    Reap,
    /// Stop everything: a final snapshot round, Stop to every worker,
    /// SIGKILL for what still runs at `--stop-timeout-ms`, then exit 0.
    Stop,
    /// Read the policy directory again and apply the difference.
    Reload,
    /// Nothing to do. The reason completes the log line
    /// `NAME: REASON; ignored`, so no signal goes unnoticed.
    Ignore(&'static str),
}

/// How [`install`] sets a signal up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// Blocked and read from the signalfd; the loop acts on its meaning.
    Read(Meaning),
    /// Left at its default action, for the reason given.
    Default(&'static str),
    /// Set to `SIG_IGN`, for the reason given: never seen by the loop.
    Discard(&'static str),
}

/// Why a signal that edgeward gives no meaning is ignored (most of them).
const NO_MEANING: &str = "edgeward gives it no meaning";

/// Why the synchronous fault signals keep their default action.
const CRASH: &str = "raised by a fault in edgeward itself: a crash must end it";

/// How edgeward sets up signal number `signo`, and why.
fn setup(signo: i32) -> Setup {
    use Meaning::{Ignore, Reap, Reload, Stop};
    let Ok(signal) = Signal::try_from(signo) else {
        // Realtime signals. The C library keeps the first few (32 and 33
        // with glibc) for its threads: SIGRTMIN() is above them, and they
        // are left alone.
        if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signo) {
            return Setup::Read(Ignore("a realtime signal; edgeward uses none"));
        }
        return Setup::Default("not a signal edgeward may take (reserved by the C library)");
    };
    Setup::Read(match signal {
        Signal::SIGCHLD => Reap,
        Signal::SIGTERM | Signal::SIGINT => Stop,
        // Ctrl-\ asks a foreground program to quit: the graceful stop is
        // the way out that keeps the modules' state; a core dump of the
        // supervisor would help nobody.
        Signal::SIGQUIT => Stop,
        Signal::SIGHUP => Reload,
        Signal::SIGKILL | Signal::SIGSTOP => {
            return Setup::Default("cannot be caught, blocked or ignored")
        }
        Signal::SIGSEGV
        | Signal::SIGBUS
        | Signal::SIGFPE
        | Signal::SIGILL
        | Signal::SIGTRAP
        | Signal::SIGSYS => return Setup::Default(CRASH),
        Signal::SIGPIPE => {
            return Setup::Discard(
                "the by-product of a write to a closed pipe or socket, whose EPIPE error is handled where it happens",
            )
        }
        // abort() unblocks SIGABRT before raising it, so edgeward's own
        // abort still ends it; only one sent by another process gets here.
        Signal::SIGABRT => Ignore("sent by another process; edgeward gives it no meaning"),
        Signal::SIGTSTP => Ignore(
            "a stopped supervisor would leave its modules without restarts, reaping or control socket (SIGSTOP still stops it)",
        ),
        Signal::SIGTTIN | Signal::SIGTTOU => {
            Ignore("terminal access from the background; edgeward never reads the terminal, and its writes go ahead")
        }
        Signal::SIGCONT => Ignore("the kernel has resumed edgeward if it was stopped; nothing more to do"),
        Signal::SIGWINCH => Ignore("a terminal resize; edgeward draws nothing to the terminal's size"),
        Signal::SIGURG => Ignore("out-of-band socket data; edgeward uses none"),
        Signal::SIGXCPU => Ignore(
            "its CPU time soft limit (RLIMIT_CPU) is passed; edgeward goes on until the hard limit's SIGKILL",
        ),
        Signal::SIGXFSZ => Ignore(
            "a file would pass RLIMIT_FSIZE; the write fails with EFBIG and is reported where it happens",
        ),
        Signal::SIGALRM | Signal::SIGVTALRM | Signal::SIGPROF => {
            Ignore("edgeward sets no timer that signals")
        }
        Signal::SIGIO => Ignore("edgeward asks for no I/O signals (O_ASYNC)"),
        Signal::SIGUSR1 | Signal::SIGUSR2 | Signal::SIGPWR | Signal::SIGSTKFLT => Ignore(NO_MEANING),
        // A signal this table does not know (nix's list may grow).
        _ => Ignore(NO_MEANING),
    })
}

/// What signal number `signo`, as read from the signalfd
/// (`ssi_signo as i32`), asks of the supervisor.
///
/// Pure and total: a number edgeward never reads (SIGKILL, a fault
/// signal, no signal at all) is [`Meaning::Ignore`] too.
pub fn meaning(signo: i32) -> Meaning {
    match setup(signo) {
        Setup::Read(meaning) => meaning,
        Setup::Default(why) | Setup::Discard(why) => Meaning::Ignore(why),
    }
}

/// The name of signal number `signo` for the log: `SIGUSR1`,
/// `SIGRTMIN+3`, or `signal 99`.
pub fn name(signo: i32) -> String {
    match Signal::try_from(signo) {
        Ok(signal) => signal.as_str().to_string(),
        Err(_) if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signo) => {
            format!("SIGRTMIN+{}", signo - libc::SIGRTMIN())
        }
        Err(_) => format!("signal {signo}"),
    }
}

/// Every signal [`install`] blocks and reads from the signalfd: those whose
/// setup is to be read, realtime ones included.
pub fn handled() -> SigSet {
    let mut set = *SigSet::empty().as_ref();
    for signo in 1..=libc::SIGRTMAX() {
        if matches!(setup(signo), Setup::Read(_)) {
            // SAFETY: adds a valid signal number to an initialised local set.
            unsafe { libc::sigaddset(&mut set, signo) };
        }
    }
    // SAFETY: `set` was initialised by sigemptyset (SigSet::empty).
    unsafe { SigSet::from_sigset_t_unchecked(set) }
}

/// Blocks the handled signals and returns a signalfd for them. Also ignores
/// SIGPIPE (a closed client socket or stdout must not kill PID 1) and makes
/// this process the reaper of orphaned descendants when it is not PID 1.
///
/// Call it before any thread starts: the mask is per thread, and a thread
/// that does not block a signal takes it with its default action (the
/// threads started later inherit the mask).
///
/// The blocked mask survives `fork` and `exec`, and
/// `std::process::Command` does not reset it: every child the supervisor
/// starts (workers, the fork server, compilers, the volume tools) goes
/// through [`unblocked`], or SIGTERM and SIGINT would not end it.
///
/// # Errors
/// If the mask cannot be set or the signalfd created.
pub fn install() -> anyhow::Result<SignalFd> {
    let set = handled();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("cannot block signals")?;
    for signal in Signal::iterator() {
        if matches!(setup(signal as i32), Setup::Discard(_)) {
            // SAFETY: SIG_IGN installs no handler code; no other thread
            // exists yet.
            unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn) }
                .with_context(|| format!("cannot ignore {signal}"))?;
        }
    }
    if std::process::id() != 1 {
        // SAFETY: PR_SET_CHILD_SUBREAPER only sets a flag on this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("PR_SET_CHILD_SUBREAPER");
        }
    }
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("cannot create signalfd")
}

/// Makes `command`'s child start with no signal blocked (see [`install`]).
pub fn unblocked(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    let reset = || {
        // SAFETY: an all-zero sigset_t is a valid (empty) value.
        let mut none = unsafe { std::mem::zeroed::<libc::sigset_t>() };
        // SAFETY: initialises the local set; async-signal-safe.
        unsafe { libc::sigemptyset(&mut none) };
        // SAFETY: reads the local set; async-signal-safe.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) };
        match rc {
            0 => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    };
    // SAFETY: the closure runs in the forked child before exec and only
    // calls sigemptyset and pthread_sigmask, which are async-signal-safe.
    unsafe { command.pre_exec(reset) }
}

#[cfg(test)]
mod unblocked_tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_child_started_through_unblocked_has_nothing_blocked_and_others_inherit_our_mask() {
        // In a thread of its own: the mask is per thread.
        std::thread::spawn(|| {
            let set = handled();
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).unwrap();
            let blocked = |command: &mut std::process::Command| {
                let out = command.arg("/proc/self/status").output().unwrap();
                let status = String::from_utf8_lossy(&out.stdout).into_owned();
                let line = status.lines().find(|l| l.starts_with("SigBlk:"));
                line.unwrap_or_default().to_string()
            };
            let with_hook = || {
                let mut command = std::process::Command::new("cat");
                // SAFETY: an empty hook: nothing runs in the child.
                unsafe { command.pre_exec(|| Ok(())) };
                command
            };
            // std does not reset the mask, with or without a hook.
            assert_ne!(
                blocked(&mut std::process::Command::new("cat")),
                "SigBlk:\t0000000000000000"
            );
            assert_ne!(blocked(&mut with_hook()), "SigBlk:\t0000000000000000");
            assert_eq!(
                blocked(unblocked(&mut with_hook())),
                "SigBlk:\t0000000000000000"
            );
        })
        .join()
        .unwrap();
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    const OPERATIONS: &str = include_str!("../../docs/operations.md");

    /// The signals that keep their default action or are ignored with
    /// `SIG_IGN`, written out here rather than taken from [`setup`].
    const NOT_READ: [Signal; 9] = [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGTRAP,
        Signal::SIGSYS,
        Signal::SIGPIPE,
    ];

    fn contains(set: &SigSet, signo: i32) -> bool {
        // SAFETY: reads an initialised set.
        unsafe { libc::sigismember(set.as_ref(), signo) == 1 }
    }

    #[test]
    fn the_loop_acts_on_five_signals_and_ignores_the_rest_with_a_reason() {
        use Meaning::{Ignore, Reap, Reload, Stop};
        assert_eq!(meaning(libc::SIGCHLD), Reap);
        assert_eq!(meaning(libc::SIGTERM), Stop);
        assert_eq!(meaning(libc::SIGINT), Stop);
        assert_eq!(meaning(libc::SIGQUIT), Stop);
        assert_eq!(meaning(libc::SIGHUP), Reload);
        assert_eq!(
            meaning(libc::SIGUSR1),
            Ignore("edgeward gives it no meaning")
        );
        for signo in (1..=libc::SIGRTMAX()).chain([0, -1, 99]) {
            match meaning(signo) {
                Reap | Stop | Reload => assert!(
                    [
                        libc::SIGCHLD,
                        libc::SIGTERM,
                        libc::SIGINT,
                        libc::SIGQUIT,
                        libc::SIGHUP
                    ]
                    .contains(&signo),
                    "{}",
                    name(signo)
                ),
                Ignore(why) => assert!(!why.is_empty(), "{} has no reason", name(signo)),
            }
        }
    }

    #[test]
    fn every_catchable_asynchronous_signal_is_read_and_no_other() {
        let set = handled();
        for signal in Signal::iterator() {
            assert_eq!(
                contains(&set, signal as i32),
                !NOT_READ.contains(&signal),
                "{signal}"
            );
        }
        // Realtime signals too, but not those the C library keeps for its
        // threads (32 and 33 with glibc).
        for signo in 32..=libc::SIGRTMAX() {
            assert_eq!(
                contains(&set, signo),
                signo >= libc::SIGRTMIN(),
                "signal {signo}"
            );
        }
        assert!(!contains(&set, libc::SIGRTMAX() + 1));
    }

    #[test]
    fn signals_are_named_as_kill_l_names_them() {
        assert_eq!(name(libc::SIGUSR1), "SIGUSR1");
        assert_eq!(name(libc::SIGRTMIN()), "SIGRTMIN+0");
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
        assert_eq!(name(99), "signal 99");
    }

    /// Reads the first signal queued on `fd` that is not SIGCHLD (a test
    /// elsewhere in this process may have had a child end).
    fn next_signal(fd: &SignalFd, want: i32) -> Option<i32> {
        while let Ok(Some(info)) = fd.read_signal() {
            let got = info.ssi_signo as i32;
            if got == want || got != libc::SIGCHLD {
                return Some(got);
            }
        }
        None
    }

    #[test]
    fn every_read_signal_arrives_through_the_signalfd_realtime_ones_too() {
        // In a thread of its own: the mask is per thread, and a signal sent
        // to this thread stays with it.
        std::thread::spawn(|| {
            let set = handled();
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).unwrap();
            let fd =
                SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).unwrap();
            let mut seen = 0;
            for signo in 1..=libc::SIGRTMAX() {
                // Only what is blocked: anything else would act on this
                // test process (SIGTSTP would stop it).
                if !contains(&set, signo) {
                    continue;
                }
                // SAFETY: pthread_self has no precondition.
                let me = unsafe { libc::pthread_self() };
                // SAFETY: sends a blocked signal to this very thread.
                let rc = unsafe { libc::pthread_kill(me, signo) };
                assert_eq!(rc, 0, "{}", name(signo));
                assert_eq!(next_signal(&fd, signo), Some(signo), "{}", name(signo));
                seen += 1;
            }
            assert_eq!(
                seen,
                31 - NOT_READ.len() as i32 + libc::SIGRTMAX() - libc::SIGRTMIN() + 1
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn abort_still_ends_a_process_that_blocks_the_read_signals() {
        use nix::sys::wait::{waitpid, WaitStatus};
        let set = handled();
        // SAFETY: the child only calls async-signal-safe functions
        // (pthread_sigmask, setrlimit, abort) and never returns.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: blocks signals of this (only) thread;
                // async-signal-safe.
                unsafe {
                    libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ref(), std::ptr::null_mut())
                };
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: no core file; a plain system call.
                unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
                // SAFETY: ends this forked child; async-signal-safe.
                unsafe { libc::abort() }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = waitpid(child, None).unwrap();
                assert!(
                    matches!(status, WaitStatus::Signaled(_, Signal::SIGABRT, _)),
                    "{status:?}"
                );
            }
        }
    }

    /// The rows of the signal table in operations.md, "Signals and PID 1":
    /// (signal names, what edgeward does, why).
    fn documented_rows() -> Vec<(Vec<String>, String, String)> {
        let section = OPERATIONS
            .split("\n## ")
            .find(|s| s.starts_with("Signals and PID 1\n"))
            .expect("operations.md has a section \"Signals and PID 1\"");
        let table = section
            .split("| signal | edgeward | why |")
            .nth(1)
            .expect("the section has a table | signal | edgeward | why |");
        table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|line| {
                let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
                assert_eq!(cells.len(), 3, "{line}");
                let names = cells[0].split(", ").map(str::to_string).collect();
                let flat = cells[2].split_whitespace().collect::<Vec<_>>().join(" ");
                (names, cells[1].to_string(), flat)
            })
            .collect()
    }

    #[test]
    fn the_documented_signal_table_is_what_install_and_meaning_do() {
        let mut documented = Vec::new();
        for (names, action, why) in documented_rows() {
            for signal_name in names {
                let signos: Vec<i32> = if signal_name == "SIGRTMIN to SIGRTMAX" {
                    vec![libc::SIGRTMIN(), libc::SIGRTMIN() + 1, libc::SIGRTMAX()]
                } else {
                    let signal: Signal = signal_name
                        .parse()
                        .unwrap_or_else(|_| panic!("{signal_name:?} is not a signal"));
                    documented.push(signal);
                    vec![signal as i32]
                };
                for signo in signos {
                    let (expected, reason) = match setup(signo) {
                        Setup::Read(Meaning::Reap) => ("reap", None),
                        Setup::Read(Meaning::Stop) => ("stop", None),
                        Setup::Read(Meaning::Reload) => ("reload", None),
                        Setup::Read(Meaning::Ignore(why)) => ("logged, ignored", Some(why)),
                        Setup::Default(why) => ("default action", Some(why)),
                        Setup::Discard(why) => ("ignored (SIG_IGN), not logged", Some(why)),
                    };
                    assert_eq!(action, expected, "operations.md, {signal_name}");
                    if let Some(reason) = reason {
                        assert!(
                            why.contains(reason),
                            "operations.md, {signal_name}: the why should say {reason:?}"
                        );
                    }
                }
            }
        }
        for signal in Signal::iterator() {
            let rows = documented.iter().filter(|s| **s == signal).count();
            assert_eq!(rows, 1, "operations.md lists {signal} {rows} times");
        }
    }
}
