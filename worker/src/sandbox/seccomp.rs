//! Step 10: install the seccomp filter built from `seccomp_allowlist.rs`.
//! Default action: `SECCOMP_RET_TRAP` (reported by `sigsys.rs`, then the
//! worker exits). `clone3` answers `ENOSYS`, so glibc falls back to
//! `clone`, whose flags the filter can inspect. The filter is synchronised
//! to every thread (there are none yet; new ones inherit it).
//!
//! The filter is the same for every worker, so it is compiled to BPF once
//! per worker-side process ([`compile`]; in the fork server, before any
//! fork) and each worker only loads the bytes ([`install`]).

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use super::seccomp_allowlist::{Only, ALLOWLIST};
use super::SandboxError;

/// The allowlist compiled to a classic BPF program (`struct sock_filter[]`).
pub struct CompiledFilter(Vec<u8>);

/// Compiles the filter.
///
/// # Errors
/// If libseccomp rejects a rule or cannot export the program.
pub fn compile() -> Result<CompiledFilter, SandboxError> {
    let filter = build().map_err(|e| SandboxError::Seccomp(format!("{e:#}")))?;
    // libseccomp exports to an fd; a pipe holds the program (a few KiB).
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SandboxError::Seccomp(format!("pipe: {e}")))?;
    filter
        .export_bpf(&write_end)
        .map_err(|e| SandboxError::Seccomp(format!("cannot export the filter: {e}")))?;
    drop(write_end);
    let mut bpf = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(read_end), &mut bpf)
        .map_err(|e| SandboxError::Seccomp(format!("cannot read the exported filter: {e}")))?;
    if bpf.is_empty() || bpf.len() % std::mem::size_of::<libc::sock_filter>() != 0 {
        return Err(SandboxError::Seccomp(format!(
            "filter has a bad size ({} bytes)",
            bpf.len()
        )));
    }
    Ok(CompiledFilter(bpf))
}

/// Loads a compiled filter into this process, for all its threads.
///
/// # Errors
/// If the kernel refuses the program (no seccomp, or no no_new_privs).
pub fn install(filter: &CompiledFilter) -> Result<(), SandboxError> {
    let program = libc::sock_fprog {
        len: (filter.0.len() / std::mem::size_of::<libc::sock_filter>()) as u16,
        filter: filter.0.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `program` points at `filter.0`, a whole number of sock_filter
    // records that outlive the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &program as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SandboxError::Seccomp(format!(
            "cannot load the filter: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The filter, not loaded.
///
/// # Errors
/// If libseccomp rejects a rule (an unknown name on this architecture).
pub fn build() -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Trap)?;
    filter.set_ctl_tsync(true)?;
    for entry in ALLOWLIST {
        let syscall = ScmpSyscall::from_name(entry.name)?;
        match entry.only {
            Only::Always => filter.add_rule(ScmpAction::Allow, syscall)?,
            Only::ArgEq { arg, value } => filter.add_rule_conditional(
                ScmpAction::Allow,
                syscall,
                &[ScmpArgCompare::new(arg, ScmpCompareOp::Equal, value)],
            )?,
            Only::ArgMasked { arg, mask, value } => filter.add_rule_conditional(
                ScmpAction::Allow,
                syscall,
                &[ScmpArgCompare::new(
                    arg,
                    ScmpCompareOp::MaskedEqual(mask),
                    value,
                )],
            )?,
        };
    }
    filter.add_rule(
        ScmpAction::Errno(libc::ENOSYS),
        ScmpSyscall::from_name("clone3")?,
    )?;
    Ok(filter)
}
