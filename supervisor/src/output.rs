//! A worker's stdout/stderr, read from its pipe and printed line by line
//! with the module name in front, so interleaved output stays attributable.
//!
//! The event loop reads at most [`READ_BUDGET`] bytes per wake-up from one
//! pipe (epoll is level-triggered: the rest waits for the next round, after
//! every other ready fd had its turn), scans each byte once, and keeps at
//! most [`worker_text::MAX_LINE`] bytes of an unfinished line: a module
//! writing without newlines costs the supervisor the same per byte as one
//! writing short lines. Lines over the module's rate are dropped before they
//! are formatted; printed lines are escaped (`worker_text.rs`) and queued
//! to the log writer (`log_sink.rs`), never written here.

use std::os::fd::{AsFd, OwnedFd};

use edgeward_ipc::rate::LineLimit;

use crate::worker_text::{self, MAX_LINE};

/// Bytes read from one pipe per wake-up.
pub const READ_BUDGET: usize = 64 * 1024;

/// What one round of reading found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The pipe is empty for now.
    Empty,
    /// The budget was used up; more may be waiting (epoll says so again).
    Budget,
    /// End of file: the worker closed its output.
    Closed,
}

/// The read end of one worker's output pipe plus its partial line.
pub struct OutputPipe {
    /// The pipe (non-blocking).
    pub fd: OwnedFd,
    /// The unfinished line (at most `MAX_LINE` bytes).
    partial: Vec<u8>,
    /// The module's output rate (lines per second, per stream).
    limit: LineLimit,
    /// Lines the limit dropped from this pipe
    /// (`edgeward_module_log_lines_dropped_total`).
    pub dropped: u64,
}

impl OutputPipe {
    /// Wraps a non-blocking pipe read end.
    pub fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            partial: Vec::with_capacity(256),
            limit: LineLimit::default(),
            dropped: 0,
        }
    }

    /// Reads up to [`READ_BUDGET`] bytes and prints the complete lines.
    pub fn drain(&mut self, module: &str) -> Drained {
        let mut buf = [0u8; 16 * 1024];
        let mut taken = 0;
        while taken < READ_BUDGET {
            match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Ok(0) => {
                    self.flush(module);
                    return Drained::Closed;
                }
                Ok(n) => {
                    taken += n;
                    self.take(module, &buf[..n]);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Drained::Empty,
                Err(_) => return Drained::Closed,
            }
        }
        Drained::Budget
    }

    /// Splits `bytes` into lines; each byte is looked at once.
    fn take(&mut self, module: &str, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let (piece, ends_line) = match bytes.iter().take(room).position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], true),
                None => (&bytes[..bytes.len().min(room)], false),
            };
            self.partial.extend_from_slice(piece);
            bytes = &bytes[piece.len() + usize::from(ends_line)..];
            if ends_line {
                self.emit(module, "");
            } else if self.partial.len() == MAX_LINE {
                // A long line is printed in pieces.
                self.emit(module, "…");
            }
        }
    }

    fn emit(&mut self, module: &str, suffix: &str) {
        match self.limit.admit() {
            Ok(true) => {}
            Ok(false) => {
                self.dropped += 1;
                self.partial.clear();
                return;
            }
            Err(dropped) => crate::log_sink::lines_dropped(module, dropped, "output"),
        }
        let line = worker_text::one_line(&self.partial, MAX_LINE);
        self.partial.clear();
        crate::log_sink::module_output(module, &format!("{line}{suffix}"));
    }

    /// Prints a last unterminated line.
    pub fn flush(&mut self, module: &str) {
        if !self.partial.is_empty() {
            self.emit(module, "");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_with(bytes: &[u8]) -> OutputPipe {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).expect("pipe");
        nix::unistd::write(&write, bytes).expect("write");
        drop(write);
        OutputPipe::new(read)
    }

    #[test]
    fn an_endless_line_keeps_the_partial_buffer_bounded() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).expect("pipe");
        let mut pipe = OutputPipe::new(read);
        let chunk = vec![b'z'; 60_000];
        for _ in 0..20 {
            let _ = nix::unistd::write(&write, &chunk);
            while pipe.drain("m") == Drained::Budget {}
            assert!(pipe.partial.len() < MAX_LINE);
        }
    }

    #[test]
    fn the_budget_bounds_one_round_and_the_rest_comes_next() {
        let mut pipe = pipe_with(&vec![b'a'; 60_000]);
        assert_eq!(pipe.drain("m"), Drained::Closed);
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).expect("pipe");
        let mut pipe = OutputPipe::new(read);
        // Fill the pipe beyond one round's budget (the pipe is 64 KiB; make it bigger).
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20)).expect("setpipe");
        let written = nix::unistd::write(&write, &vec![b'b'; 200_000]).expect("write");
        assert_eq!(written, 200_000);
        assert_eq!(pipe.drain("m"), Drained::Budget);
        assert_eq!(pipe.drain("m"), Drained::Budget);
        assert_eq!(pipe.drain("m"), Drained::Budget);
        assert_eq!(pipe.drain("m"), Drained::Empty);
    }
}
