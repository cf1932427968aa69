//! A worker's stdout/stderr, read from its pipe and printed line by line
//! with the module name in front, so interleaved output stays attributable.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use edgeward_ipc::rate::LineLimit;

/// Longest line kept; longer lines are printed in pieces.
const MAX_LINE: usize = 4096;

/// The read end of one worker's output pipe plus its partial line.
pub struct OutputPipe {
    /// The pipe (non-blocking).
    pub fd: OwnedFd,
    partial: Vec<u8>,
    limit: LineLimit,
}

impl OutputPipe {
    /// Wraps a non-blocking pipe read end.
    pub fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            partial: Vec::new(),
            limit: LineLimit::default(),
        }
    }

    /// Reads what is available and prints complete lines as `[module] line`.
    /// Returns `false` at end of file (the worker closed its output).
    pub fn drain(&mut self, module: &str) -> bool {
        let mut buf = [0u8; 8192];
        loop {
            match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Ok(0) => {
                    self.flush(module);
                    return false;
                }
                Ok(n) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    self.emit_lines(module);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
    }

    fn emit_lines(&mut self, module: &str) {
        let mut out = std::io::stdout().lock();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            match self.limit.admit() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(dropped) => {
                    let _ = writeln!(
                        out,
                        "[{module}] edgeward: {dropped} output lines dropped (limit {} lines/s)",
                        edgeward_ipc::rate::LINES_PER_SECOND
                    );
                }
            }
            let _ = writeln!(out, "[{module}] {}", String::from_utf8_lossy(&line[..end]));
        }
        if self.partial.len() > MAX_LINE {
            let piece: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            let _ = writeln!(out, "[{module}] {}…", String::from_utf8_lossy(&piece));
        }
        let _ = out.flush();
    }

    /// Prints a last unterminated line.
    pub fn flush(&mut self, module: &str) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            println!("[{module}] {}", String::from_utf8_lossy(&line));
        }
    }
}
