//! End to end: `edgeward check` reports every bad policy and module at once.

use std::process::Command;

use edgeward_tests::{bin, policy, repo_root, GatewayDir};

fn check(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(bin("edgeward"))
        .args(["check", "--policies"])
        .arg(dir)
        .output()
        .expect("run edgeward check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_example_policies_are_valid() {
    let (code, out) = check(&repo_root().join("policies"));
    assert_eq!(code, 0, "{out}");
    for name in edgeward_tests::EXAMPLES {
        assert!(out.contains(&format!("{name:<20} ok")), "{out}");
    }
    assert!(out.contains("6 module(s), 6 valid, 0 invalid"), "{out}");
}

#[test]
fn every_broken_policy_and_module_is_listed_and_exit_is_1() {
    let g = GatewayDir::new();
    g.add_policy("good", &policy("counter", ""));
    g.add_policy(
        "alarm",
        &policy("counter", "[resources]\ncpu_percent = 10\nmemroy_mib = 32"),
    );
    let bad_wasm = g.dir.path().join("bad.wasm");
    std::fs::write(&bad_wasm, b"\0asm\x01\0\0\0\x01\xff\xff").unwrap();
    g.add_policy(
        "corrupt",
        &format!("[module]\nwasm = \"{}\"\n", bad_wasm.display()),
    );
    g.add_policy("gone", "[module]\nwasm = \"missing.wasm\"\n");
    g.add_policy(
        "pinned",
        &policy("counter", "").replace(
            "[module]\n",
            &format!("[module]\nsha256 = \"{}\"\n", "a".repeat(64)),
        ),
    );
    g.add_policy(
        "types",
        &policy("counter", "[schedule]\ntick_us = \"often\""),
    );
    let (code, out) = check(&g.policies());
    assert_eq!(code, 1, "{out}");
    let p = g.policies();
    let expect = [
        format!(
            "{}:5:1: unknown key \"memroy_mib\" in [resources]; did you mean \"memory_mib\"?",
            p.join("alarm.toml").display()
        ),
        format!(
            "{}:2:8: module {}: not a valid WebAssembly module",
            p.join("corrupt.toml").display(),
            bad_wasm.display()
        ),
        format!(
            "{}:2:8: cannot read module file",
            p.join("gone.toml").display()
        ),
        format!(
            "{}:2:10: sha256 pin mismatch",
            p.join("pinned.toml").display()
        ),
        format!(
            "{}:4:11: wrong type for schedule.tick_us",
            p.join("types.toml").display()
        ),
    ];
    for line in &expect {
        assert!(out.contains(line.as_str()), "missing {line:?} in:\n{out}");
    }
    assert!(out.contains(&format!("{:<20} ok", "good")), "{out}");
    assert!(out.contains("6 module(s), 1 valid, 5 invalid"), "{out}");
}

#[test]
fn a_module_importing_something_edgeward_lacks_is_invalid() {
    let g = GatewayDir::new();
    // (module (import "edgeward" "teleport" (func)))
    let wasm: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
        0x02, 0x15, 0x01, 0x08, b'e', b'd', b'g', b'e', b'w', b'a', b'r', b'd', 0x08, b't', b'e',
        b'l', b'e', b'p', b'o', b'r', b't', 0x00, 0x00, // import edgeward.teleport
    ];
    let file = g.dir.path().join("teleport.wasm");
    std::fs::write(&file, wasm).unwrap();
    g.add_policy(
        "teleport",
        &format!("[module]\nwasm = \"{}\"\n", file.display()),
    );
    let (code, out) = check(&g.policies());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("imports something edgeward does not provide"),
        "{out}"
    );
    assert!(out.contains("teleport"), "{out}");
}

#[test]
fn a_subscriber_that_cannot_receive_is_invalid_and_unwired_channels_are_warned() {
    let g = GatewayDir::new();
    // The smallest valid module: no exports, so no ew_on_message.
    let empty = g.dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x01\0\0\0").unwrap();
    g.add_policy(
        "deaf",
        &format!(
            "[module]\nwasm = \"{}\"\n[channels]\nsubscribe = [\"readings\"]\n",
            empty.display()
        ),
    );
    g.add_policy(
        "lonely",
        &policy("counter", "[channels]\npublish = [\"nowhere\"]"),
    );
    let (code, out) = check(&g.policies());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("channels.subscribe: module")
            && out.contains("exports no ew_on_message and ew_alloc"),
        "{out}"
    );
    assert!(
        out.contains(
            "warning: channel \"nowhere\" is published by lonely but no module subscribes to it"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "warning: channel \"readings\" is subscribed to by deaf but no module publishes it"
        ),
        "{out}"
    );
    assert!(out.contains("2 module(s), 1 valid, 1 invalid"), "{out}");
}
