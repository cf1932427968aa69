//! Quota volumes: a read-write dir with a disk quota (`quota_mib`, see
//! `docs/policy.md`) is an ext4 image of exactly that size, kept in the
//! state dir and loop-mounted on the dir while edgeward runs. A module that
//! fills it gets `ENOSPC` in its own volume; the filesystem it sits on, and
//! with it the snapshot store, keeps its space: the image's blocks are
//! allocated when it is made (`fallocate`), not when the module writes.
//!
//! Why images: this gateway's filesystems are ext4 without project quotas
//! (enabling them needs the filesystem unmounted), uid quotas would count
//! a module's uid across all its dirs and need `quotaon`, and a loop image
//! works on any filesystem. The tools are the standard ones (`mke2fs`,
//! `e2fsck`, `resize2fs` from e2fsprogs, `mount` from util-linux): a host
//! without them, or a supervisor that is not root, runs rw dirs as plain
//! directories and says so (`status` warnings).
//!
//! The first time, the image is made from the dir's current content
//! (`mke2fs -d`), so nothing the operator put there is lost; the files
//! under the mount point are then hidden, not deleted. A larger quota grows
//! the image (`resize2fs`, offline, refused while any mount namespace still
//! holds it); a smaller one is refused. A volume left mounted by a killed
//! supervisor is found and used again (by its loop device's backing file),
//! and an image whose loop device is still held elsewhere (a worker's mount
//! namespace copied while it was mounted) is mounted from that device:
//! never two filesystems on one image.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a volume could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A file operation on the image failed.
    #[error("quota volume {path}: {source}")]
    Io {
        /// The image or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A tool (`mke2fs`, `mount`, ...) failed.
    #[error("quota volume: {tool} failed: {output}")]
    Tool {
        /// What ran.
        tool: String,
        /// What it printed.
        output: String,
    },
    /// The dir holds more than the quota.
    #[error(
        "holds more than its quota of {quota_mib} MiB; raise quota_mib in the policy or move files out"
    )]
    TooFull {
        /// The quota.
        quota_mib: u32,
    },
    /// The quota was lowered below the image's size.
    #[error(
        "quota_mib was lowered from {was} to {now} MiB; volumes only grow: move the files out, delete {image} and start again, or keep {was}"
    )]
    Shrunk {
        /// The image's size.
        was: u64,
        /// The policy's quota.
        now: u32,
        /// The image.
        image: PathBuf,
    },
    /// Something else is mounted on the dir.
    #[error("{0} is already a mount point of something else; unmount it or grant another dir")]
    Occupied(PathBuf),
}

/// A mounted volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its image.
    pub image: PathBuf,
    /// Where it is mounted (the rw dir).
    pub mount_point: PathBuf,
}

/// Whether this host can make volumes: root, the tools and loop devices.
///
/// # Errors
/// What is missing, in words.
pub fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no loop devices (/dev/loop-control)".into());
    }
    for tool in ["mke2fs", "e2fsck", "resize2fs", "mount", "losetup"] {
        if find_tool(tool).is_none() {
            return Err(format!("{tool} not found (install e2fsprogs and mount)"));
        }
    }
    Ok(())
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Where the image of the rw dir `host` lives under `volumes_dir`.
pub fn image_path(volumes_dir: &Path, host: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(host.as_os_str().as_encoded_bytes());
    volumes_dir.join(format!("{}.ext4", &hex::encode(digest)[..16]))
}

