//! End to end: a module gets exactly the WASI grants its policy lists.

use std::time::Duration;

use edgeward_tests::{policy, GatewayDir};

#[test]
fn wasi_grants_are_exactly_the_policy() {
    let g = GatewayDir::new();
    let ro = g.dir.path().join("ro");
    let rw = g.dir.path().join("rw");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("input.txt"), "sensor-42\n").unwrap();
    std::fs::write(g.dir.path().join("secret.txt"), "do not read").unwrap();
    std::os::unix::fs::symlink("../secret.txt", ro.join("escape")).unwrap();
    g.add_policy(
        "probe",
        &policy(
            "wasi_probe",
            &format!(
                "[wasi]\nargs = [\"--line\", \"7\"]\nenv = {{ LINE = \"3\" }}\n\
                 dirs = [{{ host = \"{}\", guest = \"/ro\", mode = \"ro\" }}, {{ host = \"{}\", guest = \"/rw\", mode = \"rw\" }}]",
                ro.display(),
                rw.display()
            ),
        ),
    );
    let gateway = g.start();
    gateway.wait_log("[probe] probe: done", Duration::from_secs(20));
    let log = gateway.log();
    let line = |prefix: &str| {
        log.lines()
            .find(|l| l.starts_with(&format!("[probe] probe: {prefix}")))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{log}"))
            .to_string()
    };
    assert_eq!(line("args"), "[probe] probe: args=[\"--line\", \"7\"]");
    // Only the granted variable: nothing leaks from the supervisor's environment.
    assert_eq!(line("env"), "[probe] probe: env=[\"LINE=3\"]");
    assert_eq!(
        line("read /ro/input.txt"),
        "[probe] probe: read /ro/input.txt: ok sensor-42"
    );
    assert!(line("write /ro/new.txt").contains("denied"), "{log}");
    assert!(!ro.join("new.txt").exists());
    assert!(line("write /rw/out.txt").contains(": ok"), "{log}");
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).unwrap(),
        "written by the guest"
    );
    assert!(line("read /etc/passwd").contains("denied"), "{log}");
    assert!(line("read /ro/../secret.txt").contains("denied"), "{log}");
    assert!(line("read /ro/escape").contains("denied"), "{log}");
}
