//! A disk that loses power: a FUSE file system, served from this process,
//! that keeps everything in memory and remembers, per file and for the
//! directory, what was last made durable (`fsync`/`fdatasync` of a file,
//! `fsync` of the directory). [`PowerCutDisk::cut`] unmounts it, throws
//! away what was never flushed (or, on a coin flip, keeps a torn prefix of
//! it, as a real disk may have written some of it back), and mounts it
//! again: what the next run sees is exactly a disk after a power cut.
//!
//! Faults can be switched on to check the error paths end to end:
//! [`Fault::NoSpace`] fails every write with ENOSPC, [`Fault::FlushIo`]
//! fails every flush with EIO. A file whose flush failed is *poisoned*: as
//! on Linux, where a failed writeback marks the pages clean, later flushes
//! of it succeed and save nothing, so a store that keeps appending to it
//! loses data at the next cut.
//!
//! One flat directory of regular files, created, appended to, renamed
//! (all the snapshot store and the compile cache use); only the mounting
//! user (root here) may use it. A rename changes two names, each of which
//! a cut may keep or undo on its own unless the directory was flushed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Everything works.
    #[default]
    None,
    /// Writes fail with ENOSPC (the disk is full).
    NoSpace,
    /// `fsync`/`fdatasync` of files and of the directory fail with EIO,
    /// and poison the files they fail on.
    FlushIo,
}

/// What a cut did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CutReport {
    /// Unflushed bytes thrown away.
    pub dropped_bytes: u64,
    /// Unflushed bytes kept (a torn prefix written back before the cut).
    pub kept_bytes: u64,
    /// Unflushed directory changes undone.
    pub entries_undone: u64,
}

#[derive(Default)]
struct File {
    data: Vec<u8>,
    /// The content a power cut leaves.
    durable: Vec<u8>,
    /// A flush failed: nothing more of this file ever becomes durable.
    poisoned: bool,
}

#[derive(Default)]
struct Disk {
    files: HashMap<u64, File>,
    /// The directory as processes see it.
    names: BTreeMap<String, u64>,
    /// The directory a power cut leaves.
    durable_names: BTreeMap<String, u64>,
    /// Open handles: whether each appends.
    handles: HashMap<u64, bool>,
    next_ino: u64,
    next_handle: u64,
    fault: Fault,
    flushes: u64,
    /// How long a flush takes (an SD card or eMMC flush takes milliseconds).
    flush_delay: Duration,
    /// The power is off: nothing changes any more, every request fails.
    off: bool,
}

const ROOT: u64 = 1;
/// Nothing cached in the kernel: every lookup and attribute comes here.
const NO_CACHE: Duration = Duration::ZERO;