/// Makes `mount_point` the mount of a `quota_mib` image at `image`:
/// creates, grows or re-uses it (see the module docs). `owner` owns the
/// volume's root.
///
/// # Errors
/// See [`VolumeError`].
pub fn ensure(
    image: &Path,
    mount_point: &Path,
    quota_mib: u32,
    owner: Option<(u32, u32)>,
) -> Result<Volume, VolumeError> {
    let volume = Volume {
        image: image.to_path_buf(),
        mount_point: mount_point.to_path_buf(),
    };
    let wanted = u64::from(quota_mib) << 20;
    match mounted_image(mount_point) {
        Some(Some(source)) if same_file(&source, image) => {
            let size = file_size(image)?;
            if size == wanted {
                return Ok(volume);
            }
            if size > wanted {
                return Err(VolumeError::Shrunk {
                    was: size >> 20,
                    now: quota_mib,
                    image: image.to_path_buf(),
                });
            }
            // A larger quota, and the volume is still mounted (left by a
            // killed supervisor): it is grown offline, below.
            nix::mount::umount2(mount_point, nix::mount::MntFlags::empty()).map_err(|e| {
                VolumeError::Io {
                    path: mount_point.to_path_buf(),
                    source: std::io::Error::other(format!(
                        "cannot unmount it to grow it: {e} (a process still uses it)"
                    )),
                }
            })?;
        }
        Some(_) => return Err(VolumeError::Occupied(mount_point.to_path_buf())),
        None => {}
    }
    if image.exists() {
        let size = file_size(image)?;
        if size > wanted {
            return Err(VolumeError::Shrunk {
                was: size >> 20,
                now: quota_mib,
                image: image.to_path_buf(),
            });
        }
        if size < wanted {
            // The loop device of a volume just unmounted is let go shortly after.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while loop_device_of(image).is_ok() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if loop_device_of(image).is_ok() {
                // Unmounted lazily and still open somewhere: not safe to resize.
                return Err(VolumeError::Io {
                    path: image.to_path_buf(),
                    source: std::io::Error::other(
                        "cannot grow it: its loop device is still in use; restart edgeward",
                    ),
                });
            }
            run("e2fsck", &["-f".as_ref(), "-p".as_ref(), image.as_os_str()])?;
            grow_file(image, wanted)?;
            run("resize2fs", &[image.as_os_str()])?;
        }
    } else {
        create(image, mount_point, wanted, owner)?;
    }
    // A mount namespace copied while the volume was mounted (a worker's)
    // can keep its loop device after the unmount here. Mounting the image
    // through a second loop device would put two filesystems on one file:
    // the device it has is mounted again instead (the same filesystem).
    let (options, source) = match loop_device_of(image) {
        Ok(device) => ("nosuid,nodev,noexec", device),
        Err(_) => ("loop,nosuid,nodev,noexec", image.to_path_buf()),
    };
    run(
        "mount",
        &[
            "-t".as_ref(),
            "ext4".as_ref(),
            "-o".as_ref(),
            options.as_ref(),
            source.as_os_str(),
            mount_point.as_os_str(),
        ],
    )?;
    Ok(volume)
}

/// Unmounts a volume (lazily: open files keep it until they close).
pub fn unmount(volume: &Volume) {
    let _ = nix::mount::umount2(&volume.mount_point, nix::mount::MntFlags::MNT_DETACH);
}

/// Makes the image from the dir's content, durably, under its final name.
fn create(
    image: &Path,
    content: &Path,
    bytes: u64,
    owner: Option<(u32, u32)>,
) -> Result<(), VolumeError> {
    let io = |source| VolumeError::Io {
        path: image.to_path_buf(),
        source,
    };
    let dir = image.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let partial = image.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    // The module's data: readable by root only.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io)?;
    // Reserve every block now: the module's quota is space taken from the
    // filesystem at once, never later while others need it.
    nix::fcntl::fallocate(
        &file,
        nix::fcntl::FallocateFlags::empty(),
        0,
        bytes as libc::off_t,
    )
    .map_err(|e| io(e.into()))?;
    drop(file);
    let mut args: Vec<std::ffi::OsString> = vec![
        "-q".into(),
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        // No blocks reserved for root: the module gets its whole quota.
        "-m".into(),
        "0".into(),
        "-d".into(),
        content.as_os_str().into(),
    ];
    // nodiscard: discarding a file's blocks punches holes in it, which
    // would give the reservation back.
    let (uid, gid) = owner.unwrap_or((0, 0));
    args.extend([
        "-E".into(),
        format!("nodiscard,root_owner={uid}:{gid}").into(),
    ]);
    args.push(partial.as_os_str().into());
    let arg_refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    if let Err(e) = run("mke2fs", &arg_refs) {
        let _ = std::fs::remove_file(&partial);
        return Err(match e {
            VolumeError::Tool { output, .. }
                if output.contains("Could not allocate")
                    || output.contains("No space left")
                    || output.contains("populating") =>
            {
                VolumeError::TooFull {
                    quota_mib: (bytes >> 20) as u32,
                }
            }
            other => other,
        });
    }
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&partial, image).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

