//! Precompiled artifacts in `<state>/cache/<wasm sha256>-<engine fingerprint>.cwasm`.
//!
//! Compilation runs in `edgeward-worker compile` child processes (never in
//! the supervisor), in parallel up to the number of CPUs, each writing a
//! temporary file that the supervisor renames into place once complete: a
//! crash mid-compile never leaves a half artifact under a final name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;

/// The compile cache of one state dir.
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
    /// Opens (creating) `<state>/cache`.
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub fn open(state: &Path, fingerprint: String) -> anyhow::Result<Self> {
        let dir = state.join("cache");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create compile cache {}", dir.display()))?;
        Ok(Self { dir, fingerprint })
    }

    /// The artifact path for a wasm with this sha256.
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", self.fingerprint))
    }

    /// Makes sure an artifact exists for each `(sha256, wasm path)`; returns
    /// one outcome per input, in order. Identical sha256s compile once.
    pub fn ensure(&self, worker_bin: &Path, wanted: &[(String, PathBuf)]) -> Vec<Outcome> {
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut results: Vec<Option<Outcome>> = wanted.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = Vec::new();
        for (i, (sha, _)) in wanted.iter().enumerate() {
            let path = self.path_for(sha);
            if path.is_file() {
                results[i] = Some(Outcome::Hit(path));
            } else if !todo.iter().any(|&j| wanted[j].0 == *sha) {
                todo.push(i);
            }
        }
        let mut running: Vec<(usize, Child, PathBuf, Instant)> = Vec::new();
        let mut queue = todo.into_iter();
        loop {
            while running.len() < parallel {
                let Some(i) = queue.next() else { break };
                let (sha, wasm) = &wanted[i];
                let tmp = self.dir.join(format!(".{sha}.{}.tmp", std::process::id()));
                let child = Command::new(worker_bin)
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
        match std::fs::rename(tmp, &path) {
            Ok(()) => Outcome::Compiled(path, started.elapsed().as_millis()),
            Err(e) => Outcome::Failed(format!("cannot store artifact {}: {e}", path.display())),
        }
    }
}
