//! The intermediate process of a spawn, made without a copy of the fork
//! server's memory: `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own,
//! as `posix_spawn` makes its child. It forks the worker (libc's `fork`, so
//! the worker is an ordinary process with a copy of the fork server's
//! memory), reports the worker's pid and exits; the fork server sleeps
//! until then. What every intermediate does, this one or `clone3`'s
//! (`clone_into_cgroup.rs`), is [`fork_worker`].
//!
//! Why: a fork-made intermediate costs a copy of the fork server's page
//! tables and their teardown at its exit, for a process that lives a few
//! microseconds. On cgroup v1 (where `clone3(CLONE_INTO_CGROUP)` cannot
//! place it) that was about a quarter of a millisecond of CPU per worker
//! on the dev VM, a fifth of a spawn. On cgroup v2 the intermediate is
//! still made by `clone3` into the module's cgroup (`clone_into_cgroup.rs`):
//! `clone3` with `CLONE_VM` needs a stack switch that only assembly can do.
//!
//! Rules for the intermediate, which runs in the fork server's memory: it
//! allocates nothing, frees nothing, drops nothing and cannot panic (an
//! abort would signal the fork server's thread, whose id libc still holds);
//! it only forks, writes a pid to a pipe and returns. The worker, a real
//! fork, then runs on a copy of the intermediate's stack for its whole
//! life: [`WORKER_STACK`] bytes, above [`GUARD`] bytes of guard. A
//! worker's stack overflow there is a plain `SIGSEGV` (Rust's "has
//! overflowed its stack" message knows only the main stack); guests are
//! bounded well below it by wasmtime's `max_wasm_stack`.

use std::ffi::c_void;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, mprotect, MapFlags, ProtFlags};
use nix::unistd::Pid;

/// The stack a worker made this way runs on, as the main thread's default
/// (`ulimit -s`). Only the pages it touches are ever made.
pub const WORKER_STACK: usize = 8 * 1024 * 1024;

/// Inaccessible bytes below the stack: a frame that overflows it faults
/// (64 KiB: a multiple of 4, 16 and 64 KiB pages, and wider than most
/// frames that skip stack probes).
pub const GUARD: usize = 64 * 1024;

/// The stack every intermediate (one at a time) and so every worker's copy
/// starts on: mapped once, [`GUARD`] at the bottom.
pub struct IntermediateStack {
    base: NonNull<c_void>,
    len: usize,
}

impl IntermediateStack {
    /// Maps [`WORKER_STACK`] bytes and [`GUARD`] bytes of guard below them.
    ///
    /// # Errors
    /// The mapping cannot be made.
    pub fn new() -> nix::Result<Self> {
        let len = WORKER_STACK + GUARD;
        let length = std::num::NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let base = unsafe {
            mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE | MapFlags::MAP_STACK,
            )
        }?;
        // SAFETY: the lowest bytes of the mapping just made, which nothing
        // uses; GUARD is a multiple of every page size Linux has.
        unsafe { mprotect(base, GUARD, ProtFlags::PROT_NONE) }?;
        Ok(Self { base, len })
    }

    /// The highest address, where a downward-growing stack starts.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, still within its
        // allocation's bounds for pointer arithmetic.
        unsafe { self.base.as_ptr().cast::<u8>().add(self.len).cast() }
    }
}

/// What the intermediate needs: read-only to it.
struct Job<'a> {
    pid_pipe: &'a OwnedFd,
    /// Run in the worker (the real fork) with the intermediate's pid;
    /// returns its exit code.
    worker: &'a mut dyn FnMut(Pid) -> i32,
}

/// Makes the intermediate on `stack`; it forks the worker, which runs
/// `worker` (given the intermediate's pid) and `_exit`s with its result,
/// and writes the worker's pid (or the fork's negated errno) to `pid_pipe`,
/// as `pid_pipe` has it. Returns the intermediate's pid when
/// it has exited (a child of this process, reaped by whoever reaps ours).
///
/// # Safety
/// The calling process must be single-threaded, and `worker` must be safe
/// to run in a forked child of it (as after `fork(2)`); `worker` runs on a
/// copy of `stack`, never in this process.
///
/// # Errors
/// The intermediate could not be made (`clone` failed).
pub unsafe fn spawn(
    stack: &IntermediateStack,
    pid_pipe: &OwnedFd,
    worker: &mut dyn FnMut(Pid) -> i32,
) -> nix::Result<Pid> {
    let mut job = Job { pid_pipe, worker };
    // SAFETY: `intermediate` runs on `stack`, a mapping of its own, and
    // shares this process's memory while this thread sleeps (CLONE_VFORK)
    // until it exits; `job` outlives it. It follows the rules in the module
    // docs: no allocation, no drop, no panic in this memory.
    let pid = unsafe {
        libc::clone(
            intermediate,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_mut(&mut job).cast(),
        )
    };
    match pid {
        -1 => Err(Errno::last()),
        pid => Ok(Pid::from_raw(pid)),
    }
}