fn grow_file(image: &Path, bytes: u64) -> Result<(), VolumeError> {
    let io = |source| VolumeError::Io {
        path: image.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(io)?;
    nix::fcntl::fallocate(
        &file,
        nix::fcntl::FallocateFlags::empty(),
        0,
        bytes as libc::off_t,
    )
    .map_err(|e| io(e.into()))?;
    file.sync_all().map_err(io)
}

fn loop_device_of(image: &Path) -> Result<PathBuf, VolumeError> {
    let output = crate::signals::unblocked(&mut Command::new(
        find_tool("losetup").unwrap_or_else(|| "losetup".into()),
    ))
    .args([
        "-j".as_ref(),
        image.as_os_str(),
        "-n".as_ref(),
        "-O".as_ref(),
        "NAME".as_ref(),
    ])
    .output()
    .map_err(|source| VolumeError::Io {
        path: image.to_path_buf(),
        source,
    })?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if name.is_empty() {
        return Err(VolumeError::Tool {
            tool: "losetup -j".into(),
            output: format!("no loop device for {}", image.display()),
        });
    }
    Ok(PathBuf::from(name.lines().next().unwrap_or_default()))
}

fn file_size(path: &Path) -> Result<u64, VolumeError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| VolumeError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The topmost mount on `mount_point` and its device numbers, from
/// `/proc/self/mountinfo` (`None`: nothing is mounted there).
fn mount_entry(mount_point: &Path) -> Option<((u32, u32), String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = mount_point.to_string_lossy();
    info.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let target = unescape_mountinfo(fields.nth(1)?);
            let (major, minor) = device.split_once(':')?;
            Some(((major.parse().ok()?, minor.parse().ok()?), target))
        })
        .rfind(|(_, target)| *target == wanted)
}

/// What is mounted on `mount_point`: `None` nothing, `Some(Some(file))` a
/// loop device backed by `file`, `Some(None)` something else.
fn mounted_image(mount_point: &Path) -> Option<Option<PathBuf>> {
    let ((major, minor), _) = mount_entry(mount_point)?;
    let backing =
        std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/loop/backing_file"))
            .ok()
            .map(|s| PathBuf::from(s.trim_end()));
    Some(backing)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let code = u8::from_str_radix(&field[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn run(tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), VolumeError> {
    let program = find_tool(tool).unwrap_or_else(|| PathBuf::from(tool));
    let output = crate::signals::unblocked(&mut Command::new(&program))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| VolumeError::Io {
            path: program.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    Err(VolumeError::Tool {
        tool: tool.to_string(),
        output: crate::worker_text::message(&text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }

    #[test]
    fn image_names_depend_on_the_dir_only() {
        let a = image_path(Path::new("/s/volumes/m"), Path::new("/data/a"));
        let b = image_path(Path::new("/s/volumes/m"), Path::new("/data/b"));
        assert_ne!(a, b);
        assert_eq!(
            a,
            image_path(Path::new("/s/volumes/m"), Path::new("/data/a"))
        );
        assert!(a.to_string_lossy().ends_with(".ext4"));
    }

    #[test]
    fn a_volume_holds_its_quota_and_no_more_and_is_used_again() {
        if available().is_err() {
            eprintln!("skipped: volumes unavailable here");
            return;
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        let dir = scratch.path().join("rw");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("kept"), "operator's file").expect("write");
        let image = image_path(&scratch.path().join("volumes"), &dir);
        let volume = ensure(&image, &dir, 8, Some((424_243, 424_243))).expect("volume");
        // The content came along; the quota holds.
        assert_eq!(
            std::fs::read_to_string(dir.join("kept")).expect("read"),
            "operator's file"
        );
        let big = vec![7u8; 16 << 20];
        let err = std::fs::write(dir.join("big"), &big).expect_err("over quota");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        // Asked again while mounted: the same mount, not a second one.
        let again = ensure(&image, &dir, 8, Some((424_243, 424_243))).expect("again");
        assert_eq!(again, volume);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let dir_text = dir.to_string_lossy().into_owned();
        assert_eq!(
            mounts
                .lines()
                .filter(|l| l.split(' ').nth(4) == Some(dir_text.as_str()))
                .count(),
            1
        );
        // A lower quota is refused; a higher one grows it.
        assert!(matches!(
            ensure(&image, &dir, 4, None),
            Err(VolumeError::Shrunk { .. })
        ));
        ensure(&image, &dir, 24, None).expect("grow");
        std::fs::remove_file(dir.join("big")).ok();
        std::fs::write(dir.join("big"), &big).expect("fits after growing");
        unmount(&volume);
        // Unmounted, the dir shows what it held before.
        assert!(!dir.join("big").exists());
        assert!(dir.join("kept").exists());
    }
}
