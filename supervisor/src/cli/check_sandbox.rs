//! `edgeward check --sandbox`: which isolation layers this host enforces.
//! The cgroup and uid layers are decided by the supervisor; Landlock,
//! seccomp and namespaces are tried for real by `edgeward-worker probe`.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::Deserialize;

use crate::sandbox_plan::HostSandbox;

#[derive(Deserialize)]
struct Probe {
    landlock_abi: i64,
    seccomp: bool,
    seccomp_allowed: usize,
    namespaces: bool,
}

/// Prints one line per layer; 0 if every layer is enforced, 1 otherwise.
///
/// # Errors
/// If the worker binary cannot be run.
pub fn run(worker_bin: &Path) -> anyhow::Result<i32> {
    let host = HostSandbox::detect(
        300_000,
        crate::sandbox_plan::DEFAULT_RUNTIME_OVERHEAD_MIB,
        std::path::Path::new("/var/lib/edgeward"),
    );
    let output = Command::new(worker_bin)
        .arg("probe")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", worker_bin.display()))?;
    let probe: Probe = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "unexpected answer from {} probe: {}",
            worker_bin.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let cgroups = host.cgroup_description();
    let root = host.identity(0).is_some();
    let layers: [(&str, bool, String); 5] = [
        (
            "cgroups",
            cgroups != "none",
            if cgroups == "none" {
                host.warnings.first().cloned().unwrap_or_default()
            } else {
                format!("{cgroups}: memory, cpu and pids limits per module")
            },
        ),
        (
            "uid switching",
            root,
            if root {
                "running as root: each module gets its own uid/gid".into()
            } else {
                "not root: modules share the supervisor's uid".into()
            },
        ),
        (
            "namespaces",
            probe.namespaces,
            if probe.namespaces {
                "new mount, IPC and network namespaces (no network for modules)".into()
            } else {
                "cannot unshare mount/IPC/net namespaces".into()
            },
        ),
        (
            "landlock",
            probe.landlock_abi > 0,
            if probe.landlock_abi > 0 {
                format!(
                    "ABI {}: file access limited to granted dirs",
                    probe.landlock_abi
                )
            } else {
                "not available in this kernel".into()
            },
        ),
        (
            "seccomp",
            probe.seccomp,
            if probe.seccomp {
                format!(
                    "allowlist of {} rules; anything else ends the worker",
                    probe.seccomp_allowed
                )
            } else {
                "cannot load a seccomp filter".into()
            },
        ),
    ];
    println!("sandbox layers on this host:");
    let mut missing = 0;
    for (name, ok, detail) in &layers {
        println!(
            "  {name:<14} {:<8} {detail}",
            if *ok { "yes" } else { "MISSING" }
        );
        missing += usize::from(!ok);
    }
    println!(
        "  {:<14} {:<8} capability drop, no_new_privs, parent-death signal, rlimits",
        "always", "yes"
    );
    if missing == 0 {
        println!("every layer is enforced");
        Ok(0)
    } else {
        println!(
            "{missing} layer(s) missing: modules run with less isolation (see docs/security.md)"
        );
        Ok(1)
    }
}
