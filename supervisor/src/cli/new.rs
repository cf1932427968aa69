//! `edgeward new --lang rust|go|c NAME`: scaffolds a working module.
//!
//! `NAME/` gets the module's source (tick, a channel, a snapshot: a module
//! that runs, not an empty shell), the SDK it needs (copied in, so the
//! directory builds on its own, offline), an executable `NAME/build` that
//! makes `NAME/NAME.wasm`, and `NAME/policies/NAME.toml` pointing at it:
//! `NAME/build && edgeward check --policies NAME/policies` passes and
//! `edgeward run --policies NAME/policies` runs it. The templates live in
//! `supervisor/templates/`, compiled into the binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The languages `new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the edgeward SDK crate (cargo, wasm32-wasip1).
    Rust,
    /// Go with the edgeward SDK package (go 1.24+, GOOS=wasip1).
    Go,
    /// C with `edgeward.h` (zig from PyPI's ziglang).
    C,
}

/// A file of the scaffold: its path in `NAME/`, its text (with `@NAME@`
/// and `@CRATE@` replaced) and whether it is executable.
struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const POLICY: File = File {
    path: "policies/@NAME@.toml",
    text: include_str!("../../templates/policy.toml"),
    executable: false,
};

const RUST: &[File] = &[
    POLICY,
    File {
        path: "Cargo.toml",
        text: include_str!("../../templates/rust/Cargo.toml"),
        executable: false,
    },
    File {
        path: "src/lib.rs",
        text: include_str!("../../templates/rust/lib.rs"),
        executable: false,
    },
    File {
        path: "build",
        text: include_str!("../../templates/rust/build"),
        executable: true,
    },
    File {
        path: "edgeward-sdk/Cargo.toml",
        text: include_str!("../../templates/rust/sdk-Cargo.toml"),
        executable: false,
    },
    File {
        path: "edgeward-sdk/src/lib.rs",
        text: include_str!("../../../guests/sdk-rust/src/lib.rs"),
        executable: false,
    },
    File {
        path: "edgeward-sdk/src/channel.rs",
        text: include_str!("../../../guests/sdk-rust/src/channel.rs"),
        executable: false,
    },
    File {
        path: "edgeward-sdk/src/message.rs",
        text: include_str!("../../../guests/sdk-rust/src/message.rs"),
        executable: false,
    },
    File {
        path: "edgeward-sdk/src/snapshot.rs",
        text: include_str!("../../../guests/sdk-rust/src/snapshot.rs"),
        executable: false,
    },
    File {
        path: "edgeward-sdk/src/state.rs",
        text: include_str!("../../../guests/sdk-rust/src/state.rs"),
        executable: false,
    },
];

const C: &[File] = &[
    POLICY,
    File {
        path: "@NAME@.c",
        text: include_str!("../../templates/c/module.c"),
        executable: false,
    },
    File {
        path: "build",
        text: include_str!("../../templates/c/build"),
        executable: true,
    },
    File {
        path: "edgeward.h",
        text: include_str!("../../../guests/sdk-c/edgeward.h"),
        executable: false,
    },
    File {
        path: "tools/wasm-strip-debug",
        text: include_str!("../../../scripts/wasm-strip-debug"),
        executable: true,
    },
];

const GO: &[File] = &[
    File {
        path: "policies/@NAME@.toml",
        text: include_str!("../../templates/go/policy.toml"),
        executable: false,
    },
    File {
        path: "@NAME@.go",
        text: include_str!("../../templates/go/module.go"),
        executable: false,
    },
    File {
        path: "go.mod",
        text: include_str!("../../templates/go/go.mod"),
        executable: false,
    },
    File {
        path: "build",
        text: include_str!("../../templates/go/build"),
        executable: true,
    },
    File {
        path: "sdk/go.mod",
        text: include_str!("../../../guests/sdk-go/go.mod"),
        executable: false,
    },
    File {
        path: "sdk/edgeward.go",
        text: include_str!("../../../guests/sdk-go/edgeward.go"),
        executable: false,
    },
    File {
        path: "sdk/exports.go",
        text: include_str!("../../../guests/sdk-go/exports.go"),
        executable: false,
    },
    File {
        path: "sdk/imports.go",
        text: include_str!("../../../guests/sdk-go/imports.go"),
        executable: false,
    },
    File {
        path: "sdk/command.go",
        text: include_str!("../../../guests/sdk-go/command.go"),
        executable: false,
    },
];