fn attr(ino: u64, size: u64, kind: FileType) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm: if kind == FileType::Directory {
            0o755
        } else {
            0o644
        },
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Disk {
    fn file_attr(&self, ino: u64) -> Option<FileAttr> {
        if ino == ROOT {
            return Some(attr(ROOT, 0, FileType::Directory));
        }
        let file = self.files.get(&ino)?;
        Some(attr(ino, file.data.len() as u64, FileType::RegularFile))
    }

    fn open_handle(&mut self, flags: i32) -> u64 {
        self.next_handle += 1;
        self.handles
            .insert(self.next_handle, flags & libc::O_APPEND != 0);
        self.next_handle
    }

    fn flush_file(&mut self, ino: u64) -> Result<(), Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        self.flushes += 1;
        let fault = self.fault;
        let file = self.files.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if fault == Fault::FlushIo {
            file.poisoned = true;
            return Err(Errno::EIO);
        }
        if !file.poisoned {
            file.durable = file.data.clone();
        }
        Ok(())
    }

    fn flush_dir(&mut self) -> Result<(), Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        self.flushes += 1;
        if self.fault == Fault::FlushIo {
            return Err(Errno::EIO);
        }
        self.durable_names = self.names.clone();
        Ok(())
    }

    /// Applies a power cut; `coin` gives the random choices.
    fn cut(&mut self, coin: &mut impl FnMut(u64) -> u64) -> CutReport {
        let mut report = CutReport::default();
        // Half the cuts drop everything unflushed; the others keep a random
        // part of it, as a disk that wrote some pages back on its own.
        let keep_some = coin(2) == 1;
        let mut names = BTreeMap::new();
        let all: BTreeSet<String> = self
            .names
            .keys()
            .chain(self.durable_names.keys())
            .cloned()
            .collect();
        // After an unflushed rename both the old and the new name may
        // survive; a file keeps only the first (it has one link).
        let mut linked = HashSet::new();
        for name in all {
            let now = self.names.get(&name).copied();
            let durable = self.durable_names.get(&name).copied();
            let survivor = if now == durable || (keep_some && coin(2) == 1) {
                now
            } else {
                report.entries_undone += 1;
                durable
            };
            match survivor {
                Some(ino) if linked.insert(ino) => {
                    names.insert(name, ino);
                }
                Some(_) => report.entries_undone += 1,
                None => {}
            }
        }
        let mut files = HashMap::new();
        for &ino in names.values() {
            let Some(mut file) = self.files.remove(&ino) else {
                continue;
            };
            let mut content = std::mem::take(&mut file.durable);
            if !file.poisoned && file.data.starts_with(&content) {
                let tail = &file.data[content.len()..];
                let kept = if keep_some {
                    coin(tail.len() as u64 + 1) as usize
                } else {
                    0
                };
                report.kept_bytes += kept as u64;
                report.dropped_bytes += (tail.len() - kept) as u64;
                content.extend_from_slice(&tail[..kept]);
            } else {
                report.dropped_bytes += file.data.len() as u64;
            }
            files.insert(
                ino,
                File {
                    data: content.clone(),
                    durable: content,
                    poisoned: false,
                },
            );
        }
        self.files = files;
        self.durable_names = names.clone();
        self.names = names;
        self.handles.clear();
        self.off = false;
        report
    }
}

struct Fs(Arc<Mutex<Disk>>);

impl Fs {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The disk once a flush's time has passed (the power may have gone
    /// meanwhile: the flush methods check).
    fn flushing(&self) -> MutexGuard<'_, Disk> {
        let delay = self.disk().flush_delay;
        std::thread::sleep(delay);
        self.disk()
    }
}