extern "C" fn intermediate(job: *mut c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a `Job` that lives until this process exits
    // (the caller sleeps meanwhile).
    let job = unsafe { &mut *job.cast::<Job<'_>>() };
    // The return value ends this process (libc's clone makes the exit
    // system call with it, not exit(3)).
    libc::c_int::from(!fork_worker(job.pid_pipe, job.worker))
}

/// An intermediate's whole job, however it was made (here, or by
/// `clone3` into the module's cgroup): fork the worker, which runs
/// `worker` with this process's pid and `_exit`s with its result, and
/// report the worker's pid (or the fork's errno) on `pid_pipe`. Returns
/// whether the report was written. Allocates, frees and drops nothing, so
/// an intermediate that shares the fork server's memory may run it.
///
/// Must be called in a single-threaded process (an intermediate), so the
/// worker may run anything after the fork.
pub fn fork_worker(pid_pipe: &OwnedFd, worker: &mut dyn FnMut(Pid) -> i32) -> bool {
    // Read before the fork: the worker may run only after this process is
    // gone, when its parent is already someone else.
    let me = Pid::this();
    // The fork server ignores SIGCHLD (the kernel reaps intermediates); a
    // worker that ended before this process would then be reaped unseen,
    // and the supervisor, its parent from then on, never learn of it. The
    // handler table is this process's own (no CLONE_SIGHAND): nothing
    // shared is written.
    // SAFETY: the default disposition installs no handler.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    // SAFETY: an intermediate is single-threaded (this function's
    // contract); the child is a full copy and may run anything.
    let forked = unsafe { libc::fork() };
    if forked == 0 {
        let code = worker(me);
        // SAFETY: _exit ends the worker without running the fork
        // server's destructors or atexit handlers.
        unsafe { libc::_exit(code) }
    }
    let fork = if forked > 0 {
        Ok(Pid::from_raw(forked))
    } else {
        Err(Errno::last())
    };
    crate::pid_pipe::report(pid_pipe, fork)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_is_a_real_fork_whose_pid_the_intermediate_reports() {
        let stack = IntermediateStack::new().unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        let (status_read, status_write) = nix::unistd::pipe().unwrap();
        // Written by the worker: a fork writes its own copy, never ours.
        static TOUCHED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(41);
        let mut worker = |_intermediate: Pid| {
            TOUCHED.store(42, std::sync::atomic::Ordering::SeqCst);
            let seen = TOUCHED.load(std::sync::atomic::Ordering::SeqCst);
            // Its own pid, not the test's or the intermediate's.
            let me = std::process::id() as i32;
            let mut line = [0u8; 5];
            line[0] = seen;
            line[1..].copy_from_slice(&me.to_le_bytes());
            i32::from(nix::unistd::write(&status_write, &line).is_err())
        };
        // SAFETY: the test harness has other threads, which `spawn`'s
        // contract forbids: acceptable here because the worker only makes
        // `write` calls and `_exit`s, touching no lock another thread held.
        let intermediate = unsafe { spawn(&stack, &write, &mut worker) }.unwrap();
        nix::sys::wait::waitpid(intermediate, None).unwrap();
        let pid = Pid::from_raw(crate::pid_pipe::read(&read).expect("a pid") as i32);
        let mut line = [0u8; 5];
        nix::unistd::read(&status_read, &mut line).unwrap();
        assert_eq!(line[0], 42);
        assert_eq!(
            i32::from_le_bytes(line[1..].try_into().unwrap()),
            pid.as_raw()
        );
        assert_eq!(TOUCHED.load(std::sync::atomic::Ordering::SeqCst), 41);
        // The worker is not our child (the intermediate was), so it is not
        // ours to reap: wait for it to be gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while nix::sys::signal::kill(pid, None).is_ok()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z"))
        {
            assert!(std::time::Instant::now() < deadline, "worker still running");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
