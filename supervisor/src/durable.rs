//! Making what edgeward writes for itself survive a power cut.
//!
//! On Linux a file's bytes are durable only after an `fsync` of the file,
//! and its name (a new file, a rename, a removal, a new directory) only
//! after an `fsync` of the directory that holds the name. Skipping either
//! can leave, after a power cut, a name with no content: a 0-byte compile
//! artifact that looks like a cache hit, or a directory that vanished with
//! everything in it. Every directory and file edgeward creates for itself
//! goes through these helpers.
//!
//! Directories edgeward creates are private (mode 0700): they hold module
//! state, precompiled code and the control socket. A directory that already
//! exists (made by the operator, e.g. `/tmp`) is never changed.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of every directory edgeward creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Suffix of temporary files (see [`temp_path`]).
const TEMP_SUFFIX: &str = ".tmp";

/// Creates `path` and its missing ancestors with mode 0700, flushing each
/// new directory's parent so the new name survives a power cut. Existing
/// directories are left as they are.
///
/// # Errors
/// A component cannot be created (permissions, a file in the way, a
/// read-only file system) or its parent cannot be flushed.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    // The path itself, then each ancestor up to the first that exists (a
    // file in the way then fails the mkdir below with its own error).
    let mut missing = vec![path];
    let mut cursor = path.parent();
    while let Some(dir) = cursor {
        if dir.as_os_str().is_empty() || dir.exists() {
            break;
        }
        missing.push(dir);
        cursor = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
            Ok(()) => fsync_dir(parent_of(dir))?,
            // Made meanwhile by someone else, who flushes it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the entries of `dir` durable (`fsync` of the directory).
///
/// # Errors
/// `dir` cannot be opened, or the flush fails (EIO: the entries' fate is
/// then unknown).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A fresh temporary name beside `path`: `.<name>.<pid>.<n>.tmp`, unique
/// within this process and across processes, so writers of the same final
/// name never share a temporary file. Hidden and recognisable by
/// [`is_temp_name`], so leftovers of a crash can be swept.
pub fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()))
}

/// Whether a directory entry is a temporary file of [`temp_path`] (or of
/// an earlier edgeward's `.<name>.<pid>.tmp`).
pub fn is_temp_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// Removes every temporary file in `dir` (leftovers of writes cut short by
/// a crash). Call it only while nothing writes in `dir` (the state dir's
/// lock keeps other supervisors out). Returns how many were removed.
///
/// # Errors
/// `dir` cannot be read, or a leftover cannot be removed.
pub fn remove_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if is_temp_name(&entry.file_name()) && entry.file_type()?.is_file() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    // No directory flush: a removal lost in a crash is swept again.
    Ok(removed)
}

/// Puts the complete file `tmp` in place as `path`: flushes its content,
/// renames it and flushes the directory. After a crash at any moment,
/// `path` is either its old self (or absent) or exactly `tmp`'s content.
///
/// # Errors
/// Any step; `tmp` may then still exist (the caller removes it or sweeps
/// it later with [`remove_temp_files`]).
pub fn rename_into_place(tmp: &Path, path: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    fs::rename(tmp, path)?;
    fsync_dir(parent_of(path))
}

/// Replaces `path` with `bytes`, as a whole or not at all (a temporary
/// file, flushed, renamed into place, the directory flushed).
///
/// # Errors
/// Any step of the write; `path` then keeps its previous content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let result = written
        .and_then(|()| fs::rename(&tmp, path))
        .and_then(|()| fsync_dir(parent_of(path)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the file `path` durably (the directory is flushed). A file that
/// is already gone is not an error.
///
/// # Errors
/// It cannot be removed, or the directory cannot be flushed.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => fsync_dir(parent_of(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The directory holding `path` (`.` for a bare relative name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_directories_are_private_and_existing_ones_untouched() {
        let root = tempfile::tempdir().unwrap();
        let existing = root.path().join("operator");
        fs::create_dir(&existing).unwrap();
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o755)).unwrap();
        let deep = existing.join("a/b/c");
        create_dir_all(&deep).unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&existing.join(dir)), 0o700, "{dir}");
        }
        assert_eq!(mode(&existing), 0o755, "an existing directory was changed");
        // Again: nothing to do, no error.
        create_dir_all(&deep).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        fs::write(&file, b"").unwrap();
        let error = create_dir_all(&file.join("sub")).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOTDIR), "{error}");
        let error = create_dir_all(&file).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
    }

    #[test]
    fn temp_names_are_unique_hidden_and_swept() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("abc.cwasm");
        let (a, b) = (temp_path(&path), temp_path(&path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(root.path()));
        let prefix = format!(".abc.cwasm.{}.", std::process::id());
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&prefix));
        for tmp in [&a, &b] {
            assert!(is_temp_name(tmp.file_name().unwrap()), "{}", tmp.display());
            fs::write(tmp, b"half").unwrap();
        }
        fs::write(&path, b"whole").unwrap();
        assert!(!is_temp_name(path.file_name().unwrap()));
        assert_eq!(remove_temp_files(root.path()).unwrap(), 2);
        let left: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [OsStr::new("abc.cwasm")]);
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporary_file() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("record.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two, longer");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
        // A failed write leaves the old content and no temporary file.
        let missing_dir = root.path().join("gone/record.json");
        assert!(write_atomic(&missing_dir, b"x").is_err());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn rename_into_place_and_remove_file() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("artifact");
        let tmp = temp_path(&path);
        fs::write(&tmp, b"code").unwrap();
        rename_into_place(&tmp, &path).unwrap();
        assert!(!tmp.exists());
        assert_eq!(fs::read(&path).unwrap(), b"code");
        remove_file(&path).unwrap();
        assert!(!path.exists());
        remove_file(&path).expect("removing a missing file is fine");
    }

    #[test]
    fn bare_relative_names_use_the_current_directory() {
        assert_eq!(parent_of(Path::new("state")), Path::new("."));
        assert_eq!(parent_of(Path::new("/state")), Path::new("/"));
        assert_eq!(parent_of(Path::new("a/b")), Path::new("a"));
    }
}
