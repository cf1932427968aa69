//! Task migrations without an RCU grace period (cgroup v1).
//!
//! Writing a pid to a `cgroup.procs` file takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing. In its default mode that lock is
//! cheap for its readers (every `fork` and `exit`) and dear for a writer:
//! the first write after an idle period waits for an RCU grace period
//! (measured on the dev VM: 7–11 ms per migration a few hundred ms apart,
//! 0.1–0.3 ms with this mode on). Every worker migrates into its cgroups
//! (sandbox step 1), so each start or restart after a quiet spell pays one.
//!
//! The kernel's `favordynmods` mount option (Linux 6.0+) switches the lock
//! to the mode that favours writers, at the cost of a slower read side in
//! `fork` and `exit` (an atomic instead of a per-CPU counter). For a gateway
//! whose processes are its modules' workers, that is the right trade. The
//! option belongs to a hierarchy but the lock is global: so edgeward
//! mounts a named hierarchy of its own without controllers
//! (`none,name=edgeward-dynmods,favordynmods`), gives it one child cgroup
//! (a hierarchy with a child outlives its mount on kernels that tie the
//! mode to the hierarchy's life; from 6.18 the switch is one-way anyway),
//! and unmounts it again: nothing stays visible in the mount table, and the
//! host's own hierarchies are not touched. Needs `CAP_SYS_ADMIN` in the
//! initial user namespace: in an unprivileged container it is unavailable
//! and start-up simply keeps the grace period.
//!
//! On cgroup v2 the fix is not to migrate at all (`clone3` with
//! `CLONE_INTO_CGROUP`), which the fork server does not do yet.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The name of edgeward's controller-less hierarchy.
pub const HIERARCHY: &str = "edgeward-dynmods";

/// What [`turn_on`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The mode was on already (a hierarchy mounted with `favordynmods`).
    AlreadyOn,
    /// edgeward turned it on now.
    TurnedOn,
    /// It could not be turned on; migrations keep the grace period.
    Unavailable(String),
}

impl Outcome {
    /// Words for the start-up log line.
    pub fn describe(&self) -> String {
        match self {
            Outcome::AlreadyOn => "migrations favoured (favordynmods already on)".into(),
            Outcome::TurnedOn => "migrations favoured (favordynmods turned on)".into(),
            Outcome::Unavailable(why) => {
                format!("each migration after a pause waits for an RCU grace period (favordynmods unavailable: {why})")
            }
        }
    }
}

/// Whether `/proc/self/mountinfo` text shows a cgroup hierarchy mounted
/// with `favordynmods` (its super options, after the ` - ` separator).
pub fn already_on(mountinfo: &str) -> bool {
    mountinfo.lines().any(|line| {
        line.split_once(" - ").is_some_and(|(_, fs)| {
            let mut fields = fs.split_whitespace();
            let fstype = fields.next().unwrap_or("");
            let options = fields.nth(1).unwrap_or("");
            fstype.starts_with("cgroup") && options.split(',').any(|o| o == "favordynmods")
        })
    })
}

/// Turns the favour-writers mode on, once per boot (see the module docs).
/// `scratch` is a directory where a temporary mount point may be made.
pub fn turn_on(scratch: &Path) -> Outcome {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if already_on(&mountinfo) {
        return Outcome::AlreadyOn;
    }
    let point: PathBuf = scratch.join(format!("edgeward-dynmods-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&point) {
        return Outcome::Unavailable(format!("cannot make {}: {e}", point.display()));
    }
    let options = format!("none,name={HIERARCHY},favordynmods");
    let outcome = match mount(
        Some("cgroup"),
        &point,
        Some("cgroup"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    ) {
        Ok(()) => {
            // The child keeps the hierarchy (and on older kernels its mode)
            // alive once unmounted; it exists already after an earlier run.
            let pinned = match std::fs::create_dir(point.join("pin")) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            };
            let _ = umount2(&point, MntFlags::MNT_DETACH);
            match pinned {
                Ok(()) => Outcome::TurnedOn,
                Err(e) => {
                    Outcome::Unavailable(format!("cannot pin the {HIERARCHY} hierarchy: {e}"))
                }
            }
        }
        Err(e) => Outcome::Unavailable(format!("mount -t cgroup -o {options}: {e}")),
    };
    let _ = std::fs::remove_dir(&point);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_with_favordynmods_counts_as_on() {
        let off = "35 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids\n\
                   36 25 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:16 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert!(!already_on(off));
        let v1_on =
            "35 25 0:30 / /x rw shared:15 - cgroup cgroup rw,favordynmods,name=edgeward-dynmods\n";
        assert!(already_on(v1_on));
        let v2_on = "36 25 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,favordynmods\n";
        assert!(already_on(v2_on));
        // An option of another file system with the same name does not count.
        let other = "40 25 0:40 / /mnt rw - tmpfs tmpfs rw,favordynmods\n";
        assert!(!already_on(other));
    }
}