/// Creates `parent/name/` for a module in `lang`. Returns what to run next,
/// for the user.
///
/// # Errors
/// An invalid module name, an existing `parent/name`, or a write failure
/// (each naming the path and the fix).
pub fn scaffold(lang: Lang, name: &str, parent: &Path) -> anyhow::Result<String> {
    if !crate::policy::valid_name(name) {
        bail!(
            "module name {name:?} is not allowed: use 1 to 63 of a-z, 0-9, '-' and '_', starting with a letter or digit (it names the policy file and the channel)"
        );
    }
    let root = parent.join(name);
    if root.exists() {
        bail!(
            "{} already exists: choose another name or --dir, or remove it",
            root.display()
        );
    }
    let files = match lang {
        Lang::Rust => RUST,
        Lang::Go => GO,
        Lang::C => C,
    };
    let fill = |text: &str| {
        text.replace("@NAME@", name)
            .replace("@CRATE@", &name.replace('-', "_"))
    };
    let written: Vec<(PathBuf, String, bool)> = files
        .iter()
        .map(|f| (root.join(fill(f.path)), fill(f.text), f.executable))
        .collect();
    for (path, text, executable) in &written {
        let dir = path.parent().unwrap_or(&root);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        if *executable {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    let shown = root.display();
    Ok(format!(
        "created {shown}/ ({} module)\nnext:\n  {shown}/build\n  edgeward check --policies {shown}/policies\n  edgeward run --policies {shown}/policies --state /tmp/{name}-state --control /tmp/{name}.sock",
        match lang {
            Lang::Rust => "Rust",
            Lang::Go => "Go",
            Lang::C => "C",
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scaffold's SDK manifest stands alone (no workspace to inherit
    /// from) but must offer what the SDK's own does.
    #[test]
    fn the_scaffolds_sdk_manifest_has_the_sdks_features_and_dependencies() {
        let own = include_str!("../../../guests/sdk-rust/Cargo.toml");
        let copy = include_str!("../../templates/rust/sdk-Cargo.toml");
        let from_features = |text: &'static str| &text[text.find("[features]").unwrap()..];
        assert_eq!(from_features(own), from_features(copy));
    }

    #[test]
    fn the_scaffold_names_everything_after_the_module_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let next = scaffold(Lang::C, "line-3", dir.path()).unwrap();
        assert!(next.contains("line-3/build"), "{next}");
        let root = dir.path().join("line-3");
        let source = std::fs::read_to_string(root.join("line-3.c")).unwrap();
        assert!(source.contains("ew_channel(\"line-3\")"), "{source}");
        assert!(!source.contains('@'), "{source}");
        let policy = std::fs::read_to_string(root.join("policies/line-3.toml")).unwrap();
        assert!(policy.contains("wasm = \"../line-3.wasm\""), "{policy}");
        let build = std::fs::metadata(root.join("build")).unwrap();
        assert_eq!(build.permissions().mode() & 0o111, 0o111);
        let again = scaffold(Lang::Rust, "line-3", dir.path()).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        let bad = scaffold(Lang::Rust, "Line 3", dir.path()).unwrap_err();
        assert!(bad.to_string().contains("is not allowed"), "{bad}");
        scaffold(Lang::Rust, "line_4", dir.path()).unwrap();
        let cargo = std::fs::read_to_string(dir.path().join("line_4/Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"line_4\""));
        let build = std::fs::read_to_string(dir.path().join("line_4/build")).unwrap();
        assert!(build.contains("release/line_4.wasm"), "{build}");
    }
}
