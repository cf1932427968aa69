//! The architectures the seccomp filters are written for, and system call
//! names resolved to numbers per architecture.
//!
//! System call numbers differ between architectures, and some calls exist
//! on one only: aarch64 (like every architecture since) has only the `*at`
//! forms (`openat`, `mkdirat`, `readlinkat`, ...) and `ppoll`/`epoll_pwait`,
//! where x86_64 also keeps `open`, `mkdir`, `poll`, `epoll_wait`, `fork`...
//! The names come from the `syscalls` crate's per-architecture tables, so a
//! filter for either architecture can be compiled (and unit-tested) on any
//! host.
//!
//! One name differs from the kernel's: the `syscalls` crate calls aarch64's
//! `newfstatat` (79) `fstatat`, from the generic table's `__NR3264_fstatat`.
//! The kernel, strace and x86_64 call it `newfstatat`, and so do our lists
//! and our reports of denied calls.

use std::str::FromStr;

/// An architecture with seccomp allowlists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// 64-bit x86 (`AUDIT_ARCH_X86_64`).
    X86_64,
    /// 64-bit ARM (`AUDIT_ARCH_AARCH64`).
    Aarch64,
}

/// `AUDIT_ARCH_X86_64`, from `<linux/audit.h>`.
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_AARCH64`, from `<linux/audit.h>`.
pub const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

/// On x86_64, the bit that marks an x32 system call (`__X32_SYSCALL_BIT`).
/// x32 calls arrive with the x86_64 audit arch, so a filter that checks the
/// arch only sees them as numbers from `0x4000_0000` up.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The name the kernel uses where the `syscalls` crate's differs:
/// `(arch, crate name, kernel name)`.
const RENAMED: &[(Arch, &str, &str)] = &[(Arch::Aarch64, "fstatat", "newfstatat")];

impl Arch {
    /// Both architectures, x86_64 first.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture this binary was built for; `None` on one without
    /// allowlists (the sandbox then refuses to load a filter).
    pub const fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// `x86_64` or `aarch64`, as Rust and the kernel spell them.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch`.
    pub const fn audit(self) -> u32 {
        match self {
            Arch::X86_64 => AUDIT_ARCH_X86_64,
            Arch::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    /// seccompiler's name for it.
    pub(crate) const fn target(self) -> seccompiler::TargetArch {
        match self {
            Arch::X86_64 => seccompiler::TargetArch::x86_64,
            Arch::Aarch64 => seccompiler::TargetArch::aarch64,
        }
    }

    /// The number of system call `name` here, `None` if there is no such
    /// call on this architecture. Kernel names: `newfstatat` on aarch64,
    /// not the `syscalls` crate's `fstatat`.
    pub fn number(self, name: &str) -> Option<u32> {
        let mut ours = name;
        for &(arch, crate_name, kernel) in RENAMED {
            if arch == self && name == crate_name {
                return None;
            }
            if arch == self && name == kernel {
                ours = crate_name;
            }
        }
        let nr = match self {
            Arch::X86_64 => x86_64_number(ours),
            Arch::Aarch64 => aarch64_number(ours),
        }?;
        u32::try_from(nr).ok()
    }

    /// The kernel's name of system call `nr` here, `None` for a number
    /// without a call. No allocation, no locks: the SIGSYS handler uses it.
    pub fn syscall_name(self, nr: u32) -> Option<&'static str> {
        let name = match self {
            Arch::X86_64 => x86_64_name(nr),
            Arch::Aarch64 => aarch64_name(nr),
        }?;
        for &(arch, crate_name, kernel) in RENAMED {
            if arch == self && name == crate_name {
                return Some(kernel);
            }
        }
        Some(name)
    }
}

// Both tables are compiled in on every host (the `syscalls` crate's
// `x86_64` and `aarch64` features), so each architecture's filter can be
// built and tested on the other.
fn x86_64_number(name: &str) -> Option<i32> {
    syscalls::x86_64::Sysno::from_str(name).ok().map(|s| s.id())
}
fn x86_64_name(nr: u32) -> Option<&'static str> {
    syscalls::x86_64::Sysno::new(nr as usize).map(|s| s.name())
}
fn aarch64_number(name: &str) -> Option<i32> {
    syscalls::aarch64::Sysno::from_str(name)
        .ok()
        .map(|s| s.id())
}
fn aarch64_name(nr: u32) -> Option<&'static str> {
    syscalls::aarch64::Sysno::new(nr as usize).map(|s| s.name())
}

/// Which architectures a list entry applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arches {
    /// x86_64 and aarch64.
    Both,
    /// One of them only (the call does not exist on the other).
    Only(Arch),
}

impl Arches {
    /// Whether the entry applies on `arch`.
    pub const fn has(self, arch: Arch) -> bool {
        match self {
            Arches::Both => true,
            Arches::Only(only) => only as u8 == arch as u8,
        }
    }
}

impl std::fmt::Display for Arches {
    /// `both`, `x86_64` or `aarch64`, for the allowlist tables.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arches::Both => f.write_str("both"),
            Arches::Only(arch) => f.write_str(arch.name()),
        }
    }
}
