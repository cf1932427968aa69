//! Step 10: install the seccomp filter built from `seccomp_allowlist.rs`.
//! Default action: `SECCOMP_RET_TRAP` (reported by `sigsys.rs`, then the
//! worker exits). `clone3` answers `ENOSYS`, so glibc falls back to
//! `clone`, whose flags the filter can inspect. The filter is synchronised
//! to every thread (there are none yet; new ones inherit it).
//!
//! The filter is the same for every worker, so it is compiled to BPF once
//! per worker-side process ([`compile`]; in the fork server, before any
//! fork) and each worker only loads the bytes ([`install`]). A connector
//! compiles the connector list ([`compile_for`]); its `socket` and
//! `connect` are allowed here and decided by the network guard stacked on
//! top (`connect_guard.rs`), which the runbook installs with it.

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use super::seccomp_allowlist::{Allowlist, Only, MAX_SIGNAL};
use super::SandboxError;

/// An allowlist compiled to a classic BPF program (`struct sock_filter[]`).
pub struct CompiledFilter {
    bpf: Vec<u8>,
    list: Allowlist,
}

impl CompiledFilter {
    /// The list it was compiled from (the runbook checks it matches the
    /// profile).
    pub fn allowlist(&self) -> Allowlist {
        self.list
    }
}

/// Compiles the module filter.
///
/// # Errors
/// If libseccomp rejects a rule or cannot export the program.
pub fn compile() -> Result<CompiledFilter, SandboxError> {
    compile_for(Allowlist::Module)
}

/// Compiles the filter for `list`.
///
/// # Errors
/// If libseccomp rejects a rule or cannot export the program.
pub fn compile_for(list: Allowlist) -> Result<CompiledFilter, SandboxError> {
    let filter = build_for(list).map_err(|e| SandboxError::Seccomp(format!("{e:#}")))?;
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
    Ok(CompiledFilter { bpf, list })
}

/// Loads a compiled filter into this process, for all its threads.
///
/// # Errors
/// If the kernel refuses the program (no seccomp, or no no_new_privs).
pub fn install(filter: &CompiledFilter) -> Result<(), SandboxError> {
    let program = libc::sock_fprog {
        len: (filter.bpf.len() / std::mem::size_of::<libc::sock_filter>()) as u16,
        filter: filter.bpf.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `program` points at `filter.bpf`, a whole number of sock_filter
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

/// The module filter, not loaded.
///
/// # Errors
/// If libseccomp rejects a rule (an unknown name on this architecture).
pub fn build() -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    build_for(Allowlist::Module)
}

/// The filter for `list`, not loaded.
///
/// # Errors
/// If libseccomp rejects a rule (an unknown name on this architecture).
pub fn build_for(list: Allowlist) -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Trap)?;
    filter.set_ctl_tsync(true)?;
    for entry in list.entries() {
        let syscall = ScmpSyscall::from_name(entry.name)?;
        match entry.only {
            // A guarded call is decided by the network guard, stacked on
            // this filter: libseccomp cannot give one call conditional
            // ALLOW rules and an ERRNO for the rest (an unconditional rule
            // replaces the conditional ones), the guard's own program can.
            Only::Always | Only::Guarded { .. } => {
                filter.add_rule(ScmpAction::Allow, syscall)?;
            }
            Only::AllOf(tests) => {
                let compares: Vec<ScmpArgCompare> = tests
                    .iter()
                    .map(|t| {
                        let op = if t.mask == u64::MAX {
                            ScmpCompareOp::Equal
                        } else {
                            ScmpCompareOp::MaskedEqual(t.mask)
                        };
                        ScmpArgCompare::new(t.arg, op, t.value)
                    })
                    .collect();
                filter.add_rule_conditional(ScmpAction::Allow, syscall, &compares)?;
            }
            Only::ArgEq { arg, value } => {
                filter.add_rule_conditional(
                    ScmpAction::Allow,
                    syscall,
                    &[ScmpArgCompare::new(arg, ScmpCompareOp::Equal, value)],
                )?;
            }
            Only::ArgMasked { arg, mask, value } => {
                filter.add_rule_conditional(
                    ScmpAction::Allow,
                    syscall,
                    &[ScmpArgCompare::new(
                        arg,
                        ScmpCompareOp::MaskedEqual(mask),
                        value,
                    )],
                )?;
            }
            // libseccomp compares each argument at most once per rule, so
            // the allowed range is one rule per aligned block.
            Only::SignalOtherThan { arg, signal } => {
                for (mask, value) in blocks_without(signal, MAX_SIGNAL) {
                    filter.add_rule_conditional(
                        ScmpAction::Allow,
                        syscall,
                        &[ScmpArgCompare::new(
                            arg,
                            ScmpCompareOp::MaskedEqual(mask),
                            value,
                        )],
                    )?;
                }
            }
        }
    }
    filter.add_rule(
        ScmpAction::Errno(libc::ENOSYS),
        ScmpSyscall::from_name("clone3")?,
    )?;
    Ok(filter)
}

