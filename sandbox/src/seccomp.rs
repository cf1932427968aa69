//! Step 10: install the seccomp filter built from `seccomp_allowlist.rs`.
//! Default action: `SECCOMP_RET_TRAP` (reported by `sigsys.rs`, then the
//! worker exits). `clone3` answers `ENOSYS`, so the C library falls back to
//! `clone`, whose flags the filter can inspect. The filter is synchronised
//! to every thread (there are none yet; new ones inherit it).
//!
//! The filter is the same for every worker, so it is compiled to BPF once
//! per worker-side process ([`compile`]; in the fork server, before any
//! fork) and each worker only loads the instructions ([`install`]). A
//! connector compiles the connector list ([`compile_for`]); its `socket`
//! and `connect` are allowed here and decided by the network guard stacked
//! on top (`connect_guard.rs`), which the runbook installs with it.
//!
//! The rules that look at arguments are compiled by seccompiler (pure Rust,
//! so the worker binaries link statically on musl, and a filter for the
//! other architecture can be compiled and tested on any host). It gives a
//! filter one action for every matching call, so `clone3`'s `ENOSYS` is a
//! short hand-written prefix run before seccompiler's program
//! ([`early_answers`]); the zygote's x32 block uses the same prefix
//! (`zygote_guard.rs`). Calls allowed with any arguments are answered
//! before seccompiler's chain by a binary search
//! (`seccomp_fast_path.rs`), which makes the program a fifth as long and
//! about 0.3 ms cheaper for each worker to load.

use std::collections::BTreeMap;

use libc::sock_filter;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use super::arch::Arch;
use super::seccomp_allowlist::{Allowlist, Only, MAX_SIGNAL};
use super::SandboxError;

/// An allowlist compiled to a classic BPF program (`struct sock_filter[]`)
/// for one architecture.
pub struct CompiledFilter {
    program: Vec<sock_filter>,
    list: Allowlist,
    arch: Arch,
}

impl CompiledFilter {
    /// The list it was compiled from (the runbook checks it matches the
    /// profile).
    pub fn allowlist(&self) -> Allowlist {
        self.list
    }

    /// The architecture it was compiled for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The BPF instructions, as the kernel gets them.
    pub fn instructions(&self) -> &[sock_filter] {
        &self.program
    }
}

/// Compiles the module filter for this architecture.
///
/// # Errors
/// On an architecture without allowlists, or if a rule cannot be compiled
/// (a name unknown on this architecture, a program too long).
pub fn compile() -> Result<CompiledFilter, SandboxError> {
    compile_for(Allowlist::Module)
}

/// Compiles the filter for `list` for this architecture.
///
/// # Errors
/// As [`compile`].
pub fn compile_for(list: Allowlist) -> Result<CompiledFilter, SandboxError> {
    let arch = Arch::native().ok_or_else(|| {
        SandboxError::Seccomp(format!(
            "no seccomp allowlist for {} (workers run on x86_64 and aarch64)",
            std::env::consts::ARCH
        ))
    })?;
    compile_for_arch(list, arch)
}

