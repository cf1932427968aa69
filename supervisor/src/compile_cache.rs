//! Precompiled artifacts in `<state>/cache/<wasm sha256>-<engine fingerprint>.cwasm`.
//!
//! Compilation runs in `edgeward-worker compile` child processes (never in
//! the supervisor), in parallel up to the number of CPUs, each writing a
//! temporary file of its own. Once the child succeeded, the supervisor
//! flushes the file, renames it into place and flushes the directory, so
//! neither a crash mid-compile nor a power cut right after it leaves a
//! partial artifact under a final name.
//!
//! A power cut can still leave damage written by an older edgeward, or by a
//! disk that lies about its flushes: every artifact found in the cache is
//! checked cheaply before it counts as a hit (see [`check_artifact`]); an
//! invalid one is deleted and compiled again. An artifact that passes the
//! check but fails to load in the worker is reported as
//! `FaultKind::Artifact`, and [`CompileCache::invalidate`] deletes it.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use crate::durable;
use crate::log_sink::say;

/// The compile cache of one state dir.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    fingerprint: String,
}

/// What happened to one artifact.
#[derive(Debug)]
pub enum Outcome {
    /// It was already in the cache.
    Hit(PathBuf),
    /// It was compiled now, taking this many milliseconds.
    Compiled(PathBuf, u128),
    /// Compilation failed with this message.
    Failed(String),
}

impl CompileCache {
    /// Opens (creating, durably) `<state>/cache` and removes the temporary
    /// files a crashed run left there.
    ///
    /// # Errors
    /// If the directory cannot be created or cleaned.
    pub fn open(state: &Path, fingerprint: String) -> anyhow::Result<Self> {
        let dir = state.join("cache");
        durable::create_dir_all(&dir)
            .with_context(|| format!("cannot create compile cache {}", dir.display()))?;
        let removed = durable::remove_temp_files(&dir).with_context(|| {
            format!(
                "cannot remove temporary files from compile cache {}",
                dir.display()
            )
        })?;
        if removed > 0 {
            say!(
                "compile cache: removed {removed} temporary file(s) left by an interrupted compile"
            );
        }
        Ok(Self { dir, fingerprint })
    }

