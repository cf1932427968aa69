//! The files a connector's config names (every key ending in `_file`:
//! CA, certificate, key, password): copied into its state dir before the
//! sandbox, owned by its uid and readable by it alone, and the config
//! rewritten to name the copies. A key file readable only by root works
//! this way, and the sandbox needs to grant no path outside the state dir.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Copies each of `files` into `<host_state_dir>/.files/` and rewrites
/// every string value in `config` equal to one of them to the copy's path
/// under `state_dir` (how the sandboxed connector reaches the same dir).
/// Returns the rewritten config and the copies' paths (to be readable).
///
/// # Errors
/// A named file cannot be read, or the copy cannot be written; in words
/// naming the file.
pub fn copy_named(
    mut config: toml::Table,
    files: &[String],
    host_state_dir: &Path,
    state_dir: &Path,
    identity: Option<(u32, u32)>,
) -> Result<(toml::Table, Vec<PathBuf>), String> {
    let dir = host_state_dir.join(".files");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let own = |path: &Path| -> Result<(), String> {
        if let Some((uid, gid)) = identity {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to uid {uid}: {e}", path.display()))?;
        }
        Ok(())
    };
    own(&dir)?;
    let mut copies = Vec::new();
    let mut renames = Vec::new();
    for (n, original) in files.iter().enumerate() {
        let name = Path::new(original)
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let copy_name = format!("{n}-{name}");
        let host_copy = dir.join(&copy_name);
        let bytes = std::fs::read(original)
            .map_err(|e| format!("cannot read {original} (named in [connector]): {e}"))?;
        std::fs::write(&host_copy, bytes)
            .and_then(|()| {
                std::fs::set_permissions(&host_copy, std::fs::Permissions::from_mode(0o400))
            })
            .map_err(|e| format!("cannot copy {original} to {}: {e}", host_copy.display()))?;
        own(&host_copy)?;
        let copy = state_dir.join(".files").join(copy_name);
        renames.push((original.clone(), copy.to_string_lossy().into_owned()));
        copies.push(copy);
    }
    rewrite(&mut config, &renames);
    Ok((config, copies))
}

/// Replaces string values equal to a renamed path, at any depth.
fn rewrite(table: &mut toml::Table, renames: &[(String, String)]) {
    fn walk(value: &mut toml::Value, renames: &[(String, String)]) {
        match value {
            toml::Value::String(s) => {
                if let Some((_, to)) = renames.iter().find(|(from, _)| from == s) {
                    *s = to.clone();
                }
            }
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| walk(v, renames)),
            toml::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, renames)),
            _ => {}
        }
    }
    table.iter_mut().for_each(|(_, v)| walk(v, renames));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_files_are_copied_and_the_config_points_at_the_copies() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"CA BYTES").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let config: toml::Table = format!(
            "ca_file = {:?}\nother = \"x\"\n[[device]]\nkey_file = {:?}\n",
            ca.display(),
            ca.display()
        )
        .parse()
        .unwrap();
        let files = vec![ca.to_string_lossy().into_owned()];
        let (config, copies) =
            copy_named(config, &files, &state, Path::new("/proc/self/fd/9"), None).unwrap();
        assert_eq!(
            copies,
            vec![PathBuf::from("/proc/self/fd/9/.files/0-ca.pem")]
        );
        assert_eq!(
            config["ca_file"].as_str(),
            Some("/proc/self/fd/9/.files/0-ca.pem")
        );
        let device = &config["device"].as_array().unwrap()[0];
        assert_eq!(
            device["key_file"].as_str(),
            Some("/proc/self/fd/9/.files/0-ca.pem")
        );
        assert_eq!(config["other"].as_str(), Some("x"));
        assert_eq!(
            std::fs::read(state.join(".files/0-ca.pem")).unwrap(),
            b"CA BYTES"
        );
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = copy_named(
            toml::Table::new(),
            &["/nonexistent/ca.pem".to_string()],
            dir.path(),
            dir.path(),
            None,
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
