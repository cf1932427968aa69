//! Read-only bytes in a sealed memfd: how a restored snapshot too large for
//! one control message reaches a starting worker (beside `Init`, like the
//! ring memfds).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// A memfd holding `bytes`, sealed against any change: whoever receives it
/// reads exactly what was written.
///
/// # Errors
/// The memfd cannot be created, written or sealed.
pub fn seal(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    nix::fcntl::fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(OwnedFd::from(file))
}

/// Reads the `len` bytes of a memfd made by [`seal`].
///
/// # Errors
/// It is shorter than `len`, or cannot be read.
pub fn read(fd: OwnedFd, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; len];
    let mut file = File::from(fd);
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_read_back_and_cannot_change() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let fd = seal("t", &bytes).unwrap();
        let mut file = File::from(fd.try_clone().unwrap());
        assert!(file.write_all(b"x").is_err(), "sealed against writes");
        assert_eq!(read(fd, bytes.len()).unwrap(), bytes);
    }
}
