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

/// How log lines are written (`edgeward run --log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people: `edgeward: …` for the supervisor, `[module] …`
    /// for a module's output and log.
    #[default]
    Text,
    /// One JSON object a line: `time` (RFC 3339, UTC, ms), `level`,
    /// `module` (absent for the supervisor's own), `event`, `msg` and the
    /// event's fields.
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Sets the format, once, before the first line (later calls are ignored).
pub fn set_format(format: Format) {
    let _ = FORMAT.set(format);
}

fn format() -> Format {
    FORMAT.get().copied().unwrap_or_default()
}

/// A line's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail for debugging a module.
    Debug,
    /// What happened.
    Info,
    /// Something is wrong but handled.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// Its name in JSON lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One structured log event: what JSON lines carry; text lines are
/// rendered by the caller as before.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Severity.
    pub level: Level,
    /// The module it is about, if one.
    pub module: Option<&'a str>,
    /// What happened, a stable word: `output`, `log`, `denied`,
    /// `supervisor`, … (docs/operations.md, "Log format").
    pub event: &'a str,
    /// The line in words.
    pub msg: &'a str,
    /// More fields, by name.
    pub fields: &'a [(&'a str, serde_json::Value)],
}

impl Event<'_> {
    /// The JSON line (without its newline).
    pub fn json(&self, time: std::time::SystemTime) -> String {
        let mut object = serde_json::Map::new();
        object.insert(
            "time".into(),
            humantime::format_rfc3339_millis(time).to_string().into(),
        );
        object.insert("level".into(), self.level.as_str().into());
        if let Some(module) = self.module {
            object.insert("module".into(), module.into());
        }
        object.insert("event".into(), self.event.into());
        object.insert("msg".into(), self.msg.into());
        for (name, value) in self.fields {
            object.insert((*name).into(), value.clone());
        }
        serde_json::Value::Object(object).to_string()
    }
}

/// Queues `event` on `stream`: as its JSON line, or as `text()` in the
/// text format.
pub fn emit(stream: Stream, event: Event<'_>, text: impl FnOnce() -> String) {
    let line = match format() {
        Format::Text => text(),
        Format::Json => event.json(std::time::SystemTime::now()),
    };
    global().line(stream, line);
}

/// Queues a module's output line (stdout, or stderr with `stderr`).
pub fn module_output(module: &str, line: &str) {
    emit(
        Stream::Out,
        Event {
            level: Level::Info,
            module: Some(module),
            event: "output",
            msg: line,
            fields: &[],
        },
        || format!("[{module}] {line}"),
    );
}

/// Queues a line a module logged through `edgeward.log` at `level`.
pub fn module_log(module: &str, level: edgeward_ipc::control::LogLevel, line: &str) {
    use edgeward_ipc::control::LogLevel;
    emit(
        Stream::Out,
        Event {
            level: match level {
                LogLevel::Error => Level::Error,
                LogLevel::Warn => Level::Warn,
                LogLevel::Info => Level::Info,
                LogLevel::Debug => Level::Debug,
            },
            module: Some(module),
            event: "log",
            msg: line,
            fields: &[],
        },
        || format!("[{module}] {}: {line}", level.as_str()),
    );
}

/// Says that the line limit dropped `dropped` of a module's `what`
/// (`output` or `log`) lines since it last said so.
pub fn lines_dropped(module: &str, dropped: u64, what: &str) {
    let limit = edgeward_ipc::rate::LINES_PER_SECOND;
    let msg = format!("{dropped} {what} lines dropped (limit {limit} lines/s)");
    emit(
        Stream::Out,
        Event {
            level: Level::Warn,
            module: Some(module),
            event: "lines_dropped",
            msg: &msg,
            fields: &[("dropped", dropped.into()), ("stream", what.into())],
        },
        || format!("[{module}] edgeward: {msg}"),
    );
}

/// The error `edgeward run` ends with.
pub fn fatal(error: &str) {
    emit(
        Stream::Err,
        Event {
            level: Level::Error,
            module: None,
            event: "fatal",
            msg: error,
            fields: &[],
        },
        || format!("edgeward: error: {error}"),
    );
}

/// Prints a supervisor message on stderr. In JSON, a message about one
/// module (`module NAME: …`, the form every such message has) carries
/// that module, and a `WARNING: …` one the level `warn`.
pub fn supervisor_line(text: String) {
    emit(
        Stream::Err,
        Event {
            level: if text.starts_with("WARNING") {
                Level::Warn
            } else {
                Level::Info
            },
            module: text
                .strip_prefix("module ")
                .and_then(|rest| rest.split_once(": "))
                .map(|(name, _)| name)
                .filter(|name| !name.contains(' ')),
            event: "supervisor",
            msg: &text,
            fields: &[],
        },
        || format!("edgeward: {text}"),
    );
}

/// Prints a supervisor message on stderr (through the log writer: never blocks).
macro_rules! say {
    ($($arg:tt)*) => { crate::log_sink::supervisor_line(format!($($arg)*)) };
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
    fn json_lines_carry_time_level_module_event_and_fields() {
        let fields = [("kind", serde_json::Value::from("channel"))];
        let line = Event {
            level: Level::Warn,
            module: Some("m"),
            event: "denied",
            msg: "a \"quoted\" word",
            fields: &fields,
        }
        .json(std::time::UNIX_EPOCH + Duration::from_millis(1_500));
        let value: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!(value["time"], "1970-01-01T00:00:01.500Z");
        assert_eq!(value["level"], "warn");
        assert_eq!(value["module"], "m");
        assert_eq!(value["event"], "denied");
        assert_eq!(value["msg"], "a \"quoted\" word");
        assert_eq!(value["kind"], "channel");
        assert!(!line.contains('\n'));
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