    /// The artifact path for a wasm with this sha256.
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", self.fingerprint))
    }

    /// Deletes the artifact of a wasm with this sha256, durably, so that the
    /// next [`CompileCache::ensure`] compiles it again. For an artifact that
    /// passed [`check_artifact`] but failed to load in a worker.
    ///
    /// # Errors
    /// The file exists and cannot be removed, or the directory cannot be
    /// flushed.
    pub fn invalidate(&self, sha256: &str) -> io::Result<()> {
        durable::remove_file(&self.path_for(sha256))
    }

    /// Makes sure a valid artifact exists for each `(sha256, wasm path)`;
    /// returns one outcome per input, in order. Identical sha256s compile
    /// once. An invalid artifact in the cache is logged, deleted and
    /// compiled again.
    pub fn ensure(&self, worker_bin: &Path, wanted: &[(String, PathBuf)]) -> Vec<Outcome> {
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut results: Vec<Option<Outcome>> = wanted.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = Vec::new();
        for (i, (sha, wasm)) in wanted.iter().enumerate() {
            if wasm.as_os_str() == crate::policy::CONNECTOR_WASM {
                // A connector runs the native connector binary: nothing to compile.
                results[i] = Some(Outcome::Hit(crate::cli::connector_bin()));
                continue;
            }
            if wanted[..i].iter().any(|(s, _)| s == sha) {
                continue; // a copy: shares the first one's outcome below
            }
            let path = self.path_for(sha);
            match check_artifact(&path) {
                Ok(()) => results[i] = Some(Outcome::Hit(path)),
                Err(InvalidArtifact::Missing) => todo.push(i),
                Err(invalid) => match durable::remove_file(&path) {
                    Ok(()) => {
                        say!(
                            "compile cache: {} is not a valid artifact ({invalid}); deleted it, compiling again",
                            path.display()
                        );
                        todo.push(i);
                    }
                    Err(e) => {
                        results[i] = Some(Outcome::Failed(format!(
                            "cannot delete invalid artifact {} ({invalid}): {e}",
                            path.display()
                        )));
                    }
                },
            }
        }
        let mut running: Vec<(usize, Child, PathBuf, Instant)> = Vec::new();
        let mut queue = todo.into_iter();
        loop {
            while running.len() < parallel {
                let Some(i) = queue.next() else { break };
                let (sha, wasm) = &wanted[i];
                let tmp = durable::temp_path(&self.path_for(sha));
                let child = crate::signals::unblocked(&mut Command::new(worker_bin))
                    .arg("compile")
                    .arg(wasm)
                    .arg(&tmp)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn();
                match child {
                    Ok(child) => running.push((i, child, tmp, Instant::now())),
                    Err(e) => {
                        results[i] = Some(Outcome::Failed(format!(
                            "cannot run {}: {e}",
                            worker_bin.display()
                        )))
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            let (i, child, tmp, started) = running.remove(0);
            results[i] = Some(self.finish(&wanted[i].0, child, &tmp, started));
        }
        // Copies of an already compiled sha256 share its outcome.
        for i in 0..wanted.len() {
            if results[i].is_none() {
                let path = self.path_for(&wanted[i].0);
                let first = wanted.iter().position(|(s, _)| *s == wanted[i].0);
                results[i] = Some(match first.and_then(|j| results[j].as_ref()) {
                    Some(Outcome::Failed(e)) => Outcome::Failed(e.clone()),
                    _ => Outcome::Hit(path),
                });
            }
        }
        results.into_iter().map(|r| r.expect("filled")).collect()
    }

    fn finish(&self, sha: &str, child: Child, tmp: &Path, started: Instant) -> Outcome {
        let output = match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => return Outcome::Failed(format!("compiler process: {e}")),
        };
        if !output.status.success() {
            let _ = std::fs::remove_file(tmp);
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Outcome::Failed(format!("does not compile: {}", stderr.trim()));
        }
        let path = self.path_for(sha);
        match durable::rename_into_place(tmp, &path) {
            Ok(()) => Outcome::Compiled(path, started.elapsed().as_millis()),
            Err(e) => {
                let _ = std::fs::remove_file(tmp);
                Outcome::Failed(format!("cannot store artifact {}: {e}", path.display()))
            }
        }
    }
}

/// Why a file cannot be an artifact `edgeward-worker compile` wrote.
#[derive(Debug, thiserror::Error)]
pub enum InvalidArtifact {
    /// There is no file.
    #[error("missing")]
    Missing,
    /// The file cannot be opened or read.
    #[error("unreadable: {0}")]
    Unreadable(io::Error),
    /// The file is empty (a name made durable without its content).
    #[error("empty file")]
    Empty,
    /// The header is not a 64-bit ELF header.
    #[error("not a 64-bit ELF file")]
    NotElf,
    /// An ELF file, but not one written by wasmtime.
    #[error("ELF OS/ABI {0}, not wasmtime's {WASMTIME_ELF_OSABI}")]
    NotWasmtime(u8),
    /// The header says there is no section header table.
    #[error("no section header table")]
    NoSections,
    /// The file ends before its section header table does.
    #[error("truncated: {len} bytes, the section headers end at byte {needed}")]
    Truncated {
        /// The file's length.
        len: u64,
        /// Where its section header table ends.
        needed: u64,
    },
}

/// `EI_OSABI` of the ELF files wasmtime writes (`ELFOSABI_WASMTIME`).
const WASMTIME_ELF_OSABI: u8 = 200;
/// Size of a 64-bit ELF header.
const ELF64_HEADER: usize = 64;

/// Checks, from the header and the length alone, that `path` can be the
/// artifact `edgeward-worker compile` wrote: a 64-bit ELF file marked as
/// wasmtime's, at least as long as its section header table says (wasmtime
/// writes that table last, so a truncated file fails here). It does not
/// prove the code loads: `Module::deserialize_file` checks the rest.
///
/// # Errors
/// What is wrong with the file ([`InvalidArtifact::Missing`] if there is none).
pub fn check_artifact(path: &Path) -> Result<(), InvalidArtifact> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(InvalidArtifact::Missing),
        Err(e) => return Err(InvalidArtifact::Unreadable(e)),
    };
    let len = file.metadata().map_err(InvalidArtifact::Unreadable)?.len();
    if len == 0 {
        return Err(InvalidArtifact::Empty);
    }
    let mut header = [0u8; ELF64_HEADER];
    if len < ELF64_HEADER as u64 {
        return Err(InvalidArtifact::NotElf);
    }
    file.read_exact(&mut header)
        .map_err(InvalidArtifact::Unreadable)?;
    check_header(&header, len)
}

