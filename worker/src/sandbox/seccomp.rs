//! Step 10: install the seccomp filter built from `seccomp_allowlist.rs`.
//! Default action: `SECCOMP_RET_TRAP` (reported by `sigsys.rs`, then the
//! worker exits). `clone3` answers `ENOSYS`, so glibc falls back to
//! `clone`, whose flags the filter can inspect. The filter is synchronised
//! to every thread (there are none yet; new ones inherit it).

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use super::seccomp_allowlist::{Only, ALLOWLIST};
use super::SandboxError;

/// Builds and loads the filter.
pub fn install() -> Result<(), SandboxError> {
    let filter = build().map_err(|e| SandboxError::Seccomp(format!("{e:#}")))?;
    filter
        .load()
        .map_err(|e| SandboxError::Seccomp(format!("cannot load the filter: {e}")))
}

/// The filter, not loaded.
///
/// # Errors
/// If libseccomp rejects a rule (an unknown name on this architecture).
pub fn build() -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Trap)?;
    filter.set_ctl_tsync(true)?;
    let own_pid = u64::from(std::process::id());
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
            Only::ArgIsOwnPid { arg } => filter.add_rule_conditional(
                ScmpAction::Allow,
                syscall,
                &[ScmpArgCompare::new(arg, ScmpCompareOp::Equal, own_pid)],
            )?,
        };
    }
    filter.add_rule(
        ScmpAction::Errno(libc::ENOSYS),
        ScmpSyscall::from_name("clone3")?,
    )?;
    Ok(filter)
}
