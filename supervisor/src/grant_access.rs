//! Whether a module's own uid can use its granted directories
//! (`[wasi] dirs`).
//!
//! As root, edgeward runs each module as its own uid (`sandbox_plan.rs`
//! `identity`). Every granted dir reaches the worker as an fd the
//! supervisor opened (`DirGrant::passed`), so the dirs above it do not
//! matter (a `mktemp -d` parent, mode 0700, is fine). The dir itself does:
//! the worker opens the fd as the module's uid, and a guest's reads inside
//! it are checked against that uid. A `ro` dir the uid cannot read and
//! search leaves the module with no access at all, and before this check
//! nothing said why. So `check` and `run` look first. An `rw` dir is handed
//! to the uid by the supervisor (`rw_dirs.rs`), so it always passes.
//!
//! Only the mode bits and the owner and group are considered, not POSIX
//! ACLs: an ACL that grants the uid access is not seen, and one that denies
//! it is not seen either. Nor are the files inside a dir: one the uid
//! cannot read fails that read, and the module sees the error.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::policy::{Dir, DirMode, Policy};

/// Read permission, in one class's three mode bits.
const READ: u32 = 0o4;
/// Search (execute) permission, in one class's three mode bits.
const SEARCH: u32 = 0o1;

/// Whose access is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accessor {
    /// A module's own uid and gid, as `run` assigns them (the module has no
    /// supplementary groups).
    Module {
        /// The module's uid.
        uid: u32,
        /// The module's gid.
        gid: u32,
    },
    /// Any module's uid, when the number is not known (`check`): a uid that
    /// owns nothing on the path and is in none of its groups.
    AnyModule,
}

impl Accessor {
    /// The three permission bits of `meta`'s mode that apply to this
    /// accessor (owner, group or others), and the class letter for `chmod`.
    fn bits(self, meta: &std::fs::Metadata) -> (u32, char) {
        let mode = meta.mode();
        match self {
            Accessor::Module { uid, .. } if meta.uid() == uid => ((mode >> 6) & 0o7, 'u'),
            Accessor::Module { gid, .. } if meta.gid() == gid => ((mode >> 3) & 0o7, 'g'),
            Accessor::Module { .. } | Accessor::AnyModule => (mode & 0o7, 'o'),
        }
    }

    fn describe(self) -> String {
        match self {
            Accessor::Module { uid, .. } => format!("the module's uid {uid}"),
            Accessor::AnyModule => {
                "the module's own uid (each module runs as its own uid, which owns none of it)"
                    .into()
            }
        }
    }
}

/// A granted directory the module's uid cannot reach.
#[derive(Debug, thiserror::Error)]
pub enum GrantAccessError {
    /// The dir's mode denies the permission the module needs.
    #[error(
        "{}:{line}:{col}: wasi.dirs host \"{}\" is out of reach of {who}: its mode {mode:04o} (owner {owner}) gives it no {missing} permission; chmod {fix} {}",
        file.display(), dir.display(), dir.display()
    )]
    Unreachable {
        /// The policy file.
        file: PathBuf,
        /// Line of the `dirs` entry.
        line: usize,
        /// Column of the `dirs` entry.
        col: usize,
        /// The granted directory.
        dir: PathBuf,
        /// Who was checked, in words.
        who: String,
        /// Its permission bits.
        mode: u32,
        /// Its owner and group, `user:group`.
        owner: String,
        /// The permission missing, in words.
        missing: &'static str,
        /// The `chmod` mode that adds it, e.g. `o+rx`.
        fix: String,
    },
    /// The dir could not be examined.
    #[error(
        "{}:{line}:{col}: wasi.dirs host \"{}\": cannot examine it: {source}; check the path",
        file.display(), dir.display()
    )]
    Stat {
        /// The policy file.
        file: PathBuf,
        /// Line of the `dirs` entry.
        line: usize,
        /// Column of the `dirs` entry.
        col: usize,
        /// The granted directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Every granted directory of `policy` that `who` cannot use, one error
/// per directory.
pub fn unreachable_dirs(policy: &Policy, who: Accessor) -> Vec<GrantAccessError> {
    policy
        .dirs
        .iter()
        .filter_map(|dir| unreachable(&policy.file, dir, who))
        .collect()
}

/// [`unreachable_dirs`] as one line, for a module's `last_error`.
///
/// # Errors
/// Every unreachable directory, joined with ` | `.
pub fn check(policy: &Policy, who: Accessor) -> Result<(), String> {
    let errors = unreachable_dirs(policy, who);
    if errors.is_empty() {
        return Ok(());
    }
    Err(errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" | "))
}

