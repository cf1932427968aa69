//! Id-mapped mounts: a host directory shown to a module's uid as its own.
//!
//! `edgeward exec --dir HOST:GUEST` grants a user's directory to a module
//! that runs under its own uid. Chowning the user's files to that uid (as
//! `run` does for the directories it owns, `rw_dirs.rs`) would take them
//! from the user; running the module as the user would give up its own
//! uid. An id-mapped mount does neither: a detached copy of the directory's
//! mount (`open_tree(OPEN_TREE_CLONE)`) on which the directory owner's uid
//! and gid read as the module's (`mount_setattr(MOUNT_ATTR_IDMAP)`). The
//! module then has the owner's rights in that tree, and what it creates
//! there is stored on disk as owned by the owner, as with `wasmtime run`
//! started by the owner. Nothing else changes on disk, and the mount exists
//! only as the fd handed to the worker (never attached anywhere): it goes
//! away with the worker.
//!
//! The mapping lives in a user namespace made for it: a forked child
//! unshares one and waits; the caller writes its `uid_map`/`gid_map`
//! (`OWNER MODULE 1`: inside id OWNER is the module's id outside), opens
//! `/proc/CHILD/ns/user` and lets the child go.
//!
//! Hand-written with raw syscalls: neither nix nor rustix wraps
//! `mount_setattr` (see `docs/architecture.md`, dependencies).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `open_tree(2)`: clone the mount instead of referring to it.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `mount_setattr(2)` attribute: read-only mount.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `mount_setattr(2)` attribute: id-map through `userns_fd`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `<linux/mount.h>` (size version 0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Why a directory could not be id-mapped for a module.
#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    /// The directory cannot be opened or is not a directory.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No user namespace could be made for the mapping.
    #[error("cannot make a user namespace for the id mapping: {0}")]
    UserNamespace(std::io::Error),
    /// `open_tree` failed (old kernel: before 5.2).
    #[error("cannot clone the mount of {path} (open_tree, Linux 5.2+): {source}")]
    Clone {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `mount_setattr` failed: the kernel (before 5.12) or the file
    /// system cannot id-map.
    #[error("cannot id-map {path} (its file system {fs} may not support id-mapped mounts; Linux 5.12+ with ext4, xfs, btrfs or tmpfs 6.3+ do): {source}")]
    SetAttr {
        /// The directory.
        path: PathBuf,
        /// The file system type, for the message.
        fs: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A detached, id-mapped copy of `dir`: the directory's owner reads as
/// `module` (uid, gid); read-only when `!writable`. The returned fd is the
/// mount's root, to be handed to the worker as a passed directory.
///
/// # Errors
/// See [`IdmapError`]; each variant names the step and the directory.
pub fn mapped_dir(dir: &Path, module: (u32, u32), writable: bool) -> Result<OwnedFd, IdmapError> {
    let meta = std::fs::metadata(dir).map_err(|source| IdmapError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(IdmapError::Open {
            path: dir.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    let owner = (meta.uid(), meta.gid());
    let userns = user_namespace(owner, module).map_err(IdmapError::UserNamespace)?;
    let tree = open_tree_clone(dir).map_err(|source| IdmapError::Clone {
        path: dir.to_path_buf(),
        source,
    })?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | if writable { 0 } else { MOUNT_ATTR_RDONLY },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from a
    // valid, initialised struct laid out as the kernel's `struct
    // mount_attr`; the path is a NUL-terminated empty string, used with
    // AT_EMPTY_PATH on the fd we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(IdmapError::SetAttr {
            path: dir.to_path_buf(),
            fs: fs_type(dir),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(tree)
}

/// `open_tree(AT_FDCWD, dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)`.
fn open_tree_clone(dir: &Path) -> std::io::Result<OwnedFd> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_tree reads the NUL-terminated path; it returns a new fd
    // or -1 and touches no memory of ours otherwise.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A user namespace in which id `inside.0`/`inside.1` is `outside` of ours,
/// as an fd of `/proc/CHILD/ns/user`.
fn user_namespace(inside: (u32, u32), outside: (u32, u32)) -> std::io::Result<OwnedFd> {
    let (ready_read, ready_write) = nix::unistd::pipe()?;
    let (done_read, done_write) = nix::unistd::pipe()?;
    // SAFETY: the child only calls async-signal-safe functions (unshare,
    // write, read, _exit) on fds it inherited, then exits; it never
    // returns into Rust code of this process.
    let child = match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            // Raw syscalls on inherited fds, then _exit: nothing here
            // allocates, locks or unwinds.
            // SAFETY: unshare takes no pointers.
            let ok: u8 = u8::from(unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0);
            // SAFETY: writes one byte from a live local to an fd we hold.
            unsafe { libc::write(ready_write.as_raw_fd(), (&ok as *const u8).cast(), 1) };
            let mut byte = 0u8;
            // SAFETY: reads at most one byte into a live local.
            unsafe { libc::read(done_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            // SAFETY: ends the child at once, without running Rust code.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(ready_write);
    drop(done_read);
    let result = (|| {
        let mut ok = [0u8];
        File::from(ready_read).read_exact(&mut ok)?;
        if ok[0] != 1 {
            return Err(std::io::Error::other(
                "unshare(CLONE_NEWUSER) failed in the helper process",
            ));
        }
        let proc = PathBuf::from(format!("/proc/{child}"));
        std::fs::write(
            proc.join("uid_map"),
            format!("{} {} 1\n", inside.0, outside.0),
        )?;
        std::fs::write(
            proc.join("gid_map"),
            format!("{} {} 1\n", inside.1, outside.1),
        )?;
        File::open(proc.join("ns/user")).map(OwnedFd::from)
    })();
    // Releasing the child: it exits, the namespace lives on in our fd.
    let _ = File::from(done_write).write_all(&[1]);
    let _ = nix::sys::wait::waitpid(child, None);
    result
}

/// The file system type of `dir` as `/proc/self/mountinfo` would name it,
/// for messages (the magic number in hex when unknown).
fn fs_type(dir: &Path) -> String {
    match nix::sys::statfs::statfs(dir) {
        Ok(fs) => match fs.filesystem_type().0 {
            0xEF53 => "ext2/3/4".into(),
            0x5846_5342 => "xfs".into(),
            0x9123_683E => "btrfs".into(),
            0x0102_1994 => "tmpfs".into(),
            0x794C_7630 => "overlayfs".into(),
            0x6573_5546 => "fuse".into(),
            0x6969 => "nfs".into(),
            other => format!("type {other:#x}"),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Root only (as `exec` needs): a file the owner made is shown to the
    /// module's uid as its own; what the module's uid creates through the
    /// mount belongs to the owner on disk; the read-only variant refuses
    /// writes.
    #[test]
    fn owner_reads_as_module_and_creations_belong_to_owner() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let owner = (4242, 4343);
        let module = (5151, 5252);
        std::os::unix::fs::chown(dir.path(), Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let mounted = match mapped_dir(dir.path(), module, true) {
            Ok(fd) => fd,
            Err(e @ IdmapError::SetAttr { .. }) => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let root = format!("/proc/self/fd/{}", mounted.as_raw_fd());
        let seen = std::fs::metadata(&root).unwrap();
        assert_eq!((seen.uid(), seen.gid()), module);
        // Create as the module's ids (fsuid/fsgid of this thread only).
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setfsgid changes this thread's file-system gid
                // only; the thread ends right after.
                unsafe { libc::syscall(libc::SYS_setfsgid, module.1) };
                // SAFETY: as above, for the file-system uid.
                unsafe { libc::syscall(libc::SYS_setfsuid, module.0) };
                std::fs::write(format!("{root}/made-by-module"), b"x").unwrap();
            });
        });
        let on_disk = std::fs::metadata(dir.path().join("made-by-module")).unwrap();
        assert_eq!((on_disk.uid(), on_disk.gid()), owner);
        let ro = mapped_dir(dir.path(), module, false).unwrap();
        let err = std::fs::write(format!("/proc/self/fd/{}/x", ro.as_raw_fd()), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    }

    #[test]
    fn a_missing_dir_is_named() {
        let err = mapped_dir(Path::new("/nonexistent/edgeward"), (1, 1), true).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/edgeward"), "{err}");
    }
}