/// `0..=max` without `except`, as aligned blocks for masked-equal rules: a
/// `(mask, value)` pair matches exactly the `x` with `x & mask == value`,
/// which is the block `value..value + size` when `size` is a power of two,
/// `value` a multiple of it and `mask = !(size - 1)`. The mask keeps every
/// upper bit, so a number with any of them set matches no block.
fn blocks_without(except: u64, max: u64) -> Vec<(u64, u64)> {
    let mut blocks = Vec::new();
    for (mut start, end) in [(0, except), (except + 1, max + 1)] {
        while start < end {
            let mut size = 1u64;
            while start % (size * 2) == 0 && start + size * 2 <= end {
                size *= 2;
            }
            blocks.push((!(size - 1), start));
            start += size;
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(blocks: &[(u64, u64)], x: u64) -> bool {
        blocks.iter().any(|&(mask, value)| x & mask == value)
    }

    #[test]
    fn signal_blocks_cover_every_signal_but_the_one_excluded() {
        for except in [0, 1, 9, 31, 63, 64] {
            let blocks = blocks_without(except, MAX_SIGNAL);
            for x in 0..=300u64 {
                let want = x <= MAX_SIGNAL && x != except;
                assert_eq!(allowed(&blocks, x), want, "except {except}, x {x}");
                // The kernel reads an int: upper bits must not smuggle `except` in.
                assert!(
                    !allowed(&blocks, x | 1 << 32),
                    "except {except}, x {x} | 1 << 32"
                );
                assert!(
                    !allowed(&blocks, x | 1 << 63),
                    "except {except}, x {x} | 1 << 63"
                );
            }
        }
        // SIGSYS: 0..=15, 16..=23, 24..=27, 28..=29, 30, 32..=63, 64.
        assert_eq!(blocks_without(31, MAX_SIGNAL).len(), 7);
    }

    /// Loads the real filter into a forked child, makes one `rt_sigaction`
    /// call there and returns how the child ended.
    fn rt_sigaction_in_filtered_child(
        filter: &CompiledFilter,
        signal: u64,
    ) -> nix::sys::wait::WaitStatus {
        use nix::unistd::{fork, ForkResult};
        // SAFETY: the child only makes system calls (async-signal-safe) and
        // leaves with _exit; nothing it inherited from other threads is used.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                use nix::sys::resource::{setrlimit, Resource};
                // No core file from the SIGSYS that ends a denied call.
                let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
                if nix::sys::prctl::set_no_new_privs().is_err() || install(filter).is_err() {
                    // SAFETY: leave the forked child at once.
                    unsafe { libc::_exit(90) }
                }
                // The kernel's sigaction layout: handler, flags, restorer, mask.
                let ignore: [u64; 4] = [libc::SIG_IGN as u64, 0, 0, 0];
                // SAFETY: rt_sigaction with a valid new action, no old one,
                // and the kernel's sigset size; it can only change how this
                // child treats one signal.
                let code = unsafe {
                    libc::syscall(
                        libc::SYS_rt_sigaction,
                        signal,
                        ignore.as_ptr(),
                        std::ptr::null::<u64>(),
                        8,
                    )
                };
                // SAFETY: leave the child without running the parent's destructors.
                unsafe { libc::_exit(if code == 0 { 0 } else { 91 }) }
            }
            ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).expect("waitpid"),
        }
    }

    #[test]
    fn the_filter_refuses_sigsys_however_it_is_spelled_and_allows_other_signals() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        let filter = compile().unwrap();
        let sigsys = libc::SIGSYS as u64;
        for signal in [sigsys, sigsys | 1 << 32] {
            // No handler in the child: the trap's SIGSYS kills it.
            let status = rt_sigaction_in_filtered_child(&filter, signal);
            assert!(
                matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
                "rt_sigaction({signal:#x}) was not denied: {status:?}"
            );
        }
        let status = rt_sigaction_in_filtered_child(&filter, libc::SIGUSR1 as u64);
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "rt_sigaction(SIGUSR1) was refused: {status:?}"
        );
    }
}
