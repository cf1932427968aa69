//! A connector that tries to reach what its policy does not grant, for the
//! e2e suite: the network grant must hold by the sandbox, not by the
//! connector's goodwill.
//!
//! Used as `EDGEWARD_CONNECTOR=<this binary>`. It acts only for `serve` of
//! a connector whose name (`EDGEWARD_MODULE`) starts with `rogue`; anything
//! else execs the real `edgeward-connector` (`EDGEWARD_REAL_CONNECTOR`, else
//! the file beside this binary) with the same arguments.
//!
//! A rogue says Hello, takes its Init and confines itself with the real
//! connector runbook (`edgeward_sandbox`, connector profile, as
//! `connector/src/serve.rs` does), hands its connect guard to the
//! supervisor and says Ready. Then it connects to every `host:port` in its
//! `[connector] try` list, in order, and logs one line per attempt:
//! `rogue-connector: connect ADDR: ok` or `...: error TEXT (errno N)`; then
//! it idles until Stop.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use edgeward_ipc::control::{FromWorker, LogLevel, ModuleKind, ToWorker};
use edgeward_ipc::frame;
use edgeward_ipc::PROTOCOL_VERSION;

/// Where the supervisor puts the control socket.
const CONTROL_FD: i32 = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let module = std::env::var("EDGEWARD_MODULE").unwrap_or_default();
    if args.first().map(String::as_str) != Some("serve") || !module.starts_with("rogue") {
        let real = std::env::var_os("EDGEWARD_REAL_CONNECTOR")
            .map(PathBuf::from)
            .or_else(|| {
                let me = std::env::current_exe().ok()?;
                Some(me.parent()?.join("edgeward-connector"))
            })
            .unwrap_or_else(|| PathBuf::from("edgeward-connector"));
        let error = std::process::Command::new(&real).args(&args).exec();
        eprintln!("rogue-connector: cannot exec {}: {error}", real.display());
        std::process::exit(127);
    }
    // SAFETY: the supervisor passes our control socket as fd 3; nothing else owns it.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    std::process::exit(serve(&control));
}

fn serve(control: &OwnedFd) -> i32 {
    let supervisor = nix::unistd::getppid();
    let inherited = edgeward_sandbox::fds::open_fds();
    let hello = FromWorker::Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    if frame::send(control, &hello, &[]).is_err() {
        return 3;
    }
    let (init, _ring_fds) = match frame::recv::<ToWorker>(control) {
        Ok((ToWorker::Init(init), fds)) => (*init, fds),
        _ => return 1,
    };
    let Some(connector) = init.connector.clone() else {
        return 1;
    };
    let config: toml::Table = connector.config_toml.parse().unwrap_or_default();
    let targets: Vec<String> = config
        .get("try")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let host_state_dir = PathBuf::from(&connector.state_dir);
    let hosts = host_state_dir.join(".hosts");
    if std::fs::write(&hosts, &connector.hosts_file).is_err() {
        return 1;
    }
    // As the real connector: its state dir through an fd opened as root.
    let Ok(state_fd) = nix::fcntl::open(
        &host_state_dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    ) else {
        return 1;
    };
    let state_dir = PathBuf::from(format!("/proc/self/fd/{}", state_fd.as_raw_fd()));
    let grants = edgeward_sandbox::ConnectorGrants {
        ports: connector.ports.clone(),
        read_files: Vec::new(),
        state_dir,
        hosts_file: hosts,
    };
    let Ok(seccomp) =
        edgeward_sandbox::seccomp::compile_for(edgeward_sandbox::Allowlist::Connector)
    else {
        return 1;
    };
    let runbook = edgeward_sandbox::Runbook {
        plan: &init.sandbox,
        dirs: &[],
        inherited_fds: &inherited,
        keep_fds: &[0, 1, 2, CONTROL_FD, state_fd.as_raw_fd()],
        supervisor,
        inherited_namespaces: None,
        seccomp: &seccomp,
        profile: edgeward_sandbox::Profile::Connector(&grants),
    };
    let applied = match runbook.apply() {
        Ok(applied) => applied,
        Err(e) => {
            eprintln!("rogue-connector: sandbox: {e}");
            return 1;
        }
    };
    if let Some(listener) = &applied.connect_listener {
        if frame::send(control, &FromWorker::ConnectGuard, &[listener.as_raw_fd()]).is_err() {
            return 3;
        }
    }
    drop(applied.connect_listener);
    let ready = FromWorker::Ready {
        kind: ModuleKind::Connector,
        degraded: applied.degraded,
        snapshots: false,
    };
    if frame::send(control, &ready, &[]).is_err() {
        return 3;
    }
    for target in &targets {
        let result = target
            .parse::<SocketAddr>()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(5)));
        let text = match result {
            Ok(mut stream) => {
                let _ = stream.write_all(b"hello");
                format!("rogue-connector: connect {target}: ok")
            }
            Err(e) => format!(
                "rogue-connector: connect {target}: error {e} (errno {})",
                e.raw_os_error().unwrap_or(0)
            ),
        };
        let log = FromWorker::Log {
            level: LogLevel::Info,
            text,
        };
        let _ = frame::send(control, &log, &[]);
    }
    loop {
        match frame::recv::<ToWorker>(control) {
            Ok((ToWorker::Stop, _)) | Err(_) => return 0,
            Ok((ToWorker::Ping, _)) => {
                let beat = FromWorker::Heartbeat(edgeward_ipc::control::Stats::default());
                let _ = frame::send(control, &beat, &[]);
            }
            Ok(_) => {}
        }
    }
}
