//! Checks that concern several policies together, or a policy and the
//! gateway itself, made after each file was validated on its own:
//!
//! - a read-write dir belongs to one module: no two modules' `rw` dirs are
//!   the same or inside one another (each module's uid owns its rw dirs,
//!   and a module may have a quota volume mounted on one), nor two of one
//!   module's;
//! - no `rw` dir is, contains or lies inside the state directory or the
//!   policy directory (a module must not write the gateway's own files).
//!
//! The first claim wins: policies named in `first` (those running now),
//! then the rest in file-name order. A later policy that overlaps gets an
//! error at its `host` value, like any other policy error.
//!
//! Then the start order and the groups (`order.rs`): every `after` entry
//! names a module with a policy file here, `after` makes no cycle, and a
//! group's members agree on its strategy.

use std::path::{Path, PathBuf};

use super::{DirMode, Loaded, PolicyError};

/// Applies the checks to `loaded`, turning each offending policy into its
/// errors. `state` is the state directory; `first` lists the modules whose
/// claims come first.
pub fn check_across(mut loaded: Vec<Loaded>, state: &Path, first: &[&str]) -> Vec<Loaded> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let state = canonical(state);
    let mut order: Vec<usize> = (0..loaded.len()).collect();
    order.sort_by_key(|&i| !first.contains(&loaded[i].name.as_str()));
    // (dir, owner module) of every rw dir accepted so far.
    let mut claimed: Vec<(PathBuf, String)> = Vec::new();
    for i in order {
        let l = &mut loaded[i];
        let Ok(policy) = &l.result else { continue };
        let policies_dir = canonical(l.file.parent().unwrap_or(Path::new(".")));
        let mut errors = Vec::new();
        let mut mine: Vec<(PathBuf, String)> = Vec::new();
        for dir in policy.dirs.iter().filter(|d| d.mode == DirMode::Rw) {
            let host = &dir.host;
            let clash = if overlaps(host, &state) {
                Some((
                    format!(
                        "wasi.dirs host \"{}\" (rw) overlaps the state directory {}",
                        host.display(),
                        state.display()
                    ),
                    "give the module a directory outside the state directory (--state)",
                ))
            } else if overlaps(host, &policies_dir) {
                Some((
                    format!(
                        "wasi.dirs host \"{}\" (rw) overlaps the policy directory {}",
                        host.display(),
                        policies_dir.display()
                    ),
                    "a module must not be able to write policies: grant another directory",
                ))
            } else if let Some((other, owner)) = claimed
                .iter()
                .chain(&mine)
                .find(|(other, _)| overlaps(host, other))
            {
                let whose = if *owner == policy.name {
                    "another rw dir of this module".to_string()
                } else {
                    format!("the rw dir {} of module {owner}", other.display())
                };
                Some((
                    format!(
                        "wasi.dirs host \"{}\" (rw) overlaps {whose}",
                        host.display()
                    ),
                    "a read-write dir belongs to one module: give each its own (share data through channels, or a ro grant of the other's dir)",
                ))
            } else {
                None
            };
            match clash {
                Some((reason, fix)) => errors.push(PolicyError {
                    file: l.file.clone(),
                    line: dir.location.0,
                    col: dir.location.1,
                    key: "wasi.dirs.host".into(),
                    reason,
                    fix: fix.into(),
                }),
                None => mine.push((host.clone(), policy.name.clone())),
            }
        }
        if errors.is_empty() {
            claimed.extend(mine);
        } else {
            l.result = Err(errors);
        }
    }
    super::order::check_order(&mut loaded);
    loaded
}

/// Whether one path is the other or lies inside it (component-wise).
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &Path, name: &str, dirs: &str) -> Loaded {
        let file = dir.join(format!("{name}.toml"));
        let wasm = dir.join("m.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").expect("wasm");
        std::fs::write(
            &file,
            format!(
                "[module]\nwasm = \"{}\"\n[wasi]\ndirs = [{dirs}]\n",
                wasm.display()
            ),
        )
        .expect("policy");
        super::super::load_file(&file)
    }

    fn errors(l: &Loaded) -> Vec<String> {
        match &l.result {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_rw_dir_belongs_to_one_module_and_never_to_the_gateway() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let root = scratch.path();
        let policies = root.join("policies");
        for d in ["policies", "data/a", "data/a/sub", "data/b", "state"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let rw = |p: &str| {
            format!(
                "{{ host = \"{}\", guest = \"/d\", mode = \"rw\" }}",
                root.join(p).display()
            )
        };
        let loaded = vec![
            policy(&policies, "alpha", &rw("data/a")),
            // Inside alpha's dir: refused.
            policy(&policies, "beta", &rw("data/a/sub")),
            // Reading alpha's dir is fine.
            policy(
                &policies,
                "gamma",
                &format!(
                    "{{ host = \"{}\", guest = \"/d\" }}",
                    root.join("data/a").display()
                ),
            ),
            policy(&policies, "delta", &rw("state")),
            policy(&policies, "epsilon", &rw("policies")),
            policy(&policies, "zeta", &rw("data/b")),
        ];
        let checked = check_across(loaded, &root.join("state"), &[]);
        assert!(errors(&checked[0]).is_empty());
        let beta = errors(&checked[1]);
        assert_eq!(beta.len(), 1);
        assert!(beta[0].contains("beta.toml:4:"), "{beta:?}");
        assert!(beta[0].contains("overlaps the rw dir"), "{beta:?}");
        assert!(beta[0].contains("of module alpha"), "{beta:?}");
        assert!(errors(&checked[2]).is_empty());
        assert!(errors(&checked[3])[0].contains("overlaps the state directory"));
        assert!(errors(&checked[4])[0].contains("overlaps the policy directory"));
        assert!(errors(&checked[5]).is_empty());
    }

    #[test]
    fn a_running_module_keeps_its_dir_against_a_newcomer() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let root = scratch.path();
        let policies = root.join("policies");
        std::fs::create_dir_all(root.join("data")).expect("mkdir");
        std::fs::create_dir_all(&policies).expect("mkdir");
        let rw = format!(
            "{{ host = \"{}\", guest = \"/d\", mode = \"rw\" }}",
            root.join("data").display()
        );
        let loaded = vec![policy(&policies, "aaa", &rw), policy(&policies, "zzz", &rw)];
        let checked = check_across(loaded, &root.join("state"), &["zzz"]);
        assert!(!errors(&checked[0]).is_empty());
        assert!(errors(&checked[1]).is_empty());
    }
}
