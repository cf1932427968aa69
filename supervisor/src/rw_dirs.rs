//! A module's read-write dirs, made ready for its workers: each on its quota
//! volume (`volume.rs`), owned by the module's uid, and opened once; the
//! open directories are handed to every worker of the module with its
//! `Init`, so a worker gets exactly the directory prepared here, whatever
//! its mount namespace shows at that path.
//!
//! Preparing runs as root on a job thread (`jobs.rs`), once per module and
//! policy, not per restart: files the module creates are its own already.
//!
//! The ownership walk never follows a symlink and never leaves the tree: a
//! module can rename, swap (`renameat2(RENAME_EXCHANGE)`) and symlink inside
//! its rw dir while the walk runs. Every step is relative to a directory
//! fd already open; each entry is opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` and
//! changed through that fd (`fchown`, or `fchownat(AT_EMPTY_PATH)` on an
//! `O_PATH` fd), so what is chowned is exactly the inode that was checked.
//! A name swapped for a symlink fails to open and is skipped. A file with
//! more than one hard link that the module does not own yet is skipped
//! too: it may be a link to a file elsewhere (the kernel's
//! `protected_hardlinks` and Landlock keep a module from making one, and
//! this keeps the walk from relying on that). Mount points below the dir
//! are not entered.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::volume::{self, Volume};

/// Deepest directory level the walk enters (each level holds an open fd).
pub const MAX_DEPTH: usize = 128;

/// One read-write grant of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RwGrant {
    /// The host directory.
    pub host: PathBuf,
    /// Its quota in MiB; 0: none (a plain directory).
    pub quota_mib: u32,
}

/// A module's rw dirs, ready: open, owned, on their volumes.
#[derive(Debug)]
pub struct PreparedDirs {
    /// The grants and identity this was prepared for.
    pub for_grants: (Vec<RwGrant>, Option<(u32, u32)>),
    /// One open directory per grant, in policy order.
    pub fds: Vec<OwnedFd>,
    /// The volumes mounted for them (unmounted when the module goes).
    pub volumes: Vec<Volume>,
    /// What the walk left alone, in words (logged).
    pub notes: Vec<String>,
}

/// What the ownership walk did not change.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Files with several hard links the module does not own.
    pub hard_links: u64,
    /// Entries that changed or vanished while the walk ran (the module
    /// was moving them), or were mount points.
    pub moved: u64,
    /// Directories deeper than [`MAX_DEPTH`].
    pub too_deep: u64,
}

/// Prepares `grants` for a module running as `identity` (`None`: not
/// root, the supervisor's own uid; nothing to mount or chown). Volumes are
/// kept in `volumes_dir`; `quota_ok` says whether this host can make them.
///
/// # Errors
/// The first grant that cannot be prepared, in words naming it.
pub fn prepare(
    grants: &[RwGrant],
    identity: Option<(u32, u32)>,
    volumes_dir: &Path,
    quota_ok: bool,
) -> Result<PreparedDirs, String> {
    let mut prepared = PreparedDirs {
        for_grants: (grants.to_vec(), identity),
        fds: Vec::new(),
        volumes: Vec::new(),
        notes: Vec::new(),
    };
    for grant in grants {
        if grant.quota_mib > 0 && quota_ok {
            let image = volume::image_path(volumes_dir, &grant.host);
            let volume = volume::ensure(&image, &grant.host, grant.quota_mib, identity)
                .map_err(|e| format!("rw dir {}: {e}", grant.host.display()))?;
            prepared.volumes.push(volume);
        }
        let dir = open_dir(&grant.host)
            .map_err(|e| format!("cannot open rw dir {}: {e}", grant.host.display()))?;
        if let Some((uid, gid)) = identity {
            let skipped = own_tree(&dir, uid, gid).map_err(|e| {
                format!(
                    "cannot give rw dir {} to the module's uid {uid}: {e}",
                    grant.host.display()
                )
            })?;
            if skipped != Skipped::default() {
                prepared.notes.push(format!(
                    "rw dir {}: left {} hard-linked file(s), {} moving or mounted entr(ies) and {} too deep dir(s) as they were",
                    grant.host.display(),
                    skipped.hard_links,
                    skipped.moved,
                    skipped.too_deep
                ));
            }
        }
        prepared.fds.push(dir);
    }
    Ok(prepared)
}

/// Opens `path` as a directory, refusing a symlink at its last component.
///
/// # Errors
/// The OS error.
pub fn open_dir(path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// How every entry below the root is resolved: one component, never a
/// symlink or magic link, never out of the tree, never into another mount.
fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        )
}

