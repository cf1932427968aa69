//! `edgeward`: the supervisor and its command-line client.
//!
//! The supervisor never links wasmtime: compiling and running guests happens
//! in `edgeward-worker` processes (see `docs/architecture.md`).

mod audit;
mod cgroup;
mod channels;
mod cli;
mod compile_cache;
mod control;
#[cfg(test)]
mod docs_pins;
mod durable;
mod event_loop;
mod grant_access;
mod idmap;
mod jobs;
mod launcher;
mod lifecycle;
mod log_sink;
mod metrics;
mod net_grant;
mod output;
mod policy;
mod restart;
mod rw_dirs;
mod sandbox_plan;
mod signals;
mod slot;
mod snapshot;
mod state_lock;
mod status;
mod upgrade;
mod volume;
mod wasm_language;
mod worker_text;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    let is_run = matches!(cli.command, Command::Run { .. });
    let is_exec = matches!(cli.command, Command::Exec { .. });
    if let Command::Run { log_format, .. } = &cli.command {
        log_sink::set_format(*log_format);
    }
    let result = match cli.command {
        Command::Run {
            policies,
            state,
            control,
            stop_timeout_ms,
            ready_timeout_ms,
            uid_base,
            runtime_overhead_mib,
            metrics,
            log_format: _,
        } => event_loop::run(
            event_loop::Options {
                policies,
                state,
                control: control.control,
                stop_timeout: Duration::from_millis(stop_timeout_ms),
                ready_timeout: Duration::from_millis(ready_timeout_ms),
                uid_base,
                runtime_overhead_mib,
                worker_bin: cli::worker_bin(),
                metrics,
            },
            started,
        ),
        Command::Exec {
            wasm,
            dirs,
            envs,
            policy,
            memory_mib,
            state,
            uid_base,
            runtime_overhead_mib,
            args,
        } => cli::exec::run(cli::exec::ExecArgs {
            wasm,
            dirs,
            envs,
            policy,
            memory_mib,
            state,
            uid_base,
            runtime_overhead_mib,
            worker_bin: cli::worker_bin(),
            args,
        }),
        Command::Check { sandbox: true, .. } => cli::check_sandbox::run(&cli::worker_bin()),
        Command::Check {
            policies, state, ..
        } => cli::check::run(&policies, &state, &cli::worker_bin()),
        Command::New { lang, name, dir } => cli::new::scaffold(lang, &name, &dir).map(|next| {
            println!("{next}");
            0
        }),
        Command::Status {
            watch: true,
            interval_ms,
            control,
            ..
        } => cli::client::watch(&control.control, Duration::from_millis(interval_ms)),
        Command::Status { json, control, .. } => cli::client::status(&control.control, json),
        Command::Stop { control } => cli::client::stop(&control.control),
        Command::Restart { module, control } => cli::client::restart(&control.control, &module),
        Command::Reload {
            allow_empty,
            control,
        } => cli::client::reload(&control.control, allow_empty),
        Command::Upgrade {
            module,
            wasm,
            health_ms,
            control,
        } => cli::client::upgrade(&control.control, &module, &wasm, health_ms),
        Command::Snapshot { module, control } => cli::client::snapshot(&control.control, &module),
    };
    let code = match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            if is_run {
                // The supervisor's queued messages come before its last
                // word, in the log's format.
                log_sink::fatal(&format!("{e:#}"));
                log_sink::global().flush(Duration::from_secs(2));
            } else {
                eprintln!("edgeward: error: {e:#}");
            }
            // exec's own failures must not read as the module's exit code.
            ExitCode::from(if is_exec {
                cli::exec::EXIT_CANNOT_RUN as u8
            } else {
                1
            })
        }
    };
    // What the supervisor queued for its log (if it ran) goes out first;
    // a reader that is stuck for good does not keep it from exiting.
    if is_run {
        log_sink::global().flush(Duration::from_secs(2));
    }
    code
}
