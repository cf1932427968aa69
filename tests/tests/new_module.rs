//! End to end: `edgeward new` scaffolds a module that builds, checks and
//! runs as it is, in each language: scaffold → `NAME/build` → `check` →
//! `run` → the module is running, publishing and logging its ticks. (Go
//! modules compile for seconds in the worker at their first start.)

use std::process::Command;
use std::time::Duration;

use edgeward_tests::{bin, GatewayDir};

fn scaffold_build_check_run(lang: &str, name: &str) {
    let g = GatewayDir::new();
    let out = Command::new(bin("edgeward"))
        .args(["new", "--lang", lang, name, "--dir"])
        .arg(g.dir.path())
        .output()
        .expect("run edgeward new");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let root = g.dir.path().join(name);
    assert!(
        text.contains(&format!("{}/build", root.display())),
        "{text}"
    );

    let build = Command::new(root.join("build"))
        .output()
        .expect("run NAME/build");
    let built = String::from_utf8_lossy(&build.stdout).into_owned()
        + &String::from_utf8_lossy(&build.stderr);
    assert!(build.status.success(), "{built}");
    assert!(root.join(format!("{name}.wasm")).is_file(), "{built}");

    let policies = root.join("policies");
    let check = Command::new(bin("edgeward"))
        .arg("check")
        .arg("--policies")
        .arg(&policies)
        .output()
        .expect("run edgeward check");
    let checked = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{checked}");
    assert!(
        checked.contains("1 module(s), 1 valid, 0 invalid"),
        "{checked}"
    );

    let gateway = g.start_on(&policies, &[]);
    gateway.wait_running(&[name], Duration::from_secs(60));
    gateway.wait_log(
        &format!("[{name}] info: {name}: 10 ticks"),
        Duration::from_secs(10),
    );
    let status = gateway.try_status().expect("status");
    let module = edgeward_tests::module(&status, name);
    assert!(module["msgs_out"].as_u64().unwrap_or(0) >= 10, "{status}");
    assert_eq!(module["language"], lang, "{status}");
}

#[test]
fn a_scaffolded_rust_module_builds_checks_and_runs() {
    scaffold_build_check_run("rust", "line-rust");
}

#[test]
fn a_scaffolded_c_module_builds_checks_and_runs() {
    scaffold_build_check_run("c", "line-c");
}

#[test]
fn a_scaffolded_go_module_builds_checks_and_runs() {
    scaffold_build_check_run("go", "line-go");
}
