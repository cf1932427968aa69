//! The WASI context of one module: exactly the policy's grants, nothing else.
//!
//! Not granted, ever: network sockets, name lookups, the host's environment.
//! Granted only when the policy lists them: args, env variables, preopened
//! directories (read-only or read-write). stdout and stderr go to the
//! worker's own, which the supervisor reads and prefixes with the module
//! name (`edgeward exec`: the user's). stdin only under `edgeward exec`
//! (`Init::stdin`): a supervised module has none.

use edgeward_ipc::control::Init;
use wasmtime::error::Context;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// Builds the WASI context for `init`.
///
/// # Errors
/// If a granted directory cannot be opened (the error names it).
pub fn context(init: &Init) -> wasmtime::Result<WasiP1Ctx> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .arg(&init.module)
        .args(&init.args)
        .envs(&init.env)
        .inherit_stdout()
        .inherit_stderr()
        // File operations run on this thread instead of a blocking pool:
        // no extra threads per worker.
        .allow_blocking_current_thread(true)
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false);
    if init.stdin {
        builder.inherit_stdin();
    }
    for dir in &init.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&dir.host, &dir.guest, perms)
            .with_context(|| format!("cannot open granted dir {} (as {})", dir.host, dir.guest))?;
    }
    Ok(builder.build_p1())
}

/// Enters a small runtime that wasmtime-wasi's synchronous calls use.
///
/// Without it, the first blocking WASI call (a sleep, a write to stdout)
/// starts wasmtime-wasi's ambient runtime with one thread per CPU in every
/// worker. One worker thread with a small stack is enough for one module.
///
/// # Errors
/// If the runtime cannot start its thread.
pub fn runtime() -> wasmtime::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_stack_size(256 * 1024)
        .thread_name("wasi-io")
        .enable_time()
        .enable_io()
        .build()
        .context("cannot start the WASI I/O thread")
}
