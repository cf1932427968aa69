//! `edgeward-worker`: the worker-side half of edgeward. It links wasmtime so
//! that the supervisor never has to.
//!
//! ```text
//! edgeward-worker zygote              fork server on fd 3 (used by `edgeward run`)
//! edgeward-worker serve               one module on fd 3 (exec-per-worker model)
//! edgeward-worker compile IN OUT      validate, link-check and precompile IN to OUT
//! edgeward-worker inspect FILE...     validate and link-check, one JSON line per file
//! edgeward-worker fingerprint         print the engine fingerprint (compile-cache key)
//! edgeward-worker self-test           sandbox itself and try each forbidden call (for tests)
//! edgeward-worker probe               which sandbox layers this host can enforce (JSON)
//! edgeward-worker seccomp-table       the seccomp allowlist with reasons (Markdown)
//! ```
//!
//! Not meant to be run by hand except `compile`, `inspect` and `fingerprint`.

mod budget;
mod clone_into_cgroup;
mod engine;
mod exit_code;
mod fault;
mod host;
mod module;
mod pid_pipe;
mod report;

mod tools;
mod vfork_intermediate;
mod zygote;

use std::os::fd::{FromRawFd, OwnedFd};

/// Where the supervisor puts the control socket (or the zygote socket).
const CONTROL_FD: i32 = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("zygote") => zygote::run(take_control_fd()),
        Some("serve") => serve(),
        Some("compile") if args.len() == 3 => match tools::compile::run(&args[1], &args[2]) {
            Ok(()) => exit_code::OK,
            Err(e) => {
                eprintln!("{e:#}");
                exit_code::LOAD_FAILED
            }
        },
        Some("inspect") if args.len() >= 2 => tools::inspect::run(&args[1..]),
        Some("self-test") => tools::self_test::run(),
        Some("probe") => tools::probe::run(),
        Some("seccomp-table") => tools::probe::seccomp_table(),
        Some("fingerprint") => match engine::build() {
            Ok(engine) => {
                println!("{}", engine::fingerprint(&engine));
                exit_code::OK
            }
            Err(e) => {
                eprintln!("{e:#}");
                exit_code::LOAD_FAILED
            }
        },
        _ => {
            eprintln!(
                "usage: edgeward-worker zygote | serve | compile IN.wasm OUT.cwasm | inspect FILE... | fingerprint | self-test | probe | seccomp-table\n\
                 (zygote and serve are started by `edgeward run`, not by hand)"
            );
            exit_code::USAGE
        }
    };
    std::process::exit(code);
}

fn serve() -> i32 {
    let mut prepared = match module::Prepared::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("edgeward-worker: {e:#}");
            return exit_code::LOAD_FAILED;
        }
    };
    // SAFETY: as in the zygote, PR_SET_PDEATHSIG only sets a flag on us.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    module::serve(&mut prepared, take_control_fd())
}

/// Takes ownership of fd 3, checking that it is a socket.
fn take_control_fd() -> OwnedFd {
    use std::os::unix::fs::FileTypeExt;
    // /proc/self/fd/N stats the open file itself.
    let is_socket = std::fs::metadata(format!("/proc/self/fd/{CONTROL_FD}"))
        .is_ok_and(|m| m.file_type().is_socket());
    match is_socket {
        true => {}
        false => {
            eprintln!("edgeward-worker: fd {CONTROL_FD} is not a control socket; this mode is started by `edgeward run`");
            std::process::exit(exit_code::USAGE);
        }
    }
    // SAFETY: fd 3 is open (fstat succeeded), is a socket the supervisor
    // handed us, and nothing else in this process owns it.
    unsafe { OwnedFd::from_raw_fd(CONTROL_FD) }
}
