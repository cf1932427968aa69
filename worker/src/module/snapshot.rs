//! A reactor's snapshots: handing the last durable state to `ew_restore`
//! at start, and answering the supervisor's `Snapshot` with what
//! `ew_snapshot` gave to `snapshot_put`.

use std::time::Duration;

use std::os::fd::OwnedFd;

use edgeward_ipc::control::{snapshot_messages, FromWorker, Init, LogLevel, Restore};
use wasmtime::{Instance, Store, TypedFunc};

use super::report_trap;
use crate::budget::{self, Watchdog};
use crate::host::HostState;
use crate::report::Reporter;

/// Reads a restored snapshot that came in a memfd (the last fd beside
/// `Init`) into `init.restore.inline`, so that what follows sees one shape.
/// A memfd that cannot be read is logged and the module starts without it.
pub fn receive(init: &mut Init, fds: &mut Vec<OwnedFd>, reporter: &Reporter) {
    let Some(restore) = init.restore.as_mut().filter(|r| r.in_memfd()) else {
        return;
    };
    let read = match fds.pop() {
        Some(fd) => edgeward_ipc::sealed::read(fd, restore.len as usize),
        None => Err(std::io::Error::other("no memfd came with Init")),
    };
    match read {
        Ok(bytes) => restore.inline = bytes,
        Err(e) => {
            reporter.log(
                LogLevel::Warn,
                format!(
                    "snapshot epoch {} not restored: its memfd: {e}",
                    restore.epoch
                ),
            );
            init.restore = None;
        }
    }
}

/// Sends `state` to the supervisor as the answer to `Snapshot`, in parts
/// when it does not fit one message.
pub fn send(reporter: &Reporter, state: &[u8]) {
    for message in snapshot_messages(state) {
        reporter.send(&message);
    }
}

/// Calls `ew_restore(ptr, len)` with the state in `init.restore`, in a
/// buffer from `ew_alloc`. A module without these exports, or whose
/// `ew_restore` returns non-zero, starts from its initial state; that is
/// logged, not fatal (the bytes stay durable for a later version).
///
/// # Errors
/// The exit code after a trap (reported).
pub fn restore(
    instance: &Instance,
    store: &mut Store<HostState>,
    init: &Init,
    reporter: &Reporter,
) -> Result<(), i32> {
    let Some(Restore {
        epoch,
        inline: bytes,
        ..
    }) = &init.restore
    else {
        return Ok(());
    };
    let budget = Duration::from_millis(u64::from(init.call_budget_ms));
    let restore = instance.get_typed_func::<(i32, i32), i32>(&mut *store, "ew_restore");
    let alloc = instance.get_typed_func::<i32, i32>(&mut *store, "ew_alloc");
    let (Ok(restore), Ok(alloc)) = (restore, alloc) else {
        reporter.log(
            LogLevel::Warn,
            format!("snapshot epoch {epoch} not restored: the module exports no ew_restore(i32, i32) -> i32 and ew_alloc(i32) -> i32"),
        );
        return Ok(());
    };
    let ptr = budget::call(store, budget, |s| alloc.call(s, bytes.len() as i32))
        .map_err(|e| report_trap(reporter, store, "ew_alloc", init.call_budget_ms, &e))?;
    let Some(memory) = store.data().memory else {
        return Ok(());
    };
    let start = ptr as u32 as usize;
    if ptr <= 0 || memory.write(&mut *store, start, bytes).is_err() {
        reporter.log(
            LogLevel::Warn,
            format!("snapshot epoch {epoch} not restored: ew_alloc({}) returned {ptr}, not a buffer in the module's memory", bytes.len()),
        );
        return Ok(());
    }
    let code = budget::call(store, budget, |s| {
        restore.call(s, (ptr, bytes.len() as i32))
    })
    .map_err(|e| report_trap(reporter, store, "ew_restore", init.call_budget_ms, &e))?;
    if code == 0 {
        reporter.log(
            LogLevel::Info,
            format!("restored snapshot epoch {epoch} ({} bytes)", bytes.len()),
        );
    } else {
        reporter.log(
            LogLevel::Warn,
            format!("ew_restore returned {code}: snapshot epoch {epoch} refused; starting from the initial state"),
        );
    }
    Ok(())
}

/// Answers a `Snapshot` request.
///
/// # Errors
/// The exit code after a trap in `ew_snapshot` (reported).
pub fn take(
    store: &mut Store<HostState>,
    ew_snapshot: Option<&TypedFunc<(), i32>>,
    watchdog: &Watchdog,
    init: &Init,
    reporter: &Reporter,
) -> Result<(), i32> {
    let Some(ew_snapshot) = ew_snapshot else {
        reporter.send(&FromWorker::SnapshotFailed(
            "the module exports no ew_snapshot".into(),
        ));
        return Ok(());
    };
    store.data_mut().snapshot = None;
    let result = super::watched_call(store, watchdog, |s| ew_snapshot.call(s, ()));
    let code =
        result.map_err(|e| report_trap(reporter, store, "ew_snapshot", init.call_budget_ms, &e))?;
    let message = match (code, store.data_mut().snapshot.take()) {
        (0, Some(bytes)) => {
            send(reporter, &bytes);
            return Ok(());
        }
        (0, None) => {
            FromWorker::SnapshotFailed("ew_snapshot returned 0 without calling snapshot_put".into())
        }
        // 1: nothing to save (the SDKs' default); not worth a log line.
        (1, _) => FromWorker::SnapshotFailed(String::new()),
        (code, _) => FromWorker::SnapshotFailed(format!("ew_snapshot returned {code}")),
    };
    reporter.send(&message);
    Ok(())
}
