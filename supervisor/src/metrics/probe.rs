//! What `/metrics` reads from the kernel at scrape time, on the HTTP
//! thread (never on the event loop): a worker's private memory, its
//! module's cgroup memory and CPU.

use std::path::{Path, PathBuf};

/// Where a module's cgroup counts its memory and CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFiles {
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2).
    pub memory: Option<PathBuf>,
    /// The CPU time file.
    pub cpu: Option<CpuFile>,
}

/// A cgroup's CPU time counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuFile {
    /// v1 `cpuacct.usage`: nanoseconds.
    Nanos(PathBuf),
    /// v2 `cpu.stat`: its `usage_usec` line.
    Stat(PathBuf),
}

impl UsageFiles {
    /// The files of a module cgroup made of `dirs` (one per v1 controller,
    /// or the one v2 directory), where they exist.
    pub fn of(dirs: &[PathBuf]) -> UsageFiles {
        let find = |file: &str| dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
        UsageFiles {
            memory: find("memory.usage_in_bytes").or_else(|| find("memory.current")),
            cpu: find("cpuacct.usage")
                .map(CpuFile::Nanos)
                .or_else(|| find("cpu.stat").map(CpuFile::Stat)),
        }
    }

    /// Bytes the cgroup charges now.
    pub fn memory_bytes(&self) -> Option<u64> {
        read_number(self.memory.as_deref()?)
    }

    /// CPU seconds the cgroup used since it was made.
    pub fn cpu_seconds(&self) -> Option<f64> {
        match self.cpu.as_ref()? {
            CpuFile::Nanos(path) => read_number(path).map(|ns| ns as f64 / 1e9),
            CpuFile::Stat(path) => {
                let text = std::fs::read_to_string(path).ok()?;
                key_value(&text, "usage_usec").map(|us| us as f64 / 1e6)
            }
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key value` lines (`cpu.stat`, `smaps_rollup` without units).
fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()?.trim_end_matches(':') == key).then(|| words.next()?.parse().ok())?
    })
}

/// Private memory of `pid` (USS: pages no other process maps), bytes,
/// from `/proc/<pid>/smaps_rollup`.
pub fn private_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib = key_value(&text, "Private_Clean")? + key_value(&text, "Private_Dirty")?;
    Some(kib * 1024)
}

/// CPU seconds (user + system) `pid` used, from `/proc/<pid>/stat`: for
/// modules without a cgroup.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // the last `)`. utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_has_private_memory_and_cpu_time() {
        let me = std::process::id();
        let uss = private_bytes(me).expect("smaps_rollup");
        assert!(uss > 100 * 1024, "{uss}");
        // Burn a little CPU so the figure is not zero.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(process_cpu_seconds(me).expect("stat") > 0.0);
    }

    #[test]
    fn cgroup_files_are_read_in_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("v1");
        std::fs::create_dir(&v1).unwrap();
        std::fs::write(v1.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(v1.join("cpuacct.usage"), "1500000000\n").unwrap();
        let files = UsageFiles::of(std::slice::from_ref(&v1));
        assert_eq!(files.memory_bytes(), Some(4096));
        assert_eq!(files.cpu_seconds(), Some(1.5));
        let v2 = dir.path().join("v2");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v2.join("memory.current"), "8192\n").unwrap();
        std::fs::write(v2.join("cpu.stat"), "usage_usec 250000\nuser_usec 1\n").unwrap();
        let files = UsageFiles::of(std::slice::from_ref(&v2));
        assert_eq!(files.memory_bytes(), Some(8192));
        assert_eq!(files.cpu_seconds(), Some(0.25));
        assert_eq!(UsageFiles::of(&[]).memory_bytes(), None);
    }
}