/// The checks of [`check_artifact`] on the first 64 bytes and the length.
fn check_header(header: &[u8; ELF64_HEADER], len: u64) -> Result<(), InvalidArtifact> {
    const ELFCLASS64: u8 = 2;
    if header[..4] != *b"\x7fELF" || header[4] != ELFCLASS64 {
        return Err(InvalidArtifact::NotElf);
    }
    if header[7] != WASMTIME_ELF_OSABI {
        return Err(InvalidArtifact::NotWasmtime(header[7]));
    }
    let little_endian = match header[5] {
        1 => true,
        2 => false,
        _ => return Err(InvalidArtifact::NotElf),
    };
    let u16_at = |at: usize| {
        let bytes = [header[at], header[at + 1]];
        u64::from(if little_endian {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        })
    };
    let mut shoff = [0u8; 8];
    shoff.copy_from_slice(&header[0x28..0x30]);
    let shoff = if little_endian {
        u64::from_le_bytes(shoff)
    } else {
        u64::from_be_bytes(shoff)
    };
    let (entry_size, count) = (u16_at(0x3a), u16_at(0x3c));
    if shoff == 0 || entry_size == 0 {
        return Err(InvalidArtifact::NoSections);
    }
    // With 0 here the real count is in section 0; at least that one exists.
    let needed = entry_size
        .checked_mul(count.max(1))
        .and_then(|table| table.checked_add(shoff))
        .unwrap_or(u64::MAX);
    if len < needed {
        return Err(InvalidArtifact::Truncated { len, needed });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wasmtime-like ELF header: 2 section headers of 64 bytes at 64.
    fn header() -> [u8; ELF64_HEADER] {
        let mut h = [0u8; ELF64_HEADER];
        h[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\xc8");
        h[0x28..0x30].copy_from_slice(&64u64.to_le_bytes());
        h[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        h[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
        h
    }

    #[test]
    fn a_whole_artifact_passes_and_damaged_ones_say_why() {
        assert!(check_header(&header(), 192).is_ok());
        assert!(check_header(&header(), 4096).is_ok());
        assert!(matches!(
            check_header(&header(), 191),
            Err(InvalidArtifact::Truncated {
                len: 191,
                needed: 192
            })
        ));
        let mut other_abi = header();
        other_abi[7] = 0;
        assert!(matches!(
            check_header(&other_abi, 192),
            Err(InvalidArtifact::NotWasmtime(0))
        ));
        let mut zeros = header();
        zeros[..4].fill(0);
        assert!(matches!(
            check_header(&zeros, 192),
            Err(InvalidArtifact::NotElf)
        ));
        let mut no_table = header();
        no_table[0x28..0x30].fill(0);
        assert!(matches!(
            check_header(&no_table, 192),
            Err(InvalidArtifact::NoSections)
        ));
        let mut huge = header();
        huge[0x28..0x30].fill(0xff);
        assert!(matches!(
            check_header(&huge, 192),
            Err(InvalidArtifact::Truncated { .. })
        ));
    }

    #[test]
    fn big_endian_headers_are_read_as_such() {
        let mut h = header();
        h[5] = 2;
        h[0x28..0x30].copy_from_slice(&64u64.to_be_bytes());
        h[0x3a..0x3c].copy_from_slice(&64u16.to_be_bytes());
        h[0x3c..0x3e].copy_from_slice(&2u16.to_be_bytes());
        assert!(check_header(&h, 192).is_ok());
        assert!(check_header(&h, 100).is_err());
    }

    #[test]
    fn files_on_disk_missing_empty_short_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cwasm");
        assert!(matches!(
            check_artifact(&path),
            Err(InvalidArtifact::Missing)
        ));
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(check_artifact(&path), Err(InvalidArtifact::Empty)));
        std::fs::write(&path, b"\x7fELF").unwrap();
        assert!(matches!(
            check_artifact(&path),
            Err(InvalidArtifact::NotElf)
        ));
        let mut whole = header().to_vec();
        whole.resize(192, 0);
        std::fs::write(&path, &whole).unwrap();
        assert!(check_artifact(&path).is_ok());
    }

    #[test]
    fn opening_sweeps_temporary_files_and_invalidate_deletes_an_artifact() {
        let state = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(state.path(), "fp".into()).unwrap();
        let artifact = cache.path_for("abc");
        std::fs::write(&artifact, b"artifact").unwrap();
        let leftover = durable::temp_path(&artifact);
        std::fs::write(&leftover, b"half").unwrap();
        let cache = CompileCache::open(state.path(), "fp".into()).unwrap();
        assert!(!leftover.exists(), "leftover temporary file kept");
        assert!(artifact.exists(), "a finished artifact was swept");
        cache.invalidate("abc").unwrap();
        assert!(!artifact.exists());
        cache.invalidate("abc").expect("invalidating twice is fine");
    }
}
