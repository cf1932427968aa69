//! Slow work off the event loop: compiling wasm, preparing a module's
//! read-write dirs (a quota volume, ownership of a large tree).
//!
//! Each job runs on a thread of its own (jobs are rare: a reload, an
//! upgrade, a module's first start), and its result comes back through a
//! channel; an eventfd in the loop's epoll set says that one has. The loop
//! keeps what to do with each result (`supervisor/background.rs`), so a job
//! itself never touches the supervisor's state.
//!
//! Children a job starts (the `edgeward-worker compile` processes) are
//! children of the job's thread. The loop reaps with `__WNOTHREAD` (see
//! `event_loop/exits.rs`, `reap`), so it never takes their exit status from the job
//! that waits for them.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

/// Identifies one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u64);

/// The jobs in flight and their finished results.
pub struct Jobs<T> {
    results: Receiver<(JobId, T)>,
    sender: Sender<(JobId, T)>,
    wake: Arc<EventFd>,
    next: u64,
}

impl<T: Send + 'static> Jobs<T> {
    /// No jobs yet.
    ///
    /// # Errors
    /// The eventfd cannot be created.
    pub fn new() -> nix::Result<Self> {
        let (sender, results) = channel();
        let wake =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self {
            results,
            sender,
            wake: Arc::new(wake),
            next: 0,
        })
    }

    /// The fd that becomes readable when a job finished.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Runs `work` on a new thread named `name`.
    ///
    /// # Errors
    /// The thread cannot be started (the work did not run).
    pub fn start(
        &mut self,
        name: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<JobId> {
        self.next += 1;
        let id = JobId(self.next);
        let sender = self.sender.clone();
        let wake = Arc::clone(&self.wake);
        std::thread::Builder::new()
            .name(format!("job-{name}"))
            .spawn(move || {
                let result = work();
                // The loop may be gone (shutting down): then nobody waits.
                if sender.send((id, result)).is_ok() {
                    let _ = wake.write(1);
                }
            })?;
        Ok(id)
    }

    /// The results of the jobs that finished since the last call.
    pub fn finished(&mut self) -> Vec<(JobId, T)> {
        // Reset the eventfd first: a job finishing meanwhile writes it again.
        let _ = self.wake.read();
        self.results.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_come_back_with_their_ids_and_wake_the_fd() {
        let mut jobs: Jobs<u32> = Jobs::new().expect("jobs");
        let a = jobs.start("a", || 1).expect("start");
        let b = jobs
            .start("b", || {
                std::thread::sleep(Duration::from_millis(50));
                2
            })
            .expect("start");
        let mut got = Vec::new();
        while got.len() < 2 {
            let mut fds = [nix::poll::PollFd::new(
                jobs.fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).expect("poll");
            got.extend(jobs.finished());
        }
        got.sort();
        assert_eq!(got, vec![(a, 1), (b, 2)]);
    }
}
