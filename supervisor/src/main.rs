//! `edgeward`: the supervisor and its command-line client.
//!
//! The supervisor never links wasmtime: compiling and running guests happens
//! in `edgeward-worker` processes (see `docs/architecture.md`).

mod cgroup;
mod channels;
mod cli;
mod compile_cache;
mod control;
mod launcher;
mod output;
mod policy;
mod restart;
mod sandbox_plan;
mod signals;
mod slot;
mod snapshot;
mod status;
mod supervisor;
mod upgrade_record;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            policies,
            state,
            control,
            stop_timeout_ms,
            ready_timeout_ms,
            uid_base,
            runtime_overhead_mib,
        } => supervisor::run(
            supervisor::Options {
                policies,
                state,
                control: control.control,
                stop_timeout: Duration::from_millis(stop_timeout_ms),
                ready_timeout: Duration::from_millis(ready_timeout_ms),
                uid_base,
                runtime_overhead_mib,
                worker_bin: cli::worker_bin(),
            },
            started,
        ),
        Command::Check { sandbox: true, .. } => cli::check_sandbox::run(&cli::worker_bin()),
        Command::Check { policies, .. } => cli::check::run(&policies, &cli::worker_bin()),
        Command::Status { json, control } => cli::client::status(&control.control, json),
        Command::Stop { control } => cli::client::stop(&control.control),
        Command::Restart { module, control } => cli::client::restart(&control.control, &module),
        Command::Reload { control } => cli::client::reload(&control.control),
        Command::Upgrade {
            module,
            wasm,
            health_ms,
            control,
        } => cli::client::upgrade(&control.control, &module, &wasm, health_ms),
        Command::Snapshot { module, control } => cli::client::snapshot(&control.control, &module),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("edgeward: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