/// Gives `uid`/`gid` the tree below the open directory `root` (see the
/// module docs for what is left alone).
///
/// # Errors
/// The root itself cannot be read or changed.
pub fn own_tree(root: &OwnedFd, uid: u32, gid: u32) -> nix::Result<Skipped> {
    let mut skipped = Skipped::default();
    give(root, &nix::sys::stat::fstat(root)?, uid, gid)?;
    let mut stack: Vec<(OwnedFd, usize)> = vec![(root.try_clone().map_err(io_errno)?, 0)];
    while let Some((dir_fd, depth)) = stack.pop() {
        // The names first, then each entry by name relative to the dir fd.
        let names: Vec<std::ffi::CString> = {
            let mut dir = Dir::from_fd(dir_fd.try_clone().map_err(io_errno)?)?;
            dir.iter()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_owned())
                .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
                .collect()
        };
        for name in names {
            let stat = match nix::sys::stat::fstatat(
                &dir_fd,
                name.as_c_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(stat) => stat,
                Err(Errno::ENOENT) => {
                    skipped.moved += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFLNK {
                // The link itself, never what it points to.
                let _ = nix::unistd::fchownat(
                    &dir_fd,
                    name.as_c_str(),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                );
                continue;
            }
            let flags = if kind == SFlag::S_IFDIR {
                OFlag::O_RDONLY | OFlag::O_DIRECTORY
            } else {
                OFlag::O_PATH
            };
            let entry = match nix::fcntl::openat2(&dir_fd, name.as_c_str(), beneath(flags)) {
                Ok(fd) => fd,
                // Swapped for a symlink or another kind, gone, or a mount point.
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT | Errno::EXDEV) => {
                    skipped.moved += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // What was opened, not what the name showed a moment ago.
            let stat = nix::sys::stat::fstat(&entry)?;
            let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFDIR {
                give(&entry, &stat, uid, gid)?;
                if depth + 1 >= MAX_DEPTH {
                    skipped.too_deep += 1;
                } else {
                    stack.push((entry, depth + 1));
                }
                continue;
            }
            if owned_by(&stat, uid, gid) {
                continue;
            }
            if stat.st_nlink > 1 {
                skipped.hard_links += 1;
                continue;
            }
            nix::unistd::fchownat(
                &entry,
                "",
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_EMPTY_PATH,
            )?;
        }
    }
    Ok(skipped)
}

fn owned_by(stat: &FileStat, uid: u32, gid: u32) -> bool {
    stat.st_uid == uid && stat.st_gid == gid
}

/// Chowns the open directory `fd` unless it is owned already.
fn give(fd: &impl AsFd, stat: &FileStat, uid: u32, gid: u32) -> nix::Result<()> {
    if owned_by(stat, uid, gid) {
        return Ok(());
    }
    nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
}

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const UID: u32 = 424_242;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn the_tree_is_given_to_the_uid_but_symlinks_lead_nowhere() {
        if !root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        let outside = scratch.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "root's").expect("write");
        let rw = scratch.path().join("rw");
        std::fs::create_dir_all(rw.join("a/b")).expect("mkdir");
        std::fs::write(rw.join("a/b/file"), "x").expect("write");
        std::os::unix::fs::symlink(&outside, rw.join("a/escape")).expect("symlink");
        std::fs::hard_link(outside.join("secret"), rw.join("linked")).expect("link");
        let skipped = own_tree(&open_dir(&rw).expect("open"), UID, UID).expect("own");
        for path in ["", "a", "a/b", "a/b/file"] {
            assert_eq!(
                std::fs::metadata(rw.join(path)).expect("stat").uid(),
                UID,
                "{path}"
            );
        }
        // The symlink is the module's, what it points to is not.
        assert_eq!(
            std::fs::symlink_metadata(rw.join("a/escape"))
                .expect("lstat")
                .uid(),
            UID
        );
        assert_eq!(std::fs::metadata(&outside).expect("stat").uid(), 0);
        assert_eq!(
            std::fs::metadata(outside.join("secret"))
                .expect("stat")
                .uid(),
            0
        );
        assert_eq!(skipped.hard_links, 1);
    }

    #[test]
    fn a_dir_swapped_for_a_symlink_during_the_walk_is_not_followed() {
        if !root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        let outside = scratch.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        let rw = scratch.path().join("rw");
        std::fs::create_dir_all(rw.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(&outside, rw.join("swap")).expect("symlink");
        // A module racing the walk swaps `sub` and the symlink back and forth.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let racer = {
            let (rw, stop) = (rw.clone(), stop.clone());
            std::thread::spawn(move || {
                let (a, b) = (rw.join("sub"), rw.join("swap"));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        &a,
                        nix::fcntl::AT_FDCWD,
                        &b,
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    );
                }
            })
        };
        for _ in 0..2000 {
            let _ = own_tree(&open_dir(&rw).expect("open"), UID, UID);
            assert_eq!(std::fs::metadata(&outside).expect("stat").uid(), 0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        racer.join().expect("racer");
    }
}
