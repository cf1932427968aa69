//! The fast path of the seccomp filter: a binary search over the call
//! numbers the allowlist allows with any arguments, run before
//! seccompiler's program, which then holds only the rules that inspect
//! arguments; a call in neither set gets the default action at once.
//!
//! Why hand-written: seccompiler compiles the rules to one linear chain
//! (514 instructions for the module list on x86_64). Loading it cost each
//! worker about 0.4 ms of CPU on the dev VM: half to translate and JIT the
//! program, half for the kernel's action cache, which walks the program
//! once for every call number when the filter is loaded. A search over the
//! runs of consecutive numbers is a fifth of the length and a few steps
//! deep, which also shortens every call a module makes. Only this small,
//! test-checked search is hand-written: an interpreter in the tests runs
//! both programs on every call number and finds the same answers
//! (`seccomp.rs`).

use libc::sock_filter;

use super::arch::Arch;

/// Offsets in `struct seccomp_data { int nr; u32 arch; ... }`.
const NR: u32 = 0;
const ARCH: u32 = 4;

/// Runs of consecutive numbers tested one after another at a leaf of the
/// search.
const LEAF_RUNS: usize = 3;

/// Where a jump goes, before offsets are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The next instruction.
    Next,
    /// The instruction with this label.
    Label(usize),
}

/// One instruction with symbolic jump targets.
#[derive(Debug, Clone, Copy)]
enum Insn {
    /// Load a 32-bit word of `seccomp_data`.
    Load(u32),
    /// `if A <op> k goto jt else goto jf`.
    Jump {
        op: u32,
        k: u32,
        jt: Target,
        jf: Target,
    },
    /// Always jump.
    Always(Target),
    /// Return this action.
    Return(u32),
    /// Marks the position of the next instruction (emits nothing).
    Label(usize),
}

/// A program for `arch` that returns `SECCOMP_RET_ALLOW` at once for a
/// call whose number is in `allowed`, falls through to the program
/// appended after it for a number in `inspected` (the calls whose rules
/// look at arguments) or another architecture (which that program checks
/// itself), and returns `otherwise` for any other number. Classic BPF jumps
/// only forward, so what follows is untouched.
///
/// # Errors
/// A jump longer than classic BPF's 255 instructions (not with lists of
/// this size; the tests compile every list for every architecture).
pub(crate) fn allow_fast_path(
    arch: Arch,
    allowed: &[u32],
    inspected: &[u32],
    otherwise: u32,
) -> Result<Vec<sock_filter>, String> {
    let mut program = Program::default();
    let end = program.label();
    let this_arch = program.label();
    let not_allowed = program.label();
    program.push(Insn::Load(ARCH));
    program.push(Insn::Jump {
        op: libc::BPF_JEQ,
        k: arch.audit(),
        jt: Target::Label(this_arch),
        jf: Target::Next,
    });
    program.push(Insn::Always(Target::Label(end)));
    program.push(Insn::Label(this_arch));
    program.push(Insn::Load(NR));
    program.search(
        &runs(allowed),
        Outcome::Return(libc::SECCOMP_RET_ALLOW),
        Outcome::Goto(not_allowed),
    );
    program.push(Insn::Label(not_allowed));
    program.search(
        &runs(inspected),
        Outcome::Goto(end),
        Outcome::Return(otherwise),
    );
    program.push(Insn::Label(end));
    program.assemble()
}

/// What a search does with a number it found, or did not.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Return this action.
    Return(u32),
    /// Go on at this label.
    Goto(usize),
}

/// The sorted, distinct numbers of `allowed` as inclusive runs `(lo, hi)`.
fn runs(allowed: &[u32]) -> Vec<(u32, u32)> {
    let mut numbers = allowed.to_vec();
    numbers.sort_unstable();
    numbers.dedup();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for n in numbers {
        match runs.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(n) => *hi = n,
            _ => runs.push((n, n)),
        }
    }
    runs
}

#[derive(Default)]
struct Program {
    insns: Vec<Insn>,
    labels: usize,
}

impl Program {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn push(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    /// With the call number loaded: `found` if it is in one of `runs`,
    /// else `missing`.
    fn search(&mut self, runs: &[(u32, u32)], found: Outcome, missing: Outcome) {
        if runs.len() <= LEAF_RUNS {
            let hit = self.label();
            for &(lo, hi) in runs {
                if lo == hi {
                    self.push(Insn::Jump {
                        op: libc::BPF_JEQ,
                        k: lo,
                        jt: Target::Label(hit),
                        jf: Target::Next,
                    });
                } else {
                    let next = self.label();
                    self.push(Insn::Jump {
                        op: libc::BPF_JGE,
                        k: lo,
                        jt: Target::Next,
                        jf: Target::Label(next),
                    });
                    self.push(Insn::Jump {
                        op: libc::BPF_JGT,
                        k: hi,
                        jt: Target::Label(next),
                        jf: Target::Label(hit),
                    });
                    self.push(Insn::Label(next));
                }
            }
            self.outcome(missing);
            self.push(Insn::Label(hit));
            self.outcome(found);
            return;
        }
        let (below, from) = runs.split_at(runs.len() / 2);
        let upper = self.label();
        self.push(Insn::Jump {
            op: libc::BPF_JGE,
            k: from[0].0,
            jt: Target::Label(upper),
            jf: Target::Next,
        });
        self.search(below, found, missing);
        self.push(Insn::Label(upper));
        self.search(from, found, missing);
    }

    fn outcome(&mut self, outcome: Outcome) {
        self.push(match outcome {
            Outcome::Return(action) => Insn::Return(action),
            Outcome::Goto(label) => Insn::Always(Target::Label(label)),
        });
    }

    /// Resolves labels to forward offsets.
    fn assemble(self) -> Result<Vec<sock_filter>, String> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for insn in &self.insns {
            match insn {
                Insn::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut program = Vec::with_capacity(pc);
        for insn in &self.insns {
            let pc = program.len();
            // Instructions after this one to skip to reach `target`.
            let offset = |target: Target| -> Result<usize, String> {
                match target {
                    Target::Next => Ok(0),
                    Target::Label(l) => at[l]
                        .checked_sub(pc + 1)
                        .ok_or_else(|| format!("fast path: backward jump at {pc}")),
                }
            };
            let short = |target: Target| -> Result<u8, String> {
                let skip = offset(target)?;
                u8::try_from(skip).map_err(|_| format!("fast path: jump of {skip} at {pc}"))
            };
            program.push(match *insn {
                Insn::Label(_) => continue,
                Insn::Load(offset) => stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset),
                Insn::Jump { op, k, jt, jf } => sock_filter {
                    code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
                    jt: short(jt)?,
                    jf: short(jf)?,
                    k,
                },
                Insn::Always(target) => {
                    let skip = offset(target)?;
                    stmt(
                        libc::BPF_JMP | libc::BPF_JA,
                        u32::try_from(skip).map_err(|_| "fast path: jump too long".to_string())?,
                    )
                }
                Insn::Return(action) => stmt(libc::BPF_RET | libc::BPF_K, action),
            });
        }
        Ok(program)
    }
}

const fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_numbers_become_runs() {
        assert_eq!(runs(&[5, 0, 1, 2, 9, 7, 8, 2]), [(0, 2), (5, 5), (7, 9)]);
        assert_eq!(runs(&[u32::MAX, u32::MAX - 1]), [(u32::MAX - 1, u32::MAX)]);
    }
}
