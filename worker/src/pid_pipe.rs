//! How a spawn's intermediate process tells the fork server the worker's
//! pid: four bytes on a pipe, the pid, or the errno of a failed fork as a
//! negative number. End of file instead means the intermediate died first.
//! Four bytes to a pipe are written at once or not at all.

use std::os::fd::OwnedFd;

use nix::unistd::Pid;

/// Writes the outcome of the worker's fork to `pipe`. Allocates nothing, so
/// an intermediate sharing the fork server's memory may call it. Returns
/// whether the write went through.
pub fn report(pipe: &OwnedFd, fork: nix::Result<Pid>) -> bool {
    let value = match fork {
        Ok(pid) => pid.as_raw(),
        Err(errno) => -(errno as i32),
    };
    matches!(nix::unistd::write(pipe, &value.to_le_bytes()), Ok(4))
}

/// Reads what [`report`] wrote: the worker's pid, or why there is none.
pub fn read(pipe: &OwnedFd) -> Result<u32, String> {
    let mut bytes = [0u8; 4];
    match nix::unistd::read(pipe, &mut bytes) {
        Ok(4) => match i32::from_le_bytes(bytes) {
            pid if pid > 0 => Ok(pid.unsigned_abs()),
            errno => Err(format!(
                "worker fork failed: {}",
                nix::errno::Errno::from_raw(-errno).desc()
            )),
        },
        Ok(_) => Err(
            "worker fork failed: the intermediate process ended without reporting its pid".into(),
        ),
        Err(e) => Err(format!("worker fork failed: reading its pid: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_a_failed_fork_and_a_silent_death_read_back_as_such() {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        assert!(report(&write_end, Ok(Pid::from_raw(4242))));
        assert_eq!(read(&read_end), Ok(4242));
        assert!(report(&write_end, Err(nix::errno::Errno::EAGAIN)));
        assert_eq!(
            read(&read_end),
            Err(format!(
                "worker fork failed: {}",
                nix::errno::Errno::EAGAIN.desc()
            ))
        );
        drop(write_end);
        assert!(read(&read_end)
            .unwrap_err()
            .contains("ended without reporting"));
    }
}
