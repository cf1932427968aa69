//! Client commands: talk to a running supervisor over its control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::control::protocol::{Request, Response};
use crate::status;

/// Sends one request and returns the response.
///
/// # Errors
/// No supervisor on `socket`, or a malformed answer.
pub fn request(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    request_within(socket, request, Duration::from_secs(10))
}

/// As [`request`], waiting up to `timeout` for the answer.
///
/// # Errors
/// As [`request`], or no answer within `timeout`.
fn request_within(socket: &Path, request: &Request, timeout: Duration) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach edgeward at {} (is `edgeward run` running? set --control or EDGEWARD_CONTROL)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    // A busy supervisor answers and closes before reading: the write then
    // fails with a broken pipe, but its refusal is waiting to be read.
    let written = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("no answer from edgeward")?;
    if answer.is_empty() {
        written.context("cannot send the request to edgeward")?;
        bail!("edgeward closed the connection without an answer");
    }
    serde_json::from_str(&answer)
        .with_context(|| format!("malformed answer from edgeward: {answer:?}"))
}

/// `edgeward status [--json]`.
///
/// # Errors
/// As [`request`].
pub fn status(socket: &Path, json: bool) -> anyhow::Result<i32> {
    let response = request(socket, &Request::Status)?;
    let Some(report) = response.status else {
        bail!("edgeward refused: {}", response.error.unwrap_or_default());
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", status::table(&report));
    }
    Ok(0)
}

/// `edgeward status --watch`: a live table every `interval`, with each
/// module's messages a second (handled + sent) from the difference of two
/// reports. On a terminal each table replaces the last; otherwise tables
/// follow each other, separated by a blank line. Ends when the supervisor
/// does (exit 0), or on Ctrl-C.
///
/// # Errors
/// The supervisor cannot be reached at the first request, or refuses.
pub fn watch(socket: &Path, interval: Duration) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    let mut previous: Option<(status::StatusReport, Instant)> = None;
    loop {
        let report = match request(socket, &Request::Status) {
            Ok(response) => match response.status {
                Some(report) => report,
                None => bail!("edgeward refused: {}", response.error.unwrap_or_default()),
            },
            // It was there and is gone: the watch ends with it.
            Err(e) if previous.is_some() => {
                println!("edgeward stopped ({e:#})");
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        let rates = previous
            .as_ref()
            .map(|(before, at)| status::message_rates(before, &report, now.duration_since(*at)));
        let mut frame = String::new();
        if terminal {
            // Home and clear: the new table replaces the old in place.
            frame.push_str("\x1b[H\x1b[2J");
        } else if previous.is_some() {
            frame.push('\n');
        }
        frame.push_str(&status::watch_table(&report, rates.as_ref()));
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) ends the watch.
        if out
            .write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(0);
        }
        drop(out);
        previous = Some((report, now));
        std::thread::sleep(interval);
    }
}

/// `edgeward stop`: asks, then waits until the supervisor is gone.
///
/// # Errors
/// As [`request`], or if it is still there after 30 s.
pub fn stop(socket: &Path) -> anyhow::Result<i32> {
    let response = request(socket, &Request::Stop)?;
    if !response.ok {
        bail!("edgeward refused: {}", response.error.unwrap_or_default());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(socket).is_ok() {
        if Instant::now() > deadline {
            bail!("edgeward is still running 30 s after stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("stopped");
    Ok(0)
}

/// `edgeward restart MODULE`.
///
/// # Errors
/// As [`request`], or if the supervisor refuses (unknown module).
pub fn restart(socket: &Path, module: &str) -> anyhow::Result<i32> {
    act(
        socket,
        &Request::Restart {
            module: module.to_string(),
        },
    )
}

/// `edgeward reload [--allow-empty]`: prints what the reload does, once
/// the new wasm it needs is compiled.
///
/// # Errors
/// As [`request`], or if a policy was rejected (the message names it; the
/// rest of the reload is applied), or the policy directory is empty and
/// `allow_empty` is not set.
pub fn reload(socket: &Path, allow_empty: bool) -> anyhow::Result<i32> {
    // Compiling new wasm (seconds per module for large ones) comes first.
    let response = request_within(
        socket,
        &Request::Reload { allow_empty },
        Duration::from_secs(300),
    )?;
    if !response.ok {
        bail!("{}", response.error.unwrap_or_default());
    }
    println!("{}", response.message.unwrap_or_default());
    Ok(0)
}

/// `edgeward upgrade MODULE FILE.wasm`: waits until the upgrade is
/// committed or rolled back and prints the outcome.
///
/// # Errors
/// As [`request`], an unreadable file, or the upgrade was refused or rolled
/// back (the message says why and what runs now).
pub fn upgrade(socket: &Path, module: &str, wasm: &Path, health_ms: u64) -> anyhow::Result<i32> {
    let wasm = std::fs::canonicalize(wasm)
        .with_context(|| format!("cannot find the new wasm {}", wasm.display()))?;
    let request = Request::Upgrade {
        module: module.to_string(),
        wasm,
        health_ms,
    };
    // Compiling, stopping the old worker, probation, health check.
    let timeout = Duration::from_millis(health_ms) + Duration::from_secs(300);
    let response = request_within(socket, &request, timeout)?;
    if !response.ok {
        bail!("{}", response.error.unwrap_or_default());
    }
    println!("{}", response.message.unwrap_or_default());
    Ok(0)
}

/// `edgeward snapshot MODULE`: prints `MODULE: snapshot epoch N is durable`.
///
/// # Errors
/// As [`request`], or if the supervisor refuses (unknown module, module not
/// running or without `ew_snapshot`, the commit failed).
pub fn snapshot(socket: &Path, module: &str) -> anyhow::Result<i32> {
    act(
        socket,
        &Request::Snapshot {
            module: module.to_string(),
        },
    )
}

/// Sends an action and prints the supervisor's message.
fn act(socket: &Path, action: &Request) -> anyhow::Result<i32> {
    let response = request(socket, action)?;
    if !response.ok {
        bail!("{}", response.error.unwrap_or_default());
    }
    println!("{}", response.message.unwrap_or_default());
    Ok(0)
}