/// Why `who` cannot use one granted directory, if it cannot (its ancestors
/// do not matter: see the module doc).
fn unreachable(file: &Path, dir: &Dir, who: Accessor) -> Option<GrantAccessError> {
    let (line, col) = dir.location;
    if dir.mode == DirMode::Rw {
        // Handed to the module's uid before the worker starts.
        return None;
    }
    let needed = READ | SEARCH;
    let meta = match std::fs::metadata(&dir.host) {
        Ok(meta) => meta,
        Err(source) => {
            return Some(GrantAccessError::Stat {
                file: file.to_path_buf(),
                line,
                col,
                dir: dir.host.clone(),
                source,
            })
        }
    };
    let (granted, class) = who.bits(&meta);
    let missing = needed & !granted;
    if missing == 0 {
        return None;
    }
    Some(GrantAccessError::Unreachable {
        file: file.to_path_buf(),
        line,
        col,
        dir: dir.host.clone(),
        who: who.describe(),
        mode: meta.mode() & 0o7777,
        owner: owner(&meta),
        missing: match missing {
            SEARCH => "search (x)",
            READ => "read (r)",
            _ => "read and search (r, x)",
        },
        fix: format!(
            "{class}+{}{}",
            if missing & READ != 0 { "r" } else { "" },
            if missing & SEARCH != 0 { "x" } else { "" }
        ),
    })
}

/// `user:group` of a file, by name where the names are known.
fn owner(meta: &std::fs::Metadata) -> String {
    let user = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.gid().to_string(), |g| g.name);
    format!("{user}:{group}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn policy_granting(host: &Path, mode: DirMode) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("m.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let file = dir.path().join("m.toml");
        let mode = match mode {
            DirMode::Ro => "ro",
            DirMode::Rw => "rw",
        };
        let text = format!(
            "[module]\nwasm = \"{}\"\n[wasi]\ndirs = [{{ host = \"{}\", guest = \"/d\", mode = \"{mode}\" }}]\n",
            wasm.display(),
            host.display()
        );
        std::fs::write(&file, text).unwrap();
        crate::policy::load_file(&file).result.unwrap()
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `<tmp>` (0700) / `data` (0755): the parent is private.
    fn private_parent() -> (tempfile::TempDir, PathBuf) {
        let top = tempfile::tempdir().unwrap();
        chmod(top.path(), 0o700);
        let data = top.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chmod(&data, 0o755);
        let data = std::fs::canonicalize(&data).unwrap();
        (top, data)
    }

    #[test]
    fn a_private_ancestor_does_not_block_a_private_ro_dir_does_with_the_fix() {
        let (_top, data) = private_parent();
        let policy = policy_granting(&data, DirMode::Ro);
        assert!(unreachable_dirs(&policy, Accessor::AnyModule).is_empty());
        chmod(&data, 0o700);
        let errors = unreachable_dirs(&policy, Accessor::AnyModule);
        assert_eq!(errors.len(), 1);
        let text = errors[0].to_string();
        assert!(
            text.starts_with(&format!("{}:4:9: ", policy.file.display())),
            "{text}"
        );
        let owner = owner(&std::fs::metadata(&data).unwrap());
        assert!(
            text.contains(&format!(
                "its mode 0700 (owner {owner}) gives it no read and search (r, x) permission; chmod o+rx {}",
                data.display()
            )),
            "{text}"
        );
        chmod(&data, 0o701);
        let text = unreachable_dirs(&policy, Accessor::AnyModule)[0].to_string();
        assert!(
            text.contains("no read (r) permission; chmod o+r "),
            "{text}"
        );
        chmod(&data, 0o705);
        assert!(unreachable_dirs(&policy, Accessor::AnyModule).is_empty());
    }

    #[test]
    fn an_rw_dir_always_passes_it_is_handed_to_the_uid() {
        let (_top, data) = private_parent();
        chmod(&data, 0o700);
        let rw = unreachable_dirs(&policy_granting(&data, DirMode::Rw), Accessor::AnyModule);
        assert!(rw.is_empty(), "{}", rw[0]);
    }

    #[test]
    fn the_module_uid_uses_the_owner_or_group_bits_that_apply_to_it() {
        let (_top, data) = private_parent();
        chmod(&data, 0o750);
        let policy = policy_granting(&data, DirMode::Ro);
        let owner = Accessor::Module { uid: 0, gid: 12345 };
        assert!(unreachable_dirs(&policy, owner).is_empty());
        let group = Accessor::Module {
            uid: 4321,
            gid: std::fs::metadata(&data).unwrap().gid(),
        };
        assert!(unreachable_dirs(&policy, group).is_empty());
        let stranger = Accessor::Module {
            uid: 4321,
            gid: 4321,
        };
        let errors = unreachable_dirs(&policy, stranger);
        assert!(
            errors[0].to_string().contains("of the module's uid 4321"),
            "{}",
            errors[0]
        );
    }
}
