//! The supervisor's own output: its messages on stderr and the modules'
//! lines on stdout, written by one thread from a bounded queue.
//!
//! The event loop only ever appends to the queue; it never writes to a
//! terminal, pipe or file itself. A stuck reader (a paused terminal, a log
//! shipper that stopped reading its pipe) therefore stalls at most the
//! writer thread: the queue fills up, further lines are dropped and
//! counted, and once the reader moves again the writer reports how many
//! were lost (`edgeward: N log lines dropped …`). The total is in `status`
//! (`log_dropped`).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bytes of text the queue holds at most; a line that does not fit is
/// dropped. About a thousand full lines: enough to ride out a reader that
/// pauses for a moment, small next to a worker's memory.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;

/// Where a line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Module output and guest logs.
    Out,
    /// The supervisor's own messages.
    Err,
}

struct Queue {
    lines: VecDeque<(Stream, String)>,
    bytes: usize,
    /// Dropped since the writer last reported.
    dropped: u64,
    /// Set while the writer is writing a batch (the queue is not drained yet).
    busy: bool,
}

/// A queue and the thread that empties it into two writers.
pub struct Sink {
    queue: Mutex<Queue>,
    /// Signalled when lines arrive.
    arrived: Condvar,
    /// Signalled when the writer finished a batch.
    written: Condvar,
    dropped_total: AtomicU64,
}

impl Sink {
    /// Starts a sink writing to `out` and `err` from a thread of its own.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> std::io::Result<Arc<Sink>> {
        let sink = Arc::new(Sink {
            queue: Mutex::new(Queue {
                lines: VecDeque::new(),
                bytes: 0,
                dropped: 0,
                busy: false,
            }),
            arrived: Condvar::new(),
            written: Condvar::new(),
            dropped_total: AtomicU64::new(0),
        });
        let writer = Arc::clone(&sink);
        std::thread::Builder::new()
            .name("log-writer".into())
            .stack_size(64 * 1024)
            .spawn(move || writer.write_forever(out, err))?;
        Ok(sink)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one line (without its newline). Never blocks on the output;
    /// drops the line and counts it when the queue is full.
    pub fn line(&self, stream: Stream, text: String) {
        let mut queue = self.lock();
        if queue.bytes + text.len() + 1 > MAX_QUEUED_BYTES {
            queue.dropped += 1;
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.bytes += text.len() + 1;
        queue.lines.push_back((stream, text));
        drop(queue);
        self.arrived.notify_one();
    }

    /// Lines dropped so far because the output could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    /// Waits until everything queued was written, at most `timeout` (the
    /// reader may be stuck for good). Returns whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut queue = self.lock();
        while !queue.lines.is_empty() || queue.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            queue = self
                .written
                .wait_timeout(queue, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn write_forever(&self, mut out: Box<dyn Write + Send>, mut err: Box<dyn Write + Send>) {
        block_all_signals();
        let mut out_batch = Vec::new();
        let mut err_batch = Vec::new();
        loop {
            let dropped = {
                let mut queue = self.lock();
                queue.busy = false;
                self.written.notify_all();
                while queue.lines.is_empty() && queue.dropped == 0 {
                    queue = self.arrived.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                queue.busy = true;
                for (stream, text) in queue.lines.drain(..) {
                    let batch = match stream {
                        Stream::Out => &mut out_batch,
                        Stream::Err => &mut err_batch,
                    };
                    batch.extend_from_slice(text.as_bytes());
                    batch.push(b'\n');
                }
                queue.bytes = 0;
                std::mem::take(&mut queue.dropped)
            };
            // Errors (a closed pipe) lose these lines and nothing else.
            if !out_batch.is_empty() {
                let _ = out.write_all(&out_batch).and_then(|()| out.flush());
                out_batch.clear();
            }
            if !err_batch.is_empty() {
                let _ = err.write_all(&err_batch).and_then(|()| err.flush());
                err_batch.clear();
            }
            if dropped > 0 {
                let _ = writeln!(
                    err,
                    "edgeward: {dropped} log lines dropped: the output could not keep up (a reader of stdout/stderr is slow or stopped)"
                );
                let _ = err.flush();
            }
        }
    }
}

/// The writer must never take a signal meant for the event loop's signalfd
/// (the loop blocks them before the thread starts; this makes it certain).
fn block_all_signals() {
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&nix::sys::signal::SigSet::all()),
        None,
    );
}

/// The process's sink, on the real stdout and stderr, started on first use.
pub fn global() -> &'static Sink {
    static GLOBAL: OnceLock<Arc<Sink>> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        Sink::start(Box::new(std::io::stdout()), Box::new(std::io::stderr()))
            .expect("cannot start the log writer thread")
    })
}

/// Queues a line on the process's stdout (module output).
pub fn out(text: String) {
    global().line(Stream::Out, text);
}

/// Queues a line on the process's stderr (the supervisor's messages).
pub fn err(text: String) {
    global().line(Stream::Err, text);
}

/// Prints a supervisor message on stderr (through the log writer: never blocks).
macro_rules! say {
    ($($arg:tt)*) => { crate::log_sink::err(format!("edgeward: {}", format_args!($($arg)*))) };
}
pub(crate) use say;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe().expect("pipe")
    }

    #[test]
    fn a_stuck_reader_never_blocks_the_caller_and_drops_are_counted() {
        // A pipe nobody reads: the writer thread blocks once it is full.
        let (_read_end, write_end) = pipe();
        let sink = Sink::start(
            Box::new(std::fs::File::from(write_end)),
            Box::new(std::io::sink()),
        )
        .expect("start");
        let started = Instant::now();
        let line = "x".repeat(4000);
        for _ in 0..2_000 {
            sink.line(Stream::Out, line.clone());
        }
        // 8 MB offered, a 64 KiB pipe and a 1 MiB queue: most are dropped,
        // and the caller was never held up by the pipe.
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(sink.dropped() > 1_000, "{}", sink.dropped());
        assert!(!sink.flush(Duration::from_millis(50)));
    }

    #[test]
    fn lines_arrive_in_order_and_drops_are_reported_once_the_reader_moves() {
        let (read_end, write_end) = pipe();
        let (err_read, err_write) = pipe();
        let sink = Sink::start(
            Box::new(std::fs::File::from(write_end)),
            Box::new(std::fs::File::from(err_write)),
        )
        .expect("start");
        for i in 0..100 {
            sink.line(Stream::Out, format!("line {i}"));
        }
        assert!(sink.flush(Duration::from_secs(5)));
        let mut text = String::new();
        let mut reader = std::fs::File::from(read_end);
        let mut buf = vec![0u8; 65536];
        while text.lines().count() < 100 {
            let n = std::io::Read::read(&mut reader, &mut buf).expect("read");
            text.push_str(std::str::from_utf8(&buf[..n]).expect("utf8"));
        }
        let expected: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        // Overfill the queue in one go (the writer is idle, not blocked).
        {
            let mut queue = sink.lock();
            queue.dropped = 7;
        }
        sink.line(Stream::Err, "after".into());
        assert!(sink.flush(Duration::from_secs(5)));
        let mut err = std::fs::File::from(err_read);
        let n = std::io::Read::read(&mut err, &mut buf).expect("read");
        let err_text = std::str::from_utf8(&buf[..n]).expect("utf8");
        assert!(err_text.contains("after\n"), "{err_text}");
        assert!(err_text.contains("7 log lines dropped"), "{err_text}");
    }
}