fn name_of(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_string)
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let disk = self.disk();
        let found = (parent.0 == ROOT)
            .then(|| name_of(name))
            .flatten()
            .and_then(|n| disk.names.get(&n).copied())
            .and_then(|ino| disk.file_attr(ino));
        match found {
            Some(a) => reply.entry(&NO_CACHE, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk().file_attr(ino.0) {
            Some(a) => reply.attr(&NO_CACHE, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        if let (Some(size), Some(file)) = (size, disk.files.get_mut(&ino.0)) {
            file.data.resize(size as usize, 0);
        }
        match disk.file_attr(ino.0) {
            Some(a) => reply.attr(&NO_CACHE, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk();
        if disk.off {
            return reply.error(Errno::EIO);
        }
        let Some(name) = name_of(name).filter(|_| parent.0 == ROOT) else {
            return reply.error(Errno::EINVAL);
        };
        let ino = match disk.names.get(&name) {
            Some(&ino) => ino,
            None => {
                disk.next_ino = disk.next_ino.max(ROOT) + 1;
                let ino = disk.next_ino;
                disk.files.insert(ino, File::default());
                disk.names.insert(name, ino);
                ino
            }
        };
        let handle = disk.open_handle(flags);
        let a = disk.file_attr(ino).expect("just made");
        reply.created(
            &NO_CACHE,
            &a,
            Generation(0),
            FileHandle(handle),
            FopenFlags::FOPEN_DIRECT_IO,
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut disk = self.disk();
        if ino.0 != ROOT && !disk.files.contains_key(&ino.0) {
            return reply.error(Errno::ENOENT);
        }
        let handle = disk.open_handle(flags.0);
        reply.opened(FileHandle(handle), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let disk = self.disk();
        let Some(file) = disk.files.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let start = (offset as usize).min(file.data.len());
        let end = (start + size as usize).min(file.data.len());
        reply.data(&file.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut disk = self.disk();
        if disk.off {
            return reply.error(Errno::EIO);
        }
        if disk.fault == Fault::NoSpace {
            return reply.error(Errno::ENOSPC);
        }
        let append = disk.handles.get(&fh.0).copied().unwrap_or(false);
        let Some(file) = disk.files.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let at = if append {
            file.data.len()
        } else {
            offset as usize
        };
        if file.data.len() < at + data.len() {
            file.data.resize(at + data.len(), 0);
        }
        file.data[at..at + data.len()].copy_from_slice(data);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.disk().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.flushing().flush_file(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == ROOT {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOTDIR);
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let disk = self.disk();
        let entries = [
            (ROOT, FileType::Directory, ".".to_string()),
            (ROOT, FileType::Directory, "..".to_string()),
        ]
        .into_iter()
        .chain(
            disk.names
                .iter()
                .map(|(n, &i)| (i, FileType::RegularFile, n.clone())),
        );
        for (index, (ino, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.flushing().flush_dir() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        if disk.off {
            return reply.error(Errno::EIO);
        }
        let names = (parent.0 == ROOT && newparent.0 == ROOT && flags.is_empty())
            .then(|| Some((name_of(name)?, name_of(newname)?)))
            .flatten();
        let Some((from, to)) = names else {
            return reply.error(Errno::EINVAL);
        };
        // Replaces `to` if it exists; its old file stays reachable through
        // the durable names until the directory is flushed.
        match disk.names.remove(&from) {
            Some(ino) => {
                disk.names.insert(to, ino);
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut disk = self.disk();
        if disk.off {
            return reply.error(Errno::EIO);
        }
        let removed = (parent.0 == ROOT)
            .then(|| name_of(name))
            .flatten()
            .and_then(|n| disk.names.remove(&n));
        match removed {
            Some(_) => reply.ok(),
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// The power-cut disk, mounted at a directory.
pub struct PowerCutDisk {
    at: PathBuf,
    disk: Arc<Mutex<Disk>>,
    session: Option<BackgroundSession>,
    seed: u64,
    /// Files may be mapped executable (the compile cache's artifacts).
    executable: bool,
}

impl PowerCutDisk {
    /// An empty disk for data (mounted `noexec`) at `at` (an existing, empty
    /// directory).
    ///
    /// # Errors
    /// FUSE is not available (no `/dev/fuse`, not root).
    pub fn mount(at: &Path, seed: u64) -> io::Result<Self> {
        Self::mount_with(at, seed, false)
    }

    /// An empty disk for code at `at`: without `noexec`, because workers map
    /// the compile cache's artifacts and make their code executable.
    ///
    /// # Errors
    /// As [`PowerCutDisk::mount`].
    pub fn mount_executable(at: &Path, seed: u64) -> io::Result<Self> {
        Self::mount_with(at, seed, true)
    }

    fn mount_with(at: &Path, seed: u64, executable: bool) -> io::Result<Self> {
        let mut disk = Self {
            at: at.to_path_buf(),
            disk: Arc::default(),
            session: None,
            seed,
            executable,
        };
        disk.attach()?;
        Ok(disk)
    }

    fn attach(&mut self) -> io::Result<()> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("edgeward-power-cut".into()),
            MountOption::NoSuid,
            MountOption::NoDev,
        ];
        if !self.executable {
            config.mount_options.push(MountOption::NoExec);
        }
        self.session = Some(fuser::spawn_mount(
            Fs(Arc::clone(&self.disk)),
            &self.at,
            &config,
        )?);
        Ok(())
    }

    fn detach(&mut self) -> io::Result<()> {
        match self
            .session
            .take()
            .map(fuser::BackgroundSession::umount_and_join)
        {
            // The unmount aborts the connection; a session thread that was
            // reading /dev/fuse at that moment ends with ECONNABORTED. The
            // disk is unmounted all the same.
            Some(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
            Some(result) => result,
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power: from now on nothing written or flushed here changes
    /// the disk (requests in flight fail). Kill the writers, then
    /// [`PowerCutDisk::cut`].
    pub fn power_off(&self) {
        self.lock().off = true;
    }

    /// Reboots after a power cut (cutting it now if [`PowerCutDisk::power_off`]
    /// was not called): unmounts, forgets what was not flushed (or keeps a
    /// random torn part of it), mounts again. Every process writing here
    /// must be dead first.
    ///
    /// # Errors
    /// Unmounting or mounting again failed.
    pub fn cut(&mut self) -> io::Result<CutReport> {
        self.detach()?;
        let mut seed = self.seed;
        let mut coin = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n.max(1)
        };
        let report = self.lock().cut(&mut coin);
        self.seed = seed;
        self.attach()?;
        Ok(report)
    }

    /// Switches a fault on (or off with [`Fault::None`]).
    pub fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    /// Makes every flush take `delay`, so that a cut often lands between a
    /// write and the flush that would have made it durable.
    pub fn set_flush_delay(&self, delay: Duration) {
        self.lock().flush_delay = delay;
    }

    /// Flush requests (files and directory) seen so far.
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }
}

impl Drop for PowerCutDisk {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(disk: &mut Disk, name: &str, bytes: &[u8]) -> u64 {
        let ino = match disk.names.get(name) {
            Some(&i) => i,
            None => {
                disk.next_ino += 10;
                disk.files.insert(disk.next_ino, File::default());
                disk.names.insert(name.into(), disk.next_ino);
                disk.next_ino
            }
        };
        disk.files
            .get_mut(&ino)
            .unwrap()
            .data
            .extend_from_slice(bytes);
        ino
    }

    #[test]
    fn a_cut_that_drops_keeps_exactly_what_was_flushed() {
        let mut disk = Disk::default();
        let a = write(&mut disk, "a", b"flushed");
        disk.flush_file(a).unwrap();
        disk.flush_dir().unwrap();
        write(&mut disk, "a", b" lost");
        write(&mut disk, "b", b"never named durably");
        let report = disk.cut(&mut |_| 0);
        assert_eq!(disk.names.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(disk.files[&a].data, b"flushed");
        assert_eq!(report.dropped_bytes, 5);
        assert_eq!(report.entries_undone, 1);
    }

    /// A flushed `.a.tmp`, renamed to `a` without a directory flush.
    fn renamed_unflushed() -> (Disk, u64) {
        let mut disk = Disk::default();
        let ino = write(&mut disk, ".a.tmp", b"whole");
        disk.flush_file(ino).unwrap();
        disk.flush_dir().unwrap();
        disk.names.remove(".a.tmp");
        disk.names.insert("a".into(), ino);
        (disk, ino)
    }

    /// Coin results in order.
    fn coins(results: &'static [u64]) -> impl FnMut(u64) -> u64 {
        let mut next = results.iter();
        move |_| *next.next().expect("enough coins")
    }

    #[test]
    fn an_unflushed_rename_is_kept_or_undone_name_by_name() {
        let (mut disk, _) = renamed_unflushed();
        disk.cut(&mut |_| 0);
        assert_eq!(disk.names.keys().collect::<Vec<_>>(), [".a.tmp"]);

        let (mut disk, ino) = renamed_unflushed();
        disk.cut(&mut coins(&[1, 1, 1, 0]));
        assert_eq!(disk.names.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(disk.files[&ino].data, b"whole");

        // Keep-some cut that undoes the removal of the old name and keeps
        // the new one: the file still has one name only.
        let (mut disk, ino) = renamed_unflushed();
        let report = disk.cut(&mut coins(&[1, 0, 1, 0]));
        assert_eq!(disk.names.len(), 1, "{:?}", disk.names);
        assert_eq!(report.entries_undone, 2);
        assert_eq!(disk.files[&ino].data, b"whole");
    }

    #[test]
    fn a_poisoned_file_keeps_only_what_was_flushed_before_the_failure() {
        let mut disk = Disk::default();
        let a = write(&mut disk, "a", b"one");
        disk.flush_file(a).unwrap();
        disk.flush_dir().unwrap();
        write(&mut disk, "a", b"two");
        disk.fault = Fault::FlushIo;
        assert!(disk.flush_file(a).is_err());
        disk.fault = Fault::None;
        write(&mut disk, "a", b"three");
        disk.flush_file(a).expect("a later flush 'succeeds'");
        // Keep-some cut with every coin at its maximum: still nothing kept.
        disk.cut(&mut |n| n - 1);
        assert_eq!(disk.files[&a].data, b"one");
    }
}
