//! The store's only contact with the file system. Everything the store's
//! durability argument depends on goes through these five operations, so
//! the crash tests can replay them on a simulated disk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A directory of append-only files.
pub trait Storage {
    /// Names of the files in the directory.
    ///
    /// # Errors
    /// The directory cannot be read.
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// The whole content of `name`.
    ///
    /// # Errors
    /// It cannot be read.
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>>;
    /// Appends `data` to `name`, creating it (empty) if missing. Not durable
    /// until [`Storage::flush`] (and, for a new file, [`Storage::flush_dir`]).
    ///
    /// # Errors
    /// ENOSPC, EIO, …: an unknown prefix of `data` may have been written.
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes `name`'s content durable (`fdatasync`).
    ///
    /// # Errors
    /// EIO, …: the content is then unknown, and stays unknown: a later
    /// successful flush does not make up for a failed one.
    fn flush(&mut self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries durable (`fsync` of the directory).
    ///
    /// # Errors
    /// As [`Storage::flush`].
    fn flush_dir(&mut self) -> io::Result<()>;
    /// Removes `name` (durable only after a later [`Storage::flush_dir`]).
    ///
    /// # Errors
    /// It cannot be removed.
    fn remove(&mut self, name: &str) -> io::Result<()>;
}

/// The real directory, with one open handle per file being appended to.
pub struct DirStorage {
    dir: PathBuf,
    open: HashMap<String, File>,
    /// Device flushes issued so far (for the bench and tests).
    pub flushes: u64,
}

impl DirStorage {
    /// Uses `dir`, creating it (durably, mode 0700) if missing.
    ///
    /// # Errors
    /// It cannot be created or opened.
    pub fn open(dir: &Path) -> io::Result<Self> {
        crate::durable::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
            flushes: 0,
        })
    }

    fn handle(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.open.contains_key(name) {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))?;
            self.open.insert(name.to_string(), file);
        }
        Ok(self.open.get_mut(name).expect("inserted above"))
    }
}

impl Storage for DirStorage {
    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        File::open(self.dir.join(name))?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.handle(name)?.write_all(data)
    }

    fn flush(&mut self, name: &str) -> io::Result<()> {
        self.flushes += 1;
        let result = self.handle(name)?.sync_data();
        if result.is_err() {
            // The kernel may have dropped the dirty pages and cleared the
            // error: this handle must never flush "successfully" again.
            self.open.remove(name);
        }
        result
    }

    fn flush_dir(&mut self) -> io::Result<()> {
        self.flushes += 1;
        crate::durable::fsync_dir(&self.dir)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        std::fs::remove_file(self.dir.join(name))
    }
}