/// Compiles the filter for `list` for `arch`, which need not be this
/// host's (for tests and tools; only a native filter can be installed).
///
/// # Errors
/// If an entry names a call `arch` does not have, or seccompiler refuses
/// the rules (a program longer than the kernel takes).
pub fn compile_for_arch(list: Allowlist, arch: Arch) -> Result<CompiledFilter, SandboxError> {
    let fail = |what: String| {
        SandboxError::Seccomp(format!(
            "cannot compile the {} allowlist for {}: {what}",
            list.name(),
            arch.name()
        ))
    };
    // Calls allowed with any arguments are decided by the fast path's
    // search; seccompiler's chain keeps the rules that look at arguments.
    let (anything, conditional): (BTreeMap<_, _>, BTreeMap<_, _>) = rules(list, arch)
        .map_err(fail)?
        .into_iter()
        .partition(|(_, rules)| rules.is_empty());
    let numbers = |rules: &BTreeMap<i64, Vec<SeccompRule>>| {
        rules
            .keys()
            .map(|&nr| u32::try_from(nr).map_err(|_| fail(format!("call number {nr}"))))
            .collect::<Result<Vec<u32>, _>>()
    };
    let fast_path = super::seccomp_fast_path::allow_fast_path(
        arch,
        &numbers(&anything)?,
        &numbers(&conditional)?,
        libc::SECCOMP_RET_TRAP,
    )
    .map_err(fail)?;
    let clone3 = arch
        .number("clone3")
        .ok_or_else(|| fail(format!("clone3 is not a system call on {}", arch.name())))?;
    let filter = SeccompFilter::new(
        conditional,
        SeccompAction::Trap,
        SeccompAction::Allow,
        arch.target(),
    )
    .map_err(|e| fail(e.to_string()))?;
    let compiled: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| fail(e.to_string()))?;
    let enosys = libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA);
    let mut prefix = early_answers(arch, &[(Early::Is(clone3), enosys)]);
    prefix.extend(fast_path);
    let program = with_prefix(prefix, &compiled).map_err(fail)?;
    Ok(CompiledFilter {
        program,
        list,
        arch,
    })
}

