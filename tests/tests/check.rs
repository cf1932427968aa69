//! End to end: `edgeward check` reports every bad policy and module at once.

use edgeward_tests::{check, policy, repo_root, GatewayDir};

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

#[test]
fn a_granted_dir_a_module_uid_cannot_read_is_invalid_and_the_error_names_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let g = GatewayDir::new();
    // A private parent, as `mktemp -d` makes it, is fine (dirs are passed
    // as fds); a private granted dir is not.
    let parent = g.dir.path().join("edgeward-demo.X");
    let data = parent.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = std::fs::canonicalize(&data).unwrap();
    g.add_policy(
        "temp-alert",
        &policy(
            "temp_alert",
            &format!(
                "[wasi]\ndirs = [{{ host = \"{}\", guest = \"/sensor\", mode = \"ro\" }}]",
                data.display()
            ),
        ),
    );
    let (code, out) = check(&g.policies());
    assert_eq!(code, 1, "{out}");
    let expect = format!(
        "{}:4:9: wasi.dirs host \"{}\" is out of reach of the module's own uid (each module runs as its own uid, which owns none of it): its mode 0700 (owner root:root) gives it no read and search (r, x) permission; chmod o+rx {}",
        g.policies().join("temp-alert.toml").display(),
        data.display(),
        data.display()
    );
    assert!(out.contains(&expect), "missing {expect:?} in:\n{out}");
    assert!(out.contains("1 module(s), 0 valid, 1 invalid"), "{out}");

    // The fix it names is enough.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o705)).unwrap();
    let (code, out) = check(&g.policies());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_text_file_named_wasm_is_one_error_line() {
    let g = GatewayDir::new();
    let junk = g.dir.path().join("junk.wasm");
    std::fs::write(&junk, "hello, I am a text file\nwith two lines\n").unwrap();
    g.add_policy(
        "junk",
        &format!("[module]\nwasm = \"{}\"\n", junk.display()),
    );
    let (code, out) = check(&g.policies());
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "module, its error, the summary:\n{out}");
    assert_eq!(
        lines[0].trim_end(),
        format!("{:<20} INVALID  1 error(s)", "junk")
    );
    assert_eq!(
        lines[1],
        format!(
            "    {}:2:8: module {}: not a valid WebAssembly module: failed to parse WebAssembly module: magic header not detected: bad magic number - expected=[0x0, 0x61, 0x73, 0x6d] actual=[0x68, 0x65, 0x6c, 0x6c] (at offset 0x0); rebuild it for wasm32-wasip1 or fix [module] wasm",
            g.policies().join("junk.toml").display(),
            junk.display()
        )
    );
}

#[test]
fn a_channel_name_close_to_another_gets_did_you_mean() {
    let g = GatewayDir::new();
    g.add_policy(
        "sensor",
        &policy("sensor", "[channels]\npublish = [\"reading\"]"),
    );
    g.add_policy(
        "filter",
        &policy(
            "filter",
            "[channels]\nsubscribe = [\"readings\"]\npublish = [\"alarms\"]",
        ),
    );
    g.add_policy(
        "alarm",
        &policy("alarm", "[channels]\nsubscribe = [\"alarms\"]"),
    );
    let (code, out) = check(&g.policies());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "warning: channel \"reading\" is published by sensor but no module subscribes to it; its messages go nowhere; did you mean \"readings\"?"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "warning: channel \"readings\" is subscribed to by filter but no module publishes it; did you mean \"reading\"?"
        ),
        "{out}"
    );
}