/// Loads a compiled filter into this process, for all its threads.
///
/// # Errors
/// If the filter was compiled for another architecture, or the kernel
/// refuses the program (no seccomp, or no no_new_privs).
pub fn install(filter: &CompiledFilter) -> Result<(), SandboxError> {
    if Some(filter.arch) != Arch::native() {
        return Err(SandboxError::Seccomp(format!(
            "the filter was compiled for {}, this is {} (seccomp::compile_for)",
            filter.arch.name(),
            std::env::consts::ARCH
        )));
    }
    load(&filter.program, libc::SECCOMP_FILTER_FLAG_TSYNC)
        .map_err(|e| SandboxError::Seccomp(format!("cannot load the filter: {e}")))
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`.
///
/// # Errors
/// The kernel's error; with `TSYNC`, a thread that could not be
/// synchronised.
pub(crate) fn load(program: &[sock_filter], flags: libc::c_ulong) -> Result<(), String> {
    let len = u16::try_from(program.len())
        .map_err(|_| format!("{} instructions is too long a program", program.len()))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, `len` valid instructions that
    // outlive the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        rc if rc > 0 => Err(format!("thread {rc} could not be synchronised")),
        _ => Err(std::io::Error::last_os_error().to_string()),
    }
}

/// The number of `name` on `arch`, or why not.
pub(crate) fn number(arch: Arch, name: &str) -> Result<i64, String> {
    arch.number(name)
        .map(i64::from)
        .ok_or_else(|| format!("{name} is not a system call on {}", arch.name()))
}

/// The allowlist's entries for `arch` as seccompiler rules: per call number,
/// the rules of which any one allows it (an empty list: always).
fn rules(list: Allowlist, arch: Arch) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    // None: allowed with any arguments, which no conditional rule narrows.
    let mut by_number: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for entry in list.entries_on(arch) {
        let nr = number(arch, entry.name)?;
        let rules = entry_rules(entry.only).map_err(|e| format!("{}: {e}", entry.name))?;
        match (by_number.entry(nr).or_insert(Some(Vec::new())), rules) {
            (slot, None) => *slot = None,
            (Some(existing), Some(mut more)) => existing.append(&mut more),
            (None, Some(_)) => {}
        }
    }
    Ok(by_number
        .into_iter()
        .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
        .collect())
}

/// The rules for one condition; `None` for no condition.
fn entry_rules(only: Only) -> Result<Option<Vec<SeccompRule>>, seccompiler::BackendError> {
    let test = |arg: u32, mask: u64, value: u64| {
        let op = if mask == u64::MAX {
            SeccompCmpOp::Eq
        } else {
            SeccompCmpOp::MaskedEq(mask)
        };
        // Argument indexes are 0..=5, which seccompiler checks.
        SeccompCondition::new(
            u8::try_from(arg).unwrap_or(u8::MAX),
            SeccompCmpArgLen::Qword,
            op,
            value,
        )
    };
    let rule = |conditions: Vec<SeccompCondition>| SeccompRule::new(conditions);
    Ok(Some(match only {
        // A guarded call is decided by the network guard, stacked on this
        // filter (connect_guard.rs): here it is simply allowed.
        Only::Always | Only::Guarded { .. } => return Ok(None),
        Only::ArgEq { arg, value } => vec![rule(vec![test(arg, u64::MAX, value)?])?],
        Only::ArgMasked { arg, mask, value } => vec![rule(vec![test(arg, mask, value)?])?],
        Only::AllOf(tests) => vec![rule(
            tests
                .iter()
                .map(|t| test(t.arg, t.mask, t.value))
                .collect::<Result<_, _>>()?,
        )?],
        // An allowed range is one masked-equal rule per aligned block.
        Only::SignalOtherThan { arg, signal } => blocks_without(signal, MAX_SIGNAL)
            .into_iter()
            .map(|(mask, value)| rule(vec![test(arg, mask, value)?]))
            .collect::<Result<_, _>>()?,
    }))
}

/// What an early answer tests: the call number.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Early {
    /// The number is exactly this.
    Is(u32),
    /// The number is this or higher (x32 calls on x86_64).
    AtLeast(u32),
}

/// A hand-written program start: for a call of `arch` whose number passes a
/// test, return that test's action at once; anything else (another
/// architecture included) falls through to the program that follows, which
/// does its own architecture check. Classic BPF jumps only forward and
/// within a program, so a prefix cannot disturb the jumps after it.
pub(crate) fn early_answers(arch: Arch, answers: &[(Early, u32)]) -> Vec<sock_filter> {
    if answers.is_empty() {
        return Vec::new();
    }
    const fn stmt(code: u32, k: u32) -> sock_filter {
        sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    const fn jump(op: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter {
            code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }
    // Offsets in `struct seccomp_data { int nr; u32 arch; ... }`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let load = |offset| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    // Not this arch: skip the number load and every test/return pair.
    let skip = u8::try_from(1 + 2 * answers.len()).unwrap_or(u8::MAX);
    let mut program = vec![
        load(ARCH),
        jump(libc::BPF_JEQ, arch.audit(), 0, skip),
        load(NR),
    ];
    for &(test, action) in answers {
        program.push(match test {
            Early::Is(nr) => jump(libc::BPF_JEQ, nr, 0, 1),
            Early::AtLeast(nr) => jump(libc::BPF_JGE, nr, 0, 1),
        });
        program.push(stmt(libc::BPF_RET | libc::BPF_K, action));
    }
    program
}

/// `prefix` then seccompiler's `program`, as the kernel's instruction type.
///
/// # Errors
/// If the whole is longer than the kernel takes (`BPF_MAXINSNS`).
pub(crate) fn with_prefix(
    mut prefix: Vec<sock_filter>,
    program: &[seccompiler::sock_filter],
) -> Result<Vec<sock_filter>, String> {
    prefix.extend(program.iter().map(|i| sock_filter {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    }));
    const BPF_MAXINSNS: usize = 4096;
    if prefix.len() > BPF_MAXINSNS {
        return Err(format!(
            "{} instructions, the kernel takes {BPF_MAXINSNS}",
            prefix.len()
        ));
    }
    Ok(prefix)
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
    /// Forks a child that loads `program` (with `flags`) and then makes the
    /// raw call `nr` with no arguments; returns how it ended and, if it
    /// returned, the call's result (`-errno` on failure) as its exit code.
    fn raw_call_in_filtered_child(
        program: &[sock_filter],
        nr: libc::c_long,
    ) -> nix::sys::wait::WaitStatus {
        use nix::unistd::{fork, ForkResult};
        // SAFETY: the child only makes system calls (async-signal-safe) and
        // leaves with _exit; nothing it inherited from other threads is used.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                use nix::sys::resource::{setrlimit, Resource};
                let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
                if nix::sys::prctl::set_no_new_privs().is_err() || load(program, 0).is_err() {
                    // SAFETY: leave the forked child at once.
                    unsafe { libc::_exit(90) }
                }
                // SAFETY: a raw call with zero arguments; the ones tested
                // here are refused by the filter, or harmless (clone3 with
                // a null argument fails with EFAULT or EINVAL).
                let rc = unsafe { libc::syscall(nr, 0, 0, 0, 0, 0, 0) };
                let code = if rc < 0 {
                    nix::errno::Errno::last_raw()
                } else {
                    100
                };
                // SAFETY: leave the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).expect("waitpid"),
        }
    }

    #[test]
    fn clone3_answers_enosys_so_the_c_library_falls_back_to_clone() {
        use nix::sys::wait::WaitStatus;
        for list in [Allowlist::Module, Allowlist::Connector] {
            let filter = compile_for(list).unwrap();
            let status = raw_call_in_filtered_child(filter.instructions(), libc::SYS_clone3);
            assert!(
                matches!(status, WaitStatus::Exited(_, libc::ENOSYS)),
                "{} filter: clone3 did not answer ENOSYS: {status:?}",
                list.name()
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_are_refused_by_the_allowlist_and_the_zygote_denylist() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        // getpid through the x32 ABI: allowed as an x86_64 call, and
        // without a filter the kernel answers ENOSYS where x32 is off.
        let x32_getpid = libc::c_long::from(crate::arch::X32_SYSCALL_BIT) | libc::SYS_getpid;
        let allowlist = compile().unwrap();
        let status = raw_call_in_filtered_child(allowlist.instructions(), x32_getpid);
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "the allowlist let an x32 call through: {status:?}"
        );
        let denylist = crate::zygote_guard::compile(Arch::X86_64).unwrap();
        let status = raw_call_in_filtered_child(&denylist, x32_getpid);
        assert!(
            matches!(status, WaitStatus::Exited(_, libc::EPERM)),
            "the zygote denylist did not refuse an x32 call with EPERM: {status:?}"
        );
        // Its x86_64 calls: named ones refused, others allowed.
        let status = raw_call_in_filtered_child(&denylist, libc::SYS_socket);
        assert!(
            matches!(status, WaitStatus::Exited(_, libc::EPERM)),
            "socket: {status:?}"
        );
        let status = raw_call_in_filtered_child(&denylist, libc::SYS_getpid);
        assert!(
            matches!(status, WaitStatus::Exited(_, 100)),
            "getpid: {status:?}"
        );
    }

    #[test]
    fn both_lists_compile_for_both_architectures() {
        for arch in Arch::ALL {
            for list in [Allowlist::Module, Allowlist::Connector] {
                let filter = compile_for_arch(list, arch)
                    .unwrap_or_else(|e| panic!("{} on {}: {e}", list.name(), arch.name()));
                let program = filter.instructions();
                // The prefix checks the arch first, then seccompiler does.
                assert_eq!(program[0].k, 4, "loads seccomp_data.arch");
                assert_eq!(program[1].k, arch.audit());
                assert!(program.iter().any(|i| i.k == arch.audit() && i.jt == 1));
                assert_eq!(filter.arch(), arch);
            }
            assert!(crate::zygote_guard::compile(arch).is_ok());
        }
        // Only a filter for this host can be installed.
        let foreign = Arch::ALL
            .into_iter()
            .find(|a| Some(*a) != Arch::native())
            .unwrap();
        let filter = compile_for_arch(Allowlist::Module, foreign).unwrap();
        assert!(install(&filter)
            .unwrap_err()
            .to_string()
            .contains("compiled for"));
    }

    /// Runs a classic BPF program as the kernel would on `data` (a
    /// `struct seccomp_data`), for the instructions seccompiler and the
    /// hand-written prefixes use.
    fn run(program: &[sock_filter], data: &[u8; 64]) -> u32 {
        let word = |offset: u32| {
            let at = offset as usize;
            u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = program[pc];
            let code = u32::from(i.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = word(i.k),
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= i.k,
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
                c if c & 0x07 == libc::BPF_JMP && c & 0x08 == libc::BPF_K => {
                    let taken = match c & 0xf0 {
                        op if op == libc::BPF_JEQ => a == i.k,
                        op if op == libc::BPF_JGT => a > i.k,
                        op if op == libc::BPF_JGE => a >= i.k,
                        op if op == libc::BPF_JSET => a & i.k != 0,
                        op => panic!("jump op {op:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c => panic!("instruction {c:#x} at {}", pc - 1),
            }
        }
    }

    /// The filter as it was compiled before the fast path: every rule in
    /// seccompiler's chain.
    fn reference(list: Allowlist, arch: Arch) -> Vec<sock_filter> {
        let filter = SeccompFilter::new(
            rules(list, arch).unwrap(),
            SeccompAction::Trap,
            SeccompAction::Allow,
            arch.target(),
        )
        .unwrap();
        let compiled: seccompiler::BpfProgram = filter.try_into().unwrap();
        let clone3 = arch.number("clone3").unwrap();
        let enosys = libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA);
        with_prefix(
            early_answers(arch, &[(Early::Is(clone3), enosys)]),
            &compiled,
        )
        .unwrap()
    }

    #[test]
    fn the_fast_path_answers_every_call_as_the_plain_chain_does_and_is_shorter() {
        let values: [u64; 14] = [
            0,
            1,
            2,
            3,
            9,
            17,
            0x5401,
            0x541b,
            0x8_0000,
            0x80_0000,
            0xffff_ffff,
            1 << 32,
            0x1_0000_0001,
            u64::MAX,
        ];
        for arch in Arch::ALL {
            let audits = Arch::ALL.iter().map(|a| a.audit()).chain([0x4000_0003, 0]);
            let numbers: Vec<u32> = (0..1100)
                .chain(crate::arch::X32_SYSCALL_BIT..crate::arch::X32_SYSCALL_BIT + 600)
                .chain([0x7fff_ffff, u32::MAX])
                .collect();
            for list in [Allowlist::Module, Allowlist::Connector] {
                let fast = compile_for_arch(list, arch).unwrap();
                let plain = reference(list, arch);
                assert!(
                    fast.instructions().len() * 3 < plain.len() * 2,
                    "{} on {}: {} instructions, the plain chain {}",
                    list.name(),
                    arch.name(),
                    fast.instructions().len(),
                    plain.len()
                );
                let mut checked = 0;
                for audit in audits.clone() {
                    for &nr in &numbers {
                        let mut data = [0u8; 64];
                        data[0..4].copy_from_slice(&nr.to_le_bytes());
                        data[4..8].copy_from_slice(&audit.to_le_bytes());
                        let mut cases = vec![data];
                        for arg in 0..6 {
                            for &value in &values {
                                let mut with = data;
                                let at = 16 + 8 * arg;
                                with[at..at + 8].copy_from_slice(&value.to_le_bytes());
                                cases.push(with);
                            }
                        }
                        for case in &cases {
                            assert_eq!(
                                run(fast.instructions(), case),
                                run(&plain, case),
                                "{} on {}: call {nr:#x} of arch {audit:#x}, data {case:?}",
                                list.name(),
                                arch.name()
                            );
                            checked += 1;
                        }
                    }
                }
                assert!(checked > 100_000);
            }
        }
    }
}
